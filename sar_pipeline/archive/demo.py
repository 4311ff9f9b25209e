"""The demo SAR archive: a STAC catalogue of simulated airborne X-band flights plus an orthophoto.

``sar-pipeline demo-archive PATH [--flights N --seed S --small]`` (or :func:`write_demo_archive`)
writes::

    PATH/catalog.json                               root catalogue
    PATH/demo-flight-000/collection.json            one Collection per flight (the SAR flights)
    PATH/demo-flight-000/<scene_id>/<scene_id>.json one Item per scene, with the files beside it:
        <scene_id>_amplitude.tif   role "data":      float32 amplitude COG, native SAR geometry, nodata 0
        <scene_id>_idealised.tif   role "idealised": the same without speckle
        <scene_id>_landcover.tif   role "landcover": uint8 land-cover codes (archive/landcover.py)
    PATH/optical/orthophoto.tif                     RGB uint8 COG, north-up, 1 m, the whole region
    PATH/optical-orthophoto/...                     its Collection (``"sar_pipeline:kind": "optical"``)

Flight collections carry ``"sar_pipeline:kind": "flight"`` and an ``updated`` time, which
:class:`~sar_pipeline.archive.stac.StacSarArchive` uses as the new-flights cursor. Items declare
the SAR, view, projection, raster and classification extensions; the platform heading is the
custom property ``sar_pipeline:heading_deg`` (degrees clockwise from grid north).

Everything is deterministic for a seed (no wall-clock time, fixed GDAL creation options), and
writes are atomic: the archive is assembled in a temporary folder and renamed into place. Calling
again with more flights adds only the missing flights (each flight folder appears in one rename,
then ``catalog.json`` is replaced); existing files are left untouched.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pystac
import rasterio
from affine import Affine
from pyproj import Transformer
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from pystac.extensions.sar import FrequencyBand, ObservationDirection, Polarization, SarExtension
from pystac.extensions.view import ViewExtension

from sar_pipeline import paths
from sar_pipeline.archive.landcover import BUILDING, LANDCOVER_CLASSES
from sar_pipeline.archive.simulate import (
    AMPLITUDE_NODATA,
    FIRST_ACQUISITION,
    REGION_CRS,
    SMALL_DEMO_SETTINGS,
    DemoSettings,
    FlightParameters,
    Ground,
    SceneGeometry,
    flight_parameters,
    region_shape,
    region_transform,
    simulate_ground,
    simulate_scene,
)
from sar_pipeline.archive.stac import HEADING_PROPERTY, KIND_PROPERTY
from sar_pipeline.errors import ConfigError

CLASSIFICATION_SCHEMA = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
DEMO_PROPERTY = "sar_pipeline:demo"  # on the root catalogue: seed and settings it was built with
OPTICAL_COLLECTION_ID = "optical-orthophoto"
ORTHOPHOTO_RELATIVE_PATH = "optical/orthophoto.tif"
PLATFORM = "demo-airborne-sar"
INSTRUMENT = "x-band-sar-simulator"
COG_MEDIA_TYPE = pystac.MediaType.COG


@dataclasses.dataclass(frozen=True)
class DemoArchive:
    """Where a demo archive lives and what it holds."""

    root: Path
    catalog_path: Path  # root catalog.json: the ``archive`` resource's uri
    optical_path: Path  # orthophoto COG
    flight_ids: tuple[str, ...]  # every flight of the archive
    added_flight_ids: tuple[str, ...]  # flights written by this call


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _flight_updated(flight: FlightParameters) -> dt.datetime:
    """When the flight was 'added to the archive': after its last scene (deterministic)."""
    return flight.end_datetime.replace(microsecond=0) + dt.timedelta(hours=2)


def write_cog(path: Path, array: np.ndarray, transform: Affine, nodata: float | None, **options: str) -> None:
    """Write ``array`` ((bands,) rows, cols) as a Cloud-Optimized GeoTIFF in the demo CRS.

    256-pixel tiles, internal overviews down to one tile; ``options`` are extra GDAL COG creation options.
    """
    data = array[None] if array.ndim == 2 else array
    profile = {
        "driver": "COG",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": REGION_CRS,
        "transform": transform,
        "nodata": nodata,
        "blocksize": 256,
        "compress": "DEFLATE",
        "level": 1,
        "overview_resampling": "AVERAGE",
        **options,
    }
    with rasterio.Env(GDAL_NUM_THREADS="1"), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _wgs84_polygon(transform: Affine, shape: tuple[int, int]) -> tuple[dict, list[float]]:
    rows, cols = shape
    corners = [transform @ (c, r) for c, r in ((0, 0), (cols, 0), (cols, rows), (0, rows))]
    to_wgs84 = Transformer.from_crs(REGION_CRS, "EPSG:4326", always_xy=True)
    lonlat = [tuple(round(v, 7) for v in to_wgs84.transform(x, y)) for x, y in corners]
    lons, lats = [p[0] for p in lonlat], [p[1] for p in lonlat]
    geometry = {"type": "Polygon", "coordinates": [[list(p) for p in [*lonlat, lonlat[0]]]]}
    return geometry, [min(lons), min(lats), max(lons), max(lats)]


def _flight_collection(flight: FlightParameters, settings: DemoSettings) -> pystac.Collection:
    """The STAC Collection of one flight with one Item per scene (metadata only, no pixels)."""
    items = [_scene_item(flight, scene) for scene in flight.scenes]
    bboxes = np.array([item.bbox for item in items])
    extent = pystac.Extent(
        pystac.SpatialExtent([[*bboxes[:, :2].min(0).tolist(), *bboxes[:, 2:].max(0).tolist()]]),
        pystac.TemporalExtent([[flight.start_datetime, flight.end_datetime.replace(microsecond=0)]]),
    )
    collection = pystac.Collection(
        id=flight.flight_id,
        description=(
            f"Simulated airborne X-band SAR flight, heading {flight.heading_deg:.1f}°, "
            f"{flight.observation_direction}-looking, {len(flight.scenes)} scene(s) over the demo region."
        ),
        title=f"Demo flight {flight.flight_index}",
        extent=extent,
        license="CC0-1.0",
        summaries=pystac.Summaries(
            {"platform": [PLATFORM], "instruments": [INSTRUMENT], "sar:frequency_band": ["X"]}
        ),
        extra_fields={KIND_PROPERTY: "flight", "updated": _iso(_flight_updated(flight))},
    )
    collection.add_items(items)
    return collection


def _scene_item(flight: FlightParameters, scene: SceneGeometry) -> pystac.Item:
    rows, cols = scene.shape
    geometry, bbox = _wgs84_polygon(scene.transform, scene.shape)
    near, centre, far = (
        float(v) for v in flight.incidence_angle_deg(scene, np.array([0, cols / 2, cols - 1]))
    )
    item = pystac.Item(
        id=scene.scene_id,
        geometry=geometry,
        bbox=bbox,
        datetime=scene.datetime,
        properties={
            "platform": PLATFORM,
            "instruments": [INSTRUMENT],
            "created": _iso(_flight_updated(flight)),
            HEADING_PROPERTY: flight.heading_deg,
            "sar_pipeline:altitude_m": flight.altitude_m,
            "sar_pipeline:incidence_angle_near_deg": round(near, 3),
            "sar_pipeline:incidence_angle_far_deg": round(far, 3),
            "sar_pipeline:simulated": True,
        },
    )
    SarExtension.ext(item, add_if_missing=True).apply(
        instrument_mode="SM",
        frequency_band=FrequencyBand.X,
        polarizations=[Polarization.VV],
        product_type="GRD",
        center_frequency=flight.center_frequency_ghz,
        resolution_range=flight.resolution_range_m,
        resolution_azimuth=flight.resolution_azimuth_m,
        pixel_spacing_range=flight.pixel_spacing_range_m,
        pixel_spacing_azimuth=flight.pixel_spacing_azimuth_m,
        looks_range=flight.looks_range,
        looks_azimuth=flight.looks_azimuth,
        looks_equivalent_number=flight.looks_equivalent_number,
        observation_direction=ObservationDirection(flight.observation_direction),
    )
    ViewExtension.ext(item, add_if_missing=True).apply(incidence_angle=round(centre, 3))
    ProjectionExtension.ext(item, add_if_missing=True).apply(
        code=REGION_CRS, transform=[float(v) for v in tuple(scene.transform)[:6]], shape=[rows, cols]
    )
    RasterExtension.add_to(item)
    item.stac_extensions.append(CLASSIFICATION_SCHEMA)
    assets = {
        "amplitude": ("data", "amplitude", DataType.FLOAT32, AMPLITUDE_NODATA, "σ⁰ amplitude (speckled)"),
        "idealised": (
            "idealised",
            "amplitude",
            DataType.FLOAT32,
            AMPLITUDE_NODATA,
            "σ⁰ amplitude, no speckle",
        ),
        "landcover": ("landcover", None, DataType.UINT8, 0, "land cover at each pixel's ground position"),
    }
    for key, (role, unit, data_type, nodata, title) in assets.items():
        asset = pystac.Asset(
            href=f"./{scene.scene_id}_{key}.tif", media_type=COG_MEDIA_TYPE, roles=[role], title=title
        )
        item.add_asset(key, asset)
        RasterExtension.ext(asset).apply([RasterBand.create(nodata=nodata, data_type=data_type, unit=unit)])
        if key == "landcover":
            asset.extra_fields["classification:classes"] = [
                {"value": code, "name": name} for code, name in LANDCOVER_CLASSES.items() if code <= BUILDING
            ]
    return item


def _optical_collection(settings: DemoSettings) -> pystac.Collection:
    transform = region_transform(settings)
    shape = region_shape(settings)
    geometry, bbox = _wgs84_polygon(transform, shape)
    acquired = FIRST_ACQUISITION - dt.timedelta(days=30)
    item = pystac.Item(
        id="orthophoto",
        geometry=geometry,
        bbox=bbox,
        datetime=acquired,
        properties={
            "platform": "demo-orthophoto",
            "gsd": settings.ground_pixel_m,
            "sar_pipeline:simulated": True,
        },
    )
    ProjectionExtension.ext(item, add_if_missing=True).apply(
        code=REGION_CRS, transform=[float(v) for v in tuple(transform)[:6]], shape=list(shape)
    )
    asset = pystac.Asset(
        href=f"../../{ORTHOPHOTO_RELATIVE_PATH}",
        media_type=COG_MEDIA_TYPE,
        roles=["data"],
        title="RGB orthophoto",
    )
    item.add_asset("data", asset)
    EOExtension.ext(asset, add_if_missing=True).apply(
        bands=[Band.create(name=name, common_name=name) for name in ("red", "green", "blue")]
    )
    collection = pystac.Collection(
        id=OPTICAL_COLLECTION_ID,
        description="Simulated RGB orthophoto mosaic (1 m, north-up) of the whole demo region.",
        title="Demo orthophoto",
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[acquired, acquired]])),
        license="CC0-1.0",
        extra_fields={KIND_PROPERTY: "optical", "updated": _iso(acquired)},
    )
    collection.add_item(item)
    return collection


def _write_flight_rasters(folder: Path, ground: Ground, flight: FlightParameters, seed: int) -> None:
    for scene in flight.scenes:
        simulated = simulate_scene(ground, flight, scene, seed)
        scene_dir = folder / flight.flight_id / scene.scene_id
        scene_dir.mkdir(parents=True, exist_ok=True)
        base = scene_dir / scene.scene_id
        write_cog(
            Path(f"{base}_amplitude.tif"),
            simulated.amplitude,
            scene.transform,
            AMPLITUDE_NODATA,
            predictor="YES",
        )
        write_cog(
            Path(f"{base}_idealised.tif"),
            simulated.idealised_amplitude,
            scene.transform,
            AMPLITUDE_NODATA,
            predictor="YES",
        )
        write_cog(
            Path(f"{base}_landcover.tif"), simulated.landcover, scene.transform, 0, overview_resampling="MODE"
        )


def _demo_settings_record(seed: int, settings: DemoSettings) -> dict:
    return {
        "seed": seed,
        "settings": {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()
        },
    }


def write_demo_archive(
    path: str | os.PathLike, flights: int = 3, seed: int = 0, settings: DemoSettings = DemoSettings()
) -> DemoArchive:
    """Write (or extend) the demo archive at local folder ``path`` with ``flights`` flights.

    A new archive gets the orthophoto and flights ``0 … flights-1``. An existing demo archive
    built with the same ``seed`` and ``settings`` gets only its missing flights (flight ``i`` is
    the same whatever the number of flights); asking for fewer flights than it has removes none.
    Raises ``ConfigError`` if ``path`` holds something else or was built with another seed.
    """
    if flights < 1:
        raise ConfigError(f"flights={flights}", "the demo archive needs at least one flight")
    if "://" in str(path):
        raise ConfigError(
            path, "the demo archive is written to a local folder (copy it to object storage afterwards)"
        )
    root = Path(path).expanduser().resolve()
    catalog_path = root / "catalog.json"
    record = _demo_settings_record(seed, settings)
    existing: list[str] = []
    if catalog_path.exists():
        try:
            catalog_dict = json.loads(catalog_path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(catalog_path, f"cannot read the existing catalogue ({exc})") from exc
        if catalog_dict.get(DEMO_PROPERTY) != record:
            raise ConfigError(
                catalog_path,
                f"is not a demo archive built with seed={seed} and these settings "
                f"(it records {catalog_dict.get(DEMO_PROPERTY)}); choose another folder",
            )
        existing = sorted(p.parent.name for p in root.glob("demo-flight-*/collection.json"))
    elif root.exists() and any(root.iterdir()):
        raise ConfigError(root, "exists, is not empty and has no catalog.json; choose an empty or new folder")

    n_flights = max(flights, len(existing))
    all_flights = [flight_parameters(seed, i, settings) for i in range(n_flights)]
    new_flights = [f for f in all_flights if f.flight_id not in existing]
    fresh = not catalog_path.exists()

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}-tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        if new_flights or fresh:
            ground = simulate_ground(seed, settings)
            if fresh:
                (tmp / "optical").mkdir()
                write_cog(
                    tmp / ORTHOPHOTO_RELATIVE_PATH,
                    ground.orthophoto_rgb,
                    ground.transform,
                    None,
                    compress="JPEG",
                    quality="90",
                )
            for flight in new_flights:
                _write_flight_rasters(tmp, ground, flight, seed)
            del ground

        catalog = pystac.Catalog(
            id="sar-pipeline-demo",
            title="sar-pipeline demo archive",
            description=(
                "Simulated airborne X-band SAR flights over a synthetic region west of Montpellier "
                f"(EPSG:32631), with a co-registered RGB orthophoto. Seed {seed}."
            ),
            extra_fields={DEMO_PROPERTY: record},
        )
        catalog.add_child(_optical_collection(settings))
        for flight in all_flights:
            catalog.add_child(_flight_collection(flight, settings))
        # trailing separator: pystac takes a dotted folder name for a file
        catalog.normalize_hrefs(str(tmp) + os.sep)
        catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)

        if fresh:
            if root.exists():
                root.rmdir()  # empty, checked above
            os.replace(tmp, root)
        else:
            for flight in new_flights:
                os.replace(tmp / flight.flight_id, root / flight.flight_id)
            os.replace(tmp / "catalog.json", catalog_path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

    return DemoArchive(
        root=root,
        catalog_path=catalog_path,
        optical_path=root / ORTHOPHOTO_RELATIVE_PATH,
        flight_ids=tuple(f.flight_id for f in all_flights),
        added_flight_ids=tuple(f.flight_id for f in new_flights),
    )


def add_demo_flight(path: str | os.PathLike) -> DemoArchive:
    """Add the next flight to the existing demo archive at ``path``, with the seed and settings
    it was built with (the new flight's collection is ``updated`` after all earlier ones)."""
    root = Path(path).expanduser().resolve()
    try:
        record = json.loads((root / "catalog.json").read_text())[DEMO_PROPERTY]
        settings = DemoSettings(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in record["settings"].items()}
        )
        seed = int(record["seed"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(root, f"is not a demo archive ({type(exc).__name__}: {exc})") from exc
    count = len(list(root.glob("demo-flight-*/collection.json")))
    return write_demo_archive(root, flights=count + 1, seed=seed, settings=settings)


# ---------------------------------------------------------------------------------------------
# command line: `sar-pipeline demo-archive PATH [--flights N --seed S]`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo-archive`` arguments to ``parser``."""
    parser.add_argument(
        "path",
        nargs="?",
        default=str(paths.demo_archive_dir()),
        help="folder to write the archive into (default: %(default)s)",
    )
    parser.add_argument("--flights", type=int, default=3, help="number of flights (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--small",
        action="store_true",
        help="a 1 km region with ~330-pixel scenes (seconds; for tests and quick trials)",
    )


def run(args: argparse.Namespace) -> int:
    """Write the archive described by parsed ``args`` and print where it is."""
    settings = SMALL_DEMO_SETTINGS if getattr(args, "small", False) else DemoSettings()
    archive = write_demo_archive(args.path, flights=args.flights, seed=args.seed, settings=settings)
    added = ", ".join(archive.added_flight_ids) or "none (already present)"
    print(f"demo archive: {archive.catalog_path}")
    print(f"  flights: {len(archive.flight_ids)} (added: {added})")
    print(f"  orthophoto: {archive.optical_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``sar-pipeline demo-archive`` as a stand-alone command."""
    parser = argparse.ArgumentParser(
        prog="sar-pipeline demo-archive",
        description="Write a STAC catalogue of simulated airborne X-band SAR flights and an orthophoto.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
