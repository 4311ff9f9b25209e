"""The demo archive's STAC catalogue: core-schema validity, SAR/projection fields, appending flights."""

from __future__ import annotations

import json
from pathlib import Path

import pystac
import pytest
import rasterio
from pyproj import Transformer
from pystac.validation import JsonSchemaSTACValidator

from sar_pipeline.archive import demo
from sar_pipeline.archive.demo import add_demo_flight, write_demo_archive
from sar_pipeline.archive.simulate import flight_parameters
from sar_pipeline.errors import ConfigError
from sar_pipeline_tests.archive.conftest import SMALL, SMALL_SEED

EXTENSIONS = {
    "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
}
TYPES = {
    "Catalog": pystac.STACObjectType.CATALOG,
    "Collection": pystac.STACObjectType.COLLECTION,
    "Feature": pystac.STACObjectType.ITEM,
}


def _items(root: Path) -> list[tuple[Path, dict]]:
    return [(p, json.loads(p.read_text())) for p in sorted(root.glob("demo-flight-*/*/*.json"))]


def test_catalogue_validates_against_the_bundled_core_schemas(small_demo):
    """pystac bundles the STAC 1.1 core schemas: validated offline (extensions checked below)."""
    validator = JsonSchemaSTACValidator()
    documents = sorted(small_demo.root.rglob("*.json"))
    assert len(documents) >= 1 + 1 + 3 + 3  # catalogue, optical, flights, scenes
    for path in documents:
        data = json.loads(path.read_text())
        validator.validate_core(data, TYPES[data["type"]], data["stac_version"], str(path))
    broken = json.loads(documents[-1].read_text())
    broken.pop("links")
    with pytest.raises(pystac.STACValidationError):
        validator.validate_core(broken, TYPES[broken["type"]], broken["stac_version"], "broken")


def test_catalogue_structure_and_links_resolve(small_demo):
    catalog = pystac.Catalog.from_file(str(small_demo.catalog_path))
    children = {c.id: c for c in catalog.get_children()}
    assert set(children) == {"optical-orthophoto", *small_demo.flight_ids}
    assert children["optical-orthophoto"].extra_fields["sar_pipeline:kind"] == "optical"
    for flight_id in small_demo.flight_ids:
        collection = children[flight_id]
        assert collection.extra_fields["sar_pipeline:kind"] == "flight"
        assert collection.extra_fields["updated"].endswith("Z")
        items = list(collection.get_items())
        assert len(items) == len(flight_parameters(SMALL_SEED, int(flight_id[-3:]), SMALL).scenes)
        for item in items:
            for asset in item.assets.values():
                assert Path(asset.get_absolute_href()).is_file()
    optical = next(children["optical-orthophoto"].get_items())
    assert Path(optical.assets["data"].get_absolute_href()) == small_demo.optical_path
    assert [b["name"] for b in optical.assets["data"].extra_fields["eo:bands"]] == ["red", "green", "blue"]
    # self-contained: no absolute path written anywhere
    for path in small_demo.root.rglob("*.json"):
        assert str(small_demo.root) not in path.read_text()


def test_items_carry_sar_view_projection_raster_fields_matching_the_files(small_demo):
    to_wgs84 = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True)
    for path, item in _items(small_demo.root):
        props = item["properties"]
        assert EXTENSIONS <= set(item["stac_extensions"])
        assert props["sar:frequency_band"] == "X" and props["sar:center_frequency"] == pytest.approx(9.6)
        assert props["sar:polarizations"] == ["VV"] and props["sar:product_type"] == "GRD"
        assert props["sar:observation_direction"] in ("left", "right")
        assert (
            0.6 <= props["sar:pixel_spacing_range"] <= 1.2
            and 0.5 <= props["sar:pixel_spacing_azimuth"] <= 1.0
        )
        assert props["sar:resolution_range"] > props["sar:pixel_spacing_range"]
        assert props["sar:looks_equivalent_number"] == props["sar:looks_range"] * props["sar:looks_azimuth"]
        assert props["sar_pipeline:incidence_angle_near_deg"] < props["view:incidence_angle"]
        assert props["view:incidence_angle"] < props["sar_pipeline:incidence_angle_far_deg"]
        assert 0 <= props["sar_pipeline:heading_deg"] < 360
        assert props["proj:code"] == "EPSG:32631"
        data = item["assets"]["amplitude"]
        assert data["roles"] == ["data"] and data["raster:bands"][0]["nodata"] == 0
        assert set(item["assets"]) == {"amplitude", "idealised", "landcover"}
        with rasterio.open(path.parent / data["href"]) as src:
            assert list(src.transform)[:6] == pytest.approx(props["proj:transform"])
            assert [src.height, src.width] == props["proj:shape"]
            assert src.nodata == data["raster:bands"][0]["nodata"]
            assert src.dtypes[0] == data["raster:bands"][0]["data_type"]
            # the geometry is the grid's footprint
            corner = to_wgs84.transform(*(src.transform @ (0, 0)))
        assert item["geometry"]["coordinates"][0][0] == pytest.approx(list(corner), abs=1e-6)


def test_adding_flights_leaves_existing_files_untouched(tmp_path):
    root = tmp_path / "archive"
    first = write_demo_archive(root, flights=1, seed=SMALL_SEED, settings=SMALL)
    assert first.added_flight_ids == ("demo-flight-000",)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}

    second = add_demo_flight(root)  # seed and settings read from the archive
    assert second.added_flight_ids == ("demo-flight-001",)
    assert second.flight_ids == ("demo-flight-000", "demo-flight-001")
    for path, (mtime, data) in before.items():
        if path.name != "catalog.json":
            assert path.stat().st_mtime_ns == mtime and path.read_bytes() == data, path
    children = [c.id for c in pystac.Catalog.from_file(str(root / "catalog.json")).get_children()]
    assert "demo-flight-001" in children
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folder left behind"

    # fewer flights than present: nothing removed, nothing added
    third = write_demo_archive(root, flights=1, seed=SMALL_SEED, settings=SMALL)
    assert third.flight_ids == ("demo-flight-000", "demo-flight-001") and third.added_flight_ids == ()


def test_refuses_another_seed_or_a_foreign_folder(tmp_path):
    root = tmp_path / "archive"
    write_demo_archive(root, flights=1, seed=SMALL_SEED, settings=SMALL)
    with pytest.raises(ConfigError, match="seed=9"):
        write_demo_archive(root, flights=2, seed=9, settings=SMALL)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        write_demo_archive(foreign, flights=1, settings=SMALL)
    with pytest.raises(ConfigError, match="at least one flight"):
        write_demo_archive(tmp_path / "none", flights=0, settings=SMALL)
    with pytest.raises(ConfigError, match="local folder"):
        write_demo_archive("s3://bucket/demo", settings=SMALL)
    with pytest.raises(ConfigError, match="is not a demo archive"):
        add_demo_flight(foreign)


def test_command_line(tmp_path, capsys):
    assert demo.main([str(tmp_path / "cli"), "--flights", "2", "--seed", "4", "--small"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "cli" / "catalog.json") in out and "demo-flight-001" in out
    assert (tmp_path / "cli" / "optical" / "orthophoto.tif").is_file()
    catalog = json.loads((tmp_path / "cli" / "catalog.json").read_text())
    assert catalog["sar_pipeline:demo"]["seed"] == 4
    assert catalog["sar_pipeline:demo"]["settings"]["region_size_m"] == SMALL.region_size_m
