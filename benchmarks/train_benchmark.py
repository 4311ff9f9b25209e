"""Diffusion training throughput: diffusers' reference recipe vs. our trainer, side by side.

Model: the Stable Diffusion 1.5 architecture with random weights (throughput does not depend on
the weights), built by the reference script's own ``build_sd15`` (imported from ``--reference``),
512² images, batch 16, bf16, UNet + text encoder trained (the paper's recipe).

Modes, each in its own child process (clean peak-memory figures):

- ``reference``: ``sd_reference_step.py --train-text-encoder`` as shipped (the inner loop of diffusers'
  ``examples/text_to_image/train_text_to_image.py``: VAE every step, UNet under autocast, AdamW
  foreach, gradient clipping, two host syncs per step).
- ``ours``: ``sar_pipeline.diffusion.train.train`` itself (the loop the ``sd_model`` asset runs) on a
  latent cache of random latents: no VAE in the loop, bf16 autocast, fused AdamW, channels_last,
  TF32, ``torch.compile`` of the UNet, one host sync per ``log_every_steps``.
- ``memory``: our trainer at batch 4 with gradient checkpointing (UNet and text encoder) and 8-bit
  AdamW (bitsandbytes, the ``bnb`` extra; fused AdamW if it is missing) — target ≤ 16 GiB peak.

MFU = 39.2 TFLOP per batch-16 step (UNet fwd+bwd 2.407 TFLOP/image + text encoder 3×0.0133, cached
latents) scaled to the batch, / (seconds per step × 989 TFLOP/s, H100 dense bf16).

    .venv/bin/python benchmarks/train_benchmark.py --reference ../shared/bench/sd_reference_step.py
    .venv/bin/python benchmarks/train_benchmark.py --reference ../shared/bench/sd_reference_step.py --tiny

On a GPU machine without diffusers (carried as a wheel) see docs/benchmarks.md for the one-call command.

``--tiny`` runs on the CPU with the tiny preset (64 px, batch 4, a few steps) to prove the script works;
its reference side is a line-by-line CPU port of the reference step (the reference file itself
needs CUDA). Prints one JSON object per mode and a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the repository root, so that a GPU machine without the package installed imports sar_pipeline
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TFLOP_PER_IMAGE = 2.407 + 3 * 0.0133  # UNet fwd+bwd + text encoder fwd+bwd, cached latents (39.2 per 16)
H100_BF16_DENSE_TFLOPS = 989.0


def load_reference(path: str):
    """Import the reference script by path (it lives outside the repository)."""
    path = Path(path).resolve()
    if not path.is_file():
        sys.exit(f"{path}: reference script not found (pass --reference PATH to sd_reference_step.py)")
    spec = importlib.util.spec_from_file_location("sd_reference_step", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_models(args, device: str):
    """(unet, text_encoder, vae, scheduler, tokenizer): SD 1.5 shapes from the reference, or the tiny preset."""
    import torch

    from sar_pipeline.diffusion.models import build_clip_tokenizer, tiny_components

    torch.manual_seed(0)
    if args.tiny:
        parts = tiny_components()
        return parts.unet, parts.text_encoder, parts.vae, parts.scheduler, parts.tokenizer
    unet, te, vae, sched = load_reference(args.reference).build_sd15(device)
    return unet, te, vae, sched, build_clip_tokenizer()


def run_reference_tiny(args) -> dict:
    """The reference step (sd_reference_step.py's ``step``), ported line by line to run on the CPU."""
    import torch
    import torch.nn.functional as F

    unet, te, vae, sched, _ = build_models(args, "cpu")
    bs, res = args.batch, args.resolution
    vae.requires_grad_(False)
    groups = [{"params": list(unet.parameters()), "lr": 5e-5}]
    te.train()
    groups.append({"params": list(te.parameters()), "lr": 5e-6})
    unet.train()
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    staged = [
        (torch.randn(bs, 3, res, res).clamp(-1, 1), torch.randint(0, 49408, (bs, 77))) for _ in range(4)
    ]

    def step(i):
        pixels, ids = staged[i % len(staged)]
        latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        t = torch.randint(0, sched.config.num_train_timesteps, (bs,)).long()
        noisy = sched.add_noise(latents, noise, t)
        enc = te(ids, return_dict=False)[0]
        pred = unet(noisy, t, enc, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
        _ = loss.repeat(bs).mean().item()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        _ = loss.detach().item()

    for i in range(args.warmup):
        step(i)
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(i)
    dt = (time.perf_counter() - t0) / args.steps
    return {
        "batch": bs,
        "step_ms": round(dt * 1e3, 1),
        "images_per_s": round(bs / dt, 2),
        "peak_mem_gib": None,
    }


def run_reference_gpu(args) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            str(Path(args.reference).resolve()),
            "--batch",
            str(args.batch),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--train-text-encoder",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        sys.exit(f"reference failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_ours(args, memory_mode: bool) -> dict:
    """Our trainer (train.train) on random cached latents; speed switches per mode."""
    import torch

    from sar_pipeline.diffusion.config import TrainSettings
    from sar_pipeline.diffusion.latent_cache import write_latent_cache
    from sar_pipeline.diffusion.models import BaseModel, vae_id
    from sar_pipeline.diffusion.train import train

    device = "cpu" if args.tiny else "cuda"
    unet, te, vae, sched, tokenizer = build_models(args, "cpu")
    batch = args.memory_batch if memory_mode else args.batch
    latent_side = args.resolution // 8 if not args.tiny else args.resolution // 4
    n = batch * 4
    use_8bit = memory_mode and importlib.util.find_spec("bitsandbytes") is not None and not args.tiny
    with tempfile.TemporaryDirectory() as work:
        cache = write_latent_cache(
            Path(work) / "cache",
            torch.randn(n, 4, latent_side, latent_side),
            [f"An aerial view of tile {i}" for i in range(n)],
            scaling_factor=1.0,
            resolution=args.resolution,
            vae_id=vae_id(vae),
        )
        cfg = TrainSettings.from_dict(
            {
                "preset": "tiny" if args.tiny else "sd15",
                "base_model_path": "(benchmark: random init)",
                "storage_root": work,
                "dataset_version": "synthetic",
                "latent_cache_dir": str(cache),
                "output_dir": str(Path(work) / "run"),
                "resolution": args.resolution,
                "global_batch_size": batch,
                "train_batch_size": batch,
                "max_train_steps": args.warmup + args.steps,
                "throughput_warmup_steps": args.warmup,
                "augmentation": "none",
                "mixed_precision": "no" if args.tiny else "bf16",
                "fused_adam": not args.tiny and not use_8bit,
                "use_8bit_adam": use_8bit,
                "channels_last": not args.tiny and not memory_mode,
                "allow_tf32": not args.tiny,
                "torch_compile": args.compile and not memory_mode and not args.tiny,
                "gradient_checkpointing": memory_mode,
                "checkpoint_every_steps": 0,
                "checkpoint_at_end": False,
                "log_every_steps": 10_000,
                "resume_from_checkpoint": "",
            }
        )
        base = BaseModel(unet, te, tokenizer, vae, sched, "sd15", "random init")
        summary = train(cfg, base_model=base)
    step_s = summary["seconds_per_step"]
    return {
        "batch": batch,
        "step_ms": round(step_s * 1e3, 1),
        "images_per_s": round(summary["images_per_second"], 2),
        "peak_mem_gib": round(summary["peak_memory_gib"], 2)
        if summary["peak_memory_gib"] is not None
        else None,
        "optimizer": "AdamW8bit" if use_8bit else ("AdamW fused" if cfg.fused_adam else "AdamW foreach"),
        "device": device,
    }


def child(args) -> dict:
    import torch

    torch.set_num_threads(args.threads) if args.tiny else None
    if args.mode == "reference":
        result = run_reference_tiny(args) if args.tiny else run_reference_gpu(args)
    else:
        result = run_ours(args, memory_mode=args.mode == "memory")
    result["mode"] = args.mode
    if not args.tiny:
        result["mfu_pct_of_989"] = round(
            100 * result["images_per_s"] * TFLOP_PER_IMAGE / H100_BF16_DENSE_TFLOPS, 1
        )
        result["gpu"] = torch.cuda.get_device_name()
    result["torch"] = torch.__version__
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", required=True, help="path to sd_reference_step.py (outside the repo)")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run with the tiny preset")
    ap.add_argument("--batch", type=int, default=None, help="batch of reference and ours (16; tiny 4)")
    ap.add_argument("--memory-batch", type=int, default=4, help="batch of the memory-saving mode")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (30; tiny 3)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (8; tiny 1)")
    ap.add_argument("--modes", default="reference,ours,memory")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="ours without torch.compile")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (tiny)")
    ap.add_argument("--out", default="", help="also write the results as JSON here")
    ap.add_argument("--mode", default="", help=argparse.SUPPRESS)  # child process
    args = ap.parse_args()
    args.batch = args.batch or (4 if args.tiny else 16)
    args.steps = args.steps or (3 if args.tiny else 30)
    args.warmup = args.warmup or (1 if args.tiny else 8)
    args.resolution = 64 if args.tiny else 512
    if args.mode:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return

    results = []
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--mode", mode]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            print(f"{mode} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
            results.append({"mode": mode, "error": out.stderr[-500:]})
            continue
        results.append(json.loads(lines[-1][len("RESULT ") :]))
        print(json.dumps(results[-1]), flush=True)

    by_mode = {r["mode"]: r for r in results if "error" not in r}
    if "reference" in by_mode and "ours" in by_mode:
        speedup = by_mode["ours"]["images_per_s"] / by_mode["reference"]["images_per_s"]
        print(f"ours / reference images/s: {speedup:.2f}x")
    print("\n| mode | batch | step ms | images/s | MFU % of 989 | peak GiB |\n|---|---:|---:|---:|---:|---:|")
    for r in results:
        if "error" in r:
            print(f"| {r['mode']} | failed | | | | |")
            continue
        print(
            f"| {r['mode']} | {r['batch']} | {r['step_ms']} | {r['images_per_s']} | "
            f"{r.get('mfu_pct_of_989', 'n/a')} | {r.get('peak_mem_gib') or 'n/a'} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
