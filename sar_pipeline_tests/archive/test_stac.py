"""StacSarArchive: round trip of the demo, third-party catalogues, bad input, fsspec URLs."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pyproj
import pystac
import pytest
from affine import Affine

from sar_pipeline.archive import SarArchive, load_archive
from sar_pipeline.archive.simulate import flight_parameters
from sar_pipeline.archive.stac import StacSarArchive
from sar_pipeline.errors import ArchiveError
from sar_pipeline_tests.archive.conftest import ROTATED, SMALL, SMALL_SEED, write_geotiff

WHEN = dt.datetime(2024, 6, 1, 10, 30, tzinfo=dt.UTC)


# -- the demo archive round trip --------------------------------------------------------------


def test_demo_round_trip(small_demo):
    archive = load_archive(str(small_demo.catalog_path))
    assert isinstance(archive, StacSarArchive) and isinstance(archive, SarArchive)
    flights = archive.list_flights()
    assert [f.flight_id for f in flights] == list(small_demo.flight_ids)  # optical collection skipped
    assert archive.problems == []
    for record in flights:
        written = flight_parameters(SMALL_SEED, int(record.flight_id[-3:]), SMALL)
        assert record.platform == "demo-airborne-sar" and record.start_datetime == written.start_datetime
        scenes = archive.list_scenes(record.flight_id)
        assert [s.scene_id for s in scenes] == [g.scene_id for g in written.scenes]
        for scene, geometry in zip(scenes, written.scenes, strict=True):
            assert scene.flight_id == record.flight_id
            assert scene.crs == "EPSG:32631"
            assert scene.transform == pytest.approx(tuple(geometry.transform)[:6])
            assert scene.shape == geometry.shape
            assert scene.datetime == geometry.datetime
            assert scene.nodata == 0.0 and scene.value_unit == "amplitude"
            assert scene.frequency_band == "X" and scene.polarizations == ("VV",)
            assert scene.center_frequency_ghz == pytest.approx(9.6)
            assert scene.pixel_spacing_range_m == written.pixel_spacing_range_m
            assert scene.pixel_spacing_azimuth_m == written.pixel_spacing_azimuth_m
            assert scene.looks_equivalent_number == written.looks_equivalent_number
            assert scene.heading_deg == written.heading_deg
            assert scene.observation_direction == written.observation_direction
            assert scene.incidence_angle_deg == pytest.approx(
                float(written.incidence_angle_deg(geometry, geometry.shape[1] / 2)), abs=1e-3
            )
            assert set(scene.extra_assets) == {"idealised", "landcover"}
            assert all(Path(href).is_file() for href in scene.extra_assets.values())
            with archive.open_scene(scene) as src:
                assert src.shape == scene.shape and tuple(src.transform)[:6] == pytest.approx(scene.transform)
            assert type(scene).from_row(scene.to_row()) == scene


def test_since_returns_only_flights_updated_later(small_demo):
    archive = StacSarArchive(small_demo.root)  # a folder holding catalog.json works too
    flights = archive.list_flights()
    updated = sorted(f.updated for f in flights)
    assert [f.flight_id for f in archive.list_flights(since=updated[0])] != [f.flight_id for f in flights]
    assert len(archive.list_flights(since=updated[0])) == len(flights) - 1
    assert archive.list_flights(since=updated[-1]) == []


# -- catalogues written by others ---------------------------------------------------------------


def _save(catalog: pystac.Catalog, root: Path) -> Path:
    catalog.normalize_hrefs(str(root) + os.sep)
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


def _plain_item(item_id: str, raster: Path, **asset_kwargs) -> pystac.Item:
    item = pystac.Item(item_id, geometry=None, bbox=None, datetime=WHEN, properties={})
    item.add_asset("image", pystac.Asset(href=str(raster), **asset_kwargs))
    return item


def test_hand_made_catalogue_with_only_a_geotiff(tmp_path):
    """No SAR fields, no projection extension, no roles: georeferencing read from the raster."""
    raster = write_geotiff(tmp_path / "stac" / "files" / "scene-a.tif", shape=(50, 70), nodata=-9999.0)
    catalog = pystac.Catalog("mine", "my flights")
    collection = pystac.Collection(
        "flight-2024-06-01",
        "a flight",
        pystac.Extent(pystac.SpatialExtent([[0, 0, 1, 1]]), pystac.TemporalExtent([[WHEN, None]])),
    )
    collection.add_item(_plain_item("scene-a", raster))
    catalog.add_child(collection)
    archive = StacSarArchive(_save(catalog, tmp_path / "stac"))

    (flight,) = archive.list_flights()
    assert flight.flight_id == "flight-2024-06-01"
    assert flight.updated == "2024-06-01T10:30:00.000000Z"  # no 'updated': the latest item datetime
    (scene,) = archive.list_scenes(flight.flight_id)
    assert scene.raster_href == str(raster)
    assert scene.crs == "EPSG:32631" and scene.transform == pytest.approx(tuple(ROTATED)[:6])
    assert scene.shape == (50, 70) and scene.nodata == -9999.0
    assert scene.datetime == WHEN
    for name in ("frequency_band", "polarizations", "heading_deg", "incidence_angle_deg", "value_unit"):
        assert getattr(scene, name) is None, name
    assert scene.extra_assets == {} and scene.properties == {}


def _capella_like_item(item_id: str, raster: Path, transform: Affine, shape: tuple[int, int]) -> pystac.Item:
    """The layout of a Capella/Umbra open-data item: SAR fields, proj:code, several assets."""
    item = pystac.Item(
        item_id,
        geometry={"type": "Point", "coordinates": [3.8, 43.6]},
        bbox=[3.8, 43.6, 3.8, 43.6],
        datetime=WHEN,
        properties={
            "start_datetime": "2024-06-01T10:30:00Z",
            "end_datetime": "2024-06-01T10:30:12Z",
            "platform": "capella-7",
            "constellation": "capella",
            "instruments": ["capella-radar-7"],
            "sar:instrument_mode": "spotlight",
            "sar:frequency_band": "X",
            "sar:center_frequency": 9.65,
            "sar:polarizations": ["HH"],
            "sar:product_type": "GEO",
            "sar:resolution_range": 0.5,
            "sar:resolution_azimuth": 0.5,
            "sar:pixel_spacing_range": 0.35,
            "sar:pixel_spacing_azimuth": 0.35,
            "sar:looks_range": 1,
            "sar:looks_azimuth": 3,
            "sar:looks_equivalent_number": 2.7,
            "sar:observation_direction": "Left",
            "view:incidence_angle": 38.5,
            "view:look_angle": 34.2,
            "sat:orbit_state": "descending",
            "proj:code": "EPSG:32631",
            "proj:shape": list(shape),
            "proj:transform": [*tuple(transform)[:6], 0.0, 0.0, 1.0],
        },
        stac_extensions=[
            "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
            "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
            "https://stac-extensions.github.io/view/v1.0.0/schema.json",
        ],
    )
    data = pystac.Asset(href=f"./{raster.name}", media_type=pystac.MediaType.COG, roles=["data"])
    data.extra_fields["raster:bands"] = [
        {"data_type": "uint16", "nodata": 0, "unit": "dB", "scale": 0.01, "offset": -60}
    ]
    item.add_asset("HH", data)
    item.add_asset(
        "SICD", pystac.Asset(href="./scene.ntf", media_type="application/vnd.nitf", roles=["data"])
    )
    item.add_asset(
        "metadata", pystac.Asset(href="./meta.json", media_type="application/json", roles=["metadata"])
    )
    item.add_asset("thumbnail", pystac.Asset(href="./thumb.png", media_type="image/png", roles=["thumbnail"]))
    return item


def test_capella_umbra_style_catalogue(tmp_path):
    catalog = pystac.Catalog("capella-open-data", "open data by product")
    extent = pystac.Extent(
        pystac.SpatialExtent([[3.8, 43.6, 3.8, 43.6]]), pystac.TemporalExtent([[WHEN, WHEN]])
    )
    collection = pystac.Collection("capella-open-data-geo", "GEO products", extent)
    catalog.add_child(collection)
    items = []
    for i in range(2):
        item = _capella_like_item(
            f"CAPELLA_C07_SP_GEO_HH_2024060110300{i}", Path(f"scene{i}.tif"), ROTATED, (40, 60)
        )
        collection.add_item(item)
        items.append(item)
    path = _save(catalog, tmp_path / "stac")
    for item in items:  # the rasters beside each item's json, as the relative hrefs say
        write_geotiff(Path(item.get_self_href()).parent / f"{item.assets['HH'].href[2:]}", shape=(40, 60))

    archive = StacSarArchive(path)
    (flight,) = archive.list_flights()
    assert flight.flight_id == "capella-open-data-geo"
    scenes = archive.list_scenes(flight.flight_id)
    assert [s.scene_id for s in scenes] == sorted(i.id for i in items)
    scene = scenes[0]
    assert scene.raster_href.endswith("scene0.tif") and Path(scene.raster_href).is_absolute()
    assert scene.crs == "EPSG:32631" and scene.shape == (40, 60)
    assert scene.transform == pytest.approx(tuple(ROTATED)[:6])
    # the unit as the catalogue writes it (radiometry.parse_value_unit reads it when tiling)
    assert (scene.value_unit, scene.value_scale, scene.value_offset, scene.nodata) == ("dB", 0.01, -60.0, 0.0)
    assert scene.platform == "capella-7" and scene.instrument_mode == "spotlight"
    assert scene.polarizations == ("HH",) and scene.product_type == "GEO"
    assert scene.looks_azimuth == 3.0 and scene.looks_equivalent_number == 2.7
    assert scene.observation_direction == "left" and scene.incidence_angle_deg == 38.5
    # no heading field: a descending sun-synchronous pass at 43.6° N flies ~194° (true), grid bearing here
    assert scene.heading_source == "sat:orbit_state" and 191 < scene.heading_deg < 197
    assert set(scene.extra_assets) == {"SICD", "metadata", "thumbnail"}
    assert (
        scene.properties["sat:orbit_state"] == "descending" and "sar:frequency_band" not in scene.properties
    )
    # a collection.json given as the root is itself the one flight
    alone = StacSarArchive(collection.get_self_href())
    assert [f.flight_id for f in alone.list_flights()] == ["capella-open-data-geo"]
    assert len(alone.list_scenes("capella-open-data-geo")) == 2


def test_nested_sub_catalogues_and_optical_collections(tmp_path):
    """Flights anywhere under the root; grouping and optical collections are not flights."""
    raster = write_geotiff(tmp_path / "stac" / "files" / "s.tif")
    catalog = pystac.Catalog("root", "root")
    by_year = pystac.Catalog("2024", "flights of 2024")
    catalog.add_child(by_year)
    extent = pystac.Extent(pystac.SpatialExtent([[0, 0, 1, 1]]), pystac.TemporalExtent([[WHEN, None]]))
    grouping = pystac.Collection("campaign-a", "a campaign of flights", extent)
    by_year.add_child(grouping)
    for flight_id in ("flight-b", "flight-a"):
        flight = pystac.Collection(flight_id, "a flight", extent)
        flight.add_item(_plain_item(f"{flight_id}-s1", raster))
        grouping.add_child(flight)
    optical = pystac.Collection("ortho", "aerial photos", extent)
    photo = _plain_item("photo", raster, roles=["data"])
    photo.assets["image"].extra_fields["eo:bands"] = [
        {"name": n, "common_name": n} for n in ("red", "green", "blue")
    ]
    optical.add_item(photo)
    catalog.add_child(optical)
    loose = pystac.Catalog("loose-items", "items in a plain catalogue")
    loose.add_item(_plain_item("loose", raster))
    by_year.add_child(loose)
    archive = StacSarArchive(_save(catalog, tmp_path / "stac"))
    assert [f.flight_id for f in archive.list_flights()] == ["flight-a", "flight-b"]
    (problem,) = archive.problems  # items outside a Collection: said, not silently dropped
    assert "'loose-items'" in problem.source and "must be a STAC Collection" in problem.reason
    assert [s.scene_id for s in archive.list_scenes("flight-b")] == ["flight-b-s1"]


# -- bad input ----------------------------------------------------------------------------------


def test_catalogue_that_does_not_exist(tmp_path):
    archive = StacSarArchive(tmp_path / "nowhere" / "catalog.json")
    with pytest.raises(ArchiveError, match=r"nowhere/catalog.json: STAC catalogue not found"):
        archive.list_flights()


def test_not_a_stac_file(tmp_path):
    (tmp_path / "catalog.json").write_text("{ not json")
    with pytest.raises(ArchiveError, match="cannot read the STAC catalogue"):
        StacSarArchive(tmp_path / "catalog.json").list_flights()


def _flight_with_scenes(
    tmp_path: Path, scenes: dict[str, pystac.Item], allowed_href_roots: list[str] = ()
) -> StacSarArchive:
    catalog = pystac.Catalog("root", "root")
    extent = pystac.Extent(pystac.SpatialExtent([[0, 0, 1, 1]]), pystac.TemporalExtent([[WHEN, None]]))
    flight = pystac.Collection("flight-1", "a flight", extent)
    for item in scenes.values():
        flight.add_item(item)
    catalog.add_child(flight)
    return StacSarArchive(_save(catalog, tmp_path / "stac"), allowed_href_roots=allowed_href_roots)


def test_missing_asset_file_names_the_item_and_file(tmp_path):
    good = write_geotiff(tmp_path / "stac" / "files" / "good.tif")
    missing = tmp_path / "stac" / "files" / "gone.tif"
    archive = _flight_with_scenes(
        tmp_path, {"good": _plain_item("good", good), "lost": _plain_item("lost", missing)}
    )
    with pytest.raises(ArchiveError, match=r"item 'lost'.*not found: .*gone.tif"):
        archive.list_scenes("flight-1")
    errors: list[ArchiveError] = []
    assert [s.scene_id for s in archive.list_scenes("flight-1", on_error=errors.append)] == ["good"]
    assert len(errors) == 1 and "'lost'" in str(errors[0]) and str(missing) in errors[0].reason


def test_item_without_projection_info_and_raster_without_crs(tmp_path):
    good = write_geotiff(tmp_path / "stac" / "files" / "good.tif")
    no_crs = write_geotiff(tmp_path / "stac" / "files" / "no-crs.tif", crs=None)
    archive = _flight_with_scenes(
        tmp_path, {"good": _plain_item("good", good), "plain": _plain_item("plain", no_crs)}
    )
    errors: list[ArchiveError] = []
    assert [s.scene_id for s in archive.list_scenes("flight-1", on_error=errors.append)] == ["good"]
    (error,) = errors
    assert isinstance(error, ArchiveError) and "item 'plain'" in str(error)
    assert "has no projection info" in error.reason and "no CRS" in error.reason

    # the CRS in the item, the geotransform only in the raster: usable
    with_code = _plain_item("with-code", no_crs)
    with_code.properties["proj:code"] = "EPSG:32631"
    # (a second catalogue whose raster lies elsewhere: allowed by naming that folder)
    archive = _flight_with_scenes(
        tmp_path / "second", {"with-code": with_code}, allowed_href_roots=[str(no_crs.parent)]
    )
    (scene,) = archive.list_scenes("flight-1")
    assert scene.crs == "EPSG:32631" and scene.transform == pytest.approx(tuple(ROTATED)[:6])


def test_unusable_assets_and_bad_projection_fields(tmp_path):
    raster = write_geotiff(tmp_path / "stac" / "files" / "vv.tif")
    two = _plain_item("two-data", raster, roles=["data"], media_type=pystac.MediaType.GEOTIFF)
    two.add_asset("VH", pystac.Asset(href=str(raster), roles=["data"], media_type=pystac.MediaType.GEOTIFF))
    none = pystac.Item("no-raster", None, None, WHEN, {})
    none.add_asset("doc", pystac.Asset(href="./readme.txt", media_type="text/plain"))
    singular = _plain_item("singular", raster)
    singular.properties.update(
        {"proj:code": "EPSG:32631", "proj:shape": [64, 80], "proj:transform": [0, 0, 1, 0, 0, 2]}
    )
    unknown = _plain_item("unknown-crs", raster)
    unknown.properties["proj:code"] = "EPSG:99999999"
    archive = _flight_with_scenes(tmp_path, {i.id: i for i in (two, none, singular, unknown)})
    errors: list[ArchiveError] = []
    assert archive.list_scenes("flight-1", on_error=errors.append) == []
    reasons = {e.source.split("'")[1]: e.reason for e in errors}
    assert (
        "several GeoTIFF assets with role 'data'" in reasons["two-data"]
        and "asset_key" in reasons["two-data"]
    )
    assert "has no GeoTIFF asset" in reasons["no-raster"]
    assert "not an invertible affine" in reasons["singular"]
    assert "not a CRS" in reasons["unknown-crs"]
    picked = StacSarArchive(archive.uri, asset_key="VH").list_scenes("flight-1", on_error=lambda e: None)
    assert [s.scene_id for s in picked] == ["two-data"] and "image" in picked[0].extra_assets


@pytest.mark.parametrize("bad_id", ["north/south", "..", "a..b"])
def test_flight_id_with_slash_or_dotdot_is_reported_and_others_listed(tmp_path, bad_id):
    raster = write_geotiff(tmp_path / "stac" / "files" / "s.tif")
    root = tmp_path / "stac"
    catalog = pystac.Catalog("root", "root")
    extent = pystac.Extent(pystac.SpatialExtent([[0, 0, 1, 1]]), pystac.TemporalExtent([[WHEN, None]]))
    for folder, flight_id in (("good", "flight-good"), ("bad", bad_id)):
        collection = pystac.Collection(flight_id, "a flight", extent)
        collection.add_item(_plain_item(f"{folder}-scene", raster))
        catalog.add_child(collection)
        collection.set_self_href(str(root / folder / "collection.json"))
        next(collection.get_items()).set_self_href(str(root / folder / "scene" / "scene.json"))
    catalog.set_self_href(str(root / "catalog.json"))
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)

    archive = StacSarArchive(root / "catalog.json")
    assert [f.flight_id for f in archive.list_flights()] == ["flight-good"]
    (problem,) = archive.problems
    assert repr(bad_id) in problem.source and "not a valid flight id" in problem.reason
    seen: list[ArchiveError] = []
    assert len(archive.list_flights(on_error=seen.append)) == 1 and len(seen) == 1
    with pytest.raises(ArchiveError, match="not a valid flight id"):
        archive.list_scenes(bad_id)


def test_broken_child_link_is_reported_and_others_listed(small_demo, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(small_demo.root, root)
    shutil.rmtree(root / "demo-flight-001")
    archive = StacSarArchive(root / "catalog.json")
    assert [f.flight_id for f in archive.list_flights()] == ["demo-flight-000", "demo-flight-002"]
    (problem,) = archive.problems
    assert (
        "demo-flight-001/collection.json" in problem.source
        and "cannot read child catalogue" in problem.reason
    )
    with pytest.raises(ArchiveError, match="no such flight"):
        archive.list_scenes("demo-flight-001")


def test_open_scene_of_a_vanished_file(small_demo, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(small_demo.root, root)
    archive = StacSarArchive(root / "catalog.json")
    scene = archive.list_scenes("demo-flight-000")[0]
    Path(scene.raster_href).unlink()
    with pytest.raises(ArchiveError, match=rf"scene '{scene.scene_id}'.*cannot open the raster"):
        archive.open_scene(scene)


# -- object storage through fsspec --------------------------------------------------------------


def test_catalogue_on_an_fsspec_filesystem(small_demo):
    """The s3:// code path (fsspec StacIO, relative hrefs, file checks) on fsspec's memory store."""
    fs = fsspec.filesystem("memory")
    prefix = f"bucket-{uuid.uuid4().hex[:8]}/demo"  # like s3://bucket/prefix
    for path in small_demo.root.rglob("*"):
        if path.is_file() and (path.suffix == ".json" or "demo-flight-000" in str(path)):
            fs.pipe_file(f"{prefix}/{path.relative_to(small_demo.root)}", path.read_bytes())
    try:
        archive = StacSarArchive(f"memory://{prefix}/catalog.json")
        flights = archive.list_flights()
        assert [f.flight_id for f in flights] == list(small_demo.flight_ids)
        scenes = archive.list_scenes("demo-flight-000")
        assert scenes and all(s.raster_href.startswith(f"memory://{prefix}/demo-flight-000/") for s in scenes)
        assert scenes[0].extra_assets["landcover"].endswith("_landcover.tif")
        errors: list[ArchiveError] = []
        assert archive.list_scenes("demo-flight-001", on_error=errors.append) == []  # rasters not copied
        assert errors and all("not found: memory://" in e.reason for e in errors)
    finally:
        fs.rm(f"/{prefix.split('/')[0]}", recursive=True)


