"""Reading a stated finding's side and lobe out of images: right on the truth, at chance when shuffled."""

import numpy as np
import pytest
import torch

from medm2g.core.phantom.anatomy import random_subject
from medm2g.core.phantom.cohort import key_slice_of
from medm2g.core.phantom.image_findings import ImageFindingReader, asymmetry, image_finding_agreement


def _rendered(installed, modality: str, count: int, seed: int):
    """Key-slice images, their lesion masks and findings of ``count`` fresh phantom subjects."""
    images, masks, findings = [], [], []
    for index in range(count):
        subject = random_subject(f"R{index:03d}", np.random.default_rng([seed, index]))
        rendering = installed[modality].phantom_render(subject, torch.Generator().manual_seed(index))
        sample, mask = next(iter(rendering.samples.values())), rendering.lesion_mask
        if mask is None:
            mask = torch.zeros_like(sample)
        if sample.dim() == 4:  # a volume: the slice the lesion is largest in, as the cohort's manifests say
            plane = key_slice_of(mask)
            sample, mask = sample[plane], mask[plane]
        images.append(sample)
        masks.append(mask[0] > 0)
        findings.append(subject.finding)
    return images, masks, findings


@pytest.fixture(scope="module")
def ct_reader_and_held_out(installed):
    images, masks, findings = _rendered(installed, "ct", 150, seed=11)
    reader = ImageFindingReader.fit("ct", images[:100], masks[:100], findings[:100])
    return reader, images[100:], findings[100:]


def test_the_reader_finds_the_stated_side_and_lobe_on_held_out_truth_images(ct_reader_and_held_out):
    reader, images, findings = ct_reader_and_held_out
    scores = image_finding_agreement(reader, images, findings)
    judged = sum(not f.is_normal for f in findings)
    print(f"CT truth, {judged} lesions: side {scores['side_accuracy']:.2f} (chance {scores['side_chance']:.2f}), "
          f"lobe {scores['region_accuracy']:.2f} (chance {scores['region_chance']:.2f})")
    assert judged >= 30
    assert scores["side_accuracy"] >= 0.85
    assert scores["region_accuracy"] >= 0.6
    assert reader.polarity["haemorrhage"] == 1.0 and reader.polarity["infarct"] == -1.0  # bright bleed, dark infarct


def test_shuffled_images_score_at_the_chance_level(ct_reader_and_held_out):
    reader, images, findings = ct_reader_and_held_out
    generator = np.random.default_rng(0)
    side, region, side_chance, region_chance = [], [], [], []
    for _ in range(20):
        order = generator.permutation(len(images))
        scores = image_finding_agreement(reader, [images[i] for i in order], findings)
        side.append(scores["side_accuracy"])
        region.append(scores["region_accuracy"])
        side_chance.append(scores["side_chance"])
        region_chance.append(scores["region_chance"])
    assert abs(np.mean(side) - np.mean(side_chance)) < 0.08
    assert abs(np.mean(region) - np.mean(region_chance)) < 0.08


def test_a_head_shifted_sideways_is_still_symmetric_and_a_blob_reads_on_its_side():
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    head = ((((x - 35.0) / 24) ** 2 + ((y - 32.0) / 28) ** 2) < 1).float()  # midline at column 35, not 31.5
    assert asymmetry(head[None]).abs().max() < 0.05
    blob = head + 0.5 * (((x - 48) ** 2 + (y - 20) ** 2) < 16).float()  # image right = the patient's left
    reader = ImageFindingReader("ct", {"tumour": 1.0}, (-1.0, 2.0), head > 0,
                                {"frontal": (0.3, 0.2), "occipital": (0.8, 0.2)})
    assert reader.read(blob[None], "tumour") == ("left", "frontal")
    mirrored = head + 0.5 * (((x - 22) ** 2 + (y - 50) ** 2) < 16).float()
    assert reader.read(mirrored[None], "tumour") == ("right", "occipital")
