"""A picture of a few phantom subjects: every modality and variant side by side, lesions outlined.

It is the quickest way for a person to check that the modalities of one subject agree:
the outline is each modality's own lesion mask, and the report is printed beneath.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from medm2g.core.io.imaging import nifti_to_slices
from medm2g.registry import ModalityKind, ModalityRegistry


def load_mask(path: Path) -> np.ndarray:
    if path.name.endswith(".png"):
        from PIL import Image

        return np.asarray(Image.open(path)) > 0
    import nibabel

    return nifti_to_slices(nibabel.load(str(path)))[0] > 0


def draw_overview(out: Path, records, registry: ModalityRegistry, path: Path, subjects: int = 4) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [r for r in records if r.finding["kind"] != "normal"][: max(subjects - 1, 1)]
    chosen += [r for r in records if r.finding["kind"] == "normal"][: subjects - len(chosen)]
    columns = [(m, v) for m in sorted(chosen[0].variants) if registry[m].spec.kind.is_imaging
               for v in chosen[0].variants[m]]
    text_modalities = [m for m in sorted(chosen[0].variants) if not registry[m].spec.kind.is_imaging]
    fig, axes = plt.subplots(len(chosen), len(columns), figsize=(2.3 * len(columns), 2.9 * len(chosen)),
                             squeeze=False, dpi=110)
    for row, record in enumerate(chosen):
        for column, (modality_name, variant) in enumerate(columns):
            modality = registry[modality_name]
            sample = modality.read(out / record.variants[modality_name][variant])
            volume = modality.spec.kind is ModalityKind.VOLUME
            image = (sample[record.key_slice, 0] if volume else sample[0]).numpy()
            ax = axes[row, column]
            low, high = modality.spec.intensity.display_range()
            ax.imshow(image, cmap="gray", vmin=low, vmax=high)
            mask_path = record.masks.get(modality_name)
            if mask_path:
                mask = load_mask(out / mask_path)
                mask = mask[record.key_slice] if volume else mask
                if mask.any():
                    ax.contour(mask.astype(float), levels=[0.5], colors="#ff5a36", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(modality_name if variant == modality_name else f"{modality_name} {variant}", fontsize=9)
        finding = record.finding
        label = "normal" if finding["kind"] == "normal" else (
            f"{finding['kind']}, {finding['side']} {finding['region']}, {finding['diameter_mm']:.0f} mm")
        axes[row, 0].set_ylabel(f"{record.subject_id}\n{label}", fontsize=8)
        for modality_name in text_modalities:
            report = registry[modality_name].read(out / record.files[modality_name])
            axes[row, 0].annotate("\n".join(textwrap.wrap(report, 120)), xy=(0, -0.06), xycoords="axes fraction",
                                  va="top", ha="left", fontsize=6.5)
    fig.suptitle("medm2g phantom cohort: one subject per row (radiological view: patient's right on the left)",
                 fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.99, top=0.88, bottom=0.06, wspace=0.06, hspace=0.55)
    fig.savefig(path)
    plt.close(fig)
    return path
