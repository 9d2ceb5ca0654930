"""Pictures for the page: a sample in a reader's window, enlarged, with what it is written on it.

A picture of a generated image leaves the page (a screenshot, a slide), so the word SYNTHETIC
is burned into its pixels rather than set in a caption beside it; an input is marked as
the input. The window is one of the modality's named display windows (CT: brain, subdural,
bone) or its default one; a window reaching past what the run's models hold shows the
excess saturated, which the label says.
"""

from __future__ import annotations

import numpy as np
import torch

from medm2g.registry import ModalitySpec

DEFAULT_WINDOW = "default"
"""The window name meaning "the modality's own display window" (its full range where it has none)."""

PICTURE_SIDE = 256
"""Pixels along the longer side of a picture on the page: a 64-pixel grid is too small to read."""


def window_names(specs: list[ModalitySpec]) -> list[str]:
    """:data:`DEFAULT_WINDOW`, then every named window of any of ``specs``, in their order."""
    names = [DEFAULT_WINDOW]
    for spec in specs:
        names += [name for name, _ in spec.intensity.display_presets if name not in names]
    return names


def window_of(spec: ModalitySpec, window: str) -> tuple[str, tuple[float, float]]:
    """(what to call it, model-space (low, high)) of ``window`` for ``spec``: its named window
    when it has one by that name, else its default."""
    presets = dict(spec.intensity.display_presets)
    intensity = spec.intensity
    if window in presets:
        low, high = presets[window]
        beyond = low < intensity.window[0] or high > intensity.window[1]
        name = f"{window} {low:g}..{high:g} {intensity.unit}" + (" (saturated past the run's window)" if beyond else "")
        return name, intensity.display_range(window)
    if intensity.per_sample:
        return "each image's own range", (-1.0, 1.0)
    shown = intensity.display_window or intensity.window
    return f"{shown[0]:g}..{shown[1]:g} {intensity.unit}", intensity.display_range()


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def picture(sample: torch.Tensor, spec: ModalitySpec, window: str = DEFAULT_WINDOW, label: str = "") -> np.ndarray:
    """(H, W, 3) uint8: ``sample`` ((C, H, W) in [-1, 1]) in ``window``, enlarged to
    :data:`PICTURE_SIDE`, with ``label`` on a dark band along its top edge."""
    from PIL import Image, ImageDraw

    _, (low, high) = window_of(spec, window)
    image = sample.detach().float().cpu()
    image = image[:1].expand(3, -1, -1) if image.shape[0] != 3 else image
    unit = ((image - low) / (high - low)).clamp(0, 1)
    pixels = (unit.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    height, width = pixels.shape[:2]
    scale = PICTURE_SIDE / max(height, width)
    shown = Image.fromarray(pixels).resize((round(width * scale), round(height * scale)), Image.Resampling.BICUBIC)
    if label:
        draw = ImageDraw.Draw(shown)
        font = _font(max(12, shown.width // 16))
        _, top, _, bottom = draw.textbbox((0, 0), label, font=font)
        draw.rectangle((0, 0, shown.width, bottom - top + 8), fill=(20, 20, 20))
        draw.text((4, 4 - top), label, fill=(255, 210, 60), font=font)
    return np.asarray(shown)
