"""Small real flight outputs for the dataset tests: PNG tiles, GeoParquet tile manifests, captions.

The SAR manifest is written by the geo stage's own ``write_manifest`` with its column names
(``path``, ``unit``, ``datetime``…), so these tests read what the pipeline really writes.

Each flight is one scene in UTM 31N (EPSG:32631) cut into a ``rows × cols`` grid of adjacent tiles
whose pixel grid may be rotated (native SAR orientation); footprints come from the tile transforms
through the project's own footprint code, as the geo stage writes them.
"""

from __future__ import annotations

import datetime as dt
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from affine import Affine
from PIL import Image

from sar_pipeline.geo.footprints import grid_footprint, to_wgs84
from sar_pipeline.geo.manifest import write_manifest

UTM31N = "EPSG:32631"


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def make_flight(
    root: Path,
    flight_id: str,
    rows: int = 3,
    cols: int = 3,
    tile_px: int = 16,
    gsd_m: float = 8.0,
    origin: tuple[float, float] = (500_000.0, 4_800_000.0),
    rotation_deg: float = 0.0,
    optical: bool = True,
    landcover: bool = False,
    caption_rows: slice | None = None,
    db_range: tuple[float, float] = (-25.0, 5.0),
) -> list[str]:
    """Write ``flights/<flight_id>/{sar_tiles,optical_tiles}/…`` and ``captions.parquet``; return tile ids.
    The 8-bit SAR tiles are uniform noise over ``db_range`` (dB of levels 0 and 255)."""
    flight = root / "flights" / flight_id
    scene_id = f"{flight_id}-scene"
    scene_t = Affine.translation(*origin) @ Affine.rotation(rotation_deg) @ Affine.scale(gsd_m, -gsd_m)
    rng = np.random.default_rng(zlib.crc32(f"{flight_id}:{rows}:{cols}".encode()))
    sar_records, opt_records, cap_records = [], [], []
    for r in range(rows):
        for c in range(cols):
            tile_id = f"{scene_id}_r{r:03d}_c{c:03d}"
            t = scene_t @ Affine.translation(c * tile_px, r * tile_px)
            fp = grid_footprint(t, (tile_px, tile_px))
            tile_rel = f"flights/{flight_id}/sar_tiles/{tile_id}.png"
            _png(root / tile_rel, rng.integers(0, 256, (tile_px, tile_px), dtype=np.uint8))
            lc_rel = None
            if landcover:
                lc_rel = f"flights/{flight_id}/sar_tiles/{tile_id}_landcover.png"
                _png(root / lc_rel, np.full((tile_px, tile_px), 1 + (r + c) % 5, dtype=np.uint8))
            sar_records.append(
                {
                    "tile_id": tile_id,
                    "flight_id": flight_id,
                    "scene_id": scene_id,
                    "tile_row": r,
                    "tile_col": c,
                    "path": tile_rel,
                    "transform": list(t)[:6],
                    "crs": UTM31N,
                    "ground_sample_distance_m": gsd_m,
                    "footprint_scene_crs": shapely.to_wkb(fp),
                    "geometry": to_wgs84(fp, UTM31N),
                    "unit": "db",
                    "db_min": db_range[0],
                    "db_max": db_range[1],
                    "bit_depth": 8,
                    "datetime": dt.datetime(2024, 5, 17, 10, 30, tzinfo=dt.UTC),
                    "platform": "demo-aircraft",
                    "frequency_band": "X",
                    "polarizations": ["HH"],
                    "incidence_angle_deg": 45.0,
                    "heading_deg": 30.0,
                    "observation_direction": "right",
                    "landcover_path": lc_rel,
                    "idealised_path": None,
                }
            )
            if optical:
                opt_rel = f"flights/{flight_id}/optical_tiles/{tile_id}.png"
                _png(root / opt_rel, rng.integers(0, 256, (tile_px, tile_px, 3), dtype=np.uint8))
                opt_records.append(
                    {
                        "tile_id": tile_id,
                        "path": opt_rel,
                        "coverage_fraction": 1.0,
                        "optical_datetime": dt.datetime(2024, 6, 1, tzinfo=dt.UTC),
                        "time_gap_s": 1_300_000.0,
                    }
                )
            words = ["field", "forest", "water", "road"][(r * cols + c) % 4]
            cap_records.append(
                {
                    "tile_id": tile_id,
                    "caption": f"a {words} next to a {['road', 'river'][c % 2]}",
                    "text": f"An aerial view, a {words} next to a {['road', 'river'][c % 2]}",
                    "captioner_id": "template",
                    "captioner_version": "1",
                    "score": None,
                }
            )
    write_manifest(sar_records, flight / "sar_tiles" / "manifest.parquet")
    if optical:
        _write(flight / "optical_tiles" / "manifest.parquet", opt_records)
    _write(flight / "captions.parquet", cap_records[caption_rows] if caption_rows else cap_records)
    return [rec["tile_id"] for rec in sar_records]


def _write(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), path)
