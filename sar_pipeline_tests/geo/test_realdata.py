"""Real Sentinel-1 VV (dB) patches with co-registered Sentinel-2 (BigEarthNet-MM): tiling and co-location.

Reads ``$SAR_PIPELINE_REALDATA/bigearthnet_mm``; skipped with a message where the variable is unset.
"""

import dataclasses
import datetime as dt
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from sar_pipeline import radiometry
from sar_pipeline.archive.protocol import SceneRecord
from sar_pipeline.geo.colocation import colocate_tiles
from sar_pipeline.geo.optical import MosaicOpticalSource
from sar_pipeline.geo.scene_raster import scene_output_grid
from sar_pipeline.geo.settings import TilingSettings
from sar_pipeline.geo.tiling import tile_flight

PAIRS = [
    ("S1A_IW_GRDH_1SDV_20170617T064724_29UPU_36_85", "S2A_MSIL2A_20170617T113321_36_85"),
    ("S1A_IW_GRDH_1SDV_20170617T064724_29UPU_4_55", "S2A_MSIL2A_20170617T113321_4_55"),
    ("S1A_IW_GRDH_1SDV_20171221T064238_29SND_56_35", "S2A_MSIL2A_20171221T112501_56_35"),
]


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


def _s1_scene(folder, s1):
    path = folder / "s1-tiny" / s1 / f"{s1}_VV.tif"
    with rasterio.open(path) as ds:
        return SceneRecord(
            scene_id=s1,
            flight_id="bigearthnet",
            raster_href=str(path),
            crs=ds.crs.to_string(),
            transform=tuple(ds.transform)[:6],
            shape=(ds.height, ds.width),
            value_unit="db",  # BigEarthNet-S1 ships sigma0 in dB
            datetime=dt.datetime.strptime(s1.split("_")[4], "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC),
            platform="sentinel-1a",
            polarizations=("VV",),
        )


def _s2_rgb_vrt(folder, s2, out: Path) -> Path:
    """A GDAL VRT stacking B04, B03, B02 (red, green, blue) of a Sentinel-2 patch: no pixel copied."""
    bands = []
    for i, b in enumerate(("B04", "B03", "B02"), start=1):
        src = folder / "s2-tiny" / s2 / f"{s2}_{b}.tif"
        bands.append(
            f'<VRTRasterBand dataType="UInt16" band="{i}"><SimpleSource><SourceFilename relativeToVRT="0">{src}'
            f"</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>"
        )
    with rasterio.open(folder / "s2-tiny" / s2 / f"{s2}_B04.tif") as ds:
        gt = ds.transform.to_gdal()
        out.write_text(
            f'<VRTDataset rasterXSize="{ds.width}" rasterYSize="{ds.height}"><SRS>{ds.crs.to_wkt()}</SRS>'
            f"<GeoTransform>{', '.join(map(str, gt))}</GeoTransform>{''.join(bands)}</VRTDataset>"
        )
    return out


def _open(scene):
    return rasterio.open(scene.raster_href)


@pytest.mark.parametrize(("s1", "s2"), PAIRS)
def test_s1_tiles_and_s2_optical_tiles_share_the_same_ground(bigearthnet, tmp_path, s1, s2):
    scene = _s1_scene(bigearthnet, s1)
    params = TilingSettings(ground_sample_distance_m=10.0, tile_size=40, resampling="average")
    out = tmp_path / "sar"
    out.mkdir()
    result = tile_flight([scene], _open, params, out, "flights/bigearthnet/sar_tiles")
    assert len(result.rows) == 9 and not result.dropped and not result.skipped_scenes  # 120 px = 3 × 40
    with rasterio.open(scene.raster_href) as ds:
        vv = ds.read(1)
        grid = scene_output_grid(scene, ds, params)
    # a north-up GRD patch with unknown look direction keeps its own axes
    assert grid.orientation_source == "raster" and grid.transform == Affine(*scene.transform)
    for row in result.rows:
        tile = np.asarray(Image.open(out / f"{row['tile_id']}.png"))
        ref = vv[row["row_off"] : row["row_off"] + 40, row["col_off"] : row["col_off"] + 40]
        step = (row["db_max"] - row["db_min"]) / 65534  # 16-bit over the tile's own range: no clipping
        assert np.abs(radiometry.to_db(tile, row) - ref).max() <= step / 2 + 1e-4

    vrt = _s2_rgb_vrt(bigearthnet, s2, tmp_path / "s2_rgb.vrt")
    s2_date = dt.datetime.strptime(s2.split("_")[2], "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)
    source = MosaicOpticalSource(str(vrt), value_range=(0, 3000), acquired=s2_date, resampling="bilinear")
    optical = colocate_tiles(
        result.rows, source, tmp_path, "flights/bigearthnet/optical_tiles", min_coverage=0.99
    )
    assert len(optical.rows) == 9 and not optical.skipped
    with rasterio.open(vrt) as ds:
        s2_rgb = ds.read().astype(np.float64)
    for row in optical.rows:
        assert row["coverage_fraction"] == 1.0
        assert row["time_gap_s"] == pytest.approx(abs((s2_date - scene.datetime).total_seconds()))
        img = np.asarray(Image.open(tmp_path / f"{row['tile_id']}.png")).astype(np.float64)
        # the S2 pixels under the tile, straight from the files: the same ground, pixel for pixel
        sar_row = next(r for r in result.rows if r["tile_id"] == row["tile_id"])
        ref = s2_rgb[
            :, sar_row["row_off"] : sar_row["row_off"] + 40, sar_row["col_off"] : sar_row["col_off"] + 40
        ]
        ref = np.moveaxis(np.clip(ref / 3000 * 255, 0, 255), 0, -1)
        assert np.abs(img - ref).max() <= 1.0


@pytest.mark.parametrize(("s1", "s2"), PAIRS[:1])
def test_s1_downsampling_averages_intensity(bigearthnet, tmp_path, s1, s2):
    """At 20 m each output pixel is the mean intensity of 2×2 input pixels (then dB), not the mean dB."""
    scene = _s1_scene(bigearthnet, s1)
    params = TilingSettings(ground_sample_distance_m=20.0, tile_size=60)
    out = tmp_path / "sar"
    out.mkdir()
    result = tile_flight([scene], _open, params, out, "x")
    (row,) = result.rows
    tile = radiometry.to_db(np.asarray(Image.open(out / f"{row['tile_id']}.png")), row)
    with rasterio.open(scene.raster_href) as ds:
        intensity = 10 ** (ds.read(1).astype(np.float64) / 10)
    expected = 10 * np.log10(intensity.reshape(60, 2, 60, 2).mean(axis=(1, 3)))
    assert np.abs(tile - expected).max() < 0.01
    # averaging in dB would give less everywhere (Jensen: log of a mean ≥ mean of logs)
    mean_db = 10 * np.log10(intensity).reshape(60, 2, 60, 2).mean(axis=(1, 3))
    assert (tile - mean_db).min() > -0.01 and (tile - mean_db).mean() > 0.05


def test_real_s1_with_scene_record_georeferencing_only(bigearthnet, tmp_path):
    """The archive's record (proj:*) can replace a raster's missing CRS; with neither, the scene is skipped."""
    scene = _s1_scene(bigearthnet, PAIRS[0][0])
    noref = tmp_path / "noref.tif"
    with rasterio.open(scene.raster_href) as src:
        profile = {k: v for k, v in src.profile.items() if k not in ("crs", "transform")}
        with rasterio.open(noref, "w", **profile) as dst:
            dst.write(src.read())
    out = tmp_path / "t"
    out.mkdir()
    kept = tile_flight([dataclasses.replace(scene, raster_href=str(noref))], _open,
                       TilingSettings(ground_sample_distance_m=10, tile_size=40), out, "x")  # fmt: skip
    assert len(kept.rows) == 9 and kept.rows[0]["crs"] == scene.crs
    skipped = tile_flight([dataclasses.replace(scene, raster_href=str(noref), crs="")], _open,
                          TilingSettings(ground_sample_distance_m=10, tile_size=40), out, "x")  # fmt: skip
    assert "no CRS" in skipped.skipped_scenes[scene.scene_id]
