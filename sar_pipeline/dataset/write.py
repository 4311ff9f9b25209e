"""Write the training dataset: split the collected rows, write per-flight shards, version them.

Output under the storage root::

    dataset/shards/<flight_id>/<key>.<split>.parquet   one flight's rows of one split (GeoParquet,
                                                       schema in sar_pipeline.dataset.schema)
    dataset/shards/<flight_id>/<key>.json              the shard's files: sha256, bytes, rows (written last)
    dataset/<version>/manifest.json                    the version: its shards, counts, settings
    dataset/current.json                               {"version": …, "splits": {…}, …}

A version is a manifest naming one shard per flight; readers resolve it with
:func:`sar_pipeline.dataset.read.version_manifest`. A shard's ``key`` is the SHA-256 of everything
that shapes its bytes: the flight's rows as the upstream manifests and captions give them (image
paths, footprints, texts, each tile's own radiometry and histogram), each row's split, the dataset's
dB range and the settings. A shard whose key already exists (with its ``.json`` written last and its
files of the recorded size) is reused as it is, so a version after a new flight writes that flight's
shard and shares the others with the previous version: storage grows with the flights, not with
flights × versions. The earlier shards stay unchanged when the new flight changes neither the split
of their tiles (``assignment="hash"``, the default: a tile's split depends on the tile alone) nor the dataset's
dB range (rounded to ``range_step_db``); otherwise the shards of the flights it touches are written
anew under new keys (correct, only less shared). Re-tiling a flight rewrites its tile manifest, so it
gets a new shard.

Same inputs and settings ⇒ byte-identical files: rows sorted by (flight, scene, tile row, tile col,
tile id), fixed row-group size and compression, no timestamps in the file metadata. The version id is
the SHA-256 of the schema version, the settings and the shard files' hashes, shortened to 16 hex
digits. The version folder is published whole after its shards (temporary name then rename, or a
pointer on object storage) and ``current.json`` last, so no reader sees a half-written version.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pydantic import Field
from upath import UPath

from sar_pipeline.dataset.collect import DatasetError, collect_tiles, read_image_file
from sar_pipeline.dataset.radiometry import (
    DatasetRadiometrySettings,
    choose_range,
    dataset_radiometry_columns,
    requantise,
    stored_histogram,
)
from sar_pipeline.dataset.read import MANIFEST_NAME, SHARDS_FOLDER, split_files
from sar_pipeline.dataset.schema import (
    BACKSCATTER_COLUMNS,
    GEOMETRY_COLUMN,
    IMAGE_COLUMNS,
    SCHEMA_VERSION,
    SPLITS,
    dataset_schema,
)
from sar_pipeline.dataset.split import DROPPED, SplitSettings, assign_splits
from sar_pipeline.errors import SarPipelineError
from sar_pipeline.storage import (
    as_path,
    atomic_local_file,
    atomic_write_bytes,
    is_local,
    publish_dir,
    relative_path,
    resolve_dir,
    validate_id,
)

#: hex digits of the shard key kept in its file names
SHARD_KEY_LENGTH = 24

#: Parquet compression codec and level (image bytes are PNG already; zstd helps the rest). Fixed,
#: like every writer option, so the same rows always give the same bytes.
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3


class TrainingDatasetSettings(SplitSettings, DatasetRadiometrySettings):
    """How the tiles of every captioned flight become the train/validation/test Parquet files."""

    row_group_size: int = Field(
        default=64,
        ge=1,
        description="Rows per Parquet row group (~64 tiles ≈ a few MB); fixed so files are reproducible.",
    )
    include_metadata_text: bool = Field(
        default=False,
        description="Append SAR acquisition words (band, polarisation, incidence, GSD) to each text, "
        "unless the captions already end with them.",
    )
    skip_bad_tiles: bool = Field(
        default=True,
        description="Leave out tiles without caption or with an unreadable image (listed in metadata) "
        "instead of failing.",
    )
    mosaic_tiles: int = Field(
        default=12, ge=0, description="Tiles shown with their captions in the dataset card."
    )
    keep_versions: int = Field(
        default=5,
        ge=1,
        description="Retention: keep the last this many dataset versions, plus the current one and any a "
        "checkpoint or model pointer names; older versions and the shards no kept version names are "
        "deleted after each build (local or s3:// storage roots).",
    )

    def version_json(self) -> dict[str, Any]:
        """What of the settings shapes the files: enters the version hash and the version manifest."""
        return {
            "split": self.split_json(),
            "row_group_size": self.row_group_size,
            "compression": COMPRESSION,
            "compression_level": COMPRESSION_LEVEL,
            "include_metadata_text": self.include_metadata_text,
            "radiometry": self.radiometry_json(),
        }


@dataclasses.dataclass(frozen=True)
class DatasetWriteResult:
    """What :func:`build_dataset` wrote."""

    version: str
    row_counts: dict[str, int]
    dropped_guard_tiles: int
    block_count: int
    #: median tile side on the ground, metres (for :func:`~sar_pipeline.dataset.split.block_size_advice`)
    median_tile_side_m: float
    flights: list[str]
    skipped: list[str]
    files: dict[str, list[str]]  # split → its shard files, paths relative to the storage root
    #: written rows without image bytes, plus ``image_path`` (SAR tile, relative to the storage root)
    rows: list[dict[str, Any]]
    #: the dB range every SAR image was quantised into, and how it was chosen
    radiometry: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: tiles left out by policy (nodata above max_nodata_fraction), with the reason
    left_out: list[str] = dataclasses.field(default_factory=list)
    #: flights whose shard this build wrote (the others were reused from earlier versions)
    shards_written: list[str] = dataclasses.field(default_factory=list)


def _image_struct(
    storage_root: UPath, rel_path: str | None, requantise_into: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The Image struct of one file; SAR backscatter (``requantise_into`` = (tile mapping, dataset
    mapping)) is re-quantised into the dataset's range."""
    if not rel_path:
        return None
    data = read_image_file(storage_root / rel_path, "image")
    if requantise_into is not None:
        data = requantise(data, requantise_into["tile"], requantise_into["dataset"], storage_root / rel_path)
    return {"bytes": data, "path": rel_path}


