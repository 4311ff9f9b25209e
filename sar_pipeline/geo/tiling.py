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
import io
import json
import math
import re
import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.warp
import rasterio.windows
from affine import Affine
from PIL import Image
from shapely import wkb
from shapely.geometry import Polygon

from sar_pipeline import radiometry
from sar_pipeline.archive.protocol import SceneRecord
from sar_pipeline.errors import ConfigError, RasterError, SarPipelineError
from sar_pipeline.geo.footprints import grid_footprint, to_wgs84
from sar_pipeline.geo.grid import OutputGrid, build_output_grid, crs_unit_in_metres, pixel_size
from sar_pipeline.geo.resample import resampling_method, warp_codes_block, warp_intensity_block
from sar_pipeline.storage import validate_id

#: extra scene assets warped onto the tile grid, and how
EXTRA_ASSETS = {"landcover": "codes", "idealised": "backscatter"}


@dataclasses.dataclass(frozen=True)
class TilingParameters:
    """What the tiler does; the Dagster ``TilingConfig`` documents each field for users."""

    ground_sample_distance_m: float = 1.0
    tile_size: int = 512
    stride: int | None = None  # None = tile_size (no overlap)
    max_nodata_fraction: float = 0.1
    resampling: str = "average"
    db_min: float | None = -30.0
    db_max: float | None = 10.0
    #: (low, high) percentiles of the dataset's dB values; used instead of db_min/db_max when set
    percentiles: tuple[float, float] | None = None
    bit_depth: int = 8
    #: per-archive defaults for scenes that do not declare their unit/scale/offset
    default_value_unit: str | None = None
    default_value_scale: float | None = None
    default_value_offset: float | None = None
    num_threads: int = 1  # GDAL warp threads per block
    workers: int = 1  # blocks of tiles processed in parallel (threads)
    max_block_tiles: int = 16  # tiles of one tile row warped together (memory ∝ this × tile_size²)
    # zlib level; SAR tiles are Huffman-only coded (see encode_png): any level ≥ 1 gives the same bytes,
    # 0 stores them uncompressed; extra assets (land cover) use Pillow at this level
    png_compress_level: int = 1

    def __post_init__(self):
        if self.tile_size < 1:
            raise ConfigError("tile_size", f"must be positive, got {self.tile_size}")
        if self.stride is not None and not 1 <= self.stride:
            raise ConfigError("stride", f"must be positive, got {self.stride}")
        if not 0 <= self.max_nodata_fraction <= 1:
            raise ConfigError("max_nodata_fraction", f"must be in [0, 1], got {self.max_nodata_fraction}")
        if not self.ground_sample_distance_m > 0:
            raise ConfigError(
                "ground_sample_distance_m", f"must be positive, got {self.ground_sample_distance_m}"
            )
        resampling_method(self.resampling)
        if self.percentiles is None and (self.db_min is None or self.db_max is None):
            raise ConfigError("db_min/db_max", "set both db_min and db_max, or percentiles")

    @property
    def step(self) -> int:
        return self.stride or self.tile_size


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


def scene_georeferencing(
    scene: SceneRecord, dataset: rasterio.DatasetReader
) -> tuple[str, Affine, tuple[int, int]]:
    """CRS, transform and shape to resample from: the raster's own, else the record's (STAC ``proj:*``).

    Raises :class:`RasterError` naming the raster when neither gives a CRS.
    """
    crs = dataset.crs.to_string() if dataset.crs else (scene.crs or None)
    transform = dataset.transform
    if dataset.crs is None and transform == Affine.identity() and scene.transform:
        transform = Affine(*scene.transform[:6])
    if crs is None:
        raise RasterError(dataset.name, "no CRS: the raster is not georeferenced and the record gives none")
    return crs, transform, (dataset.height, dataset.width)


def scene_value_encoding(
    scene: SceneRecord, dtype, params: TilingParameters
) -> tuple[str, float | None, float | None]:
    """(unit, scale, offset) of a scene's raw pixels: the record's, else the per-archive defaults."""
    unit = radiometry.resolve_value_unit(scene.value_unit, dtype, params.default_value_unit)
    scale = scene.value_scale if scene.value_scale is not None else params.default_value_scale
    offset = scene.value_offset if scene.value_offset is not None else params.default_value_offset
    return unit, scale, offset


def scene_output_grid(
    scene: SceneRecord, dataset: rasterio.DatasetReader, params: TilingParameters
) -> OutputGrid:
    """The scene's fixed-GSD native-orientation grid (see :mod:`sar_pipeline.geo.grid`)."""
    crs, transform, shape = scene_georeferencing(scene, dataset)
    return build_output_grid(
        crs,
        transform,
        shape,
        params.ground_sample_distance_m,
        heading_deg=scene.heading_deg,
        observation_direction=scene.observation_direction,
        source=dataset.name,
    )


