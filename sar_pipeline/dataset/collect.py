"""Collect the dataset rows of every flight from the files the earlier stages wrote.

Inputs per flight (paths under the storage root; paths inside manifests are relative to it)::

    flights/<flight_id>/sar_tiles/manifest.parquet      one row per SAR tile (required)
    flights/<flight_id>/optical_tiles/manifest.parquet  optical tile per SAR tile (optional)
    flights/<flight_id>/captions.parquet                one caption per SAR tile (required)

The tile manifests are read with the geo stage's own reader (:func:`sar_pipeline.geo.manifest.
read_manifest`) and their columns by the names the geo stage writes (``path``, ``datetime``,
``unit``…); the captions by :data:`sar_pipeline.captioning.tiles.CAPTIONS_SCHEMA`'s names. A row
is metadata plus the relative paths of its images: the image bytes are read only when the split
files are written (:mod:`sar_pipeline.dataset.write`), a batch at a time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow.parquet as pq
import shapely
from PIL import Image
from upath import UPath

from sar_pipeline.captioning.base import acquisition_words, polarization_list
from sar_pipeline.dataset.schema import GEOMETRY_COLUMN
from sar_pipeline.errors import RasterError, SarPipelineError
from sar_pipeline.geo.manifest import read_manifest
from sar_pipeline.storage import as_path, resolve_dir, validate_id
from sar_pipeline.timestamps import parse_utc

#: columns a dataset row cannot do without, per input file (the others may be null or absent)
SAR_MANIFEST_REQUIRED = ("tile_id", "path", "geometry")
OPTICAL_MANIFEST_REQUIRED = ("tile_id", "path")
CAPTIONS_REQUIRED = ("tile_id", "text")


class DatasetError(SarPipelineError):
    """A flight's manifests or captions cannot make dataset rows (missing caption, bad column…)."""


@dataclasses.dataclass
class CollectedTiles:
    """Dataset rows before the image bytes are read: metadata plus the images' relative paths."""

    rows: list[dict[str, Any]]
    flights: list[str]
    skipped: list[SarPipelineError] = dataclasses.field(default_factory=list)


def sar_manifest_path(storage_root: UPath, flight_id: str) -> UPath:
    """The flight's SAR tile manifest (written by the ``sar_tiles`` stage)."""
    return resolve_dir(storage_root / "flights" / flight_id / "sar_tiles") / "manifest.parquet"


def optical_manifest_path(storage_root: UPath, flight_id: str) -> UPath:
    """The flight's optical tile manifest (written by the ``optical_tiles`` stage; may be absent)."""
    return resolve_dir(storage_root / "flights" / flight_id / "optical_tiles") / "manifest.parquet"


def captions_path(storage_root: UPath, flight_id: str) -> UPath:
    """The flight's captions (written by the ``captions`` stage)."""
    return storage_root / "flights" / flight_id / "captions.parquet"


def read_image_file(path: UPath, what: str) -> bytes:
    """The bytes of an image file; RasterError naming the file if it is missing or unreadable."""
    try:
        with path.open("rb") as f:
            return f.read()
    except FileNotFoundError as exc:
        raise RasterError(path, f"{what} file not found") from exc
    except OSError as exc:
        raise RasterError(path, f"{what} file unreadable ({exc})") from exc


def _check_image(storage_root: UPath, rel_path: str, what: str) -> None:
    """Raise RasterError naming the file if it is missing or does not decode as an image."""
    path = storage_root / rel_path
    data = read_image_file(path, what)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except Exception as exc:
        raise RasterError(path, f"{what} is not a readable image ({exc})") from exc


def _require_columns(rows: Sequence[dict[str, Any]], path: UPath, names: Sequence[str]) -> None:
    present = rows[0].keys() if rows else names
    missing = [n for n in names if n not in present]
    if missing:
        raise DatasetError(path, f"missing column(s) {missing} (columns: {sorted(present)})")


def _read_captions(path: UPath) -> list[dict[str, Any]]:
    try:
        with path.open("rb") as f:
            rows = pq.read_table(f).to_pylist()
    except FileNotFoundError as exc:
        raise DatasetError(path, "file not found") from exc
    except Exception as exc:
        raise DatasetError(path, f"not a readable Parquet file ({exc})") from exc
    _require_columns(rows, path, CAPTIONS_REQUIRED)
    return rows


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
    try:
        return parse_utc(value)
    except ValueError as exc:
        raise DatasetError(source, f"acquisition time {value!r} is not ISO 8601") from exc


