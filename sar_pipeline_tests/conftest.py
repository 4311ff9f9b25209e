"""Process-wide settings of the test session, set before any test module imports torch.

torch's intra-op threads: one per process, unless ``OMP_NUM_THREADS`` is already set (then the
caller's value holds). The tests train and run tiny models, and on a shared or loaded machine an
OpenMP team of one thread per core is far slower than one thread: a tiny training step 4–14×
slower alone and 15–17× with two processes at once on the 2-core development machine at load
average 5–9 (``benchmarks/threads_benchmark.py``, docs/benchmarks.md "torch threads"). Set here,
the one place: torch reads the variable when it starts, and every child process a test starts
(training subprocesses, code servers, run workers) inherits it. The pipeline itself never sets it: the demo
and deployments use torch's default (one thread per core) unless the user sets the variable.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

# Tests never reach a hub: every model is built from a config or loaded from a local folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