# -- real data ----------------------------------------------------------------------------------


def test_real_sentinel1_geotiffs_in_a_user_catalogue(tmp_path):
    realdata = os.environ.get("SAR_PIPELINE_REALDATA")
    if not realdata:
        pytest.skip("SAR_PIPELINE_REALDATA unset: real Sentinel-1 GeoTIFFs not available")
    patches = sorted((Path(realdata) / "bigearthnet_mm" / "s1-tiny").iterdir())[:3]
    catalog = pystac.Catalog("s1", "real Sentinel-1 GRD patches")
    extent = pystac.Extent(
        pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[WHEN, None]])
    )
    collection = pystac.Collection("bigearthnet-s1", "BigEarthNet-S1 patches", extent)
    for patch in patches:
        item = pystac.Item(
            patch.name, None, None, WHEN, {"sar:frequency_band": "C", "sar:polarizations": ["VV", "VH"]}
        )
        for pol in ("VV", "VH"):
            asset = pystac.Asset(href=str(patch / f"{patch.name}_{pol}.tif"), roles=["data"])
            asset.extra_fields["raster:bands"] = [{"unit": "dB"}]
            item.add_asset(pol, asset)
        collection.add_item(item)
    catalog.add_child(collection)
    path = _save(catalog, tmp_path / "stac")

    errors: list[ArchiveError] = []
    # the rasters stay where they are, outside the catalogue's folder: that root is named
    roots = [realdata]
    assert (
        StacSarArchive(path, allowed_href_roots=roots).list_scenes("bigearthnet-s1", on_error=errors.append)
        == []
    )
    assert len(errors) == len(patches) and all("asset_key" in e.reason for e in errors)
    archive = StacSarArchive(path, asset_key="VV", allowed_href_roots=roots)
    scenes = archive.list_scenes("bigearthnet-s1")
    assert len(scenes) == len(patches)
    for scene in scenes:
        assert scene.crs.startswith("EPSG:326") and scene.shape == (120, 120)
        assert scene.transform[0] == pytest.approx(10.0) and scene.transform[4] == pytest.approx(-10.0)
        assert scene.value_unit == "dB" and scene.frequency_band == "C"  # as written (parsed when tiling)
        with archive.open_scene(scene) as src:
            values = src.read(1)
        assert np.nanmedian(values) < 0  # σ⁰ in dB
    assert json.loads(path.read_text())["id"] == "s1"


