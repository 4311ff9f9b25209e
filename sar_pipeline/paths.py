"""Where the embedded default keeps its data: ``$SAR_PIPELINE_DATA`` or ``<project>/data``."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The ignored data folder: demo archive, storage root, Dagster home, model folders."""
    env = os.environ.get("SAR_PIPELINE_DATA")
    if env:
        return Path(env).resolve()
    if (PROJECT_ROOT / "pyproject.toml").exists():
        return PROJECT_ROOT / "data"
    return Path.cwd() / "data"


def demo_archive_dir() -> Path:
    return data_dir() / "demo-archive"


def storage_dir() -> Path:
    return data_dir() / "storage"


def dagster_home() -> Path:
    return data_dir() / "dagster_home"
