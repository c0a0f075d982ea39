"""Scoring generated images against a reference: the method of METHOD.md end to end.

`Scorer` holds the two encoders and the embedding cache; the math is in `recognition`,
`realization` and `aggregation`. Local callers (the CLI, tests, benchmarks) and the gRPC
servicer use the same `Scorer`, so scores do not depend on how they were asked for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from services.common.images import DecodedImage, InvalidImage
from services.scorer import aggregation, realization, recognition
from services.scorer.aggregation import CrtVariant
from services.scorer.cache import EmbeddingCache
from services.scorer.crops import GRID, grid_crops
from services.scorer.encoders import Encoder, embed
from services.scorer.references import Imagery, Reference

StopCheck = Callable[[], bool]


@dataclass(frozen=True)
class ScoreSettings:
    """What a score depends on besides encoders and images. None means the default:
    the reference's imagery, the encoders' calibrated thresholds."""

    imagery: Imagery | None = None
    recognition_threshold: float | None = None
    reuse_threshold: float | None = None
    crt_variant: CrtVariant = CrtVariant.RECOGNIZED_IMAGES

    def __post_init__(self) -> None:
        if self.recognition_threshold is not None:
            recognition.check_threshold(self.recognition_threshold, "recognition threshold")
        if self.reuse_threshold is not None:
            recognition.check_threshold(self.reuse_threshold, "reuse threshold")


@dataclass(frozen=True)
class PreparedReference:
    """A reference's pool for one imagery, embedded by both encoders."""

    reference_id: str
    imagery: Imagery
    kept_images: tuple[str, ...]
    recognition_embeddings: np.ndarray  # (m, D)
    crop_embeddings: np.ndarray  # (m * K, D'), every crop of every kept image


@dataclass(frozen=True)
class ImageScore:
    index: int
    name: str
    recognition_similarity: float
    recognized: bool
    vr: float
    vi: float
    reuse_map: tuple[tuple[int, ...], ...]
    crop_similarity_max: float
    crop_similarity_mean: float
    crop_similarity_p90: float


@dataclass(frozen=True)
class ScoreSummary:
    n_images: int
    n_references_kept: int
    cra: float
    vr: float
    vi: float
    crt: float
    crt_recognized_images: float
    crt_all_images: float
    crt_variant: CrtVariant
    imagery: Imagery
    recognition_encoder: str
    realization_encoder: str
    recognition_threshold: float
    reuse_threshold: float


@dataclass(frozen=True)
class ScoreResult:
    images: list[ImageScore]
    summary: ScoreSummary

    def to_dict(self) -> dict:
        """The CLI's `--json` object (the stable contract of `iconicity score`)."""
        s = self.summary
        return {
            "cra": s.cra,
            "vr": s.vr,
            "vi": s.vi,
            "crt": s.crt,
            "crt_all_images": s.crt_all_images,
            "crt_recognized_images": s.crt_recognized_images,
            "crt_variant": s.crt_variant.value,
            "imagery": s.imagery.value,
            "n_images": s.n_images,
            "n_references_kept": s.n_references_kept,
            "encoders": {"recognition": s.recognition_encoder, "realization": s.realization_encoder},
            "thresholds": {"recognition": s.recognition_threshold, "reuse": s.reuse_threshold},
            "images": [
                {"file": i.name, **{k: v for k, v in asdict(i).items() if k not in ("index", "name")},
                 "reuse_map": [list(row) for row in i.reuse_map]}
                for i in self.images
            ],
        }


