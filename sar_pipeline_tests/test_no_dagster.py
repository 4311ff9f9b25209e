"""Domain code never imports Dagster; the training/fine-tuning children need only dagster-pipes."""

import subprocess
import sys

DOMAIN_PACKAGES = ["archive", "geo", "captioning", "dataset", "diffusion", "generation", "evaluation"]
DOMAIN_MODULES = [
    "radiometry",
    "storage",
    "pictures",
    "paths",
    "errors",
    "settings",
    "timestamps",
    "stac_io",
    "hrefs",
    "processes",
]

CODE = f"""
import builtins, importlib, pkgutil, sys
real_import = builtins.__import__
def guarded(name, *args, **kwargs):
    if name == "dagster" or name.startswith("dagster."):
        raise ImportError("dagster is not installed here")
    return real_import(name, *args, **kwargs)
builtins.__import__ = guarded
imported = []
for package in {DOMAIN_PACKAGES!r}:
    module = importlib.import_module("sar_pipeline." + package)
    for info in pkgutil.iter_modules(module.__path__, module.__name__ + "."):
        importlib.import_module(info.name)
        imported.append(info.name)
for name in {DOMAIN_MODULES!r}:
    importlib.import_module("sar_pipeline." + name)
import dagster_pipes
import sar_pipeline.diffusion.train
with sar_pipeline.diffusion.train.open_reporter() as reporter:
    assert reporter.pipes is None  # not launched by Pipes: console only
assert not [m for m in sys.modules if m == "dagster" or m.startswith("dagster.")]
print(len(imported))
"""


def test_domain_code_imports_without_dagster():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip()) >= 25  # every module of the five packages was imported
