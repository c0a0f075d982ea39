"""`classical`: an offline encoder from hand-crafted descriptors (placeholder, being calibrated)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from services.scorer.encoders.base import Encoder, Thresholds

CLASSICAL_DESCRIPTION = "hand-crafted colour and gradient descriptors (kornia); offline, no weights"
THRESHOLDS_FILE = Path(__file__).with_name("classical.json")


def load_classical_thresholds() -> Thresholds:
    if THRESHOLDS_FILE.exists():
        data = json.loads(THRESHOLDS_FILE.read_text())["thresholds"]
        return Thresholds(**data)
    return Thresholds(0.7, 0.75, 0.6)


class ClassicalEncoder(Encoder):
    name = "classical"
    description = CLASSICAL_DESCRIPTION
    weights = "offline (hand-crafted descriptors)"
    batch_size = 64

    def __init__(self) -> None:
        self.thresholds = load_classical_thresholds()

    @property
    def identity(self) -> str:
        return "classical:v0"

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        x = image.unsqueeze(0).float() / 255.0
        return F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)[0]

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        gray = batch.mean(dim=1, keepdim=True)
        thumb = F.adaptive_avg_pool2d(gray, 16).flatten(1)
        thumb = thumb - thumb.mean(dim=1, keepdim=True)
        return thumb


def load_classical_encoder(device: str | None = None) -> ClassicalEncoder:
    return ClassicalEncoder()