@dataclass
class Scorer:
    recognition_encoder: Encoder
    realization_encoder: Encoder
    cache: EmbeddingCache = field(default_factory=EmbeddingCache)
    grid: tuple[int, int] = GRID
    # Images embedded per encoder identity and view; tests read it to show nothing is
    # embedded twice.
    embedded: Counter = field(default_factory=Counter)

    # -- references -------------------------------------------------------------------
    def prepare(self, reference: Reference, imagery: Imagery | None = None, should_stop: StopCheck | None = None) -> PreparedReference:
        imagery = imagery or reference.imagery
        pool = reference.pool(imagery)
        global_rows = [self._cached(self.recognition_encoder, "global", image, should_stop) for image in pool]
        crop_rows = [self._cached(self.realization_encoder, self._crop_view, image, should_stop) for image in pool]
        return PreparedReference(
            reference_id=reference.reference_id,
            imagery=imagery,
            kept_images=tuple(image.name for image in pool),
            recognition_embeddings=np.concatenate(global_rows),
            crop_embeddings=np.concatenate(crop_rows),
        )

    @property
    def _crop_view(self) -> str:
        return f"crops{self.grid[0]}x{self.grid[1]}"

    def _cached(self, encoder: Encoder, view: str, image: DecodedImage, should_stop: StopCheck | None) -> np.ndarray:
        key = EmbeddingCache.key(encoder.identity, view, image.content_hash)
        value = self.cache.get(key)
        if value is None:
            tensor = _as_tensor(image)
            inputs = [tensor] if view == "global" else grid_crops(tensor, self.grid)
            value = self._embed(encoder, view, inputs, should_stop)
            self.cache.put(key, value)
        return value

    def _embed(self, encoder: Encoder, view: str, inputs: Sequence[torch.Tensor], should_stop: StopCheck | None) -> np.ndarray:
        return embed(encoder, inputs, should_stop, on_batch=lambda n: self.embedded.update({(encoder.identity, view): n}))

    # -- generated images ---------------------------------------------------------------
    def thresholds(self, imagery: Imagery, settings: ScoreSettings) -> tuple[float, float]:
        """(tau, tau_reuse): the settings' where given, else the encoders' calibrated ones."""
        calibrated = self.recognition_encoder.thresholds
        tau = settings.recognition_threshold
        if tau is None:
            tau = calibrated.recognition_static if imagery is Imagery.STATIC else calibrated.recognition_dynamic
        tau_reuse = settings.reuse_threshold
        if tau_reuse is None:
            tau_reuse = self.realization_encoder.thresholds.reuse
        return float(tau), float(tau_reuse)

    def score_batch(
        self,
        prepared: PreparedReference,
        images: Sequence[DecodedImage],
        tau: float,
        tau_reuse: float,
        first_index: int = 0,
        should_stop: StopCheck | None = None,
    ) -> list[ImageScore]:
        """Recognition and realization of a batch: one pass of the recognition encoder over
        the images, one of the realization encoder over all their crops."""
        if not images:
            return []
        for image in images:
            check_grid(image, self.grid)
        tensors = [_as_tensor(image) for image in images]
        global_embeddings = self._embed(self.recognition_encoder, "global", tensors, should_stop)
        crops = [crop for tensor in tensors for crop in grid_crops(tensor, self.grid)]
        crop_embeddings = self._embed(self.realization_encoder, self._crop_view, crops, should_stop)
        k = self.grid[0] * self.grid[1]
        similarity = recognition.recognition_similarity(global_embeddings, prepared.recognition_embeddings)
        flags = recognition.recognized(similarity, tau)
        real = realization.realize(crop_embeddings.reshape(len(images), k, -1), prepared.crop_embeddings, tau_reuse, self.grid)
        return [
            ImageScore(
                index=first_index + i,
                name=image.name,
                recognition_similarity=float(similarity[i]),
                recognized=bool(flags[i]),
                vr=float(real.vr[i]),
                vi=float(real.vi[i]),
                reuse_map=tuple(tuple(int(v) for v in row) for row in real.reuse_map[i]),
                crop_similarity_max=float(real.crop_similarity_max[i]),
                crop_similarity_mean=float(real.crop_similarity_mean[i]),
                crop_similarity_p90=float(real.crop_similarity_p90[i]),
            )
            for i, image in enumerate(images)
        ]

    def score_stream(
        self,
        prepared: PreparedReference,
        images: Iterable[DecodedImage],
        settings: ScoreSettings,
        batch_size: int = 32,
        should_stop: StopCheck | None = None,
    ) -> Iterator[ImageScore]:
        """Scores images as they arrive, `batch_size` at a time."""
        tau, tau_reuse = self.thresholds(prepared.imagery, settings)
        pending: list[DecodedImage] = []
        index = 0
        for image in images:
            pending.append(image)
            if len(pending) == batch_size:
                yield from self.score_batch(prepared, pending, tau, tau_reuse, index, should_stop)
                index += len(pending)
                pending = []
        yield from self.score_batch(prepared, pending, tau, tau_reuse, index, should_stop)

    def score(
        self,
        reference: Reference,
        images: Sequence[DecodedImage],
        settings: ScoreSettings = ScoreSettings(),
        batch_size: int = 32,
        should_stop: StopCheck | None = None,
    ) -> ScoreResult:
        if not images:
            raise ValueError("no images to score")
        prepared = self.prepare(reference, settings.imagery, should_stop)
        scores = list(self.score_stream(prepared, images, settings, batch_size, should_stop))
        return ScoreResult(scores, self.summarize(prepared, scores, settings))

    def summarize(self, prepared: PreparedReference, scores: Sequence[ImageScore], settings: ScoreSettings) -> ScoreSummary:
        if not scores:
            raise ValueError("no images to score")
        tau, tau_reuse = self.thresholds(prepared.imagery, settings)
        flags = np.array([s.recognized for s in scores])
        vi = np.array([s.vi for s in scores])
        by_variant = {variant: aggregation.crt(flags, vi, variant) for variant in CrtVariant}
        return ScoreSummary(
            n_images=len(scores),
            n_references_kept=len(prepared.kept_images),
            cra=recognition.cra(flags),
            vr=float(np.mean([s.vr for s in scores])),
            vi=float(vi.mean()),
            crt=by_variant[settings.crt_variant],
            crt_recognized_images=by_variant[CrtVariant.RECOGNIZED_IMAGES],
            crt_all_images=by_variant[CrtVariant.ALL_IMAGES],
            crt_variant=settings.crt_variant,
            imagery=prepared.imagery,
            recognition_encoder=self.recognition_encoder.name,
            realization_encoder=self.realization_encoder.name,
            recognition_threshold=tau,
            reuse_threshold=tau_reuse,
        )


def _as_tensor(image: DecodedImage) -> torch.Tensor:
    """(H, W, 3) uint8 array -> (3, H, W) uint8 tensor sharing its memory."""
    return torch.from_numpy(image.pixels).permute(2, 0, 1)


def check_grid(image: DecodedImage, grid: tuple[int, int] = GRID) -> None:
    """Raises `InvalidImage` for an image with fewer pixels than grid cells on a side."""
    if image.height < grid[0] or image.width < grid[1]:
        raise InvalidImage(
            f"image {image.name!r} is {image.width}x{image.height}, too small for a {grid[0]}x{grid[1]} grid of crops"
        )
