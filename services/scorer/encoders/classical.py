"""`classical`: an offline image encoder from hand-crafted colour, layout and gradient
descriptors (kornia), for machines without CLIP or DINO weights.

An image (a whole image or one of its 4x4 crops) is squashed to 64 x 64 and described by a
dozen blocks: where light, dark and colours are (layouts), how edges run (orientation
histograms), its texture at three scales, and its palette (histograms in Lab). Each block is
centred on a *background*, the mean block over a set of reference images and their crops, then
L2-normalised and weighted, so that the cosine of two embeddings is the weighted mean of their
block correlations: unrelated paintings score near 0, a work and its copies near 1. The background
plays the part that training plays for a neural encoder; `fit_background` computes it and
classical.json (beside this file) ships it together with the thresholds calibrated for it
(`services.scorer.calibration`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from services.scorer.crops import GRID, grid_crops
from services.scorer.encoders.base import Encoder, Thresholds

CLASSICAL_DESCRIPTION = "hand-crafted colour, layout and gradient descriptors (kornia); offline, no weights"
THRESHOLDS_FILE = Path(__file__).with_name("classical.json")
# Bump whenever a block, its parameters or the input size change: it is part of `identity`,
# so cached embeddings and calibrated thresholds of an older descriptor are never reused.
DESCRIPTOR_VERSION = "classical-v1"
SIZE = 64
# Used where no calibration file exists (a fresh checkout before `iconicity calibrate`).
UNCALIBRATED_THRESHOLDS = Thresholds(recognition_static=0.7, recognition_dynamic=0.75, reuse=0.6)

# Block -> weight. The cosine of two embeddings is the weighted mean of the block cosines.
# Layouts carry recognition of whole images; palettes and texture, being orderless, carry the
# reuse of crops, which copies shift and rescale. The weights come from a small search on
# replicas (seeds other than the calibration's) and other works of ../shared/data/references,
# rounded; within a factor of two they all separate about as well.
BLOCK_WEIGHTS: dict[str, float] = {
    "lightness_layout": 2.0, "lightness_layout_soft": 2.0, "lightness_layout_coarse": 1.0, "colour_layout": 1.0,
    "gradient_layout": 1.0, "gradient_layout_coarse": 1.0, "texture_energy": 1.0, "texture_balance": 1.0,
    "palette": 2.0, "palette_quadrants": 2.0, "hue": 1.0, "lightness": 2.0,
}
BLOCKS = tuple(BLOCK_WEIGHTS)

# Lab channels are divided by 100. Floors keep flat channels (a grey film still's a and b)
# from turning noise into structure when standardised.
_LAB_STD_FLOOR = (0.02, 0.01, 0.01)
# Palette bin ranges (in Lab / 100) span the colours of paintings and photographs; values
# outside fall into the end bins.
_PALETTE_BINS = ((0.0, 1.0, 4), (-0.2, 0.4, 5), (-0.3, 0.6, 5))
# Four orientations for layouts (a few degrees of rotation barely move them), eight for texture.
_LAYOUT_ORIENTATIONS = 4
_TEXTURE_ORIENTATIONS = 8
_TEXTURE_SCALES = (1, 2, 4)
_HUE_BINS = 12
_LIGHTNESS_BINS = 8


# -- thresholds and background on disk ---------------------------------------------------------
def _read_file(path: Path = THRESHOLDS_FILE) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def load_classical_thresholds(path: Path = THRESHOLDS_FILE) -> Thresholds:
    """The calibrated thresholds from classical.json, or `UNCALIBRATED_THRESHOLDS`."""
    data = _read_file(path).get("thresholds")
    return Thresholds(**data) if data else UNCALIBRATED_THRESHOLDS


@dataclass(frozen=True)
class Background:
    """The mean of each raw block over a set of images and their crops: what "ordinary"
    looks like, subtracted before comparing, so that only what is specific to an image counts."""

    means: Mapping[str, tuple[float, ...]]
    source: Mapping[str, Any]

    @property
    def digest(self) -> str:
        values = json.dumps({name: list(self.means[name]) for name in sorted(self.means)})
        return hashlib.sha256(values.encode()).hexdigest()[:16]

    def tensor(self, name: str) -> torch.Tensor:
        return torch.tensor(self.means[name], dtype=torch.float32)

    def to_json(self) -> dict[str, Any]:
        return {"descriptor": DESCRIPTOR_VERSION, "digest": self.digest, "source": dict(self.source),
                "means": {name: list(values) for name, values in self.means.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Background:
        if data.get("descriptor") != DESCRIPTOR_VERSION:
            raise ValueError(
                f"background was fitted for descriptor {data.get('descriptor')!r}, this is {DESCRIPTOR_VERSION!r}; "
                "run `iconicity calibrate --encoder classical` again")
        return cls({name: tuple(float(v) for v in values) for name, values in data["means"].items()},
                   dict(data.get("source", {})))


def load_background(path: Path = THRESHOLDS_FILE) -> Background | None:
    data = _read_file(path).get("background")
    return Background.from_json(data) if data else None


# -- the descriptor ------------------------------------------------------------------------------
# sRGB -> linear light for every 8-bit value, and linear RGB -> XYZ scaled by the D65 white:
# the CIE Lab conversion, done on the 64 x 64 thumbnail where it costs a table look-up.
_LINEAR = np.where(
    np.arange(256) / 255.0 > 0.04045, ((np.arange(256) / 255.0 + 0.055) / 1.055) ** 2.4, np.arange(256) / 255.0 / 12.92,
).astype(np.float32)
_RGB_TO_XYZ_WHITE = (np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                               [0.019334, 0.119193, 0.950227]]) / np.array([[0.95047], [1.0], [1.08883]])).T.astype(np.float32)


def preprocess(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) uint8 RGB -> (3, 64, 64) float32 CIE Lab / 100 (L in [0, 1], a and b about
    [-1, 1]). Box-filtered, so that every source pixel counts and a crop and its copy average
    the same way; Pillow resizes the uint8 pixels several times faster than torch does on the
    strided views the scorer's crops are.

    >>> lab = preprocess(torch.full((3, 100, 50), 255, dtype=torch.uint8))
    >>> tuple(lab.shape), round(float(lab[0].mean()), 3), round(float(lab[1:].abs().max()), 3)
    ((3, 64, 64), 1.0, 0.0)
    """
    if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
        raise ValueError(f"expected a (3, H, W) uint8 tensor, got {tuple(image.shape)} {image.dtype}")
    pixels = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
    small = np.asarray(Image.fromarray(pixels).resize((SIZE, SIZE), Image.Resampling.BOX))
    return torch.from_numpy(_srgb_to_lab(small)).permute(2, 0, 1)


