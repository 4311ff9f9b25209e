"""Optical images co-located with SAR tiles: warped onto the tile's exact grid (pixel-aligned pairs).

An :class:`OpticalSource` renders RGB on any grid (CRS, possibly rotated transform, shape). Two
implementations:

* :class:`MosaicOpticalSource`: one GDAL-readable raster (GeoTIFF, COG, VRT), local or remote
  (``s3://…`` which rasterio maps to ``/vsis3/``, ``/vsis3/…``, ``https://…``).
* :class:`StacOpticalSource`: a STAC catalogue of optical items; the items intersecting the tile
  are taken closest in time first (optionally only under a cloud-cover limit) and mosaicked
  until the tile is covered.

Any source CRS works (GDAL reprojects). Pixels the source does not cover are left empty (0)
and counted: :attr:`OpticalTile.coverage_fraction` is the covered share of the tile.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
import rasterio.warp
import rasterio.windows
from affine import Affine
from rasterio.enums import ColorInterp
from shapely.geometry import shape as shapely_shape

from sar_pipeline.errors import ArchiveError, ConfigError, RasterError, SarPipelineError
from sar_pipeline.geo.footprints import grid_footprint, to_wgs84
from sar_pipeline.geo.resample import resampling_method
from sar_pipeline.pictures import png_bytes


@dataclasses.dataclass
class OpticalTile:
    """An RGB image on a tile grid, how much of it is covered, and when it was acquired."""

    image: np.ndarray  # (rows, cols, 3) uint8, 0 where not covered
    coverage_fraction: float  # share of pixels with data in all three bands
    acquired: dt.datetime | None
    time_gap_s: float | None  # |optical − SAR acquisition| in seconds (largest over mosaicked items)
    sources: list[str]  # hrefs or item ids used


def _as_utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _gap(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
    if a is None or b is None:
        return None
    return abs((_as_utc(a) - _as_utc(b)).total_seconds())


def warp_rgb(
    href: str,
    crs: str,
    transform: Affine,
    shape: tuple[int, int],
    bands: Sequence[int] | None = None,
    resampling: str = "bilinear",
) -> np.ndarray:
    """RGB of the raster at ``href`` on the grid, as float32 ``(3, rows, cols)``, NaN where not covered.

    ``bands`` (1-based) default to the bands tagged red/green/blue, else 1, 2, 3. An alpha band
    (or the file's nodata value) masks pixels out.
    """
    try:
        ds = rasterio.open(href)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterError(href, f"cannot open optical raster ({exc})") from exc
    with ds:
        if ds.crs is None:
            raise RasterError(href, "no CRS: the optical raster is not georeferenced")
        interp = list(ds.colorinterp)
        if bands is None:
            want = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
            bands = [interp.index(c) + 1 for c in want] if all(c in interp for c in want) else [1, 2, 3]
            if ds.count < 3:
                bands = [1, 1, 1]
        read = list(bands)
        alpha = interp.index(ColorInterp.alpha) + 1 if ColorInterp.alpha in interp else None
        if alpha is not None:
            read.append(alpha)
        out = np.full((len(read), *shape), np.nan, dtype=np.float32)
        try:
            rasterio.warp.reproject(
                rasterio.band(ds, read),
                out,
                src_nodata=ds.nodata,
                dst_transform=transform,
                dst_crs=crs,
                dst_nodata=np.nan,
                resampling=resampling_method(resampling),
            )
        except rasterio.errors.RasterioError as exc:
            raise RasterError(href, f"cannot warp optical raster ({exc})") from exc
        rgb = out[:3]
        if alpha is not None:
            rgb[:, ~(out[3] > 0)] = np.nan
        return rgb


def rgb_to_uint8(rgb: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
    """Float RGB ``(3, rows, cols)`` → uint8 ``(rows, cols, 3)``, linearly from ``value_range`` (NaN → 0)."""
    lo, hi = value_range if value_range is not None else (0.0, 255.0)
    scaled = np.clip((rgb - lo) / max(hi - lo, 1e-12), 0, 1) * 255
    scaled = np.where(np.isfinite(scaled), np.rint(scaled), 0)
    return np.moveaxis(scaled.astype(np.uint8), 0, -1)


class OpticalSource(abc.ABC):
    """Renders co-located optical RGB on a SAR tile grid."""

    @abc.abstractmethod
    def render(
        self, crs: str, transform: Affine, shape: tuple[int, int], when: dt.datetime | None = None
    ) -> OpticalTile:
        """RGB on exactly this grid (same CRS, transform, shape); ``when`` is the SAR acquisition time."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Where the images come from (for metadata)."""


class MosaicOpticalSource(OpticalSource):
    """One GDAL-readable optical raster (GeoTIFF/COG/VRT; local path, ``s3://``, ``/vsis3/``, ``https://``).

    ``value_range`` maps source values to 0–255 (default 0–255, right for 8-bit orthophotos; e.g.
    ``(0, 3000)`` for Sentinel-2 L2A reflectance ×10⁴). ``acquired`` is the acquisition time if
    known; otherwise the file's ``ACQUISITION_DATETIME`` or ``TIFFTAG_DATETIME`` tag is used.
    """

    def __init__(
        self,
        uri: str,
        bands: Sequence[int] | None = None,
        value_range: tuple[float, float] | None = None,
        acquired: dt.datetime | None = None,
        resampling: str = "bilinear",
    ):
        self.uri = str(uri)
        self.bands = list(bands) if bands else None
        self.value_range = tuple(value_range) if value_range else None
        self.resampling = resampling
        self.acquired = acquired if acquired is not None else self._tagged_time()

    @property
    def name(self) -> str:
        return self.uri

    def _tagged_time(self) -> dt.datetime | None:
        try:
            with rasterio.open(self.uri) as ds:
                tags = ds.tags()
        except rasterio.errors.RasterioIOError:
            return None  # reported when rendering, with the reason
        for key in ("ACQUISITION_DATETIME", "datetime", "TIFFTAG_DATETIME"):
            value = tags.get(key)
            if not value:
                continue
            for fmt in (None, "%Y:%m:%d %H:%M:%S"):
                try:
                    return (
                        dt.datetime.fromisoformat(value) if fmt is None else dt.datetime.strptime(value, fmt)
                    )
                except ValueError:
                    continue
        return None

    def render(self, crs, transform, shape, when=None) -> OpticalTile:
        rgb = warp_rgb(self.uri, crs, transform, shape, self.bands, self.resampling)
        covered = np.isfinite(rgb).all(axis=0)
        return OpticalTile(
            image=rgb_to_uint8(rgb, self.value_range),
            coverage_fraction=float(covered.mean()),
            acquired=self.acquired,
            time_gap_s=_gap(self.acquired, when),
            sources=[self.uri],
        )


def _read_stac(uri: str) -> pystac.Catalog:
    """Open a STAC catalogue or collection, local or remote (fsspec for ``s3://`` and the like)."""
    try:
        if "://" in uri and not uri.startswith(("http://", "https://", "file://")):
            import fsspec

            class _FsspecStacIO(pystac.StacIO):
                def read_text(self, source, *args, **kwargs):
                    with fsspec.open(str(source), "r") as f:
                        return f.read()

                def write_text(self, dest, txt, *args, **kwargs):
                    with fsspec.open(str(dest), "w") as f:
                        f.write(txt)

            return pystac.read_file(uri, stac_io=_FsspecStacIO())
        return pystac.read_file(uri)
    except (OSError, json.JSONDecodeError, pystac.STACError) as exc:
        raise ArchiveError(uri, f"cannot read optical STAC catalogue ({exc})") from exc


class StacOpticalSource(OpticalSource):
    """Optical items of a STAC catalogue/collection, mosaicked closest-in-time first.

    Each item's RGB asset is ``asset_key`` if given, else the first of ``visual``, ``rgb``,
    ``image``, ``data`` it has. Items with ``eo:cloud_cover`` above ``max_cloud_cover`` are ignored,
    and so are SAR items (any ``sar:*`` property), so a whole archive catalogue can be given.
    """

    ASSET_KEYS = ("visual", "rgb", "image", "data")

    def __init__(
        self,
        uri: str,
        asset_key: str | None = None,
        max_cloud_cover: float | None = None,
        bands: Sequence[int] | None = None,
        value_range: tuple[float, float] | None = None,
        resampling: str = "bilinear",
    ):
        self.uri = str(uri)
        self.asset_key = asset_key
        self.max_cloud_cover = max_cloud_cover
        self.bands = list(bands) if bands else None
        self.value_range = tuple(value_range) if value_range else None
        self.resampling = resampling
        root = _read_stac(self.uri)
        items = [root] if isinstance(root, pystac.Item) else list(root.get_items(recursive=True))
        self.items = []
        for item in items:
            cloud = item.properties.get("eo:cloud_cover")
            if self.max_cloud_cover is not None and cloud is not None and cloud > self.max_cloud_cover:
                continue
            # a catalogue may hold SAR flights beside the optical items (the demo archive does)
            if item.geometry is None or any(k.startswith("sar:") for k in item.properties):
                continue
            self.items.append((item, shapely_shape(item.geometry), _as_utc(item.datetime or _start(item))))

    @property
    def name(self) -> str:
        return self.uri

    def _href(self, item: pystac.Item) -> str:
        keys = [self.asset_key] if self.asset_key else self.ASSET_KEYS
        for key in keys:
            if key in item.assets:
                return item.assets[key].get_absolute_href()
        raise ArchiveError(item.id, f"no optical asset among {list(keys)} (has {sorted(item.assets)})")

    def render(self, crs, transform, shape, when=None) -> OpticalTile:
        footprint = to_wgs84(grid_footprint(transform, shape), crs)
        candidates = [(item, t) for item, geom, t in self.items if geom.intersects(footprint)]
        when_utc = _as_utc(when)
        candidates.sort(
            key=lambda it: (_gap(it[1], when_utc) if _gap(it[1], when_utc) is not None else np.inf, it[0].id)
        )
        acc = np.full((3, *shape), np.nan, dtype=np.float32)
        used, gaps = [], []
        for item, t in candidates:
            rgb = warp_rgb(self._href(item), crs, transform, shape, self.bands, self.resampling)
            fill = np.isnan(acc).any(axis=0) & np.isfinite(rgb).all(axis=0)
            if not fill.any():
                continue
            acc[:, fill] = rgb[:, fill]
            used.append((item, t))
            gaps.append(_gap(t, when_utc))
            if np.isfinite(acc).all():
                break
        covered = np.isfinite(acc).all(axis=0)
        known = [g for g in gaps if g is not None]
        return OpticalTile(
            image=rgb_to_uint8(acc, self.value_range),
            coverage_fraction=float(covered.mean()),
            acquired=used[0][1] if used else None,
            time_gap_s=max(known) if known else None,
            sources=[item.id for item, _ in used],
        )


def _start(item: pystac.Item) -> dt.datetime | None:
    value = item.properties.get("start_datetime")
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def open_optical_source(kind: str, uri: str, **options) -> OpticalSource:
    """Build an optical source: ``kind`` is ``"mosaic"`` (one raster) or ``"stac"`` (a catalogue)."""
    if kind == "mosaic":
        return MosaicOpticalSource(uri, **options)
    if kind == "stac":
        return StacOpticalSource(uri, **options)
    raise ConfigError("optical.kind", f"unknown kind {kind!r}; expected 'mosaic' or 'stac'")


@dataclasses.dataclass
class FlightColocation:
    """Optical tiles of a flight: manifest rows, tiles skipped (with reasons) and a few previews."""

    rows: list[dict[str, Any]]
    skipped: dict[str, str]
    previews: list[tuple[str, np.ndarray]]


def colocate_tiles(
    sar_rows: Sequence[dict[str, Any]],
    source: OpticalSource,
    out_dir: Path,
    rel_dir: str,
    min_coverage: float,
    max_previews: int = 6,
) -> FlightColocation:
    """Render the optical tile of every SAR manifest row on its exact grid; write ``<tile_id>.png``.

    A tile whose coverage is below ``min_coverage``, or whose source cannot be read, is skipped
    with the reason recorded; the flight's other tiles are kept.
    """
    rows, skipped, previews = [], {}, []
    for sar in sar_rows:
        tid = sar["tile_id"]
        when = sar.get("datetime")
        if when is not None and not isinstance(when, dt.datetime):
            when = when.to_pydatetime() if hasattr(when, "to_pydatetime") else None
        try:
            tile = source.render(
                sar["crs"], Affine(*sar["transform"]), (int(sar["height"]), int(sar["width"])), when
            )
        except SarPipelineError as exc:
            skipped[tid] = str(exc)
            continue
        if tile.coverage_fraction < min_coverage:
            skipped[tid] = f"{source.name}: optical coverage {tile.coverage_fraction:.3f} < {min_coverage}"
            continue
        (Path(out_dir) / f"{tid}.png").write_bytes(png_bytes(tile.image))
        rows.append(
            {
                "tile_id": tid,
                "flight_id": sar["flight_id"],
                "scene_id": sar["scene_id"],
                "path": f"{rel_dir}/{tid}.png",
                "sar_path": sar["path"],
                "crs": sar["crs"],
                "transform": list(sar["transform"]),
                "height": int(sar["height"]),
                "width": int(sar["width"]),
                "coverage_fraction": tile.coverage_fraction,
                "optical_datetime": tile.acquired,
                "time_gap_s": tile.time_gap_s,
                "optical_sources": json.dumps(tile.sources),
                "optical_source": source.name,
                "footprint_scene_crs": sar["footprint_scene_crs"],
                "geometry": sar["geometry"],
            }
        )
        if len(previews) < max_previews:
            previews.append((tid, tile.image))
    return FlightColocation(rows, skipped, previews)


def pairs_preview_png(
    root, sar_rows: Sequence[dict[str, Any]], colocation: FlightColocation, max_pairs: int = 4
) -> bytes | None:
    """A PNG mosaic of a few SAR tiles (left) beside their optical tiles (right), or None if empty."""
    import io

    from PIL import Image

    from sar_pipeline.geo.tiling import to_display_uint8
    from sar_pipeline.pictures import grid

    sar_path = {r["tile_id"]: r["path"] for r in sar_rows}
    images, labels = [], []
    for tid, optical in colocation.previews[:max_pairs]:
        with Image.open(io.BytesIO((root / sar_path[tid]).read_bytes())) as sar:
            images += [to_display_uint8(np.asarray(sar)), optical]
        labels += [f"SAR {tid.rsplit('__', 1)[-1]}", "optical"]
    if not images:
        return None
    return png_bytes(grid(images, columns=2, labels=labels))
