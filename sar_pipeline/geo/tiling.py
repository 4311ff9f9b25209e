"""Fixed-GSD native-orientation tiles of SAR scenes: grid → windowed warp → dB → 16-bit → tiles.

A scene is resampled onto its :func:`~sar_pipeline.geo.grid.build_output_grid` one block of
at most ``max_block_tiles`` tiles of a tile row at a time (memory bounded by the block, whatever
the scene size; only the source window under the block is read, once; native-orientation grids
take the separable fast path of :mod:`sar_pipeline.geo.resample`), converted to dB and cut into
``tile_size²`` tiles every ``stride`` pixels. Tiles at the right/bottom edge extend past the
scene and are padded with nodata, so every tile has the full size; tiles whose nodata fraction
exceeds ``max_nodata_fraction`` are dropped with the reason recorded.

Radiometry: tiles are written as 16-bit PNG of dB over the tile's own valid range (the
:class:`~sar_pipeline.radiometry.RadiometryParams` recorded in its manifest row; values come back
within 0.002 dB, nothing is clipped), with a histogram of its valid dB values (zeros, nodata and
non-finite pixels excluded). The 8/16-bit range a model is trained on is chosen later over every
flight of the dataset from those histograms (:mod:`sar_pipeline.dataset.radiometry`): tiles are
written one flight at a time, and a range fixed here would be per flight, or frozen before the
archive's other flights exist.

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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from shapely import wkb
from shapely.geometry import Polygon

from sar_pipeline import radiometry
from sar_pipeline.archive.protocol import SceneRecord
from sar_pipeline.archive.stac import LABELS_PROPERTY
from sar_pipeline.errors import RasterError, RasterReadError, SarPipelineError
from sar_pipeline.geo.footprints import grid_footprint, to_wgs84
from sar_pipeline.geo.grid import OutputGrid
from sar_pipeline.geo.landcover import LandCoverSource
from sar_pipeline.geo.resample import warp_codes_block, warp_intensity_block
from sar_pipeline.geo.scene_raster import (
    ValueEncoding,
    georeferenced,
    scene_georeferencing,
    scene_output_grid,
    scene_value_encoding,
)
from sar_pipeline.geo.settings import TilingSettings
from sar_pipeline.hrefs import redact_text
from sar_pipeline.pictures import png_bytes, to_display_uint8
from sar_pipeline.storage import validate_id

# the extra assets (land-cover codes) are LZ77-coded by Pillow at this level
TILE_PNG_COMPRESS_LEVEL = 1
# 16-bit dB of speckle is noise to any entropy coder: Huffman coding saves 3 % of the bytes for 10× the
# time of storing them (pictures.png_bytes at level 0 writes the IDAT uncompressed)
SAR_TILE_PNG_COMPRESS_LEVEL = 0

#: bits per pixel of the stored SAR tiles (dB over the tile's own range)
TILE_BIT_DEPTH = 16

#: extra scene assets warped onto the tile grid, and how
EXTRA_ASSETS = {"landcover": "codes", "idealised": "backscatter"}

#: sar_tiles warns when the GSD is this many times finer than a scene's pixel spacing
UPSAMPLING_WARNING_FACTOR = 2.0


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
    image: np.ndarray  # dB quantised over the tile's own range, uint16, 0 = nodata
    nodata_fraction: float
    #: non-finite source pixels (not declared nodata) under this tile, treated as nodata
    invalid_pixel_count: int
    radiometry: radiometry.RadiometryParams
    #: histogram of the tile's valid dB values (zero backscatter excluded)
    histogram: radiometry.DbHistogram = dataclasses.field(
        default_factory=lambda: radiometry.DbHistogram(0, np.zeros(0, np.int64))
    )
    #: valid pixels of zero backscatter (only when ``zero_is_nodata`` is off), drawn at the darkest level
    zero_pixel_count: int = 0
    speckle: radiometry.SpeckleStatistics | None = None
    speckle_note: str = ""
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    extra_errors: dict[str, str] = dataclasses.field(default_factory=dict)
    png: bytes | None = None  # ``image`` encoded (done in the worker threads)
    extras_png: dict[str, bytes] = dataclasses.field(default_factory=dict)

    def footprint(self) -> Polygon:
        """The tile's ground polygon in the grid's CRS."""
        return grid_footprint(self.grid.transform, self.grid.shape)


@dataclasses.dataclass(frozen=True)
class DroppedTile:
    """A tile position not kept, and why."""

    tile_id: str
    scene_id: str
    reason: str
    nodata_fraction: float | None = None

    @property
    def kind(self) -> str:
        """The reason's kind: "nodata fraction over threshold", "all nodata", "read error", "bad values"."""
        if self.reason.startswith("nodata fraction"):
            return "nodata fraction over threshold"
        return self.reason.split(":", 1)[0]


