"""Encoders by name: real classes loaded from a weights folder, clear errors when weights are
missing, tiny random ones that are reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from services.scorer.encoders import (
    EncoderUnavailable,
    UnknownEncoder,
    default_encoders,
    describe_encoders,
    embed,
    load_encoder,
    weights_folder,
)
from services.scorer.encoders.transformer import SPECS, resolve_dtype


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def image(seed: int, size=(40, 50)) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, size=(3, *size), dtype=np.uint8))


def test_missing_weights_name_the_weights(empty_hf_cache):
    with pytest.raises(EncoderUnavailable, match=r"encoder 'clip-vit-b-16' needs the weights 'openai/clip-vit-base-patch16'"):
        load_encoder("clip-vit-b-16")
    with pytest.raises(EncoderUnavailable, match=r"'facebook/dinov2-base', which are not in folder"):
        load_encoder("dinov2-vitb14", weights=empty_hf_cache / "nowhere")


def test_default_encoders_fall_back_to_classical(empty_hf_cache):
    assert default_encoders() == ("classical", "classical")
    infos = {info.name: info for info in describe_encoders()}
    assert not infos["clip-vit-b-16"].available and infos["classical"].available
    assert infos["clip-vit-b-16"].thresholds.recognition_static == 0.70


@pytest.mark.parametrize("name", ["clip-vit-b-16", "dinov2-vitb14", "dinov3-vitb16"])
def test_real_class_loads_from_weights_folder(tmp_path, empty_hf_cache, name):
    spec = SPECS[name]
    # A small model of the real class, at the real input size, saved as `hf download` would.
    small = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    config = getattr(transformers, spec.config_class)(**{**spec.random_config, **small})
    torch.manual_seed(0)
    model = getattr(transformers, spec.model_class)(config)
    folder = tmp_path / "weights" / name
    model.save_pretrained(folder)

    assert weights_folder(name, tmp_path / "weights") == folder
    assert default_encoders(tmp_path / "weights")[0 if name.startswith("clip") else 1] == name
    encoder = load_encoder(name, weights=folder, dtype="float32")
    vectors = embed(encoder, [image(1), image(2)])
    with torch.inference_mode():
        direct = getattr(model.eval()(pixel_values=torch.stack([encoder.preprocess(image(1))])), spec.output)
    np.testing.assert_allclose(vectors[0], (direct / direct.norm())[0].numpy(), atol=1e-5)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_tiny_encoders_are_reproducible_and_identified():
    a, b = load_encoder("tiny-clip", dtype="float32"), load_encoder("tiny-clip", dtype="float32")
    assert a.identity == b.identity
    np.testing.assert_array_equal(embed(a, [image(3)]), embed(b, [image(3)]))
    assert load_encoder("tiny-clip", dtype="bfloat16").identity != a.identity


def test_unknown_encoder_lists_known_ones():
    with pytest.raises(UnknownEncoder, match=r"unknown encoder 'nope'; known encoders: classical, clip-vit-b-16"):
        load_encoder("nope")


def test_random_init_gives_the_real_architecture():
    encoder = load_encoder("clip-vit-b-16", random_init=True, dtype="float32")
    assert encoder.weights == "random init (seed 0)"
    assert embed(encoder, [image(1)]).shape == (1, 512)


def test_dtype_resolution():
    cpu = torch.device("cpu")
    assert resolve_dtype("float32", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    flags = open("/proc/cpuinfo").read()
    expected = torch.bfloat16 if ("avx512_bf16" in flags or "amx_bf16" in flags) else torch.float32
    assert resolve_dtype("auto", cpu) == expected


def test_preprocessing_matches_the_processor_geometry():
    # CLIP: shorter side to 224, centre crop 224; the output is always the model's input size.
    clip = load_encoder("clip-vit-b-16", random_init=True)
    assert tuple(clip.preprocess(image(1, (100, 300))).shape) == (3, 224, 224)
    assert tuple(clip.preprocess(image(1, (7, 5))).shape) == (3, 224, 224)


@pytest.mark.parametrize("name", ["clip-vit-b-16", "dinov2-vitb14"])
@pytest.mark.parametrize("size", [(480, 720), (301, 200), (224, 224)])
def test_tensor_preprocessing_matches_transformers_processor(name, size):
    """Crops are prepared on tensors, not through PIL; they must still match what the
    model's own image processor feeds it (up to resampling rounding)."""
    from PIL import Image

    spec = SPECS[name]
    p = spec.preprocessing
    processor = (transformers.CLIPImageProcessorPil() if name.startswith("clip") else transformers.BitImageProcessorPil(
        size={"shortest_edge": p.resize}, crop_size={"height": p.crop, "width": p.crop},
        image_mean=list(p.mean), image_std=list(p.std)))
    rng = np.random.default_rng(0)
    pixels = np.asarray(Image.fromarray(rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)).resize(size[::-1], Image.Resampling.BILINEAR))
    expected = processor(images=Image.fromarray(pixels), return_tensors="pt")["pixel_values"][0]
    ours = p(torch.from_numpy(pixels.copy()).permute(2, 0, 1))
    assert ours.shape == expected.shape
    assert (ours - expected).abs().mean() < 0.01
    assert (ours - expected).abs().max() < 0.06
