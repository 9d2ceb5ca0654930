"""Subject anatomy for the phantom cohort: tissue fractions, deformation and a finding.

The template is nilearn's MNI152 (2009c, 2 mm) grey- and white-matter probability
maps and brain mask. The template nilearn ships is brain-extracted, so the head
around the brain is built as shells at physical distances from the brain surface:

* ``gm``, ``wm``: the probability maps inside the brain mask;
* ``csf``: the rest of the brain mask (ventricles, sulci) and a 2 mm subarachnoid shell;
* ``bone``: the shell 2-9 mm outside the brain, the skull (adult vault: about 5-7 mm);
* ``soft_tissue``: the shell 9-15 mm out, the scalp;
* ``air``: everything else.

A subject is the template under a random smooth deformation (small rotation,
scale and translation plus a low-frequency displacement field) with at most one
lesion: an ellipsoid of a given type, side, lobe and size placed in brain tissue.
Plugins sample the subject on grids in millimetres (RAS: x to the patient's right,
y anterior, z superior) with :meth:`PhantomSubject.fractions`.
"""

from __future__ import annotations

import functools
import math

import attrs
import numpy as np
import torch
import torch.nn.functional as F

TISSUES = ("air", "csf", "gm", "wm", "bone", "soft_tissue", "lesion")
"""Channel order of :meth:`PhantomSubject.fractions`; ``lesion`` is the finding's tissue."""

LESION_TYPES = ("haemorrhage", "infarct", "tumour", "calcification")
LESION_DIAMETER_MM = (20, 40)
"""Lesions are drawn large (a 64-pixel grid resolves about 3 mm) so that models at the CPU size can see them."""
REGIONS = ("frontal", "parietal", "temporal", "occipital")
SIDES = ("left", "right")

# Lobe boxes in MNI millimetres (x sign gives the side), chosen inside the axial band
# the CT and MRI volumes cover (z from -15 to +60 mm).
REGION_BOXES = {
    "frontal": {"y": (12, 60), "z": (-5, 50), "abs_x": (12, 50)},
    "parietal": {"y": (-60, -10), "z": (28, 55), "abs_x": (12, 45)},
    "temporal": {"y": (-45, 5), "z": (-12, 8), "abs_x": (35, 58)},
    "occipital": {"y": (-95, -65), "z": (-2, 35), "abs_x": (8, 35)},
}

SHELLS_MM = {"csf": 2.0, "bone": 9.0, "soft_tissue": 15.0}
"""Outer radius (mm from the brain surface) of the subarachnoid CSF, skull and scalp shells."""

SLICE_BAND_Z = (-15.0, 60.0)
"""The axial band (MNI z, mm) the CT and MRI volumes cover: the supratentorial brain."""

FIELD_OF_VIEW = {"x": (-96.0, 96.0), "y": (-126.0, 66.0), "z": (-72.0, 110.0)}
"""A square 192 mm axial field of view around the head, and the head's full height."""


@attrs.frozen
class Finding:
    """The ground truth a report states and an image must show."""

    kind: str  # one of LESION_TYPES, or "normal"
    side: str | None = None
    region: str | None = None
    diameter_mm: float | None = None
    center_mm: tuple[float, float, float] | None = None  # in the subject's own (deformed) space

    @property
    def is_normal(self) -> bool:
        return self.kind == "normal"