def _georeferenced(dataset: rasterio.DatasetReader, crs: str, transform: Affine):
    """The dataset itself, or a view with the record's georeferencing when the raster has none."""
    if dataset.crs is not None:
        return dataset
    return _GeoreferencedView(dataset, crs, transform)


class _GeoreferencedView:
    def __init__(self, dataset, crs, transform):
        self._ds, self.crs, self.transform = dataset, rasterio.crs.CRS.from_user_input(crs), transform

    def __getattr__(self, name):
        return getattr(self._ds, name)

    def window_transform(self, window):
        return rasterio.windows.transform(window, self.transform)


def estimate_db_range(
    samples: Iterable[tuple[SceneRecord, rasterio.DatasetReader]],
    params: TilingParameters,
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
    params: TilingParameters,
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
    crs, transform, _ = scene_georeferencing(scene, dataset)
    src = _georeferenced(dataset, crs, transform)
    grid = scene_output_grid(scene, dataset, params)
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
            extras[key] = (kind, _georeferenced(ds, crs, transform), ds)
            if ds.crs is not None and ds.crs.to_string() != crs:
                raise RasterError(href, f"CRS {ds.crs} differs from the scene's {crs}")
        except (SarPipelineError, rasterio.errors.RasterioError) as exc:
            extra_errors[key] = str(exc)
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
            return [DroppedTile(tid, scene.scene_id, f"read error: {exc}") for tid in ids]
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
                band_errors[key] = str(exc)
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
                    png=encode_png(image, params.png_compress_level, huffman_only=True),
                    extras_png={k: encode_png(v, params.png_compress_level) for k, v in tile_extras.items()},
                )
            )
        return items

    # blocks of at most max_block_tiles tiles of one tile row: memory is bounded whatever the scene width
    chunk = max(1, params.max_block_tiles)
    blocks = [(r, c, min(c + chunk, n_cols)) for r in range(n_rows) for c in range(0, n_cols, chunk)]
    try:
        if params.workers <= 1:
            for block in blocks:
                yield from block_items(*block)
        else:
            # blocks in flight bounded to workers + 1, so memory stays a few blocks
            with concurrent.futures.ThreadPoolExecutor(params.workers) as pool:
                pending: collections.deque = collections.deque()
                queue = iter(blocks)
                for block in queue:
                    pending.append(pool.submit(block_items, *block))
                    if len(pending) > params.workers:
                        yield from pending.popleft().result()
                while pending:
                    yield from pending.popleft().result()
    finally:
        for _, _, ds in extras.values():
            ds.close()


