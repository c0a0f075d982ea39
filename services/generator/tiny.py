"""Tiny diffusers pipelines of the real classes, built offline from code.

`tiny-sd` is a `StableDiffusionPipeline` (UNet2DConditionModel, AutoencoderKL, CLIPTextModel,
a byte-level CLIP tokenizer, PNDM scheduler) and `tiny-flux` a `FluxPipeline`
(FluxTransformer2DModel, AutoencoderKL, CLIPTextModel, T5EncoderModel, a character-level T5
tokenizer, FlowMatchEulerDiscreteScheduler). Weights are random but fixed by seeds, so the same
code builds the same pipeline on any machine; each is saved once to
`<root>/<name>` (root: the argument, else `$ICONICITY_MODELS`, else
`~/.cache/iconicity/models`) and reused. They make real images (noise) of 64x64 in 4 steps in
well under a second on a CPU: enough to test serving, batching and determinism end to end.

>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> path = ensure_tiny_pipeline("tiny-sd", root)
>>> sorted(p.name for p in path.iterdir() if p.is_dir())
['scheduler', 'text_encoder', 'tokenizer', 'unet', 'vae']
>>> ensure_tiny_pipeline("tiny-sd", root) == path  # reused, not rebuilt
True
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Bump when a builder below changes what it builds: a folder of another version is rebuilt.
TINY_VERSION = 1
_MARKER = "iconicity-tiny.json"
_SEED = 0


def models_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Where tiny pipelines are kept: `root`, else `$ICONICITY_MODELS`, else
    `~/.cache/iconicity/models`."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("ICONICITY_MODELS")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "iconicity" / "models"


def _byte_level_vocab() -> list[str]:
    """GPT-2/CLIP byte-to-unicode alphabet: 256 printable stand-ins, one per byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def _clip_tokenizer(max_length: int):
    """A CLIP BPE tokenizer with the byte alphabet and no merges: one token per character
    (514 tokens: 256 bytes, 256 word-final bytes, start and end of text)."""
    from transformers import CLIPTokenizer

    alphabet = _byte_level_vocab()
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({c + "</w>": i + 256 for i, c in enumerate(alphabet)})
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    with tempfile.TemporaryDirectory() as tmp:
        # transformers 5 ignores vocab_file/merges_file in the constructor: go through a folder.
        Path(tmp, "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        Path(tmp, "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=max_length)
    return tokenizer


def _t5_tokenizer(max_length: int):
    """A T5 (Unigram) tokenizer over printable ASCII, each character alone or word-initial."""
    from transformers import T5Tokenizer

    pieces = [chr(c) for c in range(ord("!"), ord("~") + 1)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + p, -1.0) for p in pieces] + [(p, -1.5) for p in pieces]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)


def _clip_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=514, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=32, bos_token_id=512, eos_token_id=513, pad_token_id=513,
        layer_norm_eps=1e-5, hidden_act="gelu",
    )
    return CLIPTextModel(config).eval()


def _vae(latent_channels: int, **kwargs: Any):
    """An 8x AutoencoderKL (four blocks, like the real ones) with tiny channels."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=64, **kwargs,
    ).eval()


def build_tiny_sd():
    """A `StableDiffusionPipeline` of tiny real modules (random weights, seed fixed)."""
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(_SEED)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=16,
    ).eval()
    torch.manual_seed(_SEED + 1)
    vae = _vae(4, scaling_factor=0.18215)
    torch.manual_seed(_SEED + 2)
    text_encoder = _clip_text_encoder()
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False,
    )
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=_clip_tokenizer(77), unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_tiny_flux():
    """A `FluxPipeline` of tiny real modules (random weights, seed fixed)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(_SEED)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
        guidance_embeds=False,
    ).eval()
    torch.manual_seed(_SEED + 1)
    vae = _vae(4, scaling_factor=1.5035, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False)
    torch.manual_seed(_SEED + 2)
    text_encoder = _clip_text_encoder()
    torch.manual_seed(_SEED + 3)
    t5 = T5EncoderModel(T5Config(
        vocab_size=4 + 2 * 94, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)
    return FluxPipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=_clip_tokenizer(77),
        text_encoder_2=t5, tokenizer_2=_t5_tokenizer(64), transformer=transformer,
    )


BUILDERS: dict[str, Callable[[], Any]] = {"tiny-sd": build_tiny_sd, "tiny-flux": build_tiny_flux}


def _is_current(path: Path) -> bool:
    try:
        marker = json.loads((path / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("version") == TINY_VERSION


def ensure_tiny_pipeline(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """The folder of tiny pipeline `name`, built and saved first if absent or stale.

    The pipeline is built into a temporary folder beside the final one and renamed into
    place, so a reader never sees a half-written folder and concurrent builders agree.
    """
    if name not in BUILDERS:
        raise ValueError(f"unknown tiny pipeline {name!r}; known: {', '.join(sorted(BUILDERS))}")
    base = models_root(root)
    path = base / name
    if _is_current(path):
        return path
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=base))
    try:
        pipeline = BUILDERS[name]()
        pipeline.save_pretrained(tmp, safe_serialization=True)
        (tmp / _MARKER).write_text(json.dumps({"name": name, "version": TINY_VERSION}), encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp makes it private; the final folder is an ordinary one
        if path.exists() and not _is_current(path):
            stale = Path(tempfile.mkdtemp(prefix=f".{name}-stale-", dir=base))
            try:
                os.replace(path, stale / name)
            except OSError:
                pass  # another builder moved it first
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, path)
        except OSError:
            if not _is_current(path):  # another builder won the race with a good folder: keep it
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