@dataclasses.dataclass
class SceneTiling:
    """How one scene was tiled: its grid and radiometric decisions, what was kept and why not."""

    scene_id: str
    output_crs: str
    grid_shape: tuple[int, int]
    orientation_source: str
    raster_rotation_deg: float
    heading_source: str | None
    encoding: ValueEncoding
    #: output pixels per source pixel along the source's coarser axis (> 1: upsampled)
    upsampling_factor: float
    tile_positions: int
    tiles_kept: int = 0
    dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    read_errors: list[str] = dataclasses.field(default_factory=list)
    invalid_pixel_count: int = 0
    speckle: radiometry.SpeckleStatistics | None = None
    speckle_note: str = ""
    #: why the scene gave no tile, and what to change (empty when it gave some)
    note: str = ""

    def warnings(self, params: TilingSettings) -> list[str]:
        """What a user should hear about this scene (each names it)."""
        out = []
        sid = self.scene_id
        if self.note:
            out.append(f"scene {sid}: no tile kept: {self.note}")
        if self.orientation_source == "raster":
            out.append(
                f"scene {sid}: heading or look side unknown, tiles keep the raster's own axes (a north-up "
                "product stays map-oriented, not in native SAR orientation); give the catalogue "
                "sar_pipeline:heading_deg / view:azimuth / sat:orbit_state and sar:observation_direction, "
                "or set sar_scenes' require_heading to refuse such scenes"
            )
        if self.encoding.unit_source == "assumed":
            declared = (
                f"unit {self.encoding.declared!r} not understood" if self.encoding.declared else "no unit"
            )
            out.append(
                f"scene {sid}: {declared} in the catalogue (raster:bands unit): pixels assumed to be "
                f"{self.encoding.unit} (sar_tiles default_value_unit); declare the unit or set that default"
            )
        if self.upsampling_factor >= UPSAMPLING_WARNING_FACTOR:
            out.append(
                f"scene {sid}: ground_sample_distance_m={params.ground_sample_distance_m} is "
                f"{self.upsampling_factor:.1f}× finer than the scene's pixel spacing: tiles are interpolated "
                f"(upsampled), not sharper; set ground_sample_distance_m to at least "
                f"{params.ground_sample_distance_m * self.upsampling_factor:.3g}"
            )
        if self.read_errors:
            out.append(
                f"scene {sid}: {self.dropped.get('read error', 0)} tile position(s) unreadable: "
                + "; ".join(self.read_errors[:3])
            )
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary (the ``sar_tiles`` metadata's per-scene table)."""
        return {
            "output_crs": self.output_crs,
            "grid_shape": list(self.grid_shape),
            "orientation": self.orientation_source,
            "raster_rotation_deg": round(self.raster_rotation_deg, 3),
            "heading_source": self.heading_source,
            "unit": self.encoding.unit,
            "unit_source": self.encoding.unit_source,
            "declared_unit": self.encoding.declared,
            "upsampling_factor": round(self.upsampling_factor, 3),
            "tile_positions": self.tile_positions,
            "tiles_kept": self.tiles_kept,
            "dropped": dict(self.dropped),
            "invalid_pixels": self.invalid_pixel_count,
            "enl": None if self.speckle is None else round(self.speckle.equivalent_number_of_looks, 2),
            "speckle_note": self.speckle_note or None,
            "note": self.note or None,
        }


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


def tile_radiometry(db: np.ndarray) -> radiometry.RadiometryParams | None:
    """The 16-bit mapping over a tile's own valid dB range (None when it has no valid pixel)."""
    if not np.isfinite(db).any():
        return None
    lo, hi = float(np.nanmin(db)), float(np.nanmax(db))
    return radiometry.RadiometryParams(
        db_min=lo, db_max=hi if hi > lo else lo + 0.01, bit_depth=TILE_BIT_DEPTH
    )


def plan_scene(scene: SceneRecord, dataset: rasterio.DatasetReader, params: TilingSettings) -> SceneTiling:
    """The scene's grid and radiometric decisions, before any pixel is read (a raster whose header
    claims more than ``max_scene_pixels`` is refused first: gridding a rotated one reads a decimated mask)."""
    too_large = scene_size_problem((dataset.height, dataset.width), params)
    if too_large:
        raise RasterError(dataset.name, too_large)
    grid = scene_output_grid(scene, dataset, params)
    encoding = scene_value_encoding(scene, dataset.dtypes[0], params)
    spacing = max(grid.source_pixel_spacing_m)
    upsampling = spacing / params.ground_sample_distance_m if math.isfinite(spacing) else 1.0
    n_rows, n_cols = tile_lattice(grid.shape, params.tile_size, params.step)
    return SceneTiling(
        scene_id=scene.scene_id,
        output_crs=grid.crs,
        grid_shape=grid.shape,
        orientation_source=grid.orientation_source,
        raster_rotation_deg=grid.raster_rotation_deg,
        heading_source=scene.heading_source,
        encoding=encoding,
        upsampling_factor=upsampling,
        tile_positions=n_rows * n_cols,
    )


def tile_scene(
    scene: SceneRecord,
    dataset: rasterio.DatasetReader,
    params: TilingSettings,
    open_raster: Callable[[str], Any] = rasterio.open,
    landcover: LandCoverSource | None = None,
) -> Iterator[Tile | DroppedTile]:
    """Tile one scene: yield each :class:`Tile` kept and each :class:`DroppedTile` with its reason.

    A block that cannot be decoded (truncated file: the reason names the file and window) or whose
    values contradict the unit drops that block's tiles; the scene's other tiles are still
    produced. Extra assets (``landcover`` nearest-neighbour class codes — from ``landcover`` when a
    land-cover source is given, else the scene's own asset —, ``idealised`` backscatter processed
    like the SAR) are warped onto the same tile grids; one that cannot be read is recorded in
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
    encoding = scene_value_encoding(scene, dataset.dtypes[0], params)
    nodata = dataset.nodata if dataset.nodata is not None else scene.nodata
    size, step = params.tile_size, params.step
    n_rows, n_cols = tile_lattice(grid.shape, size, step)
    spacing = max(grid.source_pixel_spacing_m)
    upsampling = spacing / params.ground_sample_distance_m if math.isfinite(spacing) else 1.0
    read_lock = threading.Lock()  # one GDAL handle per file: reads are serialised, the rest runs in parallel

    extras: dict[str, Any] = {}
    extra_errors: dict[str, str] = {}
    for key, kind in EXTRA_ASSETS.items():
        if key == "landcover" and landcover is not None:
            extras[key] = (kind, landcover.dataset, None, landcover)
            continue
        href = scene.extra_assets.get(key)
        if not href:
            continue
        try:
            ds = open_raster(href)
            extras[key] = (kind, georeferenced(ds, crs, transform), ds, None)
        except (SarPipelineError, rasterio.errors.RasterioError) as exc:
            extra_errors[key] = redact_text(str(exc))

    def warp_extra(kind: str, eds, source: LandCoverSource | None, band: OutputGrid) -> np.ndarray:
        """Land-cover codes (uint8) or idealised backscatter (dB, float) of an extra raster on ``band``."""
        if kind == "codes":
            if source is not None:
                return warp_codes_block(
                    eds, band, read_lock=source.read_lock, lookup=source.lookup, on_codes=source.note_unmapped
                )
            return warp_codes_block(eds, band, read_lock=read_lock)
        e = scene_value_encoding(scene, eds.dtypes[0], params)
        e_int, _ = warp_intensity_block(
            eds, band, value_unit=e.unit, value_scale=e.scale, value_offset=e.offset,
            zero_is_nodata=params.zero_is_nodata, resampling=params.resampling,
            num_threads=params.num_threads, read_lock=read_lock,
        )  # fmt: skip
        return radiometry.intensity_to_db(e_int)

    def block_items(tile_row: int, first_col: int, end_col: int) -> list[Tile | DroppedTile]:
        """Tiles ``first_col … end_col - 1`` of one tile row, from one warp of their common block."""
        row_off = tile_row * step
        block_col_off = first_col * step
        band = grid.subgrid(row_off, block_col_off, size, (end_col - first_col - 1) * step + size)
        ids = [tile_id_for(scene.flight_id, scene.scene_id, tile_row, c) for c in range(first_col, end_col)]
        try:
            intensity, invalid_xy = warp_intensity_block(
                src,
                band,
                value_unit=encoding.unit,
                value_scale=encoding.scale,
                value_offset=encoding.offset,
                nodata=nodata,
                zero_is_nodata=params.zero_is_nodata,
                resampling=params.resampling,
                num_threads=params.num_threads,
                read_lock=read_lock,
            )
        except RasterReadError as exc:  # names the file and the window
            return [DroppedTile(tid, scene.scene_id, f"read error: {redact_text(str(exc))}") for tid in ids]
        except rasterio.errors.RasterioError as exc:
            # GDAL's own text ("Read failed. See previous exception") names neither the file nor the place
            reason = f"read error: {redact_text(f'{dataset.name}, tile row {tile_row}: {exc}')}"
            return [DroppedTile(tid, scene.scene_id, reason) for tid in ids]
        except SarPipelineError as exc:
            return [DroppedTile(tid, scene.scene_id, f"bad values: {redact_text(str(exc))}") for tid in ids]
        db = radiometry.intensity_to_db(intensity)
        band_extras: dict[str, tuple[str, np.ndarray]] = {}
        band_errors = dict(extra_errors)
        for key, (kind, eds, _, source) in extras.items():
            try:
                band_extras[key] = (kind, warp_extra(kind, eds, source, band))
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
            tile_db = db[sl]
            tile_intensity = intensity[sl]
            rad = tile_radiometry(tile_db)
            image = radiometry.quantize_db(tile_db, rad)
            zeros = int(np.count_nonzero(tile_intensity == 0)) if not params.zero_is_nodata else 0
            histogram = radiometry.DbHistogram.of_quantised(image, rad, exclude_lowest=zeros)
            speckle, speckle_note = None, ""
            if not any(isinstance(i, Tile) for i in items):  # once per block: the scene's statistics
                speckle, speckle_note = radiometry.speckle_if_meaningful(tile_intensity, upsampling)
            in_tile = (
                (invalid_xy[:, 0] >= local)
                & (invalid_xy[:, 0] < local + size)
                & (invalid_xy[:, 1] >= 0)
                & (invalid_xy[:, 1] < size)
            )
            tile_extras = {}
            for k, (kind, v) in band_extras.items():
                part = v[sl]
                tile_extras[k] = np.ascontiguousarray(
                    part if kind == "codes" else radiometry.quantize_db(part, rad)
                )
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
                    invalid_pixel_count=int(np.count_nonzero(in_tile)),
                    radiometry=rad,
                    histogram=histogram,
                    zero_pixel_count=zeros,
                    speckle=speckle,
                    speckle_note=speckle_note,
                    extras=tile_extras,
                    extra_errors=band_errors,
                    png=png_bytes(image, SAR_TILE_PNG_COMPRESS_LEVEL, huffman_only=True),
                    extras_png={
                        k: png_bytes(v, SAR_TILE_PNG_COMPRESS_LEVEL, huffman_only=True)
                        if v.dtype == np.uint16  # idealised backscatter, like the SAR tile
                        else png_bytes(v, TILE_PNG_COMPRESS_LEVEL)
                        for k, v in tile_extras.items()
                    },
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
        for _, _, ds, _ in extras.values():
            if ds is not None:
                ds.close()


def no_tile_note(summary: SceneTiling, drops: Sequence[DroppedTile], params: TilingSettings) -> str:
    """Why a scene gave no tile, in words, with the setting to change."""
    rows, cols = summary.grid_shape
    size, gsd = params.tile_size, params.ground_sample_distance_m
    kinds = collections.Counter(d.kind for d in drops)
    parts = []
    if rows < size or cols < size:
        fit_px = min(rows, cols)
        fit_tile = max(64, fit_px // 64 * 64) if fit_px >= 64 else fit_px
        parts.append(
            f"the scene covers {rows}×{cols} px at {gsd:g} m GSD ({rows * gsd:.0f} × {cols * gsd:.0f} m), "
            f"smaller than one {size}-px tile ({size * gsd:.0f} m), so its only tiles are mostly padding: "
            f"set tile_size to {fit_tile} or less, or ground_sample_distance_m to "
            f"{min(rows, cols) * gsd / size:.3g} or less (finer than the scene's pixels only if you accept "
            "upsampled tiles)"
        )
    elif kinds.get("nodata fraction over threshold") or kinds.get("all nodata"):
        fractions = [d.nodata_fraction for d in drops if d.nodata_fraction is not None]
        parts.append(
            f"every tile position has more than max_nodata_fraction={params.max_nodata_fraction} nodata "
            f"(least {min(fractions):.2f}): the valid swath is narrower than a tile or lies across it; "
            "raise max_nodata_fraction or lower tile_size"
        )
    for kind in ("read error", "bad values"):
        if kinds.get(kind):
            first = next(d.reason for d in drops if d.kind == kind)
            parts.append(f"{kinds[kind]} of {len(drops)} tile positions failed ({first})")
    return "; ".join(parts) or f"{len(drops)} tile positions dropped: {dict(kinds)}"


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


def _labels(scene: SceneRecord) -> list[str] | None:
    """The scene's class labels (STAC ``sar_pipeline:labels``), for the template captioner."""
    labels = scene.properties.get(LABELS_PROPERTY)
    if isinstance(labels, str):
        labels = [labels]
    return [str(label) for label in labels] if labels else None


def manifest_row(
    tile: Tile,
    scene: SceneRecord,
    rel_dir: str,
    written: dict[str, str],
    encoding: ValueEncoding | None = None,
) -> dict[str, Any]:
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
        "raster_rotation_deg": tile.grid.raster_rotation_deg,
        "range_flipped": tile.grid.range_flipped,
        "azimuth_flipped": tile.grid.azimuth_flipped,
        "nodata_fraction": tile.nodata_fraction,
        "invalid_pixel_count": tile.invalid_pixel_count,
        "zero_pixel_count": tile.zero_pixel_count,
        "unit": tile.radiometry.unit,
        "db_min": tile.radiometry.db_min,
        "db_max": tile.radiometry.db_max,
        "bit_depth": tile.radiometry.bit_depth,
        "nodata_value": tile.radiometry.nodata_value,
        "db_histogram_start_db": tile.histogram.start_db,
        "db_histogram": tile.histogram.counts.tolist(),
        "value_unit": encoding.unit if encoding else None,
        "value_unit_source": encoding.unit_source if encoding else None,
        "datetime": scene.datetime,
        "platform": scene.platform,
        "frequency_band": scene.frequency_band,
        "polarizations": list(scene.polarizations) if scene.polarizations else None,
        "incidence_angle_deg": scene.incidence_angle_deg,
        "heading_deg": scene.heading_deg,
        "heading_source": scene.heading_source,
        "observation_direction": scene.observation_direction,
        "labels": _labels(scene),
        "scene": _scene_json(scene),
        "footprint_scene_crs": wkb.dumps(fp),
        "geometry": to_wgs84(fp, tile.grid.crs),
    }


