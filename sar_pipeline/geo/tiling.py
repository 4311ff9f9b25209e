"""Fixed-GSD native-orientation tiles of SAR scenes: grid → windowed warp → dB → 8/16-bit → tiles.

A scene is resampled onto its :func:`~sar_pipeline.geo.grid.build_output_grid` one block of
at most ``max_block_tiles`` tiles of a tile row at a time (memory bounded by the block, whatever
the scene size; only the source window under the block is read, once; native-orientation grids
take the separable fast path of :mod:`sar_pipeline.geo.resample`), converted to dB and
quantised with :class:`~sar_pipeline.radiometry.RadiometryParams`, and cut into
``tile_size²`` tiles every ``stride`` pixels. Tiles at the right/bottom edge extend past the
scene and are padded with nodata, so every tile has the full size; tiles whose nodata fraction
exceeds ``max_nodata_fraction`` are dropped with the reason recorded.

Tile ids are ``<flight_id>__<scene_id>__r<tile_row>_c<tile_col>`` (3-digit indices in the
tile lattice), safe as file names.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime as dt
import json
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.enums
from shapely import wkb
from shapely.geometry import Polygon

from sar_pipeline import radiometry
from sar_pipeline.archive.protocol import SceneRecord
from sar_pipeline.errors import RasterError, SarPipelineError
from sar_pipeline.geo.footprints import grid_footprint, to_wgs84
from sar_pipeline.geo.grid import OutputGrid
from sar_pipeline.geo.resample import warp_codes_block, warp_intensity_block
from sar_pipeline.geo.scene_raster import (
    georeferenced,
    scene_georeferencing,
    scene_output_grid,
    scene_value_encoding,
)
from sar_pipeline.geo.settings import TilingSettings
from sar_pipeline.hrefs import redact_text
from sar_pipeline.pictures import png_bytes, to_display_uint8
from sar_pipeline.storage import validate_id

# SAR tiles are Huffman-only coded (see pictures.png_bytes): any level ≥ 1 gives the same bytes;
# the extra assets (land-cover codes) are LZ77-coded by Pillow at this level
TILE_PNG_COMPRESS_LEVEL = 1

#: extra scene assets warped onto the tile grid, and how
EXTRA_ASSETS = {"landcover": "codes", "idealised": "backscatter"}


@dataclasses.dataclass
class Tile:
    """One kept tile: its pixels, grid and provenance."""

    tile_id: str
    flight_id: str
    scene_id: str
    tile_row: int
    tile_col: int
    row_off: int  # offset of the tile's first row in the scene's output grid
    col_off: int
    grid: OutputGrid  # the tile's own grid (crs, rotated transform, shape, GSD, orientation)
    image: np.ndarray  # quantised dB, uint8/uint16, 0 = nodata
    nodata_fraction: float
    #: non-finite source pixels treated as nodata, counted over the block of tiles warped with this one
    invalid_pixel_count: int
    radiometry: radiometry.RadiometryParams
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    extra_errors: dict[str, str] = dataclasses.field(default_factory=dict)
    png: bytes | None = None  # ``image`` encoded (done in the worker threads)
    extras_png: dict[str, bytes] = dataclasses.field(default_factory=dict)

    def footprint(self) -> Polygon:
        """The tile's ground polygon in the scene CRS."""
        return grid_footprint(self.grid.transform, self.grid.shape)


@dataclasses.dataclass(frozen=True)
class DroppedTile:
    """A tile position not kept, and why."""

    tile_id: str
    scene_id: str
    reason: str
    nodata_fraction: float | None = None


def tile_id_for(flight_id: str, scene_id: str, tile_row: int, tile_col: int) -> str:
    """Deterministic, file-name-safe tile id: ``<flight_id>__<scene_id>__r<row>_c<col>``."""
    safe = lambda s: re.sub(r"[^A-Za-z0-9._-]", "-", s).replace("..", "-")  # noqa: E731
    return validate_id(f"{safe(flight_id)}__{safe(scene_id)}__r{tile_row:03d}_c{tile_col:03d}", "tile id")


def tile_lattice(grid_shape: tuple[int, int], tile_size: int, stride: int) -> tuple[int, int]:
    """Number of tile rows and columns so the lattice covers the whole grid (edge tiles padded)."""
    rows, cols = grid_shape
    n_r = 1 if rows <= tile_size else math.ceil((rows - tile_size) / stride) + 1
    n_c = 1 if cols <= tile_size else math.ceil((cols - tile_size) / stride) + 1
    return n_r, n_c