def _srgb_to_lab(pixels: np.ndarray) -> np.ndarray:
    xyz = _LINEAR[pixels] @ _RGB_TO_XYZ_WHITE
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    lab = np.stack([1.16 * f[..., 1] - 0.16, 5.0 * (f[..., 0] - f[..., 1]), 2.0 * (f[..., 1] - f[..., 2])], axis=-1)
    return lab.astype(np.float32)


def raw_blocks(lab: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, 3, 64, 64) Lab / 100 (as `preprocess` makes it) -> each block as (B, d), before
    centring."""
    lightness = lab[:, :1]
    blocks = _layout_blocks(lab)
    blocks.update(_gradient_blocks(lightness))
    blocks.update(_texture_blocks(lightness))
    # Colour statistics need no more than 32 x 32 box-averaged pixels.
    blocks.update(_colour_blocks(F.avg_pool2d(lab, 2)))
    return blocks


def _standardised_layout(channels: torch.Tensor, grid: int, floors: tuple[float, ...]) -> torch.Tensor:
    """Channel means on a grid x grid layout, standardised per channel: where it is lighter or
    redder than the image's own average, whatever the exposure or saturation."""
    cells = F.adaptive_avg_pool2d(channels, grid).flatten(2)
    cells = cells - cells.mean(dim=2, keepdim=True)
    floor = torch.tensor(floors, dtype=cells.dtype).view(1, -1, 1)
    return (cells / cells.std(dim=2, keepdim=True).clamp_min(floor)).flatten(1)


def _layout_blocks(lab: torch.Tensor) -> dict[str, torch.Tensor]:
    lightness = lab[:, :1]
    # A blurred copy (sigma: half an 8 x 8 cell) tolerates the shifts that crops and small
    # rotations cause; blurring the 16 x 16 means is as good and far cheaper than the pixels.
    soft = kornia.filters.gaussian_blur2d(F.adaptive_avg_pool2d(lightness, 16), (5, 5), (1.0, 1.0))
    floor = _LAB_STD_FLOOR[:1]
    return {
        "lightness_layout": _standardised_layout(lightness, 8, floor),
        "lightness_layout_soft": _standardised_layout(soft, 8, floor),
        "lightness_layout_coarse": _standardised_layout(lightness, 4, floor),
        "colour_layout": _standardised_layout(lab[:, 1:], 4, _LAB_STD_FLOOR[1:]),
    }