@dataclasses.dataclass
class FlightTiling:
    """What tiling a flight produced: manifest rows, drops, skipped scenes, per-scene summaries, previews."""

    rows: list[dict[str, Any]]
    dropped: list[DroppedTile]
    #: scenes that could not be opened or gridded at all, with the reason
    skipped_scenes: dict[str, str]
    previews: list[tuple[str, np.ndarray]]
    #: every scene that was opened: its grid, orientation, unit, tiles kept and drops, warnings' facts
    scenes: dict[str, SceneTiling] = dataclasses.field(default_factory=dict)
    #: codes of the land-cover source that its classes mapping does not name (they became nodata)
    unmapped_landcover_codes: list[int] = dataclasses.field(default_factory=list)

    def warnings(self, params: TilingSettings) -> list[str]:
        """Every scene's warnings (see :meth:`SceneTiling.warnings`), and the land-cover source's."""
        out = [w for s in self.scenes.values() for w in s.warnings(params)]
        if self.unmapped_landcover_codes:
            out.append(
                f"land-cover codes {self.unmapped_landcover_codes} have no class in the land-cover source's "
                "classes mapping: they became nodata in the land-cover tiles"
            )
        return out

    def no_tile_reasons(self) -> dict[str, str]:
        """Scene → why it gave no tile (skipped scenes included)."""
        reasons = dict(self.skipped_scenes)
        reasons.update({sid: s.note for sid, s in self.scenes.items() if s.note})
        return reasons