@functools.lru_cache(maxsize=1)
def template_fractions() -> tuple[torch.Tensor, np.ndarray]:
    """(len(TISSUES), X, Y, Z) tissue fractions on the MNI 2 mm grid, and its affine.

    Loaded once per process from the files nilearn ships (no download).
    """
    from nilearn import datasets
    from scipy import ndimage

    gm_image = datasets.load_mni152_gm_template(resolution=2)
    gm = np.clip(gm_image.get_fdata(), 0, 1).astype(np.float32)
    wm = np.clip(datasets.load_mni152_wm_template(resolution=2).get_fdata(), 0, 1).astype(np.float32)
    brain = datasets.load_mni152_brain_mask(resolution=2).get_fdata() > 0.5
    gm, wm = np.where(brain, gm, 0.0), np.where(brain, wm, 0.0)
    scale = np.maximum(gm + wm, 1.0)
    gm, wm = gm / scale, wm / scale
    voxel_mm = float(abs(gm_image.affine[0, 0]))
    outside_mm = ndimage.distance_transform_edt(~brain) * voxel_mm

    def shell(inner: float, outer: float) -> np.ndarray:
        return ((outside_mm > inner) & (outside_mm <= outer)).astype(np.float32)

    csf = np.where(brain, 1.0 - gm - wm, 0.0) + shell(0.0, SHELLS_MM["csf"])
    bone = shell(SHELLS_MM["csf"], SHELLS_MM["bone"])
    soft = shell(SHELLS_MM["bone"], SHELLS_MM["soft_tissue"])
    air = (outside_mm > SHELLS_MM["soft_tissue"]).astype(np.float32)
    lesion = np.zeros_like(air)
    stack = np.stack([air, csf, gm, wm, bone, soft, lesion]).astype(np.float32)
    return torch.from_numpy(stack), gm_image.affine


@functools.lru_cache(maxsize=1)
def _template_for_sampling() -> torch.Tensor:
    """The template as grid_sample reads it, (1, K-1, k, j, i), contiguous (far faster than a
    permuted view), without the lesion channel, which is zero until a subject adds its lesion."""
    volume, _ = template_fractions()
    return volume[: TISSUES.index("lesion")].permute(0, 3, 2, 1)[None].contiguous()


@attrs.frozen
class SamplingGrid:
    """Points in millimetres: ``axes`` maps 'x', 'y', 'z' to coordinate vectors; the output
    array is indexed (z, y, x), the order of axial slices, rows and columns."""

    x: tuple[float, ...] = attrs.field(converter=tuple)
    y: tuple[float, ...] = attrs.field(converter=tuple)
    z: tuple[float, ...] = attrs.field(converter=tuple)

    @classmethod
    def regular(cls, size: tuple[int, int], slices: int, z_range: tuple[float, float]) -> "SamplingGrid":
        """``slices`` axial slices over ``z_range`` on a ``size`` (rows=y, columns=x) in-plane grid."""
        rows, columns = size

        def centres(low: float, high: float, n: int) -> list[float]:
            step = (high - low) / n
            return [low + step * (i + 0.5) for i in range(n)]

        (x0, x1), (y0, y1) = FIELD_OF_VIEW["x"], FIELD_OF_VIEW["y"]
        # radiological convention: rows from anterior (top) to posterior, columns from the
        # patient's right (image left) to the patient's left
        return cls(x=centres(x0, x1, columns)[::-1], y=centres(y0, y1, rows)[::-1], z=centres(*z_range, slices))

    @classmethod
    def frontal_projection(cls, size: tuple[int, int], depth: int) -> "SamplingGrid":
        """A grid for an AP/PA projection: ``depth`` points along y (the ray), rows from the top
        of the head down (z descending), columns from the patient's right to left."""
        rows, columns = size
        (x0, x1), (y0, y1), (z0, z1) = FIELD_OF_VIEW["x"], FIELD_OF_VIEW["y"], FIELD_OF_VIEW["z"]
        half = max(x1 - x0, z1 - z0) / 2  # square detector over the head
        xc, zc = (x0 + x1) / 2, (z0 + z1) / 2
        x = [xc + half - 2 * half * (i + 0.5) / columns for i in range(columns)]
        z = [zc + half - 2 * half * (i + 0.5) / rows for i in range(rows)]
        y = [y0 + (y1 - y0) * (i + 0.5) / depth for i in range(depth)]
        return cls(x=x, y=y, z=z)

    @property
    def spacing_mm(self) -> dict[str, float]:
        return {axis: abs(values[1] - values[0]) if len(values) > 1 else 0.0
                for axis, values in (("x", self.x), ("y", self.y), ("z", self.z))}

    def points(self) -> torch.Tensor:
        z, y, x = torch.meshgrid(
            torch.tensor(self.z), torch.tensor(self.y), torch.tensor(self.x), indexing="ij"
        )
        return torch.stack([x, y, z], dim=-1)  # (D, H, W, 3) in mm, (x, y, z)


