"""Generation throughput: the plain diffusers StableDiffusionPipeline vs. our sampler, same model, same machine.

Both draw one 512² image per call with 30 steps of DPM++ 2M (Karras), classifier-free guidance 7.5
(batch of 2 through the UNet: unconditional + conditional), fp32, from the same weights and seed:

- ``diffusers``: ``StableDiffusionPipeline.__call__`` as shipped (``output_type="np"``).
- ``ours``: ``sar_pipeline.generation.sample.generate`` (the loop behind ``sar-pipeline generate``:
  prompt in the training texts' form and checked against the 77-token window, the same UNet/VAE
  calls, guidance rescale, single-band output with the channel spread measured).

Model: ``--model tiny512`` (default) is the tiny preset's architecture (``models.tiny_components``:
UNet 32/64 channels, VAE factor 4) built for 512² images, so the UNet runs on 128² latents;
``--model PATH`` takes any local diffusers folder (SD 1.5 on a GPU). Random weights: speed does not
depend on them. Each side runs ``--warmup`` calls, then ``--repeat`` timed calls, interleaved;
the median seconds per image is reported.

    .venv/bin/python benchmarks/generation_benchmark.py --repeat 3
    .venv/bin/python benchmarks/generation_benchmark.py --model /models/sd15 --device cuda --dtype float16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _tiny512(folder: Path) -> Path:
    from sar_pipeline.diffusion.models import assemble_pipeline, tiny_components

    parts = tiny_components(seed=0)
    parts.unet.register_to_config(sample_size=128)  # 512 px at the tiny VAE's factor 4
    pipe = assemble_pipeline(parts.unet, parts.text_encoder, parts.vae, parts.tokenizer, parts.scheduler)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny512", help="'tiny512' or a local diffusers folder")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from diffusers import DPMSolverMultistepScheduler

    from sar_pipeline.generation.model import load_generation_model, make_scheduler
    from sar_pipeline.generation.sample import generate
    from sar_pipeline.generation.settings import GenerationSettings

    with tempfile.TemporaryDirectory() as tmp:
        folder = _tiny512(Path(tmp) / "tiny512") if args.model == "tiny512" else Path(args.model)
        model = load_generation_model(folder, device=args.device, dtype=args.dtype)
        pipe = model.pipe
        settings = GenerationSettings(
            steps=args.steps,
            scheduler="dpmpp_2m_karras",
            guidance_scale=7.5,
            size_px=args.size,
            dtype=args.dtype,
        )
        plain_scheduler = make_scheduler("dpmpp_2m_karras", pipe.scheduler.config)
        assert isinstance(plain_scheduler, DPMSolverMultistepScheduler)
        prompt = "a river crossing fields"
        text = f"{model.activation_token}, {prompt}"

        def plain() -> None:
            pipe.scheduler = plain_scheduler
            pipe(
                text,
                num_inference_steps=args.steps,
                guidance_scale=7.5,
                height=args.size,
                width=args.size,
                generator=torch.Generator().manual_seed(0),
                output_type="np",
            )

        def ours() -> None:
            generate(model, prompt, settings, progress=False)

        sides = {"diffusers": plain, "ours": ours}
        for _ in range(args.warmup):
            for run in sides.values():
                run()
        seconds: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.repeat):
            for name, run in sides.items():
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                started = time.perf_counter()
                run()
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                seconds[name].append(time.perf_counter() - started)
    result = {
        "model": args.model,
        "size": args.size,
        "steps": args.steps,
        "device": args.device,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_average": os.getloadavg(),
        **{
            name: {
                "seconds_per_image": round(statistics.median(s), 3),
                "images_per_second": round(1 / statistics.median(s), 4),
                "runs": [round(x, 3) for x in s],
            }
            for name, s in seconds.items()
        },
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
