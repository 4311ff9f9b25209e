"""What any SAR archive offers the pipeline: flights, their scenes, and the scene rasters.

A *flight* is one acquisition campaign (a STAC Collection in the STAC implementation); its
*scenes* are rasters in native SAR geometry (STAC Items). Users with another archive API (ONERA's
SETHI, a vendor REST API…) implement :class:`SarArchive`, register the class as an entry point of
the group ``sar_pipeline.archives`` in their package (see :mod:`sar_pipeline.archive.plugins`) and
name that entry point in the ``archive`` resource's ``archive_class``; the class is built with
``MyArchive(uri, **options)``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import rasterio

from sar_pipeline.errors import SarPipelineError
from sar_pipeline.hrefs import redact


@dataclasses.dataclass(frozen=True)
class FlightRecord:
    """One flight (campaign) of the archive."""

    flight_id: str
    title: str | None = None
    start_datetime: dt.datetime | None = None
    end_datetime: dt.datetime | None = None
    platform: str | None = None
    #: opaque, monotonically growing marker used as the sensor cursor (ISO time of last update)
    updated: str | None = None


@dataclasses.dataclass(frozen=True)
class SceneRecord:
    """One SAR scene: where its raster is, how it is georeferenced, how it was acquired.

    Georeferencing is required; every acquisition field is optional (``None`` = unknown).
    ``transform`` is the GDAL-order affine (``a, b, c, d, e, f`` as in ``affine.Affine``) mapping
    (col, row) pixel corners to scene-CRS map coordinates; it may be rotated or flipped
    (native SAR geometry: range along columns, azimuth along rows).
    """

    scene_id: str
    flight_id: str
    raster_href: str
    crs: str  # "EPSG:32631" or WKT2
    transform: tuple[float, float, float, float, float, float]
    shape: tuple[int, int]  # (rows, cols)
    nodata: float | None = None
    #: the unit of the pixel values as the catalogue writes it ("amplitude (DN)", "sigma0", "dB"…;
    #: read by ``radiometry.parse_value_unit``), with raster scale/offset (value = raw * scale + offset)
    #: for integer-scaled products; None when the catalogue declares none
    value_unit: str | None = None
    value_scale: float | None = None
    value_offset: float | None = None
    datetime: dt.datetime | None = None
    platform: str | None = None
    instrument_mode: str | None = None
    frequency_band: str | None = None
    center_frequency_ghz: float | None = None
    polarizations: tuple[str, ...] | None = None
    product_type: str | None = None
    resolution_range_m: float | None = None
    resolution_azimuth_m: float | None = None
    pixel_spacing_range_m: float | None = None
    pixel_spacing_azimuth_m: float | None = None
    looks_range: float | None = None
    looks_azimuth: float | None = None
    looks_equivalent_number: float | None = None
    incidence_angle_deg: float | None = None
    #: platform heading, degrees clockwise from the scene CRS's grid north (true north for a
    #: geographic CRS)
    heading_deg: float | None = None
    #: the catalogue field the heading came from ("sar_pipeline:heading_deg", "view:azimuth",
    #: "sat:orbit_state"…), None when unknown
    heading_source: str | None = None
    observation_direction: str | None = None  # "left" or "right" (look direction)
    #: the projected CRS the scene is gridded in (set by the ``sar_scenes`` stage; None = decided
    #: when tiling: the scene's own CRS if projected, else the UTM zone of its centre)
    output_crs: str | None = None
    #: other assets of the item by key (e.g. "idealised", "landcover"), as hrefs
    extra_assets: dict[str, str] = dataclasses.field(default_factory=dict)
    #: item properties not mapped above, JSON-serialisable
    properties: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        """A flat, JSON/Parquet-friendly dict (tuples → lists, datetime kept); hrefs redacted (no
        query string or userinfo: a pre-signed URL's credential is never written down)."""
        row = dataclasses.asdict(self)
        row["raster_href"] = redact(self.raster_href)
        row["extra_assets"] = {k: redact(v) for k, v in self.extra_assets.items()}
        row["transform"] = list(self.transform)
        row["shape"] = list(self.shape)
        row["polarizations"] = list(self.polarizations) if self.polarizations else None
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> SceneRecord:
        """Inverse of :meth:`to_row`; extra keys (footprints…) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in row.items() if k in names}
        kw["transform"] = tuple(float(v) for v in kw["transform"])
        kw["shape"] = tuple(int(v) for v in kw["shape"])
        if kw.get("polarizations") is not None:
            kw["polarizations"] = tuple(kw["polarizations"])
        kw["extra_assets"] = dict(kw.get("extra_assets") or {})
        kw["properties"] = dict(kw.get("properties") or {})
        return cls(**kw)


@runtime_checkable
class SarArchive(Protocol):
    """A source of SAR flights and scenes. Implementations never import Dagster."""

    def list_flights(self, since: str | None = None) -> Sequence[FlightRecord]:
        """Flights in the archive, sorted by ``flight_id``; with ``since``, only those whose
        ``updated`` marker is greater than ``since``."""
        ...

    def list_scenes(
        self, flight_id: str, on_error: Callable[[SarPipelineError], None] | None = None
    ) -> Sequence[SceneRecord]:
        """The flight's scenes, sorted by ``scene_id``.

        A scene that cannot be used (asset file missing, no georeferencing…) raises an
        ``ArchiveError`` naming the item and the reason; with ``on_error`` the error is passed
        to it instead and the other scenes are still returned.
        """
        ...

    def open_scene(self, scene: SceneRecord) -> rasterio.DatasetReader:
        """Open the scene raster with rasterio (a context manager)."""
        ...
