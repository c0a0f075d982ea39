"""The one small interface every encoder implements, and the batched embedding loop."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


class EncoderUnavailable(RuntimeError):
    """The encoder's weights are not on this machine; the message names them."""


class UnknownEncoder(KeyError):
    """No encoder of that name."""

    def __str__(self) -> str:  # KeyError quotes its argument; ours is a sentence
        return str(self.args[0])


@dataclass(frozen=True)
class Thresholds:
    """Calibrated thresholds: recognition for one / several reference images, and reuse."""

    recognition_static: float
    recognition_dynamic: float
    reuse: float


# METHOD.md's thresholds, set for CLIP ViT-B/16 (recognition) and DINO ViT-B (reuse).
PAPER_THRESHOLDS = Thresholds(recognition_static=0.70, recognition_dynamic=0.75, reuse=0.6)


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to `resize`, centre-crop `crop` x `crop` (or squash to
    `crop` x `crop` when `resize` is None), normalise with `mean` and `std`."""

    crop: int
    resize: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mode: str = "bicubic"

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) uint8 -> (3, crop, crop) float32, the way the model's processor does it,
        but on tensors so that crops never round-trip through PIL."""
        x = image.unsqueeze(0).float()
        height, width = image.shape[-2:]
        if self.resize is None:
            size = (self.crop, self.crop)
        else:
            # As transformers' processors: the shorter side to `resize`, the longer one
            # truncated, not rounded (rounding shifts the centre crop by a pixel).
            short, long = sorted((height, width))
            long_side = max(self.crop, int(self.resize * long / short))
            size = (self.resize, long_side) if height <= width else (long_side, self.resize)
        x = F.interpolate(x, size=size, mode=self.mode, align_corners=False, antialias=True)
        top, left = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        x = x[..., top : top + self.crop, left : left + self.crop].clamp_(0, 255) / 255.0
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((x - mean) / std)[0]


class Encoder(ABC):
    """Maps images to L2-normalised embeddings.

    `identity` names everything an embedding depends on (weights, preprocessing, dtype), so
    that cached embeddings are only reused when they would come out the same.
    """

    name: str
    description: str = ""
    thresholds: Thresholds = PAPER_THRESHOLDS
    weights: str = ""
    batch_size: int = 32

    @property
    @abstractmethod
    def identity(self) -> str: ...

    @abstractmethod
    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) uint8 -> the model's input for one image."""

    @abstractmethod
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """A stacked batch of preprocessed images -> (B, D) embeddings (not yet normalised)."""

    def autocast(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


def embed(
    encoder: Encoder,
    images: Sequence[torch.Tensor],
    should_stop: Callable[[], bool] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Embeds (3, H, W) uint8 tensors in batches of `encoder.batch_size`; returns (N, D)
    float32 rows of unit length. `should_stop` is asked between batches, so that a cancelled
    request stops spending compute."""
    outputs = []
    for start in range(0, len(images), encoder.batch_size):
        if should_stop is not None and should_stop():
            raise Cancelled("embedding stopped: the request was cancelled")
        chunk = images[start : start + encoder.batch_size]
        batch = torch.stack([encoder.preprocess(image) for image in chunk])
        with torch.inference_mode(), encoder.autocast():
            features = encoder.forward(batch)
        outputs.append(F.normalize(features.float(), dim=-1))
        if on_batch is not None:
            on_batch(len(chunk))
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outputs).numpy()


class Cancelled(RuntimeError):
    """The caller no longer wants the result."""
