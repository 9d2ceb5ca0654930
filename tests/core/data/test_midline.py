"""Mirroring about the head's own midline: a symmetric head shifted sideways mirrors onto itself."""

import torch

from medm2g.core.data.midline import midline_shifts, mirror_images, mirrored_about_midline


def _head(centre_column: float, lesion: bool = False) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    head = ((((x - centre_column) / 22) ** 2 + ((y - 32) / 27) ** 2) < 1).float()
    if lesion:
        head = head + 0.5 * (((x - centre_column - 10) ** 2 + (y - 24) ** 2) < 16).float()
    return head


def test_a_head_off_centre_mirrors_onto_itself_and_a_lesion_onto_the_other_side():
    for centre in (29.5, 31.5, 35.5):
        plane = _head(centre)
        assert torch.equal(mirrored_about_midline(plane), plane), centre
    lesioned = _head(34.5, lesion=True)
    mirrored = mirrored_about_midline(lesioned)
    difference = lesioned - mirrored
    assert float(difference[24, 45]) == 0.5 and float(difference[24, 24]) == -0.5  # the lesion, and its mirror place


def test_a_batch_is_mirrored_image_by_image_with_every_channel_shifted_alike():
    planes = torch.stack([_head(29.5), _head(34.5, lesion=True)])
    images = torch.stack([planes, planes * 2], dim=1)  # (2, 2, 64, 64)
    assert midline_shifts(planes).tolist() == [-4, 6]  # 2 x centre - 63: the flip moves column x to 63 - x
    mirrored = mirror_images(images)
    assert mirrored.shape == images.shape
    for index in range(2):
        expected = mirrored_about_midline(planes[index])
        assert torch.equal(mirrored[index, 0], expected) and torch.equal(mirrored[index, 1], expected * 2)