def _triangular_weights(position: torch.Tensor, bins: int, circular: bool) -> torch.Tensor:
    """Soft (linear) assignment of positions in [0, bins) (or [0, bins - 1] when not circular)
    to bins: (...) -> (..., bins), each row summing to 1, so histograms change smoothly."""
    centres = torch.arange(bins, dtype=position.dtype)
    distance = (position.unsqueeze(-1) - centres).abs()
    if circular:
        distance = torch.minimum(distance, bins - distance)
    return (1.0 - distance).clamp_min(0.0)


def _orientation_maps(lightness: torch.Tensor, bins: int) -> torch.Tensor:
    """Gradient magnitude softly split over `bins` unsigned orientations: (B, bins, H, W)."""
    gradient = kornia.filters.spatial_gradient(lightness, mode="sobel", normalized=True)
    gx, gy = gradient[:, 0, 0], gradient[:, 0, 1]
    magnitude = torch.sqrt(gx * gx + gy * gy + 1e-12)
    position = torch.atan2(gy, gx).remainder(math.pi) * (bins / math.pi)
    weights = _triangular_weights(position, bins, circular=True) * magnitude.unsqueeze(-1)
    return weights.permute(0, 3, 1, 2)


def _gradient_blocks(lightness: torch.Tensor) -> dict[str, torch.Tensor]:
    """Where edges of each orientation are, on 4 x 4 and 2 x 2 layouts (a coarse GIST)."""
    orientations = _orientation_maps(lightness, _LAYOUT_ORIENTATIONS)
    blocks = {}
    for name, grid in (("gradient_layout", 4), ("gradient_layout_coarse", 2)):
        cells = F.adaptive_avg_pool2d(orientations, grid).flatten(2)  # (B, bins, cells)
        # Relative to the image's mean edge energy: contrast changes do not move the block.
        cells = cells / cells.sum(dim=1, keepdim=True).mean(dim=2, keepdim=True).clamp_min(1e-3)
        blocks[name] = cells.flatten(1).sqrt()
    return blocks


