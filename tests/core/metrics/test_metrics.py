"""Image and text metrics against independent computations and hand-checked values."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from medm2g.core.metrics.image import ms_ssim, ms_ssim_scales, psnr, ssim
from medm2g.core.metrics.text import corpus_bleu, mean_rouge_l, rouge_l, tokens


def _images(seed: int, shape=(3, 1, 64, 64)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(shape, generator=generator) * 2 - 1, 5, 1, 2)
    return smooth.clamp(-1, 1)


def test_psnr_is_the_formula_per_image():
    target = _images(0)
    prediction = (target + 0.1 * torch.randn(target.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    mse = ((prediction - target) ** 2).flatten(1).mean(1).double()
    torch.testing.assert_close(psnr(prediction, target).double(), 10 * torch.log10(4.0 / mse), rtol=1e-5, atol=1e-4)
    assert torch.isinf(psnr(target, target)).all()


def test_ssim_agrees_with_scikit_image_on_the_same_inputs():
    target = _images(2)
    prediction = (target + 0.2 * torch.randn(target.shape, generator=torch.Generator().manual_seed(3))).clamp(-1, 1)
    ours = ssim(prediction, target)
    for i in range(target.shape[0]):
        reference = structural_similarity(prediction[i, 0].double().numpy(), target[i, 0].double().numpy(),
                                          data_range=2.0, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, win_size=11)
        assert float(ours[i]) == pytest.approx(reference, abs=1e-5)
    assert torch.allclose(ssim(target, target), torch.ones(3))


def test_torchmetrics_agrees_once_its_reflected_border_is_cropped():
    """torchmetrics averages the SSIM map over the whole image, its border windows reading reflected
    pixels; medm2g (as Wang et al. and scikit-image) over the windows inside the image. On the valid
    region the two maps are one; PSNR is the same formula."""
    functional = pytest.importorskip("torchmetrics.functional.image")
    target = _images(6).double()
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    prediction = (target + 0.2 * noise).clamp(-1, 1)
    _, full_map = functional.structural_similarity_index_measure(
        prediction, target, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=2.0, k1=0.01, k2=0.03,
        reduction="none", return_full_image=True)
    valid = full_map[..., 5:-5, 5:-5].flatten(1).mean(1)
    torch.testing.assert_close(ssim(prediction, target).double(), valid, rtol=0, atol=1e-6)
    torch.testing.assert_close(psnr(prediction, target).double(), functional.peak_signal_noise_ratio(
        prediction, target, data_range=2.0, reduction="none", dim=(1, 2, 3)), rtol=1e-6, atol=1e-5)


def test_ms_ssim_is_one_for_identical_images_and_falls_with_noise():
    target = _images(4)
    assert ms_ssim_scales(64, 64) == 3 and ms_ssim_scales(256, 256) == 5 and ms_ssim_scales(8, 8) == 0
    torch.testing.assert_close(ms_ssim(target, target), torch.ones(3))
    scores = []
    for strength in (0.05, 0.2, 0.6):
        noisy = (target + strength * torch.randn(target.shape, generator=torch.Generator().manual_seed(5))).clamp(-1, 1)
        scores.append(float(ms_ssim(noisy, target).mean()))
    assert scores[0] > scores[1] > scores[2] >= 0
    with pytest.raises(ValueError, match="at least 11x11"):
        ms_ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="of one shape"):
        ssim(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 17))


def test_bleu_on_a_hand_checked_pair():
    """the cat sat on the mat / the cat is on the mat: 1-gram 5/6, 2-gram 3/5, 3-gram 1/4, no 4-gram."""
    scores = corpus_bleu(["the cat sat on the mat"], ["the cat is on the mat"])
    assert scores[1] == pytest.approx(5 / 6)
    assert scores[2] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert scores[3] == pytest.approx(0.5)
    assert scores[4] == 0.0
    short = corpus_bleu(["the cat"], ["the cat is on the mat"])
    assert short[1] == pytest.approx(math.exp(1 - 6 / 2))  # every word matches; the brevity penalty is all
    assert corpus_bleu(["Impression: left lesion."], ["impression : left lesion ."])[4] == pytest.approx(1.0)


def test_rouge_l_is_the_f1_of_the_longest_common_subsequence():
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # LCS "a c" (2 of 3 candidate words, 2 of 4 reference words): F1 = 2 * (2/3 * 1/2) / (2/3 + 1/2)
    assert rouge_l("a b c", "a c d e") == pytest.approx(4 / 7)
    assert rouge_l("", "anything") == 0.0
    assert mean_rouge_l(["a b c", "x"], ["a c d e", "x"]) == pytest.approx((4 / 7 + 1) / 2)
    assert tokens("Left 2.5 mm, right.") == ["left", "2.5", "mm", ",", "right", "."]
    with pytest.raises(ValueError, match="one reference per candidate"):
        corpus_bleu(["a"], [])


def test_identical_corpora_score_one_everywhere():
    reports = ["Findings: a 30 mm infarct in the right occipital lobe.", "No focal lesion is identified."]
    assert corpus_bleu(reports, reports) == {n: pytest.approx(1.0) for n in range(1, 5)}
    assert mean_rouge_l(reports, reports) == pytest.approx(1.0)
    assert np.isclose(rouge_l(reports[0], reports[1]), rouge_l(reports[1], reports[0]))
