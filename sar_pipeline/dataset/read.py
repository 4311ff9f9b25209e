"""Read a written dataset version: the API downstream stages (latent cache, training) use.

``dataset/current.json`` names the current version; each version folder holds one Parquet file
per split and ``dataset_info.json`` (see :mod:`sar_pipeline.dataset.write`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from sar_pipeline.dataset.schema import SPLITS
from sar_pipeline.errors import ConfigError
from sar_pipeline.storage import as_path, resolve_dir, validate_id


def current_version(storage_root: UPath | str | os.PathLike) -> str:
    """The dataset version ``dataset/current.json`` points at (raises ConfigError if none yet)."""
    path = as_path(storage_root) / "dataset" / "current.json"
    try:
        return str(json.loads(path.read_text())["version"])
    except FileNotFoundError as exc:
        raise ConfigError(path, "no dataset yet: materialise training_dataset first") from exc
    except (KeyError, ValueError) as exc:
        raise ConfigError(path, f"not a dataset pointer ({exc})") from exc


def dataset_split_paths(
    storage_root: UPath | str | os.PathLike, version: str | None = None
) -> dict[str, UPath]:
    """split → path of its Parquet file for ``version`` (default: the current one)."""
    root = as_path(storage_root)
    version = validate_id(version, "dataset version") if version else current_version(root)
    folder = resolve_dir(root / "dataset" / version)
    return {s: folder / f"{s}.parquet" for s in SPLITS}


def dataset_info(storage_root: UPath | str | os.PathLike, version: str | None = None) -> dict[str, Any]:
    """The ``dataset_info.json`` of ``version`` (default: current): counts, config, flights, hashes."""
    root = as_path(storage_root)
    version = validate_id(version, "dataset version") if version else current_version(root)
    path = resolve_dir(root / "dataset" / version) / "dataset_info.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(path, f"dataset version {version!r} not found") from exc


def huggingface_data_files(
    storage_root: UPath | str | os.PathLike, version: str | None = None
) -> dict[str, str]:
    """``data_files`` for ``datasets.load_dataset("parquet", data_files=…)``: split → file URI.

    Empty splits are left out (``datasets`` refuses a split with no rows), so a tiny dataset whose
    test blocks happened to hold no tile still loads.
    """
    info = dataset_info(storage_root, version)
    paths = dataset_split_paths(storage_root, info["version"])
    return {s: str(paths[s]) for s in SPLITS if info["row_counts"].get(s, 0) > 0}


def load_dataset_table(
    storage_root: UPath | str | os.PathLike,
    version: str | None = None,
    split: str | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """One split (or, with ``split=None``, all splits in train/validation/test order) of a dataset
    version (default: current) as a pyarrow Table, schema metadata (huggingface, geo) kept."""
    paths = dataset_split_paths(storage_root, version)
    if split is not None and split not in paths:
        raise ConfigError(f"split {split!r}", f"unknown split; choose one of {list(SPLITS)}")
    tables = []
    for name in [split] if split else list(SPLITS):
        path = paths[name]
        try:
            with path.open("rb") as f:
                tables.append(pq.read_table(f, columns=list(columns) if columns else None))
        except FileNotFoundError as exc:
            raise ConfigError(path, "dataset file not found (unknown version?)") from exc
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)
