"""Optical images co-located with SAR tiles: warped onto the tile's exact grid (pixel-aligned pairs).

An :class:`OpticalSource` renders RGB on any grid (CRS, possibly rotated transform, shape). Two
implementations:

* :class:`MosaicOpticalSource`: one GDAL-readable raster (GeoTIFF, COG, VRT), local or remote
  (``s3://…`` which rasterio maps to ``/vsis3/``, ``/vsis3/…``, ``https://…``).
* :class:`StacOpticalSource`: a STAC catalogue of optical items; the items intersecting the tile
  are taken closest in time first (optionally only under a cloud-cover limit) and mosaicked
  until the tile is covered.

Any source CRS works (GDAL reprojects). Pixels the source does not cover are left empty (0)
and counted: :attr:`OpticalTile.coverage_fraction` is the covered share of the tile. A flight's
tiles are rendered by :mod:`sar_pipeline.geo.colocation`.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType

import numpy as np
import pystac
import rasterio
import rasterio.warp
import rasterio.windows
from affine import Affine
from rasterio.enums import ColorInterp
from shapely.errors import ShapelyError
from shapely.geometry import shape as shapely_shape

from sar_pipeline.archive.stac import linked_items, malformed_stac, walk_catalogues
from sar_pipeline.errors import ArchiveError, RasterError
from sar_pipeline.geo.footprints import grid_footprint, to_wgs84
from sar_pipeline.geo.resample import resampling_method
from sar_pipeline.geo.settings import OpticalSettings
from sar_pipeline.hrefs import HrefPolicy, redact
from sar_pipeline.stac_io import FsspecStacIO
from sar_pipeline.timestamps import parse_utc


@dataclasses.dataclass
class OpticalTile:
    """An RGB image on a tile grid, how much of it is covered, and when it was acquired."""

    image: np.ndarray  # (rows, cols, 3) uint8, 0 where not covered
    coverage_fraction: float  # share of pixels with data in all three bands
    acquired: dt.datetime | None
    time_gap_s: float | None  # |optical − SAR acquisition| in seconds (largest over mosaicked items)
    sources: list[str]  # hrefs or item ids used


def _gap(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
    """|a − b| in seconds (naive times are UTC), or None when either is unknown."""
    if a is None or b is None:
        return None
    return abs((parse_utc(a) - parse_utc(b)).total_seconds())


def encoding_problem(ds, value_range: tuple[float, float] | None) -> str | None:
    """Why an optical raster's pixels would not come out as the RGB the captioner should see, or None.

    A paletted (indexed-colour) raster holds colour-table indices, not colours: warped as is it
    gives grey index images. A raster that is not 8-bit (16-bit counts, float reflectance) read
    with the 0–255 default range comes out all white or all black. Both are refused, naming the fix.
    """
    if ColorInterp.palette in ds.colorinterp:
        return (
            "paletted (indexed-colour) raster: its values are colour-table indices, not colours; "
            "expand it to RGB first (gdal_translate -expand rgb)"
        )
    if value_range is None and ds.dtypes[0] != "uint8":
        return (
            f"{ds.dtypes[0]} pixels read with the 8-bit default range 0–255 would saturate; set "
            "optical.value_min and optical.value_max (e.g. 0 and 3000 for Sentinel-2 L2A reflectance × 10⁴)"
        )
    return None


def warp_rgb(
    href: str,
    crs: str,
    transform: Affine,
    shape: tuple[int, int],
    bands: Sequence[int] | None = None,
    resampling: str = "bilinear",
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """RGB of the raster at ``href`` on the grid, as float32 ``(3, rows, cols)``, NaN where not covered.

    ``bands`` (1-based) default to the bands tagged red/green/blue, else 1, 2, 3. An alpha band
    (or the file's nodata value) masks pixels out. ``value_range`` is the range the caller maps to
    0–255 (None: 8-bit); a raster it cannot map (:func:`encoding_problem`) raises RasterError.
    """
    try:
        ds = rasterio.open(href)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterError(href, f"cannot open optical raster ({exc})") from exc
    with ds:
        if ds.crs is None:
            raise RasterError(href, "no CRS: the optical raster is not georeferenced")
        problem = encoding_problem(ds, value_range)
        if problem:
            raise RasterError(href, problem)
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

    #: inputs of the source left out (an item or link by its id or href → why)
    skipped: Mapping[str, str] = MappingProxyType({})

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
        self.acquired = parse_utc(acquired) if acquired is not None else self._tagged_time()
        self._refuse_unusable_encoding()

    @property
    def name(self) -> str:
        return redact(self.uri)

    def _refuse_unusable_encoding(self) -> None:
        """Fail once, up front, for a mosaic whose pixels cannot become the RGB captions describe."""
        try:
            with rasterio.open(self.uri) as ds:
                problem = encoding_problem(ds, self.value_range)
        except rasterio.errors.RasterioIOError:
            return  # reported when rendering, with the reason
        if problem:
            raise RasterError(redact(self.uri), problem)

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
            try:
                return parse_utc(value)
            except ValueError:
                continue  # a malformed tag counts as absent
        return None

    def render(self, crs, transform, shape, when=None) -> OpticalTile:
        rgb = warp_rgb(self.uri, crs, transform, shape, self.bands, self.resampling, self.value_range)
        covered = np.isfinite(rgb).all(axis=0)
        return OpticalTile(
            image=rgb_to_uint8(rgb, self.value_range),
            coverage_fraction=float(covered.mean()),
            acquired=self.acquired,
            time_gap_s=_gap(self.acquired, when),
            sources=[redact(self.uri)],
        )


def _read_stac(uri: str) -> pystac.STACObject:
    """Open a STAC catalogue, collection or item, local or remote (fsspec for ``s3://`` and the like)."""
    try:
        return pystac.read_file(uri, stac_io=FsspecStacIO())
    except Exception as exc:  # pystac raises many kinds (I/O, JSON, schema): all mean "unreadable"
        raise ArchiveError(uri, f"cannot read optical STAC catalogue ({type(exc).__name__}: {exc})") from exc


class StacOpticalSource(OpticalSource):
    """Optical items of a STAC catalogue/collection, mosaicked closest-in-time first.

    Each item's RGB asset is ``asset_key`` if given, else the first of ``visual``, ``rgb``,
    ``image``, ``data`` it has. Items with ``eo:cloud_cover`` above ``max_cloud_cover`` are ignored,
    and so are SAR items (any ``sar:*`` property), so a whole archive catalogue can be given. Links and
    asset hrefs are followed only under the catalogue's folder or ``allowed_href_roots``
    (:class:`~sar_pipeline.hrefs.HrefPolicy`, as for the SAR archive); an item out of reach, without
    an RGB asset or malformed is left out, the reason in :attr:`skipped`.
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
        allowed_href_roots: Sequence[str] = (),
    ):
        self.uri = str(uri)
        self.asset_key = asset_key
        self.max_cloud_cover = max_cloud_cover
        self.bands = list(bands) if bands else None
        self.value_range = tuple(value_range) if value_range else None
        self.resampling = resampling
        self.policy = HrefPolicy.for_archive(self.uri, allowed_href_roots, "optical.allowed_href_roots")
        self.skipped: dict[str, str] = {}
        self.items = []
        for item in self._reachable_items(_read_stac(self.uri)):
            try:
                with malformed_stac(f"item {item.id!r}"):
                    usable = self._usable(item)
            except ArchiveError as exc:
                self.skipped[exc.source] = exc.reason
                continue
            if usable:
                self.items.append(usable)

    def _reachable_items(self, root: pystac.STACObject) -> Iterator[pystac.Item]:
        if isinstance(root, pystac.Item):
            yield root
            return

        def report(error: ArchiveError) -> None:
            self.skipped[error.source] = error.reason

        for node in walk_catalogues(root, self.policy, report):
            yield from linked_items(node, self.policy, report)

    def _usable(self, item: pystac.Item) -> tuple[pystac.Item, object, dt.datetime | None] | None:
        """(item, footprint, acquisition time) of an optical item to use; None for one to ignore
        (cloudy, SAR); ArchiveError naming it when its RGB asset is missing or out of reach."""
        cloud = item.properties.get("eo:cloud_cover")
        if self.max_cloud_cover is not None and cloud is not None and float(cloud) > self.max_cloud_cover:
            return None
        # a catalogue may hold SAR flights beside the optical items (the demo archive does)
        if item.geometry is None or any(k.startswith("sar:") for k in item.properties):
            return None
        problem = self.policy.problem(self._href(item), f"asset of item {item.id!r}")
        if problem:
            raise ArchiveError(f"item {item.id!r}", problem)
        acquired = parse_utc(item.datetime or item.properties.get("start_datetime"))
        try:
            footprint = shapely_shape(item.geometry)
        except ShapelyError as exc:
            raise ArchiveError(f"item {item.id!r}", f"geometry is not a GeoJSON geometry ({exc})") from exc
        return item, footprint, acquired

    @property
    def name(self) -> str:
        return redact(self.uri)

    def _href(self, item: pystac.Item) -> str:
        keys = [self.asset_key] if self.asset_key else self.ASSET_KEYS
        for key in keys:
            if key in item.assets:
                return item.assets[key].get_absolute_href()
        raise ArchiveError(item.id, f"no optical asset among {list(keys)} (has {sorted(item.assets)})")

    def render(self, crs, transform, shape, when=None) -> OpticalTile:
        footprint = to_wgs84(grid_footprint(transform, shape), crs)
        candidates = [(item, t) for item, geom, t in self.items if geom.intersects(footprint)]
        when_utc = parse_utc(when)
        candidates.sort(
            key=lambda it: (_gap(it[1], when_utc) if _gap(it[1], when_utc) is not None else np.inf, it[0].id)
        )
        acc = np.full((3, *shape), np.nan, dtype=np.float32)
        used, gaps = [], []
        for item, t in candidates:
            rgb = warp_rgb(
                self._href(item), crs, transform, shape, self.bands, self.resampling, self.value_range
            )
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


def open_optical_source(settings: OpticalSettings) -> OpticalSource:
    """The optical source the settings describe: one raster (``mosaic``) or a STAC catalogue (``stac``)."""
    options = {
        "bands": settings.bands,
        "value_range": settings.value_range,
        "resampling": settings.resampling,
    }
    if settings.kind == "stac":
        return StacOpticalSource(
            settings.uri,
            asset_key=settings.asset_key,
            max_cloud_cover=settings.max_cloud_cover,
            allowed_href_roots=settings.allowed_href_roots,
            **options,
        )
    return MosaicOpticalSource(settings.uri, **options)
