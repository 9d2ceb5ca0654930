"""C_M for imaging modalities: a timm backbone chosen by name plus a projection head."""

from __future__ import annotations

from pathlib import Path

import attrs
import timm
import torch
from safetensors.torch import load_file
from torch import nn

from medm2g.core.errors import CheckpointError


@attrs.frozen
class ImageEncoderConfig:
    """``backbone`` is any timm model name; ``weights`` an optional local safetensors file
    with the backbone's state dict (never downloaded)."""

    backbone: str
    weights: str | None = None
    dropout: float = 0.0


class ImagePromptEncoder(nn.Module):
    """Maps (B, C, H, W) in [-1, 1] to (B, embed_dim) embeddings in the shared space.

    timm builds the backbone for ``in_chans`` channels directly, so single-channel
    medical images need no copying into three fake RGB channels.
    """

    def __init__(self, config: ImageEncoderConfig, in_channels: int, embed_dim: int):
        super().__init__()
        self.config = config
        self.backbone = timm.create_model(config.backbone, pretrained=False, in_chans=in_channels, num_classes=0)
        if config.weights:
            self._load_backbone(Path(config.weights))
        self.projection = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(self.backbone.num_features, embed_dim))

    def _load_backbone(self, path: Path) -> None:
        if not path.is_file():
            raise CheckpointError(f"{path}: backbone weights file not found")
        try:
            state = load_file(str(path))
        except Exception as error:  # safetensors raises its own error types for corrupt files
            raise CheckpointError(f"{path}: not a readable safetensors file: {error}") from error
        try:
            missing, unexpected = self.backbone.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shape mismatches raise even when not strict
            first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
            raise CheckpointError(f"{path}: weights do not fit timm model {self.config.backbone!r}: {first}") from None
        if missing:
            raise CheckpointError(
                f"{path}: weights do not fit timm model {self.config.backbone!r}: "
                f"{len(missing)} missing tensors (first: {missing[0]})"
            )
        if unexpected:
            raise CheckpointError(f"{path}: {len(unexpected)} tensors not in {self.config.backbone!r} (first: {unexpected[0]})")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection(self.backbone(images))
