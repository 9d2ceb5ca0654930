"""PSNR, SSIM and MS-SSIM between generated and ground-truth images in model space.

Images are (B, C, H, W) in [-1, 1], so the data range is 2. SSIM follows Wang et al.
(2004): an 11-tap Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, population
(co)variances, the mean of the SSIM map over the valid (unpadded) region, channels
averaged. MS-SSIM follows Wang et al. (2003) with its five scale weights; an image too
small for five scales (the 64x64 CPU grid allows three: 64, 32, 16 keep a full window)
uses as many scales as fit, with the weights of those scales renormalised to sum to
one. Every score is per image, so callers can average, bootstrap or tabulate them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DATA_RANGE = 2.0
"""Model space spans [-1, 1]."""
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K = (0.01, 0.03)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _check(prediction: torch.Tensor, target: torch.Tensor) -> None:
    if prediction.shape != target.shape or prediction.ndim != 4:
        raise ValueError(f"expected two (B, C, H, W) batches of one shape, got {tuple(prediction.shape)} "
                         f"and {tuple(target.shape)}")


def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float = DATA_RANGE) -> torch.Tensor:
    """(B,) peak signal-to-noise ratio in dB: 10 log10(range^2 / MSE); inf for identical images."""
    _check(prediction, target)
    mse = (prediction.double() - target.double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(data_range**2 / mse)).float()


def _gaussian_window(size: int, sigma: float, channels: int, dtype) -> torch.Tensor:
    coordinates = torch.arange(size, dtype=dtype) - (size - 1) / 2
    taps = torch.exp(-coordinates**2 / (2 * sigma**2))
    taps = taps / taps.sum()
    return (taps[:, None] * taps[None, :]).expand(channels, 1, size, size).contiguous()


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) mean SSIM and mean contrast-structure term over the valid region."""
    channels = x.shape[1]
    window = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA, channels, x.dtype).to(x.device)

    def blur(image: torch.Tensor) -> torch.Tensor:
        return F.conv2d(image, window, groups=channels)

    c1, c2 = (SSIM_K[0] * data_range) ** 2, (SSIM_K[1] * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    covariance = blur(x * y) - mu_x * mu_y
    contrast_structure = (2 * covariance + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (luminance * contrast_structure).flatten(1).mean(1), contrast_structure.flatten(1).mean(1)


def ssim(prediction: torch.Tensor, target: torch.Tensor, data_range: float = DATA_RANGE) -> torch.Tensor:
    """(B,) structural similarity in [-1, 1]; 1 for identical images."""
    _check(prediction, target)
    if min(prediction.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {tuple(prediction.shape[-2:])}")
    return _ssim_terms(prediction.double(), target.double(), data_range)[0].float()


def ms_ssim_scales(height: int, width: int) -> int:
    """How many of the five scales keep a full SSIM window at the coarsest one."""
    scales = 0
    while scales < len(MS_SSIM_WEIGHTS) and min(height, width) // 2**scales >= SSIM_WINDOW:
        scales += 1
    return scales


def ms_ssim(prediction: torch.Tensor, target: torch.Tensor, data_range: float = DATA_RANGE) -> torch.Tensor:
    """(B,) multi-scale SSIM: prod_j cs_j^w_j over the finer scales times ssim^w_M at the coarsest.

    Negative contrast-structure terms are clamped at zero (as common implementations do),
    since a fractional power of a negative number is undefined.
    """
    _check(prediction, target)
    scales = ms_ssim_scales(*prediction.shape[-2:])
    if scales == 0:
        raise ValueError(f"MS-SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {tuple(prediction.shape[-2:])}")
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float64)
    weights = weights / weights.sum()
    x, y = prediction.double(), target.double()
    result = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
    for scale in range(scales):
        full, contrast_structure = _ssim_terms(x, y, data_range)
        term = full if scale == scales - 1 else contrast_structure
        result = result * term.clamp(min=0) ** weights[scale]
        if scale < scales - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return result.float()
