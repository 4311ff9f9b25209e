"""Register a SarArchive plug-in in a test the way ``pip install`` does: a ``*.dist-info`` folder
with an ``entry_points.txt``, on ``sys.path`` (importlib.metadata finds it like any installed package)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sar_pipeline.archive import ENTRY_POINT_GROUP


def register_archive_plugin(monkeypatch: pytest.MonkeyPatch, folder: Path, name: str, target: str) -> None:
    """Make ``target`` (``"module:Class"``) the installed archive plug-in ``name`` for this test."""
    dist = Path(folder) / f"sar_pipeline_test_plugin_{name}-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: sar-pipeline-test-plugin-{name}\nVersion: 0.0\n"
    )
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name} = {target}\n")
    monkeypatch.syspath_prepend(str(folder))
