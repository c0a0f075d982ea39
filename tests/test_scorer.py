"""The scoring pipeline (batching, crops as tensors, caching) against a one-image-at-a-time
computation with PIL crops, and the promise that nothing is embedded twice."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from services.common.images import InvalidImage, decode_image
from services.scorer.aggregation import CrtVariant
from services.scorer.cache import EmbeddingCache
from services.scorer.crops import grid_bounds
from services.scorer.encoders import Cancelled, load_encoder
from services.scorer.references import Imagery, Reference
from services.scorer.scoring import Scorer, ScoreSettings


def random_image(seed: int, size=(48, 40)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize(size[::-1], Image.Resampling.BILINEAR))


def as_decoded(pixels: np.ndarray, name: str):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return decode_image(buffer.getvalue(), name)


@pytest.fixture(scope="module")
def encoders():
    return load_encoder("tiny-clip", dtype="float32"), load_encoder("tiny-dinov2", dtype="float32")


def embed_one(encoder, pixels: np.ndarray) -> np.ndarray:
    tensor = torch.from_numpy(np.array(pixels)).permute(2, 0, 1)
    with torch.inference_mode():
        v = encoder.forward(encoder.preprocess(tensor)[None])[0].double().numpy()
    return v / np.linalg.norm(v)


def pil_crops(pixels: np.ndarray) -> list[np.ndarray]:
    image = Image.fromarray(pixels)
    return [np.asarray(image.crop((l, t, r, b))) for t, b, l, r in grid_bounds(*pixels.shape[:2])]


def naive_scores(recognition, realization, references, images, tau, tau_reuse):
    """One image at a time, crops cut with PIL, no batching, no cache."""
    refs = [embed_one(recognition, r) for r in references]
    ref_crops = [embed_one(realization, c) for r in references for c in pil_crops(r)]
    out = []
    for pixels in images:
        s = max(float(embed_one(recognition, pixels) @ r) for r in refs)
        crops = [embed_one(realization, c) for c in pil_crops(pixels)]
        m = [max(float(c @ rc) for rc in ref_crops) for c in crops]
        vr = sum(x > tau_reuse for x in m) / 16
        out.append((s, s > tau, vr, max(m)))
    return out


@pytest.mark.parametrize("imagery", [Imagery.STATIC, Imagery.DYNAMIC])
def test_pipeline_matches_naive_computation(encoders, imagery):
    recognition, realization = encoders
    reference_pixels = [random_image(s) for s in (1, 2, 3)]
    reference = Reference("work", tuple(as_decoded(p, f"{i}.png") for i, p in enumerate(reference_pixels)), imagery)
    generated = [reference_pixels[0], random_image(9, (33, 47)), random_image(10, (64, 64)), reference_pixels[2]]
    scorer = Scorer(recognition, realization)
    settings = ScoreSettings(recognition_threshold=0.9, reuse_threshold=0.9)
    result = scorer.score(reference, [as_decoded(p, f"g{i}.png") for i, p in enumerate(generated)], settings, batch_size=3)

    pool = [reference_pixels[0]] if imagery is Imagery.STATIC else [reference_pixels[i] for i in range(3)
                                                                     if reference.images[i].name in scorer.prepare(reference).kept_images]
    expected = naive_scores(recognition, realization, pool, generated, 0.9, 0.9)
    for got, (s, flag, vr, m_max) in zip(result.images, expected):
        assert got.recognition_similarity == pytest.approx(s, abs=1e-5)
        assert got.recognized == flag
        assert got.vr == pytest.approx(vr)
        assert got.crop_similarity_max == pytest.approx(m_max, abs=1e-5)
    assert [i.index for i in result.images] == [0, 1, 2, 3]
    assert result.summary.n_references_kept == len(pool)
    assert result.images[0].recognition_similarity == pytest.approx(1.0, abs=1e-5)
    assert result.images[0].vr == 1.0


def test_nothing_is_embedded_twice(encoders, tmp_path):
    recognition, realization = encoders
    reference = Reference("work", tuple(as_decoded(random_image(s), f"{s}.png") for s in (1, 2)), Imagery.DYNAMIC)
    images = [as_decoded(random_image(s), f"g{s}.png") for s in range(20, 27)]
    scorer = Scorer(recognition, realization, EmbeddingCache(tmp_path))
    scorer.score(reference, images, batch_size=4)
    kept = scorer.summarize(scorer.prepare(reference), scorer.score(reference, images[:1]).images, ScoreSettings()).n_references_kept
    counts = {view: n for (_, view), n in scorer.embedded.items()}
    # Two scorings: the reference's images once each, the generated images each time.
    assert counts == {"global": kept + 7 + 1, "crops4x4": 16 * (kept + 7 + 1)}

    # A new scorer with the same cache folder embeds no reference image again.
    fresh = Scorer(recognition, realization, EmbeddingCache(tmp_path))
    fresh.prepare(reference)
    assert sum(fresh.embedded.values()) == 0


def test_cache_keys_separate_encoders(tmp_path, encoders):
    recognition, _ = encoders
    reference = Reference("work", (as_decoded(random_image(1), "1.png"),))
    cache = EmbeddingCache(tmp_path)
    a = Scorer(recognition, load_encoder("tiny-dinov2", dtype="float32"), cache).prepare(reference)
    b = Scorer(recognition, load_encoder("tiny-dinov3", dtype="float32"), cache).prepare(reference)
    assert a.crop_embeddings.shape[0] == b.crop_embeddings.shape[0] == 16
    assert not np.allclose(a.crop_embeddings, b.crop_embeddings)


def test_torn_cache_file_is_recomputed(tmp_path, encoders):
    reference = Reference("work", (as_decoded(random_image(1), "1.png"),))
    first = Scorer(*encoders, EmbeddingCache(tmp_path)).prepare(reference)
    for path in tmp_path.rglob("*.npy"):
        path.write_bytes(b"torn")
    again = Scorer(*encoders, EmbeddingCache(tmp_path))
    second = again.prepare(reference)
    np.testing.assert_allclose(first.crop_embeddings, second.crop_embeddings)
    assert sum(again.embedded.values()) == 17


def test_calibrated_thresholds_follow_imagery(encoders):
    scorer = Scorer(*encoders)
    reference = Reference("work", (as_decoded(random_image(1), "1.png"), as_decoded(random_image(2), "2.png")))
    images = [as_decoded(random_image(3), "g.png")]
    static = scorer.score(reference, images, ScoreSettings(imagery=Imagery.STATIC)).summary
    dynamic = scorer.score(reference, images, ScoreSettings(imagery=Imagery.DYNAMIC)).summary
    assert (static.recognition_threshold, dynamic.recognition_threshold) == (0.70, 0.75)
    assert static.reuse_threshold == 0.6
    override = scorer.score(reference, images, ScoreSettings(recognition_threshold=0.3, crt_variant=CrtVariant.ALL_IMAGES)).summary
    assert override.recognition_threshold == 0.3 and override.crt == override.crt_all_images


def test_bad_requests(encoders):
    scorer = Scorer(*encoders)
    reference = Reference("work", (as_decoded(random_image(1), "1.png"),))
    with pytest.raises(ValueError, match="no images to score"):
        scorer.score(reference, [])
    with pytest.raises(InvalidImage, match=r"image 'tiny.png' is 3x2, too small for a 4x4 grid"):
        scorer.score(reference, [as_decoded(random_image(1, (2, 3)), "tiny.png")])
    with pytest.raises(ValueError, match=r"reuse threshold must lie in \(0, 1\)"):
        ScoreSettings(reuse_threshold=1.0)


def test_should_stop_ends_the_work(encoders):
    scorer = Scorer(*encoders)
    reference = Reference("work", (as_decoded(random_image(1), "1.png"),))
    prepared = scorer.prepare(reference)
    images = [as_decoded(random_image(s), f"{s}.png") for s in range(40)]
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        list(scorer.score_stream(prepared, images, ScoreSettings(), batch_size=8, should_stop=should_stop))
    assert sum(n for (_, view), n in scorer.embedded.items() if view == "global") < 40