def tile_flight(
    scenes: Sequence[SceneRecord],
    open_scene: Callable[[SceneRecord], Any],
    params: TilingSettings,
    out_dir: Path,
    rel_dir: str,
    max_previews: int = 6,
    open_raster: Callable[[str], Any] = rasterio.open,
    landcover: LandCoverSource | None = None,
) -> FlightTiling:
    """Tile every scene of a flight, writing ``<tile_id>.png`` (+ ``_landcover``/``_idealised``) into ``out_dir``.

    ``rel_dir`` is ``out_dir``'s path relative to the storage root, used for the manifest's paths.
    A scene that cannot be opened or gridded is skipped (reason recorded), the others kept; a scene
    that gives no tile gets a note saying why and which setting to change.
    """
    skipped: dict[str, str] = {}
    summaries: dict[str, SceneTiling] = {}
    rows: list[dict[str, Any]] = []
    dropped: list[DroppedTile] = []
    previews: list[tuple[str, np.ndarray]] = []
    out_dir = Path(out_dir)
    for scene in scenes:  # refused up front from the record (the raster's own header is checked again)
        too_large = scene_size_problem(scene.shape, params)
        if too_large:
            skipped[scene.scene_id] = too_large
    for scene in scenes:
        if scene.scene_id in skipped:
            continue
        scene_drops: list[DroppedTile] = []
        try:
            with open_scene(scene) as dataset:
                summary = summaries[scene.scene_id] = plan_scene(scene, dataset, params)
                for item in tile_scene(scene, dataset, params, open_raster, landcover):
                    if isinstance(item, DroppedTile):
                        scene_drops.append(item)
                        summary.dropped[item.kind] += 1
                        if item.kind == "read error" and len(summary.read_errors) < 5:
                            message = item.reason.removeprefix("read error: ")
                            if message not in summary.read_errors:
                                summary.read_errors.append(message)
                        continue
                    (out_dir / f"{item.tile_id}.png").write_bytes(item.png or png_bytes(item.image))
                    written = {}
                    for key, arr in item.extras.items():
                        name = f"{item.tile_id}_{key}.png"
                        (out_dir / name).write_bytes(item.extras_png.get(key) or png_bytes(arr))
                        written[key] = f"{rel_dir}/{name}"
                    rows.append(manifest_row(item, scene, rel_dir, written, summary.encoding))
                    summary.tiles_kept += 1
                    summary.invalid_pixel_count += item.invalid_pixel_count
                    if summary.speckle is None and item.speckle is not None:
                        summary.speckle, summary.speckle_note = item.speckle, ""
                    elif summary.speckle is None and not summary.speckle_note:
                        summary.speckle_note = item.speckle_note
                    if len(previews) < max_previews:
                        previews.append((item.tile_id, to_display_uint8(item.image)))
        except (SarPipelineError, rasterio.errors.RasterioError) as exc:
            skipped[scene.scene_id] = redact_text(str(exc))
            summaries.pop(scene.scene_id, None)
            continue
        dropped.extend(scene_drops)
        if summary.tiles_kept == 0:
            summary.note = no_tile_note(summary, scene_drops, params)
    unmapped = sorted(landcover.unmapped_codes) if landcover is not None else []
    return FlightTiling(rows, dropped, skipped, previews, summaries, unmapped)
