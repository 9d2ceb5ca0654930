"""Mirroring a head about its own midline: what a reader compares each hemisphere with.

A focal finding is one-sided, so the plainest evidence of it is the difference between a place
and the same place on the other side. Heads do not sit exactly in the middle of the image, so
the mirror is shifted sideways to the position where it matches the head best; the finding
reader of the phantom cohort and the ``vq-ar`` alignment's patch asymmetry both use it.
"""

from __future__ import annotations

import torch

MIDLINE_SEARCH_PX = 8
"""How far (in pixels) the head's midline may sit from the image's centre."""


def midline_shifts(planes: torch.Tensor) -> torch.Tensor:
    """(B,) sideways shift of each (B, H, W) plane's left-right flip that best matches the plane."""
    flipped = planes.flip(-1)
    margin = slice(MIDLINE_SEARCH_PX, planes.shape[-1] - MIDLINE_SEARCH_PX)  # wrapped columns not compared
    shifts = torch.arange(-MIDLINE_SEARCH_PX, MIDLINE_SEARCH_PX + 1)
    errors = torch.stack([(planes[..., margin] - torch.roll(flipped, int(shift), dims=-1)[..., margin])
                          .abs().flatten(1).mean(1) for shift in shifts], dim=1)
    return shifts[errors.argmin(1)]


def mirrored_about_midline(plane: torch.Tensor) -> torch.Tensor:
    """A (H, W) ``plane`` mirrored about the vertical line that matches it best with its mirror
    image: the head's own midline, so a head shifted sideways is still symmetric to the reader."""
    shift = int(midline_shifts(plane[None].float())[0])
    return torch.roll(plane.flip(-1), shift, dims=-1)


def mirror_images(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images each mirrored about its own midline (found on the mean of its channels)."""
    shifts = midline_shifts(images.float().mean(1))
    flipped = images.flip(-1)
    return torch.stack([torch.roll(image, int(shift), dims=-1) for image, shift in zip(flipped, shifts)])
