"""Fixtures for the archive tests: a small demo archive and helpers writing real GeoTIFFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from sar_pipeline.archive.demo import DemoArchive, write_demo_archive
from sar_pipeline.archive.simulate import SMALL_DEMO_SETTINGS

#: a demo small enough for tests (1 km region, scenes of 300–360 pixels), same code path
SMALL = SMALL_DEMO_SETTINGS
SMALL_SEED = 3

#: a rotated native-geometry grid in UTM 31N (heading ~30°, right-looking, 1.5 m pixels)
ROTATED = Affine(1.299, 0.75, 561_000.0, -0.75, 1.299, 4_830_000.0)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoArchive:
    """A 3-flight demo archive written once for the session (tests must not modify it)."""
    return write_demo_archive(
        tmp_path_factory.mktemp("demo") / "archive", flights=3, seed=SMALL_SEED, settings=SMALL
    )


def write_geotiff(
    path: Path,
    shape: tuple[int, int] = (64, 80),
    crs: str | None = "EPSG:32631",
    transform: Affine = ROTATED,
    nodata: float | None = 0.0,
    dtype: str = "float32",
    count: int = 1,
) -> Path:
    """A small real GeoTIFF (speckle-like amplitudes) with the given georeferencing."""
    rng = np.random.default_rng(0)
    data = np.sqrt(rng.gamma(1.0, 0.1, (count, *shape))).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "width": shape[1],
        "height": shape[0],
        "count": count,
        "dtype": dtype,
        "transform": transform,
        "nodata": nodata,
    }
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path