def _as_wkb(value: Any, source: str) -> bytes:
    """A footprint (shapely geometry as read_manifest returns it, or WKB) as 2-D little-endian WKB."""
    if value is None:
        raise DatasetError(source, "no footprint geometry")
    try:
        geom = value if isinstance(value, shapely.Geometry) else shapely.from_wkb(value)
    except Exception as exc:
        raise DatasetError(source, f"footprint is not valid WKB ({exc})") from exc
    if geom is None or geom.is_empty:
        raise DatasetError(source, "footprint geometry is empty")
    return shapely.to_wkb(geom, output_dimension=2, byte_order=1)


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

    sar = read_manifest(sar_path)
    _require_columns(sar, sar_path, SAR_MANIFEST_REQUIRED)
    captions = _read_captions(cap_path)
    optical_rows: dict[str, dict[str, Any]] = {}
    if opt_path.exists():
        optical = read_manifest(opt_path)
        _require_columns(optical, opt_path, OPTICAL_MANIFEST_REQUIRED)
        optical_rows = {r["tile_id"]: r for r in optical}

    caption_rows: dict[str, dict[str, Any]] = {}
    for r in captions:
        if r["tile_id"] in caption_rows:
            raise DatasetError(cap_path, f"tile {r['tile_id']!r} has more than one caption")
        caption_rows[r["tile_id"]] = r

    rows = []
    seen: set[str] = set()
    for sar_row in sar:
        tile_id = sar_row["tile_id"]
        source = f"tile {tile_id!r} of {sar_path}"
        try:
            if tile_id in seen:
                raise DatasetError(sar_path, f"tile id {tile_id!r} appears twice")
            seen.add(tile_id)
            failed = _failed_checks(sar_row.get("failed_checks"))
            if failed:
                raise DatasetError(source, f"failed the blocking sar_tiles check(s) {failed}: left out")
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
    """One dataset row (:data:`sar_pipeline.dataset.schema.BASE_SCHEMA` columns, no image bytes yet)."""
    text = cap.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DatasetError(source, "caption text is empty")
    if not sar["path"]:
        raise DatasetError(source, "no SAR tile path")
    _check_image(storage_root, sar["path"], "SAR tile")
    opt = opt or {}
    image_paths = {"image": sar["path"]}
    for column, rel, what in (
        ("optical_image", opt.get("path"), "optical tile"),
        ("landcover_image", sar.get("landcover_path"), "land-cover tile"),
        ("idealised_image", sar.get("idealised_path"), "idealised tile"),
    ):
        if rel:
            _check_image(storage_root, rel, what)
        image_paths[column] = rel or None
    transform = sar.get("transform")
    footprint_scene = sar.get("footprint_scene_crs")
    return {
        "tile_id": str(sar["tile_id"]),
        "flight_id": str(sar.get("flight_id") or flight_id),
        "scene_id": sar.get("scene_id"),
        "tile_row": _as_int(sar.get("tile_row")),
        "tile_col": _as_int(sar.get("tile_col")),
        "split": None,
        "text": " ".join(text.split()),
        "caption": cap.get("caption"),
        "captioner_id": cap.get("captioner_id"),
        "captioner_version": cap.get("captioner_version"),
        "caption_score": _as_float(cap.get("score")),
        "optical_coverage_fraction": _as_float(opt.get("coverage_fraction")),
        "optical_time_gap_s": _as_float(opt.get("time_gap_s")),
        GEOMETRY_COLUMN: _as_wkb(sar["geometry"], source),
        "footprint_scene_crs": _as_wkb(footprint_scene, source) if footprint_scene is not None else None,
        "crs": sar.get("crs"),
        "transform": [float(v) for v in transform][:6] if transform is not None else None,
        "ground_sample_distance_m": _as_float(sar.get("ground_sample_distance_m")),
        "acquisition_datetime": _as_utc(sar.get("datetime"), source),
        "platform": sar.get("platform"),
        "frequency_band": sar.get("frequency_band"),
        "polarizations": polarization_list(sar.get("polarizations")) or None,
        "incidence_angle_deg": _as_float(sar.get("incidence_angle_deg")),
        "heading_deg": _as_float(sar.get("heading_deg")),
        "observation_direction": sar.get("observation_direction"),
        "value_unit": sar.get("unit"),
        "db_min": _as_float(sar.get("db_min")),
        "db_max": _as_float(sar.get("db_max")),
        "bit_depth": _as_int(sar.get("bit_depth")),
        "nodata_fraction": _as_float(sar.get("nodata_fraction")) or 0.0,
        # the stored tile's own mapping and valid-dB histogram: the dataset re-quantises every tile
        # into one range pooled over all flights (sar_pipeline.dataset.radiometry)
        "_tile_radiometry": {
            "db_min": _as_float(sar.get("db_min")),
            "db_max": _as_float(sar.get("db_max")),
            "bit_depth": _as_int(sar.get("bit_depth")) or 8,
            "db_histogram": sar.get("db_histogram"),
            "db_histogram_start_db": _as_float(sar.get("db_histogram_start_db")),
        },
        "_image_paths": image_paths,
    }


def _failed_checks(value: Any) -> list[str]:
    """The blocking checks a manifest row failed (JSON list, list or None)."""
    if not value:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return [value]
    return [str(v) for v in value]


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
    """Rows of every given flight, sorted; tile ids must be unique over all flights.

    With ``on_error``, a flight whose manifest or captions file cannot be read (corrupt, cut short)
    is passed to it and left out, like a bad tile: the other flights still make the dataset.
    """
    root = as_path(storage_root)
    skipped: list[SarPipelineError] = []

    def record(err: SarPipelineError) -> None:
        skipped.append(err)
        on_error(err)  # type: ignore[misc]

    rows: list[dict[str, Any]] = []
    flights = []
    for flight_id in sorted(set(flight_ids)):
        try:
            rows.extend(collect_flight(root, flight_id, include_metadata_text, record if on_error else None))
        except SarPipelineError as err:
            if on_error is None:
                raise
            record(DatasetError(f"flight {flight_id}", f"left out: {err}"))
            continue
        flights.append(flight_id)
    rows.sort(key=_sort_key)
    first_flight: dict[str, str] = {}
    for row in rows:
        other = first_flight.setdefault(row["tile_id"], row["flight_id"])
        if other != row["flight_id"]:
            raise DatasetError(
                f"tile {row['tile_id']!r}", f"appears in flights {other!r} and {row['flight_id']!r}"
            )
    return CollectedTiles(rows=rows, flights=flights, skipped=skipped)
