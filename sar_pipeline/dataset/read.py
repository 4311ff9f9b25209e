"""Read a written dataset version: the API downstream stages (latent cache, training, evaluation) use.

``dataset/current.json`` names the current version. A version is ``dataset/<version>/manifest.json``
naming one shard per flight, each shard one Parquet file per non-empty split under
``dataset/shards/<flight_id>/`` (see :mod:`sar_pipeline.dataset.write`); :func:`version_manifest` is
the one place that resolves a version into its files, and every reader here goes through it. A
version folder written before shards existed (``<split>.parquet`` and ``dataset_info.json`` in the
folder itself) still reads, as one file per split.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from sar_pipeline.dataset.schema import GEOMETRY_COLUMN, SPLITS, dataset_schema
from sar_pipeline.errors import ConfigError
from sar_pipeline.storage import as_path, relative_path, resolve_dir, validate_id

#: the version's manifest, in its folder ``dataset/<version>/``
MANIFEST_NAME = "manifest.json"
#: folder under ``dataset/`` holding the per-flight shards
SHARDS_FOLDER = "shards"
#: the info file of a version written before shards (its split files lie beside it)
LEGACY_INFO_NAME = "dataset_info.json"


def current_version(storage_root: UPath | str | os.PathLike) -> str:
    """The dataset version ``dataset/current.json`` points at (raises ConfigError if none yet)."""
    path = as_path(storage_root) / "dataset" / "current.json"
    try:
        return str(json.loads(path.read_text())["version"])
    except FileNotFoundError as exc:
        raise ConfigError(path, "no dataset yet: materialise training_dataset first") from exc
    except (KeyError, ValueError) as exc:
        raise ConfigError(path, f"not a dataset pointer ({exc})") from exc


def split_files(manifest: dict[str, Any]) -> dict[str, list[str]]:
    """split → the shard files of a version manifest, in flight order (paths relative to the root)."""
    return {s: [sh["files"][s]["path"] for sh in manifest["shards"] if s in sh["files"]] for s in SPLITS}


def version_manifest(storage_root: UPath | str | os.PathLike, version: str | None = None) -> dict[str, Any]:
    """The manifest of dataset ``version`` (default: current): counts, config, flights, radiometry,
    ``shards`` and ``files`` (split → its Parquet files, relative to the storage root, in flight order).

    Raises ConfigError naming the file when the version does not exist or its manifest is unreadable.
    """
    root = as_path(storage_root)
    version = validate_id(version, "dataset version") if version else current_version(root)
    folder = resolve_dir(root / "dataset" / version)
    path = folder / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
        manifest["files"] = split_files(manifest)
        return manifest
    except FileNotFoundError:
        pass
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(path, f"not a dataset version manifest ({exc})") from exc
    legacy = folder / LEGACY_INFO_NAME
    if not legacy.exists() and not (folder / f"{SPLITS[0]}.parquet").exists():
        raise ConfigError(path, f"dataset version {version!r} not found")
    try:
        info = json.loads(legacy.read_text()) if legacy.exists() else {"version": version}
    except ValueError as exc:
        raise ConfigError(legacy, f"not a dataset info file ({exc})") from exc
    prefix = relative_path(folder, root)
    info["shards"] = []
    info["files"] = {s: [f"{prefix}/{s}.parquet"] for s in SPLITS}
    if "row_counts" not in info:  # a bare legacy folder (split files, no info file): count from the footers
        info["row_counts"] = {s: _parquet_rows(folder / f"{s}.parquet") for s in SPLITS}
    return info


def _parquet_rows(path: UPath) -> int:
    """Rows of one Parquet file, read from its footer (0 when the file is absent)."""
    try:
        with path.open("rb") as f:
            return pq.ParquetFile(f).metadata.num_rows
    except FileNotFoundError:
        return 0


def dataset_split_paths(
    storage_root: UPath | str | os.PathLike, version: str | None = None
) -> dict[str, list[UPath]]:
    """split → paths of its Parquet files (one per flight shard) for ``version`` (default: current)."""
    root = as_path(storage_root)
    files = version_manifest(root, version)["files"]
    return {s: [root / rel for rel in files[s]] for s in SPLITS}


def version_files(storage_root: UPath | str | os.PathLike, version: str | None = None) -> list[str]:
    """Every shard file of ``version`` (relative to the storage root): what a copy of the version
    needs besides its folder ``dataset/<version>``."""
    manifest = version_manifest(storage_root, version)
    return [f["path"] for sh in manifest["shards"] for f in sh["files"].values()]


def dataset_info(storage_root: UPath | str | os.PathLike, version: str | None = None) -> dict[str, Any]:
    """The manifest of ``version`` (default: current): counts, config, flights, radiometry, shards."""
    return version_manifest(storage_root, version)


def huggingface_data_files(
    storage_root: UPath | str | os.PathLike, version: str | None = None
) -> dict[str, list[str]]:
    """``data_files`` for ``datasets.load_dataset("parquet", data_files=…)``: split → file URIs.

    Empty splits are left out (``datasets`` refuses a split with no rows), so a tiny dataset whose
    test blocks happened to hold no tile still loads.
    """
    root = as_path(storage_root)
    manifest = version_manifest(root, version)
    return {
        s: [str(root / rel) for rel in manifest["files"][s]]
        for s in SPLITS
        if manifest.get("row_counts", {}).get(s, 1) > 0 and manifest["files"][s]
    }


def load_dataset_table(
    storage_root: UPath | str | os.PathLike,
    version: str | None = None,
    split: str | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """One split (or, with ``split=None``, all splits in train/validation/test order) of a dataset
    version (default: current) as a pyarrow Table, rows in flight order, schema metadata
    (huggingface, geo with the bbox of every shard read) kept."""
    if split is not None and split not in SPLITS:
        raise ConfigError(f"split {split!r}", f"unknown split; choose one of {list(SPLITS)}")
    paths = dataset_split_paths(storage_root, version)
    tables = []
    for name in [split] if split else list(SPLITS):
        for path in paths[name]:
            try:
                with path.open("rb") as f:
                    tables.append(pq.read_table(f, columns=list(columns) if columns else None))
            except FileNotFoundError as exc:
                raise ConfigError(
                    path, "dataset file not found (deleted, or the version is incomplete)"
                ) from exc
    if not tables:
        schema = dataset_schema()
        return (
            schema if columns is None else pa.schema([schema.field(c) for c in columns], schema.metadata)
        ).empty_table()
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables).replace_schema_metadata(_merged_metadata(tables))


def _merged_metadata(tables: Sequence[pa.Table]) -> dict[bytes, bytes]:
    """The first table's schema metadata with the GeoParquet bbox grown over every table's."""
    metadata = dict(tables[0].schema.metadata or {})
    geos = [
        json.loads(t.schema.metadata[b"geo"])
        for t in tables
        if t.schema.metadata and b"geo" in t.schema.metadata
    ]
    boxes = [g["columns"][GEOMETRY_COLUMN].get("bbox") for g in geos]
    boxes = [b for b in boxes if b]
    if geos and boxes:
        merged = geos[0]
        column = merged["columns"][GEOMETRY_COLUMN]
        column["bbox"] = [
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        ]
        column["geometry_types"] = sorted(
            {t for g in geos for t in g["columns"][GEOMETRY_COLUMN].get("geometry_types", [])}
        )
        metadata[b"geo"] = json.dumps(merged, sort_keys=True).encode()
    return metadata