def to_display_uint8(image: np.ndarray) -> np.ndarray:
    """A quantised tile as uint8 for pictures (16-bit tiles keep their top 8 bits)."""
    image = np.asarray(image)
    return image if image.dtype == np.uint8 else (image >> 8).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def encode_png(image: np.ndarray, compress_level: int = 1, *, huffman_only: bool = False) -> bytes:
    """PNG bytes of a uint8 (L), uint16 (I;16) or RGB uint8 array.

    ``huffman_only=True`` (used for SAR tiles) writes single-band images directly: PNG filter
    "none" on every row and one zlib stream with ``Z_HUFFMAN_ONLY``. Speckled SAR has no repeated
    strings or smooth gradients for PNG's row filters or LZ77 to exploit, so this gives files a
    little *smaller* than Pillow's level-1 output (182 vs 205 kB for a 512² 8-bit tile) about 6×
    faster. Otherwise Pillow encodes (adaptive row filters + LZ77: right for land-cover codes and
    smooth images). Any decoder reads the same pixels either way.
    """
    image = np.asarray(image)
    if not huffman_only or image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG", compress_level=compress_level)
        return buf.getvalue()
    rows, cols = image.shape
    bit_depth = 8 if image.dtype == np.uint8 else 16
    scanlines = np.zeros((rows, 1 + cols * bit_depth // 8), dtype=np.uint8)  # filter byte 0 = none
    scanlines[:, 1:] = (image if bit_depth == 8 else image.astype(">u2")).view(np.uint8).reshape(rows, -1)
    compressor = zlib.compressobj(compress_level, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    idat = (
        compressor.compress(scanlines) + compressor.flush()
    )  # zlib releases the GIL: threads encode in parallel
    header = struct.pack(">IIBBBBB", cols, rows, bit_depth, 0, 0, 0, 0)  # greyscale, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


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
    params: TilingParameters,
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
    if params.percentiles is not None:
        opened = []
        try:
            for scene in scenes:
                try:
                    opened.append((scene, open_scene(scene)))
                except (SarPipelineError, rasterio.errors.RasterioError) as exc:
                    skipped[scene.scene_id] = str(exc)
            try:
                db_min, db_max = estimate_db_range(opened, params)
            except (SarPipelineError, rasterio.errors.RasterioError) as exc:
                skipped.update({s.scene_id: f"percentile estimate failed: {exc}" for s, _ in opened})
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
                    (out_dir / f"{item.tile_id}.png").write_bytes(item.png or encode_png(item.image))
                    written = {}
                    for key, arr in item.extras.items():
                        name = f"{item.tile_id}_{key}.png"
                        (out_dir / name).write_bytes(item.extras_png.get(key) or encode_png(arr))
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
            skipped[scene.scene_id] = str(exc)
    invalid: dict[str, int] = {}
    for (scene_id, _, _), count in invalid_by_block.items():
        invalid[scene_id] = invalid.get(scene_id, 0) + count
    return FlightTiling(
        rows, dropped, skipped, rad, previews, {k: v for k, v in invalid.items() if v}, speckle
    )


@dataclasses.dataclass(frozen=True)
class CheckOutcome:
    """Result of one quality check over a tile manifest."""

    name: str
    passed: bool
    description: str
    metadata: dict[str, Any]


def check_sar_tiles(
    rows: Sequence[dict[str, Any]],
    scenes: Sequence[SceneRecord],
    params: TilingParameters,
    image_size: Callable[[str], tuple[int, int]] | None = None,
) -> list[CheckOutcome]:
    """Quality checks on a SAR tile manifest: GSD, tile size, nodata fraction, footprints.

    ``image_size(path)`` returns a written tile's (width, height) to check the files themselves,
    not only the manifest.
    """
    gsd_bad, size_bad, nodata_bad, fp_bad = [], [], [], []
    footprints = {s.scene_id: (s, grid_footprint(s.transform, s.shape)) for s in scenes}
    for row in rows:
        t = Affine(*row["transform"])
        unit = crs_unit_in_metres(row["crs"])
        for size in pixel_size(t):
            if abs(size * unit - params.ground_sample_distance_m) > 1e-6 * params.ground_sample_distance_m:
                gsd_bad.append(row["tile_id"])
                break
        shape = (row["height"], row["width"])
        if image_size is not None:
            w, h = image_size(row["path"])
            shape = (h, w)
        if shape != (params.tile_size, params.tile_size):
            size_bad.append(row["tile_id"])
        if row["nodata_fraction"] > params.max_nodata_fraction:
            nodata_bad.append(row["tile_id"])
        fp = wkb.loads(row["footprint_scene_crs"])
        scene_fp = footprints.get(row["scene_id"])
        if not fp.is_valid or fp.area <= 0 or scene_fp is None:
            fp_bad.append(row["tile_id"])
            continue
        inside = fp.intersection(scene_fp[1]).area / fp.area
        # the valid part of the tile must lie inside the scene: the rest is nodata padding
        if inside < 1.0 - row["nodata_fraction"] - 0.02:
            fp_bad.append(row["tile_id"])

    def outcome(name, bad, description):
        return CheckOutcome(
            name, not bad, description, {"failing_tiles": len(bad), "examples": ", ".join(bad[:5])}
        )

    return [
        outcome(
            "gsd_matches_config", gsd_bad, f"pixel size = {params.ground_sample_distance_m} m (rel tol 1e-6)"
        ),
        outcome("tiles_are_tile_size", size_bad, f"every tile is {params.tile_size}×{params.tile_size}"),
        outcome("nodata_under_threshold", nodata_bad, f"nodata fraction ≤ {params.max_nodata_fraction}"),
        outcome(
            "footprints_inside_scene", fp_bad, "footprints valid; their valid part inside the scene footprint"
        ),
    ]


def write_manifest(rows: Sequence[dict[str, Any]], path) -> None:
    """Write tile manifest rows as GeoParquet (``geometry`` = WGS84 footprint), atomically."""
    import geopandas as gpd
    import pandas as pd

    from sar_pipeline.storage import atomic_local_file

    frame = pd.DataFrame(list(rows))
    geometry = frame.pop("geometry") if "geometry" in frame else []
    table = gpd.GeoDataFrame(frame, geometry=list(geometry), crs="EPSG:4326")
    with atomic_local_file(path) as tmp:
        table.to_parquet(
            tmp, index=False, compression="zstd", schema_version="1.1.0", write_covering_bbox=False
        )


def read_manifest(path) -> list[dict[str, Any]]:
    """Manifest rows written by :func:`write_manifest` (nulls as None, lists as lists, datetimes as
    datetime, ``geometry`` as a shapely polygon). Local path or UPath on object storage."""
    import pyarrow as pa
    import pyarrow.parquet as pq

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


def png_size(root, rel_path: str) -> tuple[int, int]:
    """(width, height) of a PNG under the storage root, from its header."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO((root / rel_path).read_bytes())) as img:
        return img.size
