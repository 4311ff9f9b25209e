"""A :class:`~sar_pipeline.archive.protocol.SarArchive` over a static STAC catalogue.

Works on any catalogue that follows the STAC spec and this convention, local or on object
storage (``s3://…`` and any other fsspec URL, read through universal-pathlib):

* **A flight is a STAC Collection** anywhere under the root (sub-catalogues are walked), that has
  items of its own. Collections carrying ``"sar_pipeline:kind"`` are flights only when it is
  ``"flight"`` (the demo marks its orthophoto ``"optical"``). Unmarked collections are flights
  unless their first item looks optical (``eo:bands``/``bands`` with optical ``common_name``\\ s
  or the EO extension, and no ``sar:`` field): a user's catalogue needs no marker. The
  collection id is the flight id and must be a safe path component (``storage.validate_id``).
* **A scene is an Item of that collection** with one raster asset: the single GeoTIFF asset with
  role ``data``; failing that the item's only GeoTIFF asset; ``asset_key=`` picks one by key when
  an item has several (multi-polarisation products). Other assets are passed on as
  ``SceneRecord.extra_assets`` (absolute hrefs; relative hrefs resolve against the item's file).
* **Georeferencing** comes from the projection extension (``proj:code``, or the older
  ``proj:epsg``/``proj:wkt2``/``proj:projjson``; ``proj:transform`` in ``affine`` order;
  ``proj:shape`` as rows, cols), at asset level first then item level. When any of it is absent
  (or the nodata value is unknown) the raster's own header is read with rasterio.
* **Acquisition fields** (all optional, ``None`` when absent): the SAR extension
  (``sar:frequency_band``, ``sar:center_frequency`` [GHz], ``sar:polarizations``,
  ``sar:product_type``, ``sar:instrument_mode``, ``sar:resolution_range``/``_azimuth``,
  ``sar:pixel_spacing_range``/``_azimuth``, ``sar:looks_range``/``_azimuth``/
  ``_equivalent_number``, ``sar:observation_direction``), ``view:incidence_angle``, ``datetime``
  (or ``start_datetime``), ``platform``.
* **Heading** (STAC has no heading field), first found of: the custom property
  ``sar_pipeline:heading_deg`` (degrees clockwise from the scene CRS's grid north);
  ``view:azimuth`` (bearing of the look direction) with ``sar:observation_direction``;
  ``sat:orbit_state`` with the scene centre's latitude (a sun-synchronous orbit's ground track, within
  ~2°). ``SceneRecord.heading_source`` records which (:mod:`sar_pipeline.archive.heading`).
* **Scene labels** (optional): ``sar_pipeline:labels``, a list of class names describing the ground
  (BigEarthNet's CORINE labels…), passed to every tile of the scene for the template captioner.
* **Pixel values**: ``raster:bands[0]`` (or STAC 1.1 ``bands[0]``) ``unit`` → ``value_unit`` as
  written (``"amplitude (DN)"``, ``"DN"``, ``"sigma0"``, ``"beta0"``, ``"intensity"``, ``"power"``,
  ``"linear"``, ``"dB"``…, read by :func:`sar_pipeline.radiometry.parse_value_unit`),
  ``scale``/``offset`` → ``value_scale``/``value_offset``, ``nodata`` → ``nodata``.
* **Updated marker** (the new-flights cursor): the collection's ``updated`` field, else the
  latest ``updated``/``created``/``end_datetime``/``datetime`` of its items, as ISO-8601 UTC.

Bad input never stops the listing of the others: a flight that cannot be used is reported to
``on_error`` (or appended to :attr:`StacSarArchive.problems`) and skipped; scenes likewise via
``list_scenes(..., on_error=...)``. Every error is an ``ArchiveError`` naming the item/collection
and the reason. Credentials and endpoints for ``s3://`` come from the usual AWS environment
variables (for both fsspec and GDAL's ``/vsis3/``); ``storage_options`` are passed to fsspec.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pystac
import rasterio
from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from upath import UPath

from sar_pipeline.archive.heading import (
    heading_from_look_azimuth,
    heading_from_orbit_state,
    true_to_grid_bearing,
)
from sar_pipeline.archive.protocol import FlightRecord, SceneRecord
from sar_pipeline.errors import ArchiveError, ConfigError, SarPipelineError
from sar_pipeline.hrefs import HrefPolicy, redact
from sar_pipeline.stac_io import FsspecStacIO, href_path
from sar_pipeline.storage import validate_id
from sar_pipeline.timestamps import iso_utc, parse_utc

KIND_PROPERTY = "sar_pipeline:kind"
HEADING_PROPERTY = "sar_pipeline:heading_deg"
#: scene-level class names (e.g. BigEarthNet's CORINE labels), kept in ``SceneRecord.properties``: the
#: template captioner words them when no land cover is available
LABELS_PROPERTY = "sar_pipeline:labels"
_RASTER_SUFFIXES = (".tif", ".tiff")
_OPTICAL_COMMON_NAMES = {"red", "green", "blue", "nir", "rededge", "coastal", "pan", "swir16", "swir22"}

#: item properties mapped to SceneRecord fields (everything else goes to ``properties``)
_SAR_FIELDS = {
    "sar:instrument_mode": "instrument_mode",
    "sar:frequency_band": "frequency_band",
    "sar:center_frequency": "center_frequency_ghz",
    "sar:product_type": "product_type",
    "sar:resolution_range": "resolution_range_m",
    "sar:resolution_azimuth": "resolution_azimuth_m",
    "sar:pixel_spacing_range": "pixel_spacing_range_m",
    "sar:pixel_spacing_azimuth": "pixel_spacing_azimuth_m",
    "sar:looks_range": "looks_range",
    "sar:looks_azimuth": "looks_azimuth",
    "sar:looks_equivalent_number": "looks_equivalent_number",
    "view:incidence_angle": "incidence_angle_deg",
    HEADING_PROPERTY: "heading_deg",
}
_MAPPED_PROPERTIES = {
    *_SAR_FIELDS,
    "sar:polarizations",
    "sar:observation_direction",
    "datetime",
    "platform",
    "proj:code",
    "proj:epsg",
    "proj:wkt2",
    "proj:projjson",
    "proj:transform",
    "proj:shape",
}


def _stac_time(value: Any) -> dt.datetime | None:
    """A STAC time field as aware UTC; a malformed one counts as absent (the rest of the item is usable)."""
    try:
        return parse_utc(value)
    except ValueError:
        return None


def _iso_utc(value: Any) -> str | None:
    """A STAC time field as sortable ``…Z`` text (the new-flights cursor), or None."""
    time = _stac_time(value)
    return iso_utc(time) if time is not None else None


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _is_raster_asset(asset: pystac.Asset) -> bool:
    media_type = (asset.media_type or "").lower()
    if "tiff" in media_type:
        return True
    return not media_type and asset.href.split("?", 1)[0].lower().endswith(_RASTER_SUFFIXES)


def _resolve(link: pystac.Link, root, what: str, report: Callable[[ArchiveError], None], policy: HrefPolicy):
    """The STAC object behind ``link``, or None after reporting why it cannot be read (or may not be:
    a link outside the archive's roots is never followed)."""
    href = link.get_absolute_href() or link.href
    problem = policy.problem(href, f"link to the {what}")
    if problem:
        report(ArchiveError(redact(href), problem))
        return None
    try:
        link.resolve_stac_object(root=root)
        return link.target
    except Exception as exc:  # pystac raises many kinds (I/O, JSON, schema): all mean "unreadable"
        report(
            ArchiveError(
                link.get_absolute_href() or link.href, f"cannot read {what} ({type(exc).__name__}: {exc})"
            )
        )
        return None


@contextlib.contextmanager
def malformed_stac(name: str) -> Iterator[None]:
    """A field of the wrong JSON type (a number where text is expected, an object for a list…), met by
    pystac or here, is the catalogue's fault: an ArchiveError naming the object, not a crash."""
    try:
        yield
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        raise ArchiveError(name, f"malformed STAC ({type(exc).__name__}: {exc})") from exc


def _describe(obj: pystac.STACObject) -> str:
    kind = "collection" if isinstance(obj, pystac.Collection) else type(obj).__name__.lower()
    href = obj.get_self_href()
    return f"{kind} {obj.id!r}" + (f" ({href})" if href else "")


def walk_catalogues(
    root: pystac.Catalog, policy: HrefPolicy, report: Callable[[ArchiveError], None]
) -> Iterator[pystac.Catalog]:
    """``root`` and every catalogue and collection under it, depth first, each once, following only
    child links ``policy`` allows; a link it refuses or that cannot be read is reported, not followed."""
    stack: list[pystac.Catalog] = [root]
    seen: set[str] = set()
    while stack:
        node = stack.pop()
        href = node.get_self_href() or node.id
        if href in seen:
            continue
        seen.add(href)
        yield node
        children = [
            child
            for link in node.get_child_links()
            if isinstance(
                child := _resolve(link, root, f"child catalogue of {_describe(node)}", report, policy),
                pystac.Catalog,
            )
        ]
        stack.extend(reversed(children))


def linked_items(
    node: pystac.Catalog, policy: HrefPolicy, report: Callable[[ArchiveError], None]
) -> Iterator[pystac.Item]:
    """The items ``node`` links to that ``policy`` allows and that can be read (the others reported)."""
    root = node.get_root()
    for link in node.get_item_links():
        item = _resolve(link, root, f"item of {_describe(node)}", report, policy)
        if isinstance(item, pystac.Item):
            yield item


class StacSarArchive:
    """SAR flights and scenes from the static STAC catalogue at ``uri`` (see module doc).

    ``uri``: a ``catalog.json``/``collection.json`` (local path or URL), or a folder holding a
    ``catalog.json``. ``asset_key``: the asset to read when items have several raster assets.
    ``check_files``: check that each scene's raster exists when listing scenes (default).
    ``storage_options``: fsspec options for object-store URLs (endpoint, anon…).
    ``allowed_href_roots``: roots besides the catalogue's folder that links and asset hrefs may
    point under (see :class:`~sar_pipeline.hrefs.HrefPolicy`); others are skipped naming the rule.
    """

    def __init__(
        self,
        uri: str | os.PathLike,
        asset_key: str | None = None,
        check_files: bool = True,
        storage_options: dict[str, Any] | None = None,
        allowed_href_roots: Sequence[str] = (),
    ):
        self.uri = str(uri)
        self.href_policy = HrefPolicy.for_archive(self.uri, allowed_href_roots)
        self.asset_key = asset_key
        self.check_files = check_files
        self.storage_options = dict(storage_options or {})
        self.stac_io = FsspecStacIO(self.storage_options)
        #: errors met by the last :meth:`list_flights` without ``on_error`` (skipped flights)
        self.problems: list[ArchiveError] = []

    # -- catalogue traversal ------------------------------------------------------------------

    def _path(self, href: str) -> UPath:
        return href_path(href, self.storage_options)

    def _root_href(self) -> str:
        href = self.uri
        if not href.lower().endswith(".json"):
            href = href.rstrip("/") + "/catalog.json"
        return href

    def _read_root(self) -> pystac.Catalog:
        href = self._root_href()
        try:
            exists = self._path(href).exists() if not href.startswith(("http://", "https://")) else True
        except Exception as exc:  # credentials, endpoint, permissions: say which
            raise ArchiveError(
                href, f"cannot reach the STAC catalogue ({type(exc).__name__}: {exc})"
            ) from exc
        if not exists:
            raise ArchiveError(href, "STAC catalogue not found (no such file)")
        try:
            root = pystac.read_file(href, stac_io=self.stac_io)
        except Exception as exc:
            raise ArchiveError(href, f"cannot read the STAC catalogue ({type(exc).__name__}: {exc})") from exc
        if not isinstance(root, pystac.Catalog):
            raise ArchiveError(href, f"is a STAC {type(root).__name__}, not a Catalog or Collection")
        return root

    def _walk_collections(self, report: Callable[[ArchiveError], None]) -> Iterator[pystac.Collection]:
        """Every collection under the root (the root too), depth first, each once."""
        for node in walk_catalogues(self._read_root(), self.href_policy, report):
            if isinstance(node, pystac.Collection):
                yield node
            elif node.get_item_links():
                report(
                    ArchiveError(
                        _describe(node),
                        "holds items but is a Catalog: a flight must be a STAC Collection "
                        "(make it a pystac.Collection with an extent), so these items are ignored",
                    )
                )

    def _items(
        self, collection: pystac.Collection, report: Callable[[ArchiveError], None]
    ) -> Iterator[pystac.Item]:
        return linked_items(collection, self.href_policy, report)

    def _is_flight(self, collection: pystac.Collection) -> bool:
        kind = collection.extra_fields.get(KIND_PROPERTY)
        if kind is not None:
            return kind == "flight"
        links = collection.get_item_links()
        if not links:
            return False  # a grouping collection (only sub-collections) or an empty one
        if self.href_policy.problem(links[0].get_absolute_href() or links[0].href):
            return True  # reported when its scenes are listed
        try:
            links[0].resolve_stac_object(root=collection.get_root())
            item = links[0].target
        except Exception:
            return True  # unreadable items are reported when its scenes are listed
        if not isinstance(item, pystac.Item):
            return True
        if any(key.startswith("sar:") for key in item.properties) or any(
            "/sar/" in ext for ext in item.stac_extensions
        ):
            return True
        if any("/eo/" in ext for ext in item.stac_extensions):
            return False
        for asset in item.assets.values():
            for band in asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []:
                if isinstance(band, dict) and (band.get("common_name") or band.get("eo:common_name")) in (
                    _OPTICAL_COMMON_NAMES
                ):
                    return False
        return True

    def _flight_record(self, collection: pystac.Collection) -> FlightRecord:
        try:
            flight_id = validate_id(collection.id, "flight id")
        except ConfigError as exc:
            raise ArchiveError(_describe(collection), exc.reason) from exc
        start = end = None
        intervals = collection.extent.temporal.intervals if collection.extent else []
        if intervals:
            start, end = intervals[0][0], intervals[0][1]
        platforms = (collection.summaries.lists or {}).get("platform") if collection.summaries else None
        updated = _iso_utc(collection.extra_fields.get("updated"))
        if updated is None:
            stamps = []
            for item in self._items(collection, lambda _err: None):
                props = item.properties
                for key in ("updated", "created", "end_datetime", "datetime"):
                    stamp = _iso_utc(props.get(key))
                    if stamp:
                        stamps.append(stamp)
                        break
            updated = max(stamps) if stamps else None
        return FlightRecord(
            flight_id=flight_id,
            title=collection.title,
            start_datetime=start,
            end_datetime=end,
            platform=platforms[0] if platforms and len(platforms) == 1 else None,
            updated=updated,
        )

    # -- SarArchive ---------------------------------------------------------------------------

    def list_flights(
        self, since: str | None = None, on_error: Callable[[SarPipelineError], None] | None = None
    ) -> list[FlightRecord]:
        """Flights sorted by ``flight_id``; with ``since`` (an ISO time), those updated after it.

        Flights whose ``updated`` marker is unknown are always listed. A collection that cannot
        be used is skipped and reported to ``on_error`` (default: appended to ``problems``).
        Raises ``ArchiveError`` only when the root catalogue itself cannot be read.
        """
        self.problems = []
        report = on_error or self.problems.append
        since_iso = _iso_utc(since) or since
        flights: dict[str, FlightRecord] = {}
        for collection in self._walk_collections(report):
            try:
                with malformed_stac(_describe(collection)):
                    if not self._is_flight(collection):
                        continue
                    record = self._flight_record(collection)
            except ArchiveError as exc:
                report(exc)
                continue
            if record.flight_id in flights:
                report(
                    ArchiveError(_describe(collection), "duplicate flight id: another collection has this id")
                )
                continue
            flights[record.flight_id] = record
        return [
            record
            for flight_id, record in sorted(flights.items())
            if since_iso is None or record.updated is None or record.updated > since_iso
        ]

    def _find_flight(self, flight_id: str) -> pystac.Collection:
        for collection in self._walk_collections(lambda _err: None):
            if collection.id == flight_id:
                with malformed_stac(_describe(collection)):
                    if self._is_flight(collection):
                        return collection
        raise ArchiveError(
            f"flight {flight_id!r}", f"no such flight in the STAC catalogue {self._root_href()}"
        )

    def list_scenes(
        self, flight_id: str, on_error: Callable[[SarPipelineError], None] | None = None
    ) -> list[SceneRecord]:
        """The flight's scenes sorted by ``scene_id`` (see :class:`SarArchive`)."""
        try:
            validate_id(flight_id, "flight id")
        except ConfigError as exc:
            raise ArchiveError(f"flight {flight_id!r}", exc.reason) from exc
        collection = self._find_flight(flight_id)

        def report(error: ArchiveError) -> None:
            if on_error is None:
                raise error
            on_error(error)

        scenes: dict[str, SceneRecord] = {}
        for item in self._items(collection, report):
            try:
                record = self.scene_record(item, flight_id)
            except ArchiveError as exc:
                report(exc)
                continue
            if record.scene_id in scenes:
                report(ArchiveError(_describe(item), "duplicate scene id in this flight"))
                continue
            scenes[record.scene_id] = record
        return [scenes[k] for k in sorted(scenes)]

    def open_scene(self, scene: SceneRecord) -> rasterio.DatasetReader:
        """Open the scene raster with rasterio (``s3://`` goes through GDAL's /vsis3/)."""
        problem = self.href_policy.problem(scene.raster_href, "raster")
        if problem:
            raise ArchiveError(f"scene {scene.scene_id!r}", problem)
        href = _rasterio_href(scene.raster_href)
        try:
            return rasterio.open(href)
        except RasterioError as exc:
            raise ArchiveError(
                f"scene {scene.scene_id!r} ({scene.raster_href})", f"cannot open the raster: {exc}"
            ) from exc

    # -- item → SceneRecord -------------------------------------------------------------------

    def _data_asset(self, item: pystac.Item) -> tuple[str, pystac.Asset]:
        name = _describe(item)
        if self.asset_key is not None:
            if self.asset_key not in item.assets:
                raise ArchiveError(name, f"has no asset {self.asset_key!r} (assets: {sorted(item.assets)})")
            return self.asset_key, item.assets[self.asset_key]
        rasters = {k: a for k, a in item.assets.items() if _is_raster_asset(a)}
        data = {k: a for k, a in rasters.items() if "data" in (a.roles or [])}
        if len(data) == 1:
            return next(iter(data.items()))
        if len(data) > 1:
            raise ArchiveError(
                name,
                f"has several GeoTIFF assets with role 'data' ({sorted(data)}); choose one with asset_key=",
            )
        if len(rasters) == 1:
            return next(iter(rasters.items()))
        if rasters:
            raise ArchiveError(
                name,
                f"has several GeoTIFF assets and none with role 'data' ({sorted(rasters)}); choose one with asset_key=",
            )
        raise ArchiveError(name, f"has no GeoTIFF asset (assets: {sorted(item.assets)})")

    def scene_record(self, item: pystac.Item, flight_id: str) -> SceneRecord:
        """The :class:`SceneRecord` of one STAC item; ``ArchiveError`` naming it when unusable."""
        with malformed_stac(_describe(item)):
            return self._scene_record(item, flight_id)

    def _scene_record(self, item: pystac.Item, flight_id: str) -> SceneRecord:
        name = _describe(item)
        try:
            scene_id = validate_id(item.id, "scene id")
        except ConfigError as exc:
            raise ArchiveError(name, exc.reason) from exc
        key, asset = self._data_asset(item)
        href = asset.get_absolute_href() or asset.href
        # every raster the pipeline may open (the data and e.g. a land-cover asset) stays in reach
        for asset_key, asset_href in [(key, href)] + [
            (k, a.get_absolute_href() or a.href)
            for k, a in sorted(item.assets.items())
            if k != key and _is_raster_asset(a)
        ]:
            problem = self.href_policy.problem(asset_href, f"asset {asset_key!r}")
            if problem:
                raise ArchiveError(name, problem)
        if self.check_files and not href.startswith(("http://", "https://")):
            try:
                exists = self._path(href).exists()
            except Exception as exc:
                raise ArchiveError(
                    name, f"cannot check the raster file {href} ({type(exc).__name__}: {exc})"
                ) from exc
            if not exists:
                raise ArchiveError(name, f"raster file of asset {key!r} not found: {href}")

        props = item.properties

        def field(field_key: str) -> Any:
            return asset.extra_fields[field_key] if field_key in asset.extra_fields else props.get(field_key)

        crs = _stac_crs(field, name)
        transform = field("proj:transform")
        shape = field("proj:shape")
        bands = asset.extra_fields.get("raster:bands") or asset.extra_fields.get("bands") or [{}]
        band = bands[0] if bands and isinstance(bands[0], dict) else {}
        nodata = band.get("nodata", asset.extra_fields.get("nodata"))
        has_nodata = "nodata" in band or "nodata" in asset.extra_fields

        if crs is None or transform is None or shape is None or not has_nodata:
            try:
                with rasterio.open(_rasterio_href(href)) as src:
                    if crs is None and src.crs is not None:
                        crs = _crs_string(src.crs)
                    # rasterio reports the identity for a raster without geotransform
                    if transform is None and (src.crs is not None or not src.transform.is_identity):
                        transform = list(src.transform)[:6]
                    if shape is None:
                        shape = [src.height, src.width]
                    if not has_nodata:
                        nodata = src.nodata
            except RasterioError as exc:
                raise ArchiveError(
                    name, f"cannot read the raster {href} for its georeferencing: {exc}"
                ) from exc
        if crs is None or transform is None:
            missing = [
                what
                for what, value in (
                    ("no CRS (proj:code/proj:epsg/proj:wkt2/proj:projjson, nor in the raster)", crs),
                    ("no geotransform (proj:transform, nor in the raster)", transform),
                )
                if value is None
            ]
            raise ArchiveError(name, "has no projection info: " + "; ".join(missing))
        try:
            transform = tuple(float(v) for v in list(transform)[:6])
            shape = (int(shape[0]), int(shape[1]))
        except (TypeError, ValueError, IndexError) as exc:
            raise ArchiveError(name, f"malformed proj:transform or proj:shape ({exc})") from exc
        if len(transform) != 6 or transform[0] * transform[4] - transform[1] * transform[3] == 0:
            raise ArchiveError(
                name, f"proj:transform {list(transform)} is not an invertible affine transform"
            )

        unit = band.get("unit")
        polarizations = field("sar:polarizations")
        direction = (
            str(field("sar:observation_direction")).lower() if field("sar:observation_direction") else None
        )
        acquisition = {attr: _float(field(stac_key)) for stac_key, attr in _SAR_FIELDS.items()}
        heading, heading_source = _heading(field, crs, transform, shape, direction)
        acquisition["heading_deg"] = heading
        for text_attr in ("instrument_mode", "frequency_band", "product_type"):
            value = field(f"sar:{text_attr}")
            acquisition[text_attr] = str(value) if value is not None else None
        return SceneRecord(
            scene_id=scene_id,
            flight_id=flight_id,
            raster_href=href,
            crs=crs,
            transform=transform,
            shape=shape,
            nodata=_float(nodata),
            value_unit=str(unit) if unit not in (None, "") else None,
            value_scale=_float(band.get("scale", band.get("raster:scale"))),
            value_offset=_float(band.get("offset", band.get("raster:offset"))),
            datetime=item.datetime or _stac_time(props.get("start_datetime")),
            platform=props.get("platform"),
            polarizations=tuple(str(p) for p in polarizations) if polarizations else None,
            observation_direction=direction,
            heading_source=heading_source,
            extra_assets={
                k: (a.get_absolute_href() or a.href) for k, a in sorted(item.assets.items()) if k != key
            },
            properties={k: v for k, v in props.items() if k not in _MAPPED_PROPERTIES},
            **acquisition,
        )


def _heading(
    field: Callable[[str], Any],
    crs: str,
    transform: tuple[float, ...],
    shape: tuple[int, int],
    direction: str | None,
) -> tuple[float | None, str | None]:
    """The platform heading (degrees from the scene CRS's grid north) and the field it came from.

    ``sar_pipeline:heading_deg`` first (already a grid bearing), else ``view:azimuth`` (the bearing of
    the look direction) with the look side, else ``sat:orbit_state`` with the scene centre's latitude
    (see :mod:`sar_pipeline.archive.heading`); true bearings are turned into grid bearings.
    """
    own = _float(field(HEADING_PROPERTY))
    if own is not None:
        return own % 360.0, HEADING_PROPERTY
    t = Affine(*transform[:6])
    x, y = t @ (shape[1] / 2, shape[0] / 2)
    try:
        lon, lat = Transformer.from_crs(ProjCRS.from_user_input(crs), "EPSG:4326", always_xy=True).transform(
            x, y
        )
    except Exception:  # an exotic CRS pyproj cannot place: no derived heading
        return None, None
    true_bearing, source = None, None
    view_azimuth = _float(field("view:azimuth"))
    if view_azimuth is not None:
        true_bearing, source = heading_from_look_azimuth(view_azimuth, direction), "view:azimuth"
    if true_bearing is None and field("sat:orbit_state"):
        true_bearing, source = heading_from_orbit_state(str(field("sat:orbit_state")), lat), "sat:orbit_state"
    if true_bearing is None:
        return None, None
    return true_to_grid_bearing(true_bearing, crs, x, y), source


def _crs_string(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _stac_crs(field: Callable[[str], Any], name: str) -> str | None:
    """The CRS from the projection extension as ``EPSG:n`` or WKT2, or None when absent."""
    for key in ("proj:code", "proj:epsg", "proj:wkt2", "proj:projjson"):
        value = field(key)
        if value is None:
            continue
        try:
            if key == "proj:epsg":
                crs = CRS.from_epsg(int(value))
            elif key == "proj:projjson":
                crs = CRS.from_user_input(_projjson_wkt(value))
            else:
                crs = CRS.from_user_input(value)
        except Exception as exc:
            raise ArchiveError(name, f"{key} {value!r} is not a CRS rasterio understands ({exc})") from exc
        return (
            f"EPSG:{crs.to_epsg()}"
            if key in ("proj:code", "proj:epsg") and crs.to_epsg()
            else _crs_string(crs)
        )
    return None


def _projjson_wkt(projjson: dict) -> str:
    from pyproj import CRS as ProjCRS

    return ProjCRS.from_json_dict(projjson).to_wkt()


def _rasterio_href(href: str) -> str:
    return href[len("file://") :] if href.startswith("file://") else href