def _texture_blocks(lightness: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean edge energy per orientation at three scales of a pyramid (64, 32 and 16 pixels
    across): brush strokes, hatching, flat areas. As log energies relative to their mean (so
    that overall contrast does not count) and as shares of the total."""
    energy = torch.cat([
        _orientation_maps(F.avg_pool2d(lightness, factor) if factor > 1 else lightness, _TEXTURE_ORIENTATIONS).mean(dim=(2, 3))
        for factor in _TEXTURE_SCALES
    ], dim=1)
    log_energy = torch.log(energy + 1e-3)
    balance = energy / energy.sum(dim=1, keepdim=True).clamp_min(1e-4)
    return {"texture_energy": log_energy - log_energy.mean(dim=1, keepdim=True), "texture_balance": balance.sqrt()}


def _histogram_position(values: torch.Tensor, low: float, high: float, bins: int) -> torch.Tensor:
    return ((values - low) / (high - low)).clamp(0.0, 1.0) * (bins - 1)


def _palette(pixels: torch.Tensor) -> torch.Tensor:
    """Joint soft Lab histogram of (B, 3, N) pixels, as one batched product (B, N, 4*5) x (B, N, 5)."""
    per_channel = [
        _triangular_weights(_histogram_position(channel, low, high, bins), bins, circular=False)
        for channel, (low, high, bins) in zip(pixels.unbind(dim=1), _PALETTE_BINS)
    ]
    lightness_a = (per_channel[0].unsqueeze(-1) * per_channel[1].unsqueeze(-2)).flatten(2)
    return torch.bmm(lightness_a.transpose(1, 2), per_channel[2]).flatten(1) / pixels.shape[2]


def _colour_blocks(lab: torch.Tensor) -> dict[str, torch.Tensor]:
    pixels = lab.flatten(2)  # (B, 3, N)
    half = lab.shape[-1] // 2
    quadrants = [lab[..., top : top + half, left : left + half].flatten(2) for top in (0, half) for left in (0, half)]
    a, b = pixels[:, 1], pixels[:, 2]
    chroma = torch.sqrt(a * a + b * b + 1e-12)
    hue_position = (torch.atan2(b, a) + math.pi) * (_HUE_BINS / (2 * math.pi))
    hue = (_triangular_weights(hue_position, _HUE_BINS, circular=True) * chroma.unsqueeze(-1)).mean(dim=1)
    light = _triangular_weights(_histogram_position(pixels[:, 0], 0.0, 1.0, _LIGHTNESS_BINS), _LIGHTNESS_BINS, False)
    # Square roots (Hellinger): a few dominant colours should not drown the rest.
    return {
        "palette": _palette(pixels).sqrt(),
        "palette_quadrants": torch.cat([_palette(q) for q in quadrants], dim=1).sqrt(),
        "hue": hue.sqrt(),
        "lightness": light.mean(dim=1).sqrt(),
    }


_THREADS_LOCK = threading.Lock()


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Runs torch on one thread. The descriptors are a few dozen passes over small tensors,
    where fork/join costs more than a second core gives back (about 1.3 ms per image on one
    thread against 9 ms on two busy cores, measured), and one thread fixes the order of every
    reduction, so that embeddings do not depend on the machine's core count."""
    # The thread count is process-wide: the lock keeps concurrent servicer threads from
    # interleaving save and restore (which could leave the process on one thread for good).
    with _THREADS_LOCK:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def combine(blocks: Mapping[str, torch.Tensor], background: Background | None) -> torch.Tensor:
    """Centres each block on the background, L2-normalises it and concatenates them, each
    scaled by the square root of its share of the weights, so that the cosine of two
    embeddings is the weighted mean of their block cosines."""
    total = sum(BLOCK_WEIGHTS.values())
    parts = []
    for name, weight in BLOCK_WEIGHTS.items():
        block = blocks[name]
        if background is not None:
            block = block - background.tensor(name)
        parts.append(F.normalize(block, dim=1, eps=1e-8) * math.sqrt(weight / total))
    return torch.cat(parts, dim=1)


# -- the encoder ---------------------------------------------------------------------------------
class ClassicalEncoder(Encoder):
    """Hand-crafted descriptors centred on a background; no weights, deterministic, CPU.

    >>> from services.scorer.encoders.base import embed
    >>> encoder = ClassicalEncoder(background=None)
    >>> image = torch.randint(0, 256, (3, 80, 120), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    >>> e = embed(encoder, [image, image])
    >>> e.shape, round(float(e[0] @ e[1]), 4)
    ((2, 824), 1.0)
    """

    name = "classical"
    description = CLASSICAL_DESCRIPTION
    weights = "offline (hand-crafted descriptors)"
    batch_size = 64

    def __init__(self, background: Background | None, thresholds: Thresholds = UNCALIBRATED_THRESHOLDS) -> None:
        self.background = background
        self.thresholds = thresholds

    @property
    def identity(self) -> str:
        background = self.background.digest if self.background is not None else "none"
        return f"classical:{DESCRIPTOR_VERSION}:size{SIZE}:background-{background}"

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        return preprocess(image)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        with single_threaded():
            return combine(raw_blocks(batch), self.background)


def fit_background(images: Iterable[np.ndarray], source: Mapping[str, Any] | None = None,
                   grid: tuple[int, int] = GRID, batch_size: int = 64) -> Background:
    """The mean raw blocks over `images` ((H, W, 3) uint8) and their grid crops: the two
    views the scorer embeds.

    >>> rng = np.random.default_rng(0)
    >>> background = fit_background([rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)])
    >>> sorted(background.means) == sorted(BLOCKS)
    True
    """
    views = []
    for pixels in images:
        tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
        views.extend([tensor, *grid_crops(tensor, grid)])
    if not views:
        raise ValueError("a background needs at least one image")
    sums: dict[str, torch.Tensor] = {}
    for start in range(0, len(views), batch_size):
        batch = torch.stack([preprocess(view) for view in views[start : start + batch_size]])
        with torch.inference_mode(), single_threaded():
            for name, block in raw_blocks(batch).items():
                sums[name] = sums.get(name, 0) + block.double().sum(dim=0)
    means = {name: tuple(float(v) for v in (total / len(views)).float()) for name, total in sums.items()}
    return Background(means, {**(source or {}), "views": len(views), "grid": list(grid)})


def load_classical_encoder(device: str | None = None, path: Path = THRESHOLDS_FILE) -> ClassicalEncoder:
    """The encoder with the background and thresholds shipped in classical.json. It runs on
    the CPU whatever `device` says: the descriptors are cheap and exactly reproducible there."""
    return ClassicalEncoder(load_background(path), load_classical_thresholds(path))

