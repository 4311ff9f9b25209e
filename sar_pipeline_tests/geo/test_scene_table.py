"""The sar_scenes quick-look: integer-scaled products with nodata, read in their own unit."""

from __future__ import annotations

import io

import numpy as np
import rasterio
from PIL import Image

from sar_pipeline.archive.protocol import SceneRecord
from sar_pipeline.archive.stac import StacSarArchive
from sar_pipeline.geo.scene_table import quicklook_png
from sar_pipeline_tests.archive.conftest import ROTATED


def test_quicklook_of_a_uint16_db_product_with_nodata(tmp_path):
    # dB stored as uint16 with scale 0.01 and offset -60 (Capella/Umbra style), nodata 0
    rows, cols = 40, 60
    db = np.tile(np.linspace(-30.0, 0.0, cols), (rows, 1))
    raw = np.round((db + 60.0) / 0.01).astype(np.uint16)
    raw[:, :10] = 0  # nodata outside the swath
    path = tmp_path / "scene.tif"
    profile = {"driver": "GTiff", "width": cols, "height": rows, "count": 1, "dtype": "uint16"}
    with rasterio.open(path, "w", **profile, crs="EPSG:32631", transform=ROTATED, nodata=0) as dst:
        dst.write(raw, 1)
    scene = SceneRecord(
        scene_id="scene",
        flight_id="flight",
        raster_href=str(path),
        crs="EPSG:32631",
        transform=tuple(ROTATED)[:6],
        shape=(rows, cols),
        nodata=0.0,
        value_unit="db",
        value_scale=0.01,
        value_offset=-60.0,
    )
    png = quicklook_png(StacSarArchive(tmp_path), scene, max_size=cols)
    image = np.asarray(Image.open(io.BytesIO(png)))
    assert image.shape == (rows, cols)
    assert (image[:, :10] == 0).all()  # nodata is black
    brightness = image[:, 10:].mean(axis=0)
    assert (np.diff(brightness) >= 0).all() and brightness[-1] > brightness[0]  # brighter σ⁰, brighter pixel
