"""Read a stated finding's side and lobe out of an image: clinical correctness of generated images.

Does a generated CT show the haemorrhage on the side and in the lobe the report states?
The phantom's head is nearly symmetric, so a lesion is the strongest left-right
asymmetry of the brain: the reader takes ``image - mirror(image)``, smooths it, weighs
it by the finding type's polarity in this modality (a CT haemorrhage is brighter than
the brain opposite it, an infarct darker), and finds the peak inside the area where
lesions occur. The peak's half of the image is the side (radiological view: the
patient's left is the image's right); its position, folded onto one hemisphere, is
assigned to the nearest lobe centre.

Polarity, the search area and the lobe centres are fitted on the cohort's training
images with their lesion masks (``<modality>_lesion`` beside each image), so the reader
knows nothing a plugin did not draw. Its accuracy on held-out *truth* images is the
ceiling a generator can reach, printed beside the generator's score.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from medm2g.core.data.manifest import Manifest
from medm2g.core.data.midline import mirrored_about_midline
from medm2g.core.data.paired_dataset import PairedDataset, key_slice
from medm2g.core.phantom.anatomy import Finding
from medm2g.core.phantom.overview import load_mask
from medm2g.core.phantom.report_findings import agreement_scores
from medm2g.registry import ModalityRegistry

SMOOTHING_PX = 1.5
"""Gaussian sigma of the asymmetry map: lesions are 7-13 pixels across on the 64-pixel grid."""


def subject_finding(image_path: Path) -> Finding | None:
    """The phantom's ground truth for the subject whose file this is (``finding.json`` beside it)."""
    path = image_path.parent / "finding.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return Finding(kind=data["kind"], side=data.get("side"), region=data.get("region"))


def _mask_path(image_path: Path, modality: str) -> Path:
    suffix = "".join(image_path.suffixes)
    return image_path.parent / f"{modality}_lesion{suffix}"