def scene_size_problem(
    raster_shape: tuple[int, int], params: TilingSettings, grid_shape: tuple[int, int] | None = None
) -> str | None:
    """Why a scene is too large to tile under ``max_scene_pixels``/``max_tiles_per_scene`` (None: it is not).

    ``raster_shape`` is the source raster's (rows, cols); ``grid_shape`` the output grid's at the
    configured GSD, when known (it decides the tile count).
    """
    rows, cols = (int(v) for v in raster_shape)
    if rows <= 0 or cols <= 0:
        return f"the raster is empty ({rows} × {cols} pixels)"
    if rows * cols > params.max_scene_pixels:
        return (
            f"the raster claims {rows} × {cols} = {rows * cols:.3g} pixels, over "
            f"sar_tiles.max_scene_pixels = {params.max_scene_pixels:.3g}; raise that setting if the "
            "scene is real"
        )
    if grid_shape is not None:
        n_rows, n_cols = tile_lattice(grid_shape, params.tile_size, params.step)
        if n_rows * n_cols > params.max_tiles_per_scene:
            return (
                f"{n_rows} × {n_cols} = {n_rows * n_cols} tile positions at "
                f"ground_sample_distance_m = {params.ground_sample_distance_m}, over "
                f"sar_tiles.max_tiles_per_scene = {params.max_tiles_per_scene}; check the GSD (metres) "
                "or raise that setting"
            )
    return None


