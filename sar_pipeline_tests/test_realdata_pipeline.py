"""Real Sentinel-1 GRD patches (BigEarthNet-MM) through the DEFAULT pipeline, as a user would run it.

A user with these files writes a STAC catalogue over them (here: :func:`write_catalogue`, the
fields S1 products carry — sigma0 in dB, C band, IW, ascending/descending pass, right-looking — and
the patches' CORINE labels) and an optical catalogue over the co-registered Sentinel-2 patches (a VRT
stacking B04/B03/B02 per patch, reflectance ×10⁴), then runs every stage with the default settings.
Reads ``$SAR_PIPELINE_REALDATA/bigearthnet_mm``; skipped with a message where it is unset.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from pathlib import Path

import dagster as dg
import numpy as np
import pystac
import pytest
import rasterio
import rasterio.warp
from PIL import Image

from sar_pipeline.dataset import dataset_info, load_dataset_table
from sar_pipeline.defs.captions.assets import captions
from sar_pipeline.defs.captions.resources import CaptionerResource
from sar_pipeline.defs.dataset.assets import training_dataset
from sar_pipeline.defs.flights.assets import sar_scenes
from sar_pipeline.defs.geo.assets import optical_tiles, sar_tiles
from sar_pipeline.defs.geo.resources import LandCoverResource, OpticalResource
from sar_pipeline.defs.resources import SarArchiveResource, StorageRoot


@pytest.fixture(scope="module")
def bigearthnet():
    root = os.environ.get("SAR_PIPELINE_REALDATA")
    if not root:
        pytest.skip(
            "SAR_PIPELINE_REALDATA unset: real Sentinel-1/Sentinel-2 patches (bigearthnet_mm) not available"
        )
    folder = Path(root) / "bigearthnet_mm"
    if not folder.is_dir():
        pytest.skip(f"{folder} missing: real Sentinel-1/Sentinel-2 patches not available")
    return folder


def _when(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)


def write_catalogue(folder: Path, out: Path) -> tuple[Path, Path]:
    """A SAR catalogue (one flight per Sentinel-1 product, one item per patch, VV as data) and an
    optical catalogue (one item per Sentinel-2 patch, a B04/B03/B02 VRT as visual)."""
    sar = pystac.Catalog("bigearthnet-s1", "BigEarthNet-S1 patches")
    flights: dict[str, pystac.Collection] = {}
    for patch in sorted((folder / "s1-tiny").iterdir()):
        product = "_".join(patch.name.split("_")[:5])  # S1A_IW_GRDH_1SDV_<time>: one acquisition
        when = _when(patch.name.split("_")[4])
        meta = json.loads(next(patch.glob("*_labels_metadata.json")).read_text())
        with rasterio.open(patch / f"{patch.name}_VV.tif") as ds:
            bounds = rasterio.warp.transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
        if product not in flights:
            extent = pystac.Extent(
                pystac.SpatialExtent([list(bounds)]), pystac.TemporalExtent([[when, when]])
            )
            flights[product] = pystac.Collection(product.replace("_", "-"), f"Sentinel-1 {product}", extent)
            sar.add_child(flights[product])
        lon0, lat0, lon1, lat1 = bounds
        item = pystac.Item(
            patch.name,
            {
                "type": "Polygon",
                "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]],
            },
            list(bounds),
            when,
            {
                "platform": "sentinel-1a",
                "sar:instrument_mode": "IW",
                "sar:frequency_band": "C",
                "sar:polarizations": ["VV", "VH"],
                "sar:product_type": "GRD",
                "sar:observation_direction": "right",
                # Sentinel-1 passes Europe ascending in the evening, descending in the morning
                "sat:orbit_state": "ascending" if when.hour >= 12 else "descending",
                "sar_pipeline:labels": meta["labels"],
            },
        )
        asset = pystac.Asset(
            href=str(patch / f"{patch.name}_VV.tif"), roles=["data"], media_type=pystac.MediaType.GEOTIFF
        )
        asset.extra_fields["raster:bands"] = [{"unit": "dB", "data_type": "float32"}]  # sigma0 in dB
        item.add_asset("VV", asset)
        flights[product].add_item(item)
    sar.normalize_hrefs(str(out / "sar"))
    sar.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)

    optical = pystac.Catalog("bigearthnet-s2", "BigEarthNet-S2 patches")
    for patch in sorted((folder / "s2-tiny").iterdir()):
        vrt = out / "vrt" / f"{patch.name}.vrt"
        bands = [patch / f"{patch.name}_{b}.tif" for b in ("B04", "B03", "B02")]
        vrt.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(bands[0]) as ds:
            bounds = rasterio.warp.transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
            body = "".join(
                f'<VRTRasterBand dataType="UInt16" band="{i}"><SimpleSource><SourceFilename relativeToVRT="0">'
                f"{b}</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>"
                for i, b in enumerate(bands, start=1)
            )
            vrt.write_text(
                f'<VRTDataset rasterXSize="{ds.width}" rasterYSize="{ds.height}"><SRS>{ds.crs.to_wkt()}</SRS>'
                f"<GeoTransform>{', '.join(map(str, ds.transform.to_gdal()))}</GeoTransform>{body}</VRTDataset>"
            )
        lon0, lat0, lon1, lat1 = bounds
        item = pystac.Item(
            patch.name,
            {
                "type": "Polygon",
                "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]],
            },
            list(bounds),
            _when(patch.name.split("_")[2]),
            {"platform": "sentinel-2a", "eo:cloud_cover": 0.0},
        )
        item.add_asset("visual", pystac.Asset(href=str(vrt), roles=["visual"]))
        optical.add_item(item)
    optical.normalize_hrefs(str(out / "optical"))
    optical.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return out / "sar" / "catalog.json", out / "optical" / "catalog.json"


@pytest.mark.slow
def test_real_sentinel1_through_the_default_pipeline_gives_unsaturated_tiles(bigearthnet, tmp_path):
    sar_catalog, optical_catalog = write_catalogue(bigearthnet, tmp_path / "stac")
    storage = tmp_path / "storage"
    resources = {
        "storage": StorageRoot(uri=str(storage)),
        # the catalogue lives apart from the data it describes: say where its hrefs may point
        "archive": SarArchiveResource(uri=str(sar_catalog), allowed_href_roots=[str(bigearthnet)]),
        # what the optical data is: a STAC catalogue of reflectance × 10⁴ (the one setting of its own)
        "optical": OpticalResource(
            kind="stac", uri=str(optical_catalog), value_max=3000, allowed_href_roots=[str(tmp_path / "stac")]
        ),
        "landcover": LandCoverResource(),
        "captioner": CaptionerResource(),
    }
    instance = dg.DagsterInstance.ephemeral()
    flights = sorted(c.id for c in pystac.read_file(sar_catalog).get_children())
    instance.add_dynamic_partitions("flight", flights)
    per_flight = [sar_scenes, sar_tiles, optical_tiles, captions]
    for flight in flights:  # the defaults: no run config at all
        result = dg.materialize(per_flight, partition_key=flight, instance=instance, resources=resources)
        assert result.success, flight
        (tiles,) = result.asset_materializations_for_node("sar_tiles")
        summaries = tiles.metadata["scene_summaries"].value
        for scene in summaries.values():
            # north-up GRD turned to native orientation from the pass direction and the look side
            assert scene["orientation"] == "heading" and abs(scene["raster_rotation_deg"]) > 5
            assert scene["unit"] == "db" and scene["unit_source"] == "declared"
            assert scene["upsampling_factor"] == pytest.approx(10.0, rel=0.01)
        # 10 m pixels at the default 1 m GSD: said, with the value to set
        assert "10.0× finer" in tiles.metadata["warnings"].value
    dataset = dg.materialize(
        [*per_flight, training_dataset],
        selection=[training_dataset.key],
        instance=instance,
        resources=resources,
    )
    assert dataset.success
    (check,) = dataset.get_asset_check_evaluations()
    assert check.check_name == "training_dataset_saturation" and check.passed, check.metadata
    info = dataset_info(storage)
    assert sum(info["row_counts"].values()) > 0
    lo, hi = info["radiometry"]["db_min"], info["radiometry"]["db_max"]
    assert -35 < lo < -15 and -5 < hi < 10  # Sentinel-1 VV sigma0: a range that fits it
    table = load_dataset_table(storage)
    levels = np.concatenate(
        [np.asarray(Image.open(io.BytesIO(im["bytes"]))).ravel() for im in table.column("image").to_pylist()]
    )
    # not saturated: a spread of grey levels, little at either end
    assert (levels >= 255).mean() < 0.01 and (levels <= 1).mean() < 0.01 and levels.std() > 20
    texts = table.column("text").to_pylist()
    print(f"real S1: {table.num_rows} tiles, range {lo:.2f} … {hi:.2f} dB, e.g. {texts[0]!r}")
    assert all(t.startswith("An aerial view") for t in texts)  # captioned from the CORINE labels
    assert any(row["optical_image"] is not None for row in table.to_pylist())  # S1/S2 pairs co-located