def _batches(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def write_split_file(
    storage_root: UPath,
    rows: list[dict[str, Any]],
    target: str | os.PathLike,
    settings: TrainingDatasetSettings,
) -> None:
    """Write one split's rows (already sorted) to a local Parquet file, reading images batch by batch.

    An empty split becomes a file with the schema and no row group (a zero-row row group would
    make ``datasets`` fail with "BatchSize must be greater than 0")."""
    schema = dataset_schema(r[GEOMETRY_COLUMN] for r in rows)
    with pq.ParquetWriter(
        str(target),
        schema,
        compression=COMPRESSION,
        compression_level=COMPRESSION_LEVEL,
        use_dictionary=True,
        write_statistics=True,
        version="2.6",
        data_page_version="1.0",
    ) as writer:
        for batch in _batches(rows, settings.row_group_size):
            records = []
            for row in batch:
                record = {k: v for k, v in row.items() if not k.startswith("_")}
                mappings = {"tile": row["_tile_radiometry"], "dataset": row["_dataset_radiometry"]}
                for column in IMAGE_COLUMNS:
                    backscatter = column in BACKSCATTER_COLUMNS
                    record[column] = _image_struct(
                        storage_root, row["_image_paths"].get(column), mappings if backscatter else None
                    )
                records.append(record)
            writer.write_table(
                pa.Table.from_pylist(records, schema=schema), row_group_size=settings.row_group_size
            )


def _sha256_file(path: Path | UPath) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_dataset(
    storage_root: UPath | str | os.PathLike,
    flight_ids: Sequence[str],
    settings: TrainingDatasetSettings | None = None,
    on_error: Callable[[SarPipelineError], None] | None = None,
) -> DatasetWriteResult:
    """Collect every flight's tiles, split them, write the flights' shards that do not exist yet,
    publish ``dataset/<version>/manifest.json`` and point ``dataset/current.json`` at it. Raises
    DatasetError when no tile is left to write.

    ``on_error``: when given, bad tiles are passed to it and left out; otherwise the first one raises.
    """
    settings = settings or TrainingDatasetSettings()
    root = as_path(storage_root)
    collected = collect_tiles(root, flight_ids, settings.include_metadata_text, on_error)
    if not collected.rows:
        raise DatasetError(
            root, f"no dataset rows: flights {collected.flights or '(none)'} have no captioned tiles"
        )
    candidates, left_out = [], []
    for row in collected.rows:
        if row["nodata_fraction"] > settings.max_nodata_fraction:
            left_out.append(
                f"tile {row['tile_id']!r}: nodata fraction {row['nodata_fraction']:.3f} > max_nodata_fraction "
                f"{settings.max_nodata_fraction} (nodata decodes as black)"
            )
        else:
            candidates.append(row)
    if not candidates:
        raise DatasetError(
            root,
            f"no dataset rows: all {len(collected.rows)} captioned tiles have more nodata than "
            f"max_nodata_fraction={settings.max_nodata_fraction}; raise it (black nodata is then learnt) or "
            "tile with a smaller tile_size",
        )
    radiometry_info = _apply_dataset_radiometry(root, candidates, settings)
    footprints = shapely.from_wkb([r[GEOMETRY_COLUMN] for r in candidates])
    result = assign_splits(list(footprints), settings)
    for row, split in zip(candidates, result.splits, strict=True):
        row["split"] = split
    kept = [r for r in candidates if r["split"] != DROPPED]

    shards, written = [], []
    for flight_id, rows in itertools.groupby(kept, key=lambda r: r["flight_id"]):
        shard, new = write_shard(root, flight_id, list(rows), settings)
        shards.append(shard)
        if new:
            written.append(flight_id)
    row_counts = {s: sum(sh["files"][s]["rows"] for sh in shards if s in sh["files"]) for s in SPLITS}
    version = hashlib.sha256(
        json.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "shards": [{s: f["sha256"] for s, f in sh["files"].items()} for sh in shards],
                "config": settings.version_json(),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    manifest = {
        "version": version,
        "schema_version": SCHEMA_VERSION,
        "config": settings.version_json(),
        "flights": collected.flights,
        "row_counts": row_counts,
        "dropped_guard_tiles": result.dropped_count,
        "block_count": result.block_count,
        "skipped_tiles": [str(e) for e in collected.skipped],
        "left_out_tiles": left_out,
        "radiometry": radiometry_info,
        "shards": shards,
    }
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    target = root / "dataset" / version
    if not _published(target, manifest_bytes):
        with publish_dir(target) as publication:
            (publication.local / MANIFEST_NAME).write_bytes(manifest_bytes)
    files = split_files(manifest)
    current = {"version": version, "splits": files, "row_counts": row_counts}
    atomic_write_bytes(
        root / "dataset" / "current.json", (json.dumps(current, indent=2, sort_keys=True) + "\n").encode()
    )
    return DatasetWriteResult(
        version=version,
        row_counts=row_counts,
        dropped_guard_tiles=result.dropped_count,
        block_count=result.block_count,
        median_tile_side_m=result.median_tile_side_m,
        flights=collected.flights,
        skipped=[str(e) for e in collected.skipped],
        files=files,
        rows=[_public_row(r) for r in kept],
        radiometry=radiometry_info,
        left_out=left_out,
        shards_written=written,
    )


def shard_key(flight_id: str, rows: Sequence[dict[str, Any]], settings: TrainingDatasetSettings) -> str:
    """SHA-256 (hex) of everything that shapes a flight's shard files: schema version, settings and the
    rows as collected (metadata, split, image paths, each tile's and the dataset's radiometry)."""
    payload = {
        "schema_version": SCHEMA_VERSION,
        "config": settings.version_json(),
        "flight_id": flight_id,
        "rows": list(rows),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=_json_value).encode()).hexdigest()


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_shard(
    storage_root: UPath, flight_id: str, rows: list[dict[str, Any]], settings: TrainingDatasetSettings
) -> tuple[dict[str, Any], bool]:
    """Write one flight's rows (sorted, split assigned) as ``dataset/shards/<flight_id>/<key>.<split>
    .parquet`` per non-empty split, then ``<key>.json`` naming them; unless that shard already exists
    whole, then it is reused untouched. Returns the shard's manifest entry and whether it was written."""
    validate_id(flight_id, "flight id")
    key = shard_key(flight_id, rows, settings)[:SHARD_KEY_LENGTH]
    folder = storage_root / "dataset" / SHARDS_FOLDER / flight_id
    index_path = folder / f"{key}.json"
    existing = _existing_shard(storage_root, index_path)
    if existing is not None:
        return existing, False
    files = {}
    for split in SPLITS:
        split_rows = [r for r in rows if r["split"] == split]
        if not split_rows:
            continue
        target = folder / f"{key}.{split}.parquet"
        with atomic_local_file(target, suffix=".parquet") as local:
            write_split_file(storage_root, split_rows, local, settings)
            files[split] = {
                "path": relative_path(target, storage_root),
                "sha256": _sha256_file(Path(local)),
                "bytes": Path(local).stat().st_size,
                "rows": len(split_rows),
            }
    shard = {"flight_id": flight_id, "key": key, "files": files}
    atomic_write_bytes(index_path, (json.dumps(shard, indent=2, sort_keys=True) + "\n").encode())
    return shard, True


def _existing_shard(storage_root: UPath, index_path: UPath) -> dict[str, Any] | None:
    """A shard's manifest entry when its ``.json`` (written last) and every file it names, of the
    recorded size, are there; else None (never written, or a file lost since: written again)."""
    try:
        shard = json.loads(index_path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    for entry in shard.get("files", {}).values():
        path = storage_root / entry["path"]
        try:
            if path.stat().st_size != entry["bytes"]:
                return None
        except FileNotFoundError:
            return None
    return shard


def _apply_dataset_radiometry(
    root: UPath, rows: list[dict[str, Any]], settings: TrainingDatasetSettings
) -> dict[str, Any]:
    """Choose the dataset's dB range from the tiles' pooled histograms and record, on every row, the
    mapping its images are re-quantised into and the share of its valid pixels clipped at each end."""
    histograms = []
    for row in rows:
        path = root / row["_image_paths"]["image"]
        tile = row["_tile_radiometry"]
        data = None if tile.get("db_histogram") is not None else read_image_file(path, "SAR tile")
        histograms.append(stored_histogram(tile, data, path))
    params, how = choose_range(histograms, settings)
    recorded = dataset_radiometry_columns(params)
    for row, histogram in zip(rows, histograms, strict=True):
        low, high = histogram.fractions_outside(params.db_min, params.db_max)
        row.update(
            recorded,
            value_unit="amplitude" if params.normalisation == "amplitude" else "db",
            clipped_low_fraction=low,
            clipped_high_fraction=high,
            _dataset_radiometry=params,
        )
    return {**recorded, "chosen": how}


def _public_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if not k.startswith("_")}
    out["image_path"] = row["_image_paths"]["image"]
    # how the tile file maps to dB (the card shows it as the dataset holds it)
    out["image_tile_radiometry"] = {k: row["_tile_radiometry"][k] for k in ("db_min", "db_max", "bit_depth")}
    return out


def _published(version_dir: UPath, manifest_bytes: bytes) -> bool:
    """Whether ``version_dir`` already holds this manifest (same name ⇒ same shards): published whole
    (on object storage, a pointer names it) with the same bytes."""
    resolved = resolve_dir(version_dir)
    if not is_local(version_dir) and resolved == version_dir:
        return False  # no pointer: never published, or an upload that did not finish
    try:
        return (resolved / MANIFEST_NAME).read_bytes() == manifest_bytes
    except FileNotFoundError:
        return False
