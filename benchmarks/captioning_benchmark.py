"""Captioning throughput: our batched BlipCaptioner vs. the plain transformers pipeline at batch 1.

Model: a BLIP-large-sized captioner (ViT-L/16 at 384 px + BERT-base decoder, the architecture of
Salesforce/blip-image-captioning-large) with random weights — speed does not depend on the
weights, except that an untrained decoder never stops early, so every caption is exactly
``--max-new-tokens`` long (the worst case). Images: random 512×512 RGB tiles (the SAR tile size).

One run measures both and prints a Markdown row for docs/benchmarks.md plus JSON:

    .venv/bin/python benchmarks/captioning_benchmark.py                 # GPU, BLIP-large size
    .venv/bin/python benchmarks/captioning_benchmark.py --tiny          # CPU smoke test, tiny BLIP
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sar_pipeline.captioning.tiny import BLIP_LARGE_SIZES, write_tiny_blip  # noqa: E402  (after the offline switch)


def time_ours(model_dir: Path, images, args) -> dict:
    import torch

    from sar_pipeline.captioning.blip import BlipCaptioner

    captioner = BlipCaptioner(
        model_dir,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
        progress=False,
        preprocess=args.preprocess,
    )
    captioner.caption_images(images[: args.batch_size])  # warm-up: kernels, allocator
    _sync(torch)
    start = time.perf_counter()
    captions = captioner.caption_images(images)
    _sync(torch)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {
        "images": len(captions),
        "seconds": seconds,
        "images_per_s": len(captions) / seconds,
        "device": captioner.device,
        "dtype": str(captioner.dtype),
        "peak_gpu_gib": peak,
    }


def time_pipeline(model_dir: Path, images, args) -> dict:
    import torch
    from PIL import Image
    from transformers import BlipForConditionalGeneration, BlipProcessor, pipeline

    from sar_pipeline.captioning.blip import resolve_dtype
    from sar_pipeline.devices import resolve_device

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model = BlipForConditionalGeneration.from_pretrained(str(model_dir), dtype=dtype).to(device).eval()
    processor = BlipProcessor.from_pretrained(str(model_dir))
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        pipe = pipeline(
            "image-to-text",
            model=model,
            image_processor=processor.image_processor,
            tokenizer=processor.tokenizer,
            device=device,
        )
        kwargs = {"generate_kwargs": {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams}}

        def run(im):
            return pipe(im, **kwargs)

        task = "image-to-text"
    else:  # transformers 5 folded image-to-text into image-text-to-text
        pipe = pipeline("image-text-to-text", model=model, processor=processor, device=device)

        def run(im):
            return pipe(images=im, text="", max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)

        task = "image-text-to-text"
    pil = [Image.fromarray(i) for i in images]
    run(pil[0])
    _sync(torch)
    start = time.perf_counter()
    for im in pil:
        run(im)
    _sync(torch)
    seconds = time.perf_counter() - start
    return {"images": len(pil), "seconds": seconds, "images_per_s": len(pil) / seconds, "task": task}


def _sync(torch) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny BLIP on the CPU: checks the script runs")
    parser.add_argument("--images", type=int, default=2048, help="images for our captioner")
    parser.add_argument("--baseline-images", type=int, default=64, help="images for the batch-1 pipeline")
    parser.add_argument("--image-px", type=int, default=512, help="input tile size")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-beams", type=int, default=1, help="1 = greedy")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--dtype", default="auto", help="auto = bf16 on GPU, fp32 on CPU")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--preprocess", default=None, help="processor | device (default: device on GPU)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()

    import numpy as np
    import torch

    if args.tiny:
        torch.set_num_threads(2)
        args.images, args.baseline_images, args.image_px = (
            min(args.images, 16),
            min(args.baseline_images, 4),
            96,
        )
        args.batch_size, args.max_new_tokens = min(args.batch_size, 8), min(args.max_new_tokens, 8)
    if args.preprocess is None:
        args.preprocess = "device" if torch.cuda.is_available() and args.device != "cpu" else "processor"
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (args.image_px, args.image_px, 3), dtype=np.uint8) for _ in range(args.images)
    ]

    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            model_dir = write_tiny_blip(Path(tmp) / "tiny-blip")
        else:
            model_dir = write_tiny_blip(
                Path(tmp) / "blip-large-sized", image_size=384, sizes=BLIP_LARGE_SIZES
            )
        ours = time_ours(model_dir, images, args)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        baseline = time_pipeline(model_dir, images[: args.baseline_images], args)

    gpu = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"CPU ({platform.processor() or 'x86-64'})"
    )
    result = {
        "model": "tiny BLIP" if args.tiny else "BLIP-large-sized (random init)",
        "machine": gpu,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "ours": ours,
        "pipeline_batch1": baseline,
        "speed_up": ours["images_per_s"] / baseline["images_per_s"],
    }
    print(json.dumps(result, indent=1))
    print(
        f"| {result['model']} | {gpu} | {ours['dtype']}, batch {args.batch_size}, beams {args.num_beams}, "
        f"{args.max_new_tokens} tokens, {args.image_px} px, preprocess={args.preprocess} | "
        f"{ours['images_per_s']:.1f} img/s | {baseline['images_per_s']:.1f} img/s ({baseline['task']}, batch 1) | "
        f"×{result['speed_up']:.1f} |"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