def _gaussian(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-x**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    image = image[None, None]
    image = F.conv2d(F.pad(image, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    image = F.conv2d(F.pad(image, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return image[0, 0]


def asymmetry(image: torch.Tensor, tissue_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """(H, W) smoothed ``image - mirror(image)`` of a (C, H, W) image: zero for a symmetric head.
    Values are first clipped to ``tissue_range``, so a skull edge a pixel off its mirror counts
    no more than a lesion does."""
    plane = image.float().mean(0).clamp(*tissue_range)
    return _gaussian(plane - mirrored_about_midline(plane), SMOOTHING_PX)


@attrs.frozen
class ImageFindingReader:
    """Fitted on one modality's training images; :meth:`read` gives (side, region) of a stated finding type."""

    modality: str
    polarity: dict[str, float]
    tissue_range: tuple[float, float]
    search: torch.Tensor  # (H, W) bool
    region_centres: dict[str, tuple[float, float]]  # region -> (row, distance from the midline), fractions of the grid

    @classmethod
    def fit(cls, modality: str, images: Sequence[torch.Tensor], masks: Sequence[torch.Tensor],
            findings: Sequence[Finding]) -> "ImageFindingReader":
        polarity_sums: dict[str, float] = {}
        centres: dict[str, list[tuple[float, float]]] = {}
        search = torch.zeros(images[0].shape[-2:], dtype=torch.bool)
        lesioned = [(i, m.bool(), f) for i, m, f in zip(images, masks, findings) if not f.is_normal and m.any()]
        if not lesioned:
            raise ValueError(f"{modality}: no training image with a lesion mask to fit the finding reader on")
        # the brain opposite each lesion is the tissue lesions sit in: its range, widened by half on
        # each side so lesion contrast survives, is where asymmetry is measured
        healthy = torch.cat([image.float().mean(0)[mask.flip(-1) & ~mask] for image, mask, _ in lesioned])
        low, high = float(healthy.quantile(0.02)), float(healthy.quantile(0.98))
        tissue_range = (low - (high - low) / 2, high + (high - low) / 2)
        for image, mask, finding in lesioned:
            shape = image.shape[-2:]
            search |= mask | mask.flip(-1)
            polarity_sums[finding.kind] = polarity_sums.get(finding.kind, 0.0) + float(
                asymmetry(image, tissue_range)[mask].mean())
            rows, columns = torch.nonzero(mask, as_tuple=True)
            centres.setdefault(finding.region, []).append(
                (float(rows.float().mean()) / shape[0], abs(float(columns.float().mean()) / shape[1] - 0.5)))
        return cls(modality, {kind: 1.0 if total >= 0 else -1.0 for kind, total in polarity_sums.items()},
                   tissue_range, search,
                   {region: tuple(np.mean(points, axis=0).tolist()) for region, points in centres.items()})

    def read(self, image: torch.Tensor, kind: str) -> tuple[str, str]:
        """(side, region) of the strongest asymmetry of ``kind``'s polarity inside the search area."""
        if image.shape[-2:] != self.search.shape:
            image = F.interpolate(image[None].float(), size=tuple(self.search.shape), mode="bilinear",
                                  align_corners=False)[0]
        score = asymmetry(image, self.tissue_range) * self.polarity.get(kind, 1.0)
        score = score.masked_fill(~self.search, float("-inf"))
        peak = int(score.flatten().argmax())
        row, column = divmod(peak, self.search.shape[1])
        side = "left" if column >= self.search.shape[1] / 2 else "right"
        position = (row / self.search.shape[0], abs(column / self.search.shape[1] - 0.5))
        region = min(self.region_centres, key=lambda r: (self.region_centres[r][0] - position[0]) ** 2
                     + (self.region_centres[r][1] - position[1]) ** 2)
        return side, region


def lesion_mask_at(mask_path: Path, record, shape: tuple[int, int]) -> torch.Tensor:
    """The (H, W) bool lesion mask of a manifest record's sample as training sees it (a volume's key
    slice), on a ``shape`` grid; all false where no mask was written (a plugin may write none for a
    normal subject)."""
    if not mask_path.is_file():
        return torch.zeros(shape, dtype=torch.bool)
    mask = torch.from_numpy(np.asarray(load_mask(mask_path)))
    mask = mask if mask.dim() == 2 else mask[key_slice(record, mask.shape[0])]
    if tuple(mask.shape) != tuple(shape):  # the run's grid differs from the phantom's
        mask = F.interpolate(mask[None, None].float(), size=tuple(shape), mode="nearest")[0, 0]
    return mask > 0


def lesion_mask_of(manifest: Manifest, record, modality: str, shape: tuple[int, int]) -> torch.Tensor | None:
    """The lesion mask beside a record's ``modality`` file (see :func:`lesion_mask_at`), or None where the
    data are not a phantom cohort (no finding beside the file)."""
    path = manifest.resolve(record.values[modality])
    if subject_finding(path) is None:
        return None
    return lesion_mask_at(_mask_path(path, modality), record, shape)


_FITTED_READERS: dict[tuple, "ImageFindingReader | None"] = {}
"""Readers fitted in this process, by what they were fitted on: an evaluation, its finding ladder, a
backend's own evaluation and the demo's baselines read with the same readers without reading 200
training images again each."""


def fit_reader(manifests: Sequence[Manifest], modality: str, registry: ModalityRegistry,
               limit: int = 200) -> ImageFindingReader | None:
    """A reader fitted on up to ``limit`` training records of ``modality`` across ``manifests``,
    or None when the data are not a phantom cohort (no finding or lesion mask beside the images).
    Fitted once per process for the same manifests (path, size and modification time) and grid."""
    files = tuple((str(m.path), m.path.stat().st_mtime_ns, m.path.stat().st_size) for m in manifests)
    key = (files, modality, repr(registry[modality].spec), limit)
    if key not in _FITTED_READERS:
        _FITTED_READERS[key] = _fit_reader(manifests, modality, registry, limit)
    return _FITTED_READERS[key]


def _fit_reader(manifests: Sequence[Manifest], modality: str, registry: ModalityRegistry,
                limit: int) -> ImageFindingReader | None:
    images, masks, findings = [], [], []
    for manifest in manifests:
        records = manifest.having(modality, split="train")
        reader = PairedDataset(manifest, [modality], registry, split=None) if records else None
        for record in records:
            if len(images) >= limit:
                break
            path = manifest.resolve(record.values[modality])
            finding, mask_path = subject_finding(path), _mask_path(path, modality)
            if finding is None or not (mask_path.is_file() or finding.is_normal):
                return None
            sample = reader.load(record, modality)  # the key slice of a volume, as training sees it
            images.append(sample)
            masks.append(lesion_mask_at(mask_path, record, tuple(sample.shape[-2:])))
            findings.append(finding)
    if not images or all(f.is_normal for f in findings):
        return None
    return ImageFindingReader.fit(modality, images, masks, findings)


def image_finding_agreement(reader: ImageFindingReader, images: Sequence[torch.Tensor],
                            findings: Sequence[Finding | None]) -> dict[str, float]:
    """Side and lobe accuracy of ``images`` against the findings they should show, with chance
    levels from the two sets' own frequencies; normal or unknown truths are not judged."""
    judged = [(image, finding) for image, finding in zip(images, findings) if finding is not None and not finding.is_normal]
    if not judged:
        return {}
    read = [reader.read(image, finding.kind) for image, finding in judged]
    scores = {}
    for index, field in enumerate(("side", "region")):
        scores.update(agreement_scores([r[index] for r in read], [getattr(f, field) for _, f in judged], field))
    return scores
