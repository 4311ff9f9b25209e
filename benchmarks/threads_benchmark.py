"""torch's intra-op threads on the CPU: its default (one per core) against one, alone and two processes at once.

Workload: what the tests and the demo run on the CPU — training steps of the tiny preset
(``sar_pipeline.diffusion.models.tiny_components``: UNet fwd+bwd + AdamW on 4×16×16 latents, batch
8, with the text encoder forward) and a VAE encode of the batch at 64 px, in a fresh child process per
measurement (torch reads ``OMP_NUM_THREADS`` when it starts). Settings: ``default`` (the variable
unset: torch's own choice, one thread per core) and ``1``; each alone and as two processes at once
(two test workers, or a test beside another job, on the same cores), interleaved ``--repeat`` times
so that both see the same load. Prints one JSON object with seconds per step (median of the steps
of each child, then the median over repeats) and the load average.

    .venv/bin/python benchmarks/threads_benchmark.py --repeat 3 --json /tmp/threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, statistics, sys, time
import torch
from sar_pipeline.diffusion.models import tiny_components
steps, batch = int(sys.argv[1]), int(sys.argv[2])
base = tiny_components(seed=0)
unet, text_encoder, vae = base.unet, base.text_encoder, base.vae
optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
ids = base.tokenizer(["a sar tile"] * batch, padding="max_length", max_length=77, return_tensors="pt").input_ids
images = torch.randn(batch, 3, 64, 64)
times = []
for step in range(steps + 1):
    start = time.perf_counter()
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.sample() * 0.18215
        text = text_encoder(ids)[0]
    noise = torch.randn_like(latents)
    t = torch.randint(0, 1000, (batch,))
    loss = torch.nn.functional.mse_loss(unet(latents + noise, t, text).sample, noise)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    if step:  # the first step warms up
        times.append(time.perf_counter() - start)
print(json.dumps({"threads": torch.get_num_threads(), "step_s": statistics.median(times)}))
"""


def _children(setting: str, processes: int, steps: int, batch: int) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if setting != "default":
        env["OMP_NUM_THREADS"] = setting
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(steps), str(batch)], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    out = []
    for proc in procs:
        stdout, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"child failed ({setting}, {processes} at once)")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json")
    args = parser.parse_args()
    cases = [(s, n) for n in (1, 2) for s in ("default", "1")]
    figures: dict[str, list[float]] = {f"{s} × {n}": [] for s, n in cases}
    threads: dict[str, int] = {}
    load = [os.getloadavg()]
    started = time.time()
    for _ in range(args.repeat):
        for setting, processes in cases:
            results = _children(setting, processes, args.steps, args.batch)
            key = f"{setting} × {processes}"
            figures[key].append(statistics.median(r["step_s"] for r in results))
            threads[key] = results[0]["threads"]
        load.append(os.getloadavg())
    out = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average": [round(x[0], 2) for x in load],
        "wall_s": round(time.time() - started, 1),
        "cases": {
            key: {
                "torch_threads": threads[key],
                "step_s_median": round(statistics.median(v), 4),
                "step_s": [round(x, 4) for x in v],
            }
            for key, v in figures.items()
        },
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
