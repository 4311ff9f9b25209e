"""The diffusion domain code and the training child run without Dagster (the child needs only dagster-pipes)."""

import subprocess
import sys

CODE = """
import builtins, sys
real_import = builtins.__import__
def guarded(name, *args, **kwargs):
    if name == "dagster" or name.startswith("dagster."):
        raise ImportError("dagster is not installed here")
    return real_import(name, *args, **kwargs)
builtins.__import__ = guarded
import sar_pipeline.diffusion.config, sar_pipeline.diffusion.data, sar_pipeline.diffusion.models
import sar_pipeline.diffusion.latent_cache, sar_pipeline.diffusion.train
with sar_pipeline.diffusion.train.open_reporter() as reporter:
    assert reporter.pipes is None
assert not [m for m in sys.modules if m == "dagster" or m.startswith("dagster.")]
print("ok")
"""


def test_diffusion_imports_without_dagster():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