@attrs.frozen
class Deformation:
    """Subject space -> template space: rotation about z, isotropic scale, translation and a
    smooth displacement (a sum of a few low-frequency sines)."""

    angle_deg: float
    scale: float
    translation_mm: tuple[float, float, float]
    wave_amplitude_mm: tuple[float, ...]
    wave_vectors: tuple[tuple[float, float, float], ...]
    wave_phases: tuple[float, ...]

    @classmethod
    def random(cls, rng: np.random.Generator, strength: float = 1.0) -> "Deformation":
        waves = 4
        return cls(
            angle_deg=float(rng.uniform(-5, 5) * strength),
            scale=float(1 + rng.uniform(-0.06, 0.06) * strength),
            translation_mm=tuple(float(v) for v in rng.uniform(-3, 3, size=3) * strength),
            wave_amplitude_mm=tuple(float(v) for v in rng.uniform(0, 2.5, size=waves) * strength),
            wave_vectors=tuple(tuple(float(c) for c in rng.normal(0, 1, size=3) / 60.0) for _ in range(waves)),
            wave_phases=tuple(float(v) for v in rng.uniform(0, 2 * math.pi, size=waves)),
        )

    def to_template(self, points: torch.Tensor) -> torch.Tensor:
        """Map (..., 3) subject-space points (mm) to template space."""
        angle = math.radians(self.angle_deg)
        cos, sin = math.cos(angle), math.sin(angle)
        rotation = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]], dtype=points.dtype)
        moved = (points - torch.tensor(self.translation_mm, dtype=points.dtype)) @ rotation.T / self.scale
        for amplitude, vector, phase in zip(self.wave_amplitude_mm, self.wave_vectors, self.wave_phases):
            direction = torch.tensor(vector, dtype=points.dtype)
            moved = moved + amplitude * torch.sin(points @ direction + phase)[..., None] * direction / direction.norm()
        return moved


