"""GeoParquet on disk: tile manifests (one file per flight and stage) and the one GeoParquet writer.

A tile manifest row is one tile (:func:`sar_pipeline.geo.tiling.manifest_row`,
:func:`sar_pipeline.geo.colocation.colocate_tiles`); ``geometry`` is its WGS84 footprint (GeoParquet
1.1), ``footprint_scene_crs`` the same in the scene's CRS as WKB. The ``sar_scenes`` table
(:mod:`sar_pipeline.geo.scene_table`) is written by the same :func:`write_geoparquet`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from shapely import wkb

from sar_pipeline.errors import RasterError
from sar_pipeline.storage import atomic_local_file


def write_geoparquet(table: gpd.GeoDataFrame, path) -> None:
    """Write ``table`` as GeoParquet 1.1 (zstd, no index), atomically; local path or UPath."""
    with atomic_local_file(path) as tmp:
        table.to_parquet(
            tmp, index=False, compression="zstd", schema_version="1.1.0", write_covering_bbox=False
        )


def write_manifest(rows: Sequence[dict[str, Any]], path, columns: Sequence[str] | None = None) -> None:
    """Write tile manifest rows as GeoParquet (``geometry`` = WGS84 footprint), atomically.

    ``columns``: the manifest's columns, so that a manifest without rows (a flight none of whose tiles
    has an optical image) still has them and its readers see an empty table, not a missing column.
    """
    frame = pd.DataFrame(list(rows)) if rows or not columns else pd.DataFrame(columns=list(columns))
    geometry = frame.pop("geometry") if "geometry" in frame else []
    write_geoparquet(gpd.GeoDataFrame(frame, geometry=list(geometry), crs="EPSG:4326"), path)


def read_manifest(path) -> list[dict[str, Any]]:
    """Manifest rows written by :func:`write_manifest` (nulls as None, lists as lists, datetimes as
    datetime, ``geometry`` as a shapely polygon). Local path or UPath on object storage."""
    try:
        with open(path, "rb") if isinstance(path, str | Path) else path.open("rb") as f:
            rows = pq.read_table(f).to_pylist()
    except FileNotFoundError as exc:
        raise RasterError(path, "tile manifest missing: materialise the upstream tiles first") from exc
    except (OSError, pa.ArrowException) as exc:
        raise RasterError(path, f"unreadable Parquet manifest: {exc}") from exc
    for row in rows:
        if isinstance(row.get("geometry"), bytes):
            row["geometry"] = wkb.loads(row["geometry"])
    return rows
