"""How long a fresh process takes to load the code location, as every launched run does.

The run launcher (``DefaultRunLauncher``, the daemon, ``dg launch``) starts one process per run, which
imports ``sar_pipeline.definitions`` and builds its definitions before the first step. This times
that in a fresh interpreter (``python -c "from sar_pipeline.definitions import defs; defs()"``), and
records which heavy libraries the load pulled in (torch, diffusers, transformers).

``--tree DIR`` (repeatable) times another checkout's sources with this environment (its folder holding
``sar_pipeline/`` and ``pyproject.toml`` goes first on ``PYTHONPATH``), interleaved with the others, so
that a before/after pair sees the same load on a shared machine.

    .venv/bin/python benchmarks/code_location_benchmark.py --repeat 5 --tree /tmp/before --tree .
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
from pathlib import Path

PROBE = (
    "import sys, time; t = time.perf_counter(); from sar_pipeline.definitions import defs; defs(); "
    "import json; print(json.dumps({'load_s': time.perf_counter() - t, 'heavy': sorted(m for m in "
    "('torch', 'diffusers', 'transformers') if m in sys.modules), 'source': sys.modules['sar_pipeline'].__file__}))"
)


def load_once(tree: Path) -> dict:
    """One fresh interpreter loading the code location from ``tree``: wall seconds of the whole
    process, seconds of the load itself, heavy libraries imported."""
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd="/", capture_output=True, text=True, check=True
    )
    wall = time.perf_counter() - start
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    return {"process_s": wall, **probe}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, action="append", help="checkout to time (default: this one)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    trees = args.tree or [Path(__file__).resolve().parents[1]]
    samples: dict[str, list[dict]] = {str(t): [] for t in trees}
    for _ in range(args.repeat):
        for tree in trees:
            samples[str(tree)].append(load_once(tree))
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
        "trees": {
            tree: {
                "source": runs[0]["source"],
                "heavy_imported": runs[0]["heavy"],
                "process_s": [round(r["process_s"], 2) for r in runs],
                "median_process_s": round(statistics.median(r["process_s"] for r in runs), 2),
                "median_load_s": round(statistics.median(r["load_s"] for r in runs), 2),
            }
            for tree, runs in samples.items()
        },
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