@attrs.frozen
class PhantomSubject:
    """One subject: identity, deformation and finding. Pure data, rendered on demand."""

    subject_id: str
    deformation: Deformation
    finding: Finding
    lesion_radii_mm: tuple[float, float, float] | None = None

    def fractions(self, grid: SamplingGrid) -> torch.Tensor:
        """(len(TISSUES), D, H, W) tissue fractions summing to 1 at every point of ``grid``.

        Cached per (subject, grid), so modalities sharing a grid (CT and MRI) sample once;
        treat the result as read-only.
        """
        return _subject_fractions(self, grid)

    def _sample_fractions(self, grid: SamplingGrid) -> torch.Tensor:
        volume, affine = template_fractions()
        points = grid.points()
        template_mm = self.deformation.to_template(points)
        inverse = torch.from_numpy(np.linalg.inv(affine)).to(template_mm.dtype)
        voxels = template_mm @ inverse[:3, :3].T + inverse[:3, 3]  # (D, H, W, 3): i, j, k on the template
        sizes = torch.tensor(volume.shape[1:], dtype=voxels.dtype)
        normalised = voxels / (sizes - 1) * 2 - 1
        # grid_sample wants (N, C, depth=k, height=j, width=i) and grid coordinates ordered (i, j, k)
        tissues = F.grid_sample(
            _template_for_sampling(), normalised[None], mode="bilinear", padding_mode="border", align_corners=True
        )[0]
        sampled = torch.cat([tissues, torch.zeros_like(tissues[:1])])  # the lesion channel
        outside = (normalised.abs() > 1).any(-1)
        sampled[:, outside] = 0.0
        sampled[0, outside] = 1.0  # air beyond the template
        if self.lesion_radii_mm is not None:
            sampled = self._add_lesion(sampled, points)
        return sampled / sampled.sum(0, keepdim=True).clamp(min=1e-6)

    def _add_lesion(self, fractions: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        centre = torch.tensor(self.finding.center_mm, dtype=points.dtype)
        radii = torch.tensor(self.lesion_radii_mm, dtype=points.dtype)
        distance = (((points - centre) / radii) ** 2).sum(-1).sqrt()
        smallest_voxel = min(self.lesion_radii_mm) / 2
        inside = torch.clamp((1 - distance) * min(self.lesion_radii_mm) / smallest_voxel + 0.5, 0, 1)
        brain = fractions[1:4].sum(0)
        lesion = inside * brain  # a lesion replaces brain tissue only
        fractions = fractions * (1 - lesion)
        fractions[TISSUES.index("lesion")] += lesion
        return fractions


@functools.lru_cache(maxsize=1)
def _template_brain() -> np.ndarray:
    """CSF + GM + WM fraction on the template grid; every lesion placement reads it."""
    volume, _ = template_fractions()
    return volume[TISSUES.index("csf"): TISSUES.index("wm") + 1].sum(0).numpy()


@functools.lru_cache(maxsize=4)
def _subject_fractions(subject: PhantomSubject, grid: SamplingGrid) -> torch.Tensor:
    return subject._sample_fractions(grid)


def _place_lesion(rng: np.random.Generator, region: str, side: str, radius_mm: float) -> tuple[float, float, float]:
    """A centre (template mm) inside the region's box whose surroundings are mostly brain."""
    _, affine = template_fractions()
    brain = _template_brain()
    box = REGION_BOXES[region]
    inverse = np.linalg.inv(affine)
    sign = -1.0 if side == "left" else 1.0  # RAS: x < 0 is the patient's left
    best, best_score = None, -1.0
    for _ in range(40):
        point = np.array([sign * rng.uniform(*box["abs_x"]), rng.uniform(*box["y"]), rng.uniform(*box["z"])])
        score = 0.0
        for offset in ((0, 0, 0), (radius_mm, 0, 0), (-radius_mm, 0, 0), (0, radius_mm, 0), (0, -radius_mm, 0),
                       (0, 0, radius_mm), (0, 0, -radius_mm)):
            i, j, k = np.round(inverse[:3, :3] @ (point + offset) + inverse[:3, 3]).astype(int)
            inside = all(0 <= c < s for c, s in zip((i, j, k), brain.shape))
            score += brain[i, j, k] if inside else 0.0
        if score > best_score:
            best, best_score = point, score
        if score >= 6.5:
            break
    return tuple(float(v) for v in best)


def random_subject(subject_id: str, rng: np.random.Generator, normal_fraction: float = 0.2) -> PhantomSubject:
    """Draw a deformation and a finding; the lesion centre moves with the deformation."""
    deformation = Deformation.random(rng)
    if rng.uniform() < normal_fraction:
        return PhantomSubject(subject_id, deformation, Finding("normal"))
    kind = str(rng.choice(LESION_TYPES))
    region, side = str(rng.choice(REGIONS)), str(rng.choice(SIDES))
    diameter = float(np.round(rng.uniform(*LESION_DIAMETER_MM)))
    radius = diameter / 2
    template_centre = np.array(_place_lesion(rng, region, side, radius))
    centre = _template_to_subject(deformation, template_centre)
    elongation = rng.uniform(0.8, 1.25, size=3)
    radii = tuple(float(r) for r in radius * elongation / np.cbrt(elongation.prod()))
    finding = Finding(kind, side, region, diameter, tuple(float(c) for c in centre))
    return PhantomSubject(subject_id, deformation, finding, radii)


def _template_to_subject(deformation: Deformation, target: np.ndarray, steps: int = 30) -> np.ndarray:
    """Invert the deformation at one point by fixed-point iteration (it is close to identity)."""
    guess = torch.tensor(target, dtype=torch.float64)
    goal = torch.tensor(target, dtype=torch.float64)
    for _ in range(steps):
        guess = guess + (goal - deformation.to_template(guess[None])[0])
    return guess.numpy()
