"""Generator throughput on a GPU with a real-size architecture: the four ways of
benchmarks/generator.py (sequential and batched plain diffusers, the generator service and
Triton with 8 and 16 requests in flight), on Stable Diffusion 1.5's architecture.

The pipeline is built from configs, no downloads: SD 1.5's UNet (860M parameters), its VAE and
its CLIP ViT-L/14 text encoder with random weights (seeded), the checkpoint's PNDM scheduler,
and a byte-level CLIP tokenizer (the real one's vocabulary is a download; the compute does not
depend on it). 512 x 512, float16 by default. Random weights make noise, not pictures: the
figures are about compute and serving, not about what the images show.

    .venv/bin/python benchmarks/generator_gpu.py                    # 32 images, 20 steps
    .venv/bin/python benchmarks/generator_gpu.py --n-images 64 --steps 50
    .venv/bin/python benchmarks/generator_gpu.py --device cpu --quick  # a CPU smoke run (slow, not a measurement)

Without a CUDA GPU (and without `--device cpu`) it exits with status 2 and says so. The last
line is `key=value` pairs, as in benchmarks/generator.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAME = "sd15-arch-random"


def _cpu_benchmark():
    """benchmarks/generator.py as a module (benchmarks/ is not a package)."""
    name = "iconicity_benchmarks_generator"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "generator.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-images", type=int, default=None, help="images per way (default 32; 4 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default 20; 1 with --quick)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels, a multiple of 8 (default 512; 64 with --quick)")
    parser.add_argument("--guidance", type=float, default=7.5, help="guidance scale (default 7.5)")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"], help="compute dtype (default float16)")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu for a smoke run (default cuda)")
    parser.add_argument("--threads", type=int, default=4, help="CPU threads here and in Triton's model process (default 4)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each way; the best counts (default 1)")
    parser.add_argument("--queue-delay-us", type=int, default=None, help="Triton's dynamic batching delay (default: the repository's own)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the random pipeline is saved for Triton (default: a temporary folder)")
    parser.add_argument("--prompt", default="an oil painting of a lighthouse on a cliff at dusk", help="the prompt")
    parser.add_argument("--quick", action="store_true", help="few small images and one step: checks that the script runs")
    args = parser.parse_args(argv)
    args.n_images = args.n_images or (4 if args.quick else 32)
    args.steps = args.steps or (1 if args.quick else 20)
    args.size = args.size or (64 if args.quick else 512)
    if min(args.n_images, args.steps, args.threads, args.repeats) < 1:
        parser.error("--n-images, --steps, --threads and --repeats must be at least 1")
    if args.size % 8 or args.size < 64:
        parser.error(f"--size must be a multiple of 8 of at least 64, got {args.size}")
    if args.queue_delay_us is None:
        from services.generator.triton_server import DEFAULT_MAX_QUEUE_DELAY_US

        args.queue_delay_us = DEFAULT_MAX_QUEUE_DELAY_US
    args.models_root = None
    return args


def check_device(device: str) -> str | None:
    """Why `device` cannot run this benchmark, or None when it can."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if device == "cpu":
        return None
    if not device.startswith("cuda"):
        return f"--device must be cuda, cuda:N or cpu, got {device!r}"
    if not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a build without CUDA")
        return (f"this benchmark needs a CUDA GPU and torch sees none ({build}); "
                "run it on a GPU machine, or pass --device cpu --quick for a smoke run")
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        return f"{device} does not exist: torch sees {torch.cuda.device_count()} GPU(s)"
    return None


def build_sd15_random(seed: int = 0):
    """A StableDiffusionPipeline with SD 1.5's architecture and random weights (float32,
    seeded), from configs."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from services.generator.tiny import _clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(  # runwayml/stable-diffusion-v1-5 unet/config.json
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, act_fn="silu", center_input_sample=False,
        downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1, norm_eps=1e-5,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(  # vae/config.json
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
        act_fn="silu", sample_size=512, scaling_factor=0.18215,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(  # text_encoder/config.json (CLIP ViT-L/14)
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, bos_token_id=0, eos_token_id=2,
        pad_token_id=1, layer_norm_eps=1e-5,
    ))
    scheduler = PNDMScheduler(  # scheduler/scheduler_config.json
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False,
    )
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=_clip_tokenizer(77), unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    problem = check_device(args.device)
    if problem:
        print(f"generator_gpu: error: {problem}", file=sys.stderr)
        return 2
    import torch

    from services.generator.models import ModelConfig
    from services.generator.pipelines import load_pipeline

    bench = _cpu_benchmark()
    on_cpu = args.device == "cpu"
    if on_cpu:
        args.dtype = "float32"  # what the Triton model uses on a CPU too
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    seeds = list(range(1000, 1000 + args.n_images))
    gpu = "cpu" if on_cpu else torch.cuda.get_device_name(torch.device(args.device))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, {gpu}, torch {torch.__version__}; "
          f"device {args.device}, dtype {args.dtype}")
    print(f"work: {args.n_images} images of SD 1.5's architecture with random weights ({args.size}x{args.size}, "
          f"{args.steps} steps, guidance {args.guidance:g}), seeds {seeds[0]}..{seeds[-1]}"
          + ("; --quick or CPU: figures are not a measurement" if args.quick or on_cpu else ""), flush=True)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="iconicity-sd15-") as tmp:
        folder = (args.workdir or Path(tmp)) / NAME
        built = build_sd15_random()
        parameters = sum(p.numel() for p in built.unet.parameters())
        built.save_pretrained(folder, safe_serialization=True)
        del built
        print(f"pipeline: built and saved to {folder} in {time.perf_counter() - started:.1f} s "
              f"(UNet {parameters / 1e6:.0f}M parameters)", flush=True)
        config = ModelConfig(
            name=NAME, pipeline=str(folder), pipeline_class="StableDiffusionPipeline", dtype=args.dtype,
            steps=args.steps, steps_range=(1, 150), guidance=args.guidance, height=args.size, width=args.size,
            size_multiple=8, min_size=64, max_size=2048, description="SD 1.5 architecture, random weights (benchmark)",
        )
        # Loaded the way the Triton model loads it (services/generator/pipelines.py).
        pipe = load_pipeline(config, device=args.device)
        kind = "KIND_CPU" if on_cpu else "KIND_GPU"
        with bench.services(args, config, instance_kind=kind, device=args.device) as addresses:
            best = bench.measure(pipe, addresses, seeds, args, model=NAME)
    if on_cpu:
        return bench.report(best, args, extra=f" device={args.device} dtype={args.dtype}")
    # Half precision on a GPU sums in another order for another batch size (and picks other
    # kernels): the check only asks that the images agree on average within one level.
    return bench.report(best, args, max_levels=255, max_fraction=1.0, max_mean=1.0,
                        extra=f" device={args.device} dtype={args.dtype}")


if __name__ == "__main__":
    sys.exit(main())