def estimate_db_range(
    samples: Iterable[tuple[SceneRecord, rasterio.DatasetReader]],
    params: TilingSettings,
    max_side: int = 512,
) -> tuple[float, float]:
    """Per-dataset clip range: the configured percentiles of dB values pooled over all scenes.

    Each scene is read decimated (at most ``max_side`` pixels a side, from overviews where the
    file has them), so the estimate costs little even for very large scenes.
    """
    pooled = []
    for scene, dataset in samples:
        factor = max(1, math.ceil(max(dataset.height, dataset.width) / max_side))
        out_shape = (max(1, dataset.height // factor), max(1, dataset.width // factor))
        raw = dataset.read(1, out_shape=out_shape, resampling=rasterio.enums.Resampling.nearest)
        unit, scale, offset = scene_value_encoding(scene, raw.dtype, params)
        nodata = dataset.nodata if dataset.nodata is not None else scene.nodata
        intensity, _ = radiometry.to_intensity(
            raw, unit, scale=scale, offset=offset, nodata=nodata, source=dataset.name
        )
        db = radiometry.intensity_to_db(intensity)
        pooled.append(db[np.isfinite(db)])
    if not pooled:
        raise RasterError("estimate_db_range", "no scenes to estimate percentiles from")
    return radiometry.percentile_db_range(np.concatenate(pooled), *params.percentiles)


def tile_scene(
    scene: SceneRecord,
    dataset: rasterio.DatasetReader,
    params: TilingSettings,
    radiometry_params: radiometry.RadiometryParams,
    open_raster: Callable[[str], Any] = rasterio.open,
) -> Iterator[Tile | DroppedTile]:
    """Tile one scene: yield each :class:`Tile` kept and each :class:`DroppedTile` with its reason.

    A block that cannot be decoded (truncated file) or contradicts its unit drops that block's
    tiles with the error as reason; the scene's other tiles are still produced. Extra assets
    (``landcover`` nearest-neighbour class codes, ``idealised`` backscatter processed like the
    SAR) are warped onto the same tile grids; one that cannot be read is recorded in
    ``Tile.extra_errors``.
    """
    if dataset.count != 1:
        # band 1 of an RGB picture or a stack would be tiled as if it were backscatter
        raise RasterError(
            dataset.name,
            f"has {dataset.count} bands: a SAR scene raster holds one (one polarisation, as amplitude, "
            "intensity, dB or complex); give each polarisation its own asset and pick one (asset_key)",
        )
    crs, transform, _ = scene_georeferencing(scene, dataset)
    src = georeferenced(dataset, crs, transform)
    too_large = scene_size_problem((dataset.height, dataset.width), params)
    if too_large:
        raise RasterError(dataset.name, too_large)
    grid = scene_output_grid(scene, dataset, params)
    too_large = scene_size_problem((dataset.height, dataset.width), params, grid.shape)
    if too_large:
        raise RasterError(dataset.name, too_large)
    unit, scale, offset = scene_value_encoding(scene, dataset.dtypes[0], params)
    nodata = dataset.nodata if dataset.nodata is not None else scene.nodata
    size, step = params.tile_size, params.step
    n_rows, n_cols = tile_lattice(grid.shape, size, step)

    extras: dict[str, Any] = {}
    extra_errors: dict[str, str] = {}
    for key, kind in EXTRA_ASSETS.items():
        href = scene.extra_assets.get(key)
        if not href:
            continue
        try:
            ds = open_raster(href)
            extras[key] = (kind, georeferenced(ds, crs, transform), ds)
            if ds.crs is not None and ds.crs.to_string() != crs:
                raise RasterError(href, f"CRS {ds.crs} differs from the scene's {crs}")
        except (SarPipelineError, rasterio.errors.RasterioError) as exc:
            extra_errors[key] = redact_text(str(exc))
            extras.pop(key, None)
    read_lock = threading.Lock()  # one GDAL handle per file: reads are serialised, the rest runs in parallel

    def block_items(tile_row: int, first_col: int, end_col: int) -> list[Tile | DroppedTile]:
        """Tiles ``first_col … end_col - 1`` of one tile row, from one warp of their common block."""
        row_off = tile_row * step
        block_col_off = first_col * step
        band = grid.subgrid(row_off, block_col_off, size, (end_col - first_col - 1) * step + size)
        ids = [tile_id_for(scene.flight_id, scene.scene_id, tile_row, c) for c in range(first_col, end_col)]
        try:
            intensity, invalid = warp_intensity_block(
                src,
                band,
                value_unit=unit,
                value_scale=scale,
                value_offset=offset,
                nodata=nodata,
                resampling=params.resampling,
                num_threads=params.num_threads,
                read_lock=read_lock,
            )
        except (SarPipelineError, rasterio.errors.RasterioError) as exc:
            # GDAL's own text ("Read failed. See previous exception") names neither the file nor the place
            where = "" if isinstance(exc, SarPipelineError) else f"{dataset.name}, tile row {tile_row}: "
            reason = f"read error: {redact_text(where + str(exc))}"
            return [DroppedTile(tid, scene.scene_id, reason) for tid in ids]
        db = radiometry.intensity_to_db(intensity)
        del intensity
        quantised = radiometry.quantize_db(db, radiometry_params)
        band_extras: dict[str, np.ndarray] = {}
        band_errors = dict(extra_errors)
        for key, (kind, eds, _) in extras.items():
            try:
                if kind == "codes":
                    band_extras[key] = warp_codes_block(eds, band, read_lock=read_lock)
                else:
                    e_unit, e_scale, e_offset = scene_value_encoding(scene, eds.dtypes[0], params)
                    e_int, _ = warp_intensity_block(
                        eds, band, value_unit=e_unit, value_scale=e_scale, value_offset=e_offset,
                        resampling=params.resampling, num_threads=params.num_threads, read_lock=read_lock,
                    )  # fmt: skip
                    band_extras[key] = radiometry.quantize_db(
                        radiometry.intensity_to_db(e_int), radiometry_params
                    )
            except (SarPipelineError, rasterio.errors.RasterioError) as exc:
                band_errors[key] = redact_text(str(exc))
        nan = np.isnan(db)
        items: list[Tile | DroppedTile] = []
        for tile_col, tid in enumerate(ids, start=first_col):
            col_off = tile_col * step
            local = col_off - block_col_off
            sl = np.s_[:, local : local + size]
            nodata_fraction = float(nan[sl].mean())
            if nodata_fraction >= 1.0:
                items.append(DroppedTile(tid, scene.scene_id, "all nodata", 1.0))
                continue
            if nodata_fraction > params.max_nodata_fraction:
                reason = f"nodata fraction {nodata_fraction:.3f} > {params.max_nodata_fraction}"
                items.append(DroppedTile(tid, scene.scene_id, reason, nodata_fraction))
                continue
            image = np.ascontiguousarray(quantised[sl])
            tile_extras = {k: np.ascontiguousarray(v[sl]) for k, v in band_extras.items()}
            items.append(
                Tile(
                    tile_id=tid,
                    flight_id=scene.flight_id,
                    scene_id=scene.scene_id,
                    tile_row=tile_row,
                    tile_col=tile_col,
                    row_off=row_off,
                    col_off=col_off,
                    grid=grid.subgrid(row_off, col_off, size, size),
                    image=image,
                    nodata_fraction=nodata_fraction,
                    invalid_pixel_count=invalid,
                    radiometry=radiometry_params,
                    extras=tile_extras,
                    extra_errors=band_errors,
                    png=png_bytes(image, TILE_PNG_COMPRESS_LEVEL, huffman_only=True),
                    extras_png={k: png_bytes(v, TILE_PNG_COMPRESS_LEVEL) for k, v in tile_extras.items()},
                )
            )
        return items

    # blocks of at most max_block_tiles tiles of one tile row: memory is bounded whatever the scene width
    chunk = max(1, params.max_block_tiles)
    blocks = [(r, c, min(c + chunk, n_cols)) for r in range(n_rows) for c in range(0, n_cols, chunk)]
    try:
        workers = params.worker_count
        if workers <= 1:
            for block in blocks:
                yield from block_items(*block)
        else:
            # blocks in flight bounded to workers + 1, so memory stays a few blocks
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                pending: collections.deque = collections.deque()
                queue = iter(blocks)
                for block in queue:
                    pending.append(pool.submit(block_items, *block))
                    if len(pending) > workers:
                        yield from pending.popleft().result()
                while pending:
                    yield from pending.popleft().result()
    finally:
        for _, _, ds in extras.values():
            ds.close()


def _json_default(value):
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


_SCENE_JSON: dict[int, tuple[SceneRecord, str]] = {}


def _scene_json(scene: SceneRecord) -> str:
    """``scene.to_row()`` as JSON, computed once per scene (every tile's manifest row carries it)."""
    cached = _SCENE_JSON.get(id(scene))
    if cached is None or cached[0] is not scene:
        _SCENE_JSON.clear()  # one scene at a time: the cache never grows
        cached = _SCENE_JSON[id(scene)] = (scene, json.dumps(scene.to_row(), default=_json_default))
    return cached[1]


def manifest_row(tile: Tile, scene: SceneRecord, rel_dir: str, written: dict[str, str]) -> dict[str, Any]:
    """The manifest row of a tile: ids, grid, footprints, radiometry, paths and the scene's metadata."""
    fp = tile.footprint()
    t = tile.grid.transform
    return {
        "tile_id": tile.tile_id,
        "flight_id": tile.flight_id,
        "scene_id": tile.scene_id,
        "tile_row": tile.tile_row,
        "tile_col": tile.tile_col,
        "row_off": tile.row_off,
        "col_off": tile.col_off,
        "path": f"{rel_dir}/{tile.tile_id}.png",
        "landcover_path": written.get("landcover"),
        "idealised_path": written.get("idealised"),
        "extra_errors": json.dumps(tile.extra_errors) if tile.extra_errors else None,
        "crs": tile.grid.crs,
        "transform": [t.a, t.b, t.c, t.d, t.e, t.f],
        "height": tile.grid.shape[0],
        "width": tile.grid.shape[1],
        "ground_sample_distance_m": tile.grid.ground_sample_distance_m,
        "range_direction_deg": tile.grid.range_direction_deg,
        "azimuth_direction_deg": tile.grid.azimuth_direction_deg,
        "orientation_source": tile.grid.orientation_source,
        "range_flipped": tile.grid.range_flipped,
        "azimuth_flipped": tile.grid.azimuth_flipped,
        "nodata_fraction": tile.nodata_fraction,
        "invalid_pixel_count": tile.invalid_pixel_count,
        "unit": tile.radiometry.unit,
        "db_min": tile.radiometry.db_min,
        "db_max": tile.radiometry.db_max,
        "bit_depth": tile.radiometry.bit_depth,
        "nodata_value": tile.radiometry.nodata_value,
        "datetime": scene.datetime,
        "platform": scene.platform,
        "frequency_band": scene.frequency_band,
        "polarizations": list(scene.polarizations) if scene.polarizations else None,
        "incidence_angle_deg": scene.incidence_angle_deg,
        "heading_deg": scene.heading_deg,
        "observation_direction": scene.observation_direction,
        "scene": _scene_json(scene),
        "footprint_scene_crs": wkb.dumps(fp),
        "geometry": to_wgs84(fp, tile.grid.crs),
    }


@dataclasses.dataclass
class FlightTiling:
    """What tiling a flight produced: manifest rows, drops, skipped scenes and a few previews."""

    rows: list[dict[str, Any]]
    dropped: list[DroppedTile]
    skipped_scenes: dict[str, str]
    radiometry: radiometry.RadiometryParams | None
    previews: list[tuple[str, np.ndarray]]
    #: per scene: non-finite source pixels (not declared nodata) treated as nodata
    invalid_pixels: dict[str, int] = dataclasses.field(default_factory=dict)
    #: per scene: speckle statistics of its first kept tile (intensity back from the quantised dB)
    speckle: dict[str, radiometry.SpeckleStatistics] = dataclasses.field(default_factory=dict)


def tile_flight(
    scenes: Sequence[SceneRecord],
    open_scene: Callable[[SceneRecord], Any],
    params: TilingSettings,
    out_dir: Path,
    rel_dir: str,
    max_previews: int = 6,
    open_raster: Callable[[str], Any] = rasterio.open,
) -> FlightTiling:
    """Tile every scene of a flight, writing ``<tile_id>.png`` (+ ``_landcover``/``_idealised``) into ``out_dir``.

    ``rel_dir`` is ``out_dir``'s path relative to the storage root, used for the manifest's paths.
    A scene that cannot be opened or georeferenced is skipped (reason recorded), the others kept.
    """
    skipped: dict[str, str] = {}
    for scene in scenes:  # refused up front from the record (the raster's own header is checked again)
        too_large = scene_size_problem(scene.shape, params)
        if too_large:
            skipped[scene.scene_id] = too_large
    if params.percentiles is not None:
        opened = []
        try:
            for scene in scenes:
                if scene.scene_id in skipped:
                    continue
                try:
                    dataset = open_scene(scene)
                    too_large = scene_size_problem((dataset.height, dataset.width), params)
                    if too_large:
                        dataset.close()
                        raise RasterError(dataset.name, too_large)
                    opened.append((scene, dataset))
                except (SarPipelineError, rasterio.errors.RasterioError) as exc:
                    skipped[scene.scene_id] = redact_text(str(exc))
            try:
                db_min, db_max = estimate_db_range(opened, params)
            except (SarPipelineError, rasterio.errors.RasterioError) as exc:
                skipped.update(
                    {s.scene_id: f"percentile estimate failed: {redact_text(str(exc))}" for s, _ in opened}
                )
                return FlightTiling([], [], skipped, None, [])
        finally:
            for _, ds in opened:
                ds.close()
    else:
        db_min, db_max = params.db_min, params.db_max
    rad = radiometry.RadiometryParams(db_min=db_min, db_max=db_max, bit_depth=params.bit_depth)
    rows: list[dict[str, Any]] = []
    dropped: list[DroppedTile] = []
    previews: list[tuple[str, np.ndarray]] = []
    invalid_by_block: dict[tuple[str, int, int], int] = {}
    speckle: dict[str, radiometry.SpeckleStatistics] = {}
    out_dir = Path(out_dir)
    for scene in scenes:
        if scene.scene_id in skipped:
            continue
        try:
            with open_scene(scene) as dataset:
                for item in tile_scene(scene, dataset, params, rad, open_raster):
                    if isinstance(item, DroppedTile):
                        dropped.append(item)
                        continue
                    (out_dir / f"{item.tile_id}.png").write_bytes(
                        item.png or png_bytes(item.image, TILE_PNG_COMPRESS_LEVEL, huffman_only=True)
                    )
                    written = {}
                    for key, arr in item.extras.items():
                        name = f"{item.tile_id}_{key}.png"
                        (out_dir / name).write_bytes(
                            item.extras_png.get(key) or png_bytes(arr, TILE_PNG_COMPRESS_LEVEL)
                        )
                        written[key] = f"{rel_dir}/{name}"
                    rows.append(manifest_row(item, scene, rel_dir, written))
                    block = (item.scene_id, item.tile_row, item.tile_col // max(1, params.max_block_tiles))
                    invalid_by_block[block] = item.invalid_pixel_count
                    if item.scene_id not in speckle:
                        intensity = radiometry.db_to_intensity(radiometry.to_db(item.image, item.radiometry))
                        speckle[item.scene_id] = radiometry.speckle_statistics(intensity)
                    if len(previews) < max_previews:
                        previews.append((item.tile_id, to_display_uint8(item.image)))
        except (SarPipelineError, rasterio.errors.RasterioError) as exc:
            skipped[scene.scene_id] = redact_text(str(exc))
    invalid: dict[str, int] = {}
    for (scene_id, _, _), count in invalid_by_block.items():
        invalid[scene_id] = invalid.get(scene_id, 0) + count
    return FlightTiling(
        rows, dropped, skipped, rad, previews, {k: v for k, v in invalid.items() if v}, speckle
    )