@pytest.mark.parametrize(
    "projection",
    [
        {"proj:epsg": 32631},
        {
            "proj:wkt2": 'PROJCRS["WGS 84 / UTM zone 31N",BASEGEOGCRS["WGS 84",DATUM["World Geodetic System 1984",'
            'ELLIPSOID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],'
            'CONVERSION["UTM zone 31N",METHOD["Transverse Mercator"],PARAMETER["Latitude of natural origin",0],'
            'PARAMETER["Longitude of natural origin",3],PARAMETER["Scale factor at natural origin",0.9996],'
            'PARAMETER["False easting",500000],PARAMETER["False northing",0]],CS[Cartesian,2],'
            'AXIS["easting",east],AXIS["northing",north],UNIT["metre",1],ID["EPSG",32631]]'
        },
        {"proj:projjson": pyproj.CRS.from_epsg(32631).to_json_dict()},
    ],
    ids=["proj:epsg", "proj:wkt2", "proj:projjson"],
)
@pytest.mark.parametrize("level", ["item", "asset"])
def test_older_projection_fields_and_start_datetime(tmp_path, projection, level):
    """Catalogues written before proj:code (projection extension < 2.0), projection fields on the
    item or on the asset (Umbra-style), and items with a time range instead of a datetime."""
    raster = write_geotiff(tmp_path / "stac" / "files" / "s.tif", crs="EPSG:4326")  # the STAC fields must win
    item = pystac.Item(
        "ranged",
        None,
        None,
        None,
        {"start_datetime": "2024-06-01T10:30:00Z", "end_datetime": "2024-06-01T10:31:00Z"},
    )
    item.add_asset(
        "data", pystac.Asset(href=str(raster), roles=["data"], media_type=pystac.MediaType.GEOTIFF)
    )
    fields = {**projection, "proj:shape": [64, 80], "proj:transform": list(ROTATED)[:6]}
    (item.properties if level == "item" else item.assets["data"].extra_fields).update(fields)
    item.assets["data"].extra_fields["raster:bands"] = [{"nodata": 0}]
    (scene,) = _flight_with_scenes(tmp_path, {"ranged": item}).list_scenes("flight-1")
    assert scene.crs == "EPSG:32631"
    assert scene.datetime == WHEN
