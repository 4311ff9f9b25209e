"""Domain code (archive, captioning, dataset) and the fine-tuning child run without Dagster.

The child process needs only dagster-pipes.
"""

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
import sar_pipeline.captioning, sar_pipeline.captioning.finetune, sar_pipeline.captioning.blip
import sar_pipeline.captioning.template, sar_pipeline.captioning.tiles, sar_pipeline.captioning.metrics
import sar_pipeline.captioning.evaluate, sar_pipeline.captioning.tiny
import sar_pipeline.archive, sar_pipeline.archive.stac, sar_pipeline.archive.demo, sar_pipeline.archive.simulate
import sar_pipeline.archive.scene_table, sar_pipeline.storage
import sar_pipeline.dataset, sar_pipeline.dataset.writer, sar_pipeline.dataset.split
import sar_pipeline.dataset.card, sar_pipeline.dataset.validate
import dagster_pipes
assert not [m for m in sys.modules if m == "dagster" or m.startswith("dagster.")]
print("ok")
"""


def test_domain_code_imports_without_dagster():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
