"""Build the training dataset from every flight's tile manifests and captions, write it, read it back.

Inputs per flight (paths under the storage root; paths inside manifests are relative to it)::

    flights/<flight_id>/sar_tiles/manifest.parquet      one row per SAR tile (required)
    flights/<flight_id>/optical_tiles/manifest.parquet  optical tile per SAR tile (optional)
    flights/<flight_id>/captions.parquet                one caption per SAR tile (required)

Output::

    dataset/<version>/{train,validation,test}.parquet   schema in sar_pipeline.dataset.schema
    dataset/<version>/dataset_info.json                 counts, config, file hashes
    dataset/current.json                                {"version": …, "splits": {…}, …}

Same inputs and config ⇒ byte-identical files: rows sorted by (flight, scene, tile row, tile col,
tile id), fixed row-group size and compression, no timestamps in the file metadata. The version
id is the SHA-256 of the written split files (so it is a hash of rows + image bytes + the split
config that shaped them), shortened to 16 hex digits.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from PIL import Image
from upath import UPath

from sar_pipeline.captioning.base import acquisition_words, polarization_list
from sar_pipeline.dataset.schema import (
    GEOMETRY_COLUMN,
    IMAGE_COLUMNS,
    SCHEMA_VERSION,
    SPLITS,
    dataset_schema,
)
from sar_pipeline.dataset.split import DROPPED, SplitConfig, assign_splits
from sar_pipeline.errors import ConfigError, RasterError, SarPipelineError
from sar_pipeline.storage import as_path, atomic_local_dir, atomic_write_bytes, validate_id


class DatasetError(SarPipelineError):
    """A flight's manifests or captions cannot make dataset rows (missing caption, bad column…)."""


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """How the dataset is assembled and written; every field enters the files or the version."""

    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    #: rows per Parquet row group (fixed so files are reproducible; ~64 tiles ≈ a few MB)
    row_group_size: int = 64
    #: Parquet compression codec and level (image bytes are PNG already; zstd helps the rest)
    compression: str = "zstd"
    compression_level: int = 3
    #: append SAR acquisition words (band, polarisation, incidence, GSD) to each text
    include_metadata_text: bool = False

    def __post_init__(self) -> None:
        if self.row_group_size < 1:
            raise ConfigError("row_group_size", f"must be >= 1, got {self.row_group_size}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class CollectedTiles:
    """Dataset rows before the image bytes are read: metadata plus the images' relative paths."""

    rows: list[dict[str, Any]]
    flights: list[str]
    skipped: list[SarPipelineError] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class DatasetWriteResult:
    """What :func:`build_dataset` wrote."""

    version: str
    row_counts: dict[str, int]
    dropped_guard_tiles: int
    block_count: int
    flights: list[str]
    skipped: list[str]
    files: dict[str, str]  # split → path relative to the storage root
    #: written rows without image bytes, plus ``image_path`` (SAR tile, relative to the storage root)
    rows: list[dict[str, Any]]


# ---------------------------------------------------------------------------------------------
# Reading the per-flight inputs


def sar_manifest_path(storage_root: UPath, flight_id: str) -> UPath:
    return storage_root / "flights" / flight_id / "sar_tiles" / "manifest.parquet"


def optical_manifest_path(storage_root: UPath, flight_id: str) -> UPath:
    return storage_root / "flights" / flight_id / "optical_tiles" / "manifest.parquet"


def captions_path(storage_root: UPath, flight_id: str) -> UPath:
    return storage_root / "flights" / flight_id / "captions.parquet"


def _read_table(path: UPath) -> pa.Table:
    try:
        with path.open("rb") as f:
            return pq.read_table(f)
    except FileNotFoundError as exc:
        raise DatasetError(path, "file not found") from exc
    except Exception as exc:
        raise DatasetError(path, f"not a readable Parquet file ({exc})") from exc


def _pick(row: dict[str, Any], *names: str) -> Any:
    """The first of ``names`` present (and not None) in ``row``: manifests name a few fields variously."""
    for name in names:
        if row.get(name) is not None:
            return row[name]
    return None


def _require_columns(table: pa.Table, path: UPath, *alternatives: tuple[str, ...]) -> None:
    for names in alternatives:
        if not any(n in table.column_names for n in names):
            raise DatasetError(
                path, f"missing column {' or '.join(map(repr, names))} (columns: {table.column_names})"
            )


def _as_float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _as_int(value: Any) -> int | None:
    f = _as_float(value)
    return None if f is None else int(f)


def _as_utc(value: Any, source: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise DatasetError(source, f"acquisition time {value!r} is not ISO 8601") from exc
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp (nanosecond columns)
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    return None


def _as_wkb(value: Any, source: str) -> bytes:
    if value is None:
        raise DatasetError(source, "no footprint geometry")
    try:
        geom = shapely.from_wkb(value) if isinstance(value, bytes | bytearray) else shapely.from_wkt(value)
    except Exception as exc:
        raise DatasetError(source, f"footprint is not valid WKB/WKT ({exc})") from exc
    if geom is None or geom.is_empty:
        raise DatasetError(source, "footprint geometry is empty")
    return shapely.to_wkb(geom, output_dimension=2, byte_order=1)


def _check_image(storage_root: UPath, rel_path: str, what: str) -> None:
    """Raise RasterError naming the file if it is missing or does not decode as an image."""
    path = storage_root / rel_path
    try:
        with path.open("rb") as f:
            data = f.read()
    except FileNotFoundError as exc:
        raise RasterError(path, f"{what} file not found") from exc
    except OSError as exc:
        raise RasterError(path, f"{what} file unreadable ({exc})") from exc
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except Exception as exc:
        raise RasterError(path, f"{what} is not a readable image ({exc})") from exc


def collect_flight(
    storage_root: UPath,
    flight_id: str,
    include_metadata_text: bool = False,
    on_error: Callable[[SarPipelineError], None] | None = None,
) -> list[dict[str, Any]]:
    """Dataset rows (without image bytes) for one flight, one per SAR tile with a caption.

    A tile without caption, with an empty text, a bad footprint or an unreadable image raises a
    DatasetError / RasterError naming the tile or file; with ``on_error`` the error is passed to
    it instead and the tile is left out.
    """
    validate_id(flight_id, "flight id")
    sar_path = sar_manifest_path(storage_root, flight_id)
    cap_path = captions_path(storage_root, flight_id)
    opt_path = optical_manifest_path(storage_root, flight_id)

    sar = _read_table(sar_path)
    _require_columns(sar, sar_path, ("tile_id",), ("tile_path", "path", "image_path"), ("geometry",))
    captions = _read_table(cap_path)
    _require_columns(captions, cap_path, ("tile_id",), ("text",))
    optical_rows: dict[str, dict[str, Any]] = {}
    if opt_path.exists():
        optical = _read_table(opt_path)
        _require_columns(optical, opt_path, ("tile_id",))
        optical_rows = {r["tile_id"]: r for r in optical.to_pylist()}

    caption_rows: dict[str, dict[str, Any]] = {}
    for r in captions.to_pylist():
        if r["tile_id"] in caption_rows:
            raise DatasetError(cap_path, f"tile {r['tile_id']!r} has more than one caption")
        caption_rows[r["tile_id"]] = r

    rows = []
    seen: set[str] = set()
    for sar_row in sar.to_pylist():
        tile_id = sar_row["tile_id"]
        source = f"tile {tile_id!r} of {sar_path}"
        try:
            if tile_id in seen:
                raise DatasetError(sar_path, f"tile id {tile_id!r} appears twice")
            seen.add(tile_id)
            cap = caption_rows.get(tile_id)
            if cap is None:
                raise DatasetError(source, f"no caption in {cap_path}")
            try:
                row = _make_row(storage_root, flight_id, sar_row, cap, optical_rows.get(tile_id), source)
            except (TypeError, ValueError) as exc:  # a column of the wrong type (transform, tile_row…)
                raise DatasetError(source, f"malformed manifest row ({type(exc).__name__}: {exc})") from exc
            rows.append(row)
        except SarPipelineError as err:
            if on_error is None:
                raise
            on_error(err)
    if include_metadata_text:
        for row in rows:
            words = acquisition_words(
                row["frequency_band"],
                row["polarizations"],
                row["incidence_angle_deg"],
                row["ground_sample_distance_m"],
            )
            if words and not row["text"].rstrip(" .").endswith(words):
                row["text"] = f"{row['text'].rstrip(' .')}, {words}"
    return rows


def _make_row(
    storage_root: UPath,
    flight_id: str,
    sar: dict[str, Any],
    cap: dict[str, Any],
    opt: dict[str, Any] | None,
    source: str,
) -> dict[str, Any]:
    tile_id = sar["tile_id"]
    text = cap.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DatasetError(source, "caption text is empty")
    tile_path = _pick(sar, "tile_path", "path", "image_path")
    if not tile_path:
        raise DatasetError(source, "no tile_path")
    _check_image(storage_root, tile_path, "SAR tile")
    image_paths = {"image": tile_path}
    for column, rel, what in (
        ("optical_image", _pick(opt or {}, "optical_path", "tile_path", "path"), "optical tile"),
        ("landcover_image", _pick(sar, "landcover_path"), "land-cover tile"),
        ("idealised_image", _pick(sar, "idealised_path"), "idealised tile"),
    ):
        if rel:
            _check_image(storage_root, rel, what)
        image_paths[column] = rel or None
    transform = _pick(sar, "transform")
    footprint_scene = _pick(sar, "footprint_scene_crs")
    return {
        "tile_id": str(tile_id),
        "flight_id": str(_pick(sar, "flight_id") or flight_id),
        "scene_id": _pick(sar, "scene_id"),
        "tile_row": _as_int(_pick(sar, "tile_row", "row", "row_index")),
        "tile_col": _as_int(_pick(sar, "tile_col", "col", "col_index")),
        "split": None,
        "text": " ".join(text.split()),
        "caption": _pick(cap, "caption"),
        "captioner_id": _pick(cap, "captioner_id"),
        "captioner_version": _pick(cap, "captioner_version"),
        "caption_score": _as_float(_pick(cap, "score", "caption_score")),
        "optical_coverage_fraction": _as_float(_pick(opt or {}, "coverage_fraction")),
        "optical_time_gap_s": _as_float(_pick(opt or {}, "time_gap_s")),
        GEOMETRY_COLUMN: _as_wkb(sar.get("geometry"), source),
        "footprint_scene_crs": _as_wkb(footprint_scene, source) if footprint_scene is not None else None,
        "crs": _pick(sar, "crs"),
        "transform": [float(v) for v in transform][:6] if transform is not None else None,
        "ground_sample_distance_m": _as_float(_pick(sar, "ground_sample_distance_m", "gsd_m")),
        "acquisition_datetime": _as_utc(
            _pick(sar, "acquisition_datetime", "datetime", "scene_datetime"), source
        ),
        "platform": _pick(sar, "platform"),
        "frequency_band": _pick(sar, "frequency_band", "band"),
        "polarizations": polarization_list(_pick(sar, "polarizations", "polarisations", "polarization"))
        or None,
        "incidence_angle_deg": _as_float(_pick(sar, "incidence_angle_deg")),
        "heading_deg": _as_float(_pick(sar, "heading_deg")),
        "observation_direction": _pick(sar, "observation_direction"),
        "value_unit": _pick(sar, "value_unit", "unit"),
        "db_min": _as_float(_pick(sar, "db_min")),
        "db_max": _as_float(_pick(sar, "db_max")),
        "bit_depth": _as_int(_pick(sar, "bit_depth")),
        "_image_paths": image_paths,
    }


def _sort_key(row: dict[str, Any]) -> tuple:
    return (
        row["flight_id"],
        row["scene_id"] or "",
        row["tile_row"] if row["tile_row"] is not None else -1,
        row["tile_col"] if row["tile_col"] is not None else -1,
        row["tile_id"],
    )


def collect_tiles(
    storage_root: UPath | str | os.PathLike,
    flight_ids: Sequence[str],
    include_metadata_text: bool = False,
    on_error: Callable[[SarPipelineError], None] | None = None,
) -> CollectedTiles:
    """Rows of every given flight, sorted; tile ids must be unique over all flights."""
    root = as_path(storage_root)
    skipped: list[SarPipelineError] = []

    def record(err: SarPipelineError) -> None:
        skipped.append(err)
        on_error(err)  # type: ignore[misc]

    rows: list[dict[str, Any]] = []
    flights = sorted(set(flight_ids))
    for flight_id in flights:
        rows.extend(collect_flight(root, flight_id, include_metadata_text, record if on_error else None))
    rows.sort(key=_sort_key)
    first_flight: dict[str, str] = {}
    for row in rows:
        other = first_flight.setdefault(row["tile_id"], row["flight_id"])
        if other != row["flight_id"]:
            raise DatasetError(
                f"tile {row['tile_id']!r}", f"appears in flights {other!r} and {row['flight_id']!r}"
            )
    return CollectedTiles(rows=rows, flights=flights, skipped=skipped)


# ---------------------------------------------------------------------------------------------
# Writing


def _image_struct(storage_root: UPath, rel_path: str | None) -> dict[str, Any] | None:
    if not rel_path:
        return None
    path = storage_root / rel_path
    try:
        with path.open("rb") as f:
            data = f.read()
    except OSError as exc:
        raise RasterError(path, f"image unreadable while writing the dataset ({exc})") from exc
    return {"bytes": data, "path": rel_path}


def _batches(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def write_split_file(
    storage_root: UPath, rows: list[dict[str, Any]], target: str | os.PathLike, config: DatasetConfig
) -> None:
    """Write one split's rows (already sorted) to a local Parquet file, reading images batch by batch.

    An empty split becomes a file with the schema and no row group (a zero-row row group would
    make ``datasets`` fail with "BatchSize must be greater than 0")."""
    schema = dataset_schema(r[GEOMETRY_COLUMN] for r in rows)
    with pq.ParquetWriter(
        str(target),
        schema,
        compression=config.compression,
        compression_level=config.compression_level,
        use_dictionary=True,
        write_statistics=True,
        version="2.6",
        data_page_version="1.0",
    ) as writer:
        for batch in _batches(rows, config.row_group_size):
            records = []
            for row in batch:
                record = {k: v for k, v in row.items() if not k.startswith("_")}
                for column in IMAGE_COLUMNS:
                    record[column] = _image_struct(storage_root, row["_image_paths"].get(column))
                records.append(record)
            writer.write_table(
                pa.Table.from_pylist(records, schema=schema), row_group_size=config.row_group_size
            )


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_dataset(
    storage_root: UPath | str | os.PathLike,
    flight_ids: Sequence[str],
    config: DatasetConfig | None = None,
    on_error: Callable[[SarPipelineError], None] | None = None,
) -> DatasetWriteResult:
    """Collect every flight's tiles, split them, write ``dataset/<version>/`` and point
    ``dataset/current.json`` at it. Raises DatasetError when no tile is left to write.

    ``on_error``: when given, bad tiles are passed to it and left out; otherwise the first one raises.
    """
    config = config or DatasetConfig()
    root = as_path(storage_root)
    collected = collect_tiles(root, flight_ids, config.include_metadata_text, on_error)
    if not collected.rows:
        raise DatasetError(
            root, f"no dataset rows: flights {collected.flights or '(none)'} have no captioned tiles"
        )
    footprints = shapely.from_wkb([r[GEOMETRY_COLUMN] for r in collected.rows])
    result = assign_splits(list(footprints), config.split)
    for row, split in zip(collected.rows, result.splits, strict=True):
        row["split"] = split
    kept = [r for r in collected.rows if r["split"] != DROPPED]
    by_split = {s: [r for r in kept if r["split"] == s] for s in SPLITS}

    with tempfile.TemporaryDirectory(prefix="sar-dataset-") as tmp:
        hashes = {}
        for split in SPLITS:
            local = Path(tmp) / f"{split}.parquet"
            write_split_file(root, by_split[split], local, config)
            hashes[split] = _sha256_file(local)
        digest = hashlib.sha256(
            json.dumps(
                {"schema_version": SCHEMA_VERSION, "files": hashes, "config": config.to_json()},
                sort_keys=True,
            ).encode()
        ).hexdigest()
        version = digest[:16]
        row_counts = {s: len(by_split[s]) for s in SPLITS}
        info = {
            "version": version,
            "schema_version": SCHEMA_VERSION,
            "config": config.to_json(),
            "flights": collected.flights,
            "row_counts": row_counts,
            "dropped_guard_tiles": result.dropped_count,
            "block_count": result.block_count,
            "skipped_tiles": [str(e) for e in collected.skipped],
            "files_sha256": hashes,
        }
        (Path(tmp) / "dataset_info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        target = root / "dataset" / version
        if not _complete(target):
            with atomic_local_dir(target) as out:
                for name in [f"{s}.parquet" for s in SPLITS] + ["dataset_info.json"]:
                    os.replace(Path(tmp) / name, Path(out) / name)
    files = {s: f"dataset/{version}/{s}.parquet" for s in SPLITS}
    current = {"version": version, "splits": files, "row_counts": row_counts}
    atomic_write_bytes(
        root / "dataset" / "current.json", (json.dumps(current, indent=2, sort_keys=True) + "\n").encode()
    )
    return DatasetWriteResult(
        version=version,
        row_counts=row_counts,
        dropped_guard_tiles=result.dropped_count,
        block_count=result.block_count,
        flights=collected.flights,
        skipped=[str(e) for e in collected.skipped],
        files=files,
        rows=[_public_row(r) for r in kept],
    )


def _public_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if not k.startswith("_")}
    out["image_path"] = row["_image_paths"]["image"]
    return out


def _complete(version_dir: UPath) -> bool:
    """A version folder exists whole (same name ⇒ same content, so it need not be rewritten)."""
    names = [f"{s}.parquet" for s in SPLITS] + ["dataset_info.json"]
    if not all((version_dir / n).exists() for n in names):
        return False
    local = getattr(version_dir, "protocol", "") in ("", "file", "local")
    return local or (version_dir / "_COMPLETE").exists()


# ---------------------------------------------------------------------------------------------
# Reading (the API downstream stages use)


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
    return {s: root / "dataset" / version / f"{s}.parquet" for s in SPLITS}


def dataset_info(storage_root: UPath | str | os.PathLike, version: str | None = None) -> dict[str, Any]:
    """The ``dataset_info.json`` of ``version`` (default: current): counts, config, flights, hashes."""
    root = as_path(storage_root)
    version = validate_id(version, "dataset version") if version else current_version(root)
    path = root / "dataset" / version / "dataset_info.json"
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
