"""The SAR simulator: valid COGs, speckle statistics, layover/shadow geometry, determinism."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from sar_pipeline.archive import landcover
from sar_pipeline.archive.demo import write_demo_archive
from sar_pipeline.archive.simulate import (
    NOISE_EQUIVALENT_SIGMA0_DB,
    FlightParameters,
    Ground,
    SceneGeometry,
    flight_parameters,
    simulate_ground,
    simulate_scene,
    speckle_intensity,
)
from sar_pipeline_tests.archive.conftest import SMALL, SMALL_SEED


def _scene_files(root: Path) -> list[Path]:
    return sorted(root.glob("demo-flight-*/*/*_amplitude.tif"))


def test_scenes_are_cogs_in_native_sar_geometry(small_demo):
    scenes = _scene_files(small_demo.root)
    assert len(scenes) >= 3
    for path in scenes:
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32631
            t = src.transform
            assert abs(t.b) > 1e-3 or abs(t.d) > 1e-3, "scene grid must be rotated (native SAR geometry)"
            assert src.nodata == 0.0
            assert src.dtypes == ("float32",)
            assert src.profile["tiled"]
            assert src.overviews(1), "COG must carry internal overviews"
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            amplitude = src.read(1)
        valid = amplitude != 0
        assert 0.5 < valid.mean() < 1.0, "nodata outside the swath, data inside"
        assert np.isfinite(amplitude).all() and (amplitude >= 0).all()
        for kind, dtype in (("idealised", "float32"), ("landcover", "uint8")):
            with rasterio.open(str(path).replace("_amplitude", f"_{kind}")) as extra:
                assert extra.transform == t and extra.shape == amplitude.shape and extra.dtypes == (dtype,)
                values = extra.read(1)
            assert ((values != 0) == valid).all(), f"{kind} must share the amplitude's nodata mask"
        assert set(np.unique(values)) <= {0, *landcover.LANDCOVER_CLASSES}


def test_orthophoto_is_a_north_up_rgb_cog(small_demo):
    with rasterio.open(small_demo.optical_path) as src:
        assert src.count == 3 and src.dtypes == ("uint8",) * 3
        assert src.crs.to_epsg() == 32631
        assert src.transform.b == 0 and src.transform.d == 0 and src.transform.e < 0
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.width * src.transform.a == pytest.approx(SMALL.region_size_m)


def test_orthophoto_colours_follow_land_cover():
    ground = simulate_ground(SMALL_SEED, SMALL)
    rgb = ground.orthophoto_rgb.astype(int)
    water = ground.landcover == landcover.WATER
    forest = ground.landcover == landcover.FOREST
    assert water.any() and forest.any()
    assert rgb[2][water].mean() > rgb[0][water].mean() + 30, "water is blue"
    assert rgb[1][forest].mean() > rgb[0][forest].mean(), "forest is green"
    assert rgb[:, forest].mean() < rgb[:, ground.landcover == landcover.FIELD].mean(), (
        "forest darker than fields"
    )


@pytest.mark.parametrize("looks", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("impulse_sigma_px", [0.0, 0.55])
def test_speckle_is_gamma_with_l_looks(looks, impulse_sigma_px):
    intensity = np.full((400, 400), 0.1, dtype=np.float32)  # a homogeneous region
    speckled = speckle_intensity(intensity, looks, np.random.default_rng(1), impulse_sigma_px)
    assert speckled.mean() == pytest.approx(0.1, rel=0.02)
    enl = speckled.mean() ** 2 / speckled.var()
    assert enl == pytest.approx(looks, rel=0.06)
    # gamma, not merely the right variance: the fraction below the mean is P(Gamma(L, 1/L) < 1)
    below = {1.0: 0.632, 2.0: 0.594, 4.0: 0.567}[looks]
    assert (speckled < 0.1).mean() == pytest.approx(below, abs=0.02)
    neighbours = np.corrcoef(speckled[:, :-1].ravel(), speckled[:, 1:].ravel())[0, 1]
    if impulse_sigma_px:
        assert 0.05 < neighbours < 0.4, "speckle correlated over the resolution cell"
    else:
        assert abs(neighbours) < 0.02


def test_written_scenes_have_the_enl_of_their_looks(small_demo):
    """amplitude² / idealised² is the speckle alone: mean 1, ENL = the item's looks."""
    for path in _scene_files(small_demo.root):
        item = json.loads(path.with_name(path.parent.name + ".json").read_text())
        looks = item["properties"]["sar:looks_equivalent_number"]
        with (
            rasterio.open(path) as src,
            rasterio.open(str(path).replace("_amplitude", "_idealised")) as ideal,
        ):
            amplitude, idealised = src.read(1).astype(np.float64), ideal.read(1).astype(np.float64)
        valid = idealised > 0
        ratio = (amplitude[valid] / idealised[valid]) ** 2
        assert ratio.mean() == pytest.approx(1.0, abs=0.03)
        assert ratio.mean() ** 2 / ratio.var() == pytest.approx(looks, rel=0.1)


def _flat_ground_with_building(height_m: float) -> Ground:
    """400 m of field (γ⁰ −10 dB) with one 20 m × 20 m building at x 200–220 m, y 190–210 m."""
    size = 400
    cover = np.full((size, size), landcover.FIELD, dtype=np.uint8)
    height = np.zeros((size, size), dtype=np.float32)
    gamma0 = np.full((size, size), -10.0, dtype=np.float32)
    cover[190:210, 200:220] = landcover.BUILDING
    height[190:210, 200:220] = height_m
    gamma0[190:210, 200:220] = -6.0
    return Ground(
        landcover=cover,
        height_m=height,
        gamma0_db=gamma0,
        orthophoto_rgb=np.zeros((3, size, size), np.uint8),
        transform=Affine(1.0, 0.0, 0.0, 0.0, -1.0, 400.0),
    )


def _north_flight_looking_east(altitude_m: float, near_ground_m: float) -> FlightParameters:
    """Heading 0°, right-looking: columns run east (range), rows run north (azimuth), 1 m pixels."""
    scene = SceneGeometry(
        scene_id="test-scene",
        transform=Affine(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        shape=(400, 400),
        datetime=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        first_range_ground_m=near_ground_m + 0.5,
    )
    return FlightParameters(
        flight_index=0,
        flight_id="test-flight",
        heading_deg=0.0,
        observation_direction="right",
        altitude_m=altitude_m,
        pixel_spacing_range_m=1.0,
        pixel_spacing_azimuth_m=1.0,
        looks_range=1,
        looks_azimuth=1,
        center_frequency_ghz=9.6,
        scenes=(scene,),
    )


def test_layover_toward_near_range_and_shadow_toward_far_range():
    building_height = 20.0
    flight = _north_flight_looking_east(altitude_m=3000.0, near_ground_m=3000.0)
    scene = flight.scenes[0]
    simulated = simulate_scene(_flat_ground_with_building(building_height), flight, scene, seed=0)
    # scene rows run north from y=0: ground rows 190–210 (y 190–210 m) are scene rows 190–210
    intensity = simulated.idealised_amplitude[195:205].astype(np.float64) ** 2
    field = intensity[:, 100:150].mean()
    theta = math.radians(float(flight.incidence_angle_deg(scene, 220)))
    noise_floor = 10 ** (NOISE_EQUIVALENT_SIGMA0_DB / 10)

    shadow_px = building_height * math.tan(theta)  # ≈ 20 m at 45°
    profile = intensity.mean(axis=0)
    shadow = profile[222 : int(220 + shadow_px) - 2]
    assert len(shadow) > 10
    assert shadow.max() < 2 * noise_floor < field / 10, "radar shadow behind the building (far range)"
    assert profile[int(220 + shadow_px) + 3 :].mean() == pytest.approx(field, rel=0.15), "ground again after"

    layover_px = building_height / math.tan(math.radians(float(flight.incidence_angle_deg(scene, 200))))
    near_band = profile[int(200 - layover_px) + 1 : 199]
    assert near_band.mean() > 2 * field, "walls and roof laid over toward near range"
    assert int(np.argmax(profile)) in range(198, 202), "double bounce at the wall foot"
    assert profile[150 : int(200 - layover_px) - 2].mean() == pytest.approx(field, rel=0.15)


def test_scene_land_cover_is_the_ground_truth_under_each_pixel():
    ground = _flat_ground_with_building(20.0)
    flight = _north_flight_looking_east(3000.0, 3000.0)
    simulated = simulate_scene(ground, flight, flight.scenes[0], seed=0)
    # the scene grid is the ground grid flipped north-south, minus the irregular swath edges
    expected = ground.landcover[::-1]
    valid = simulated.landcover != 0
    assert valid[:, 40:360].all()
    assert (simulated.landcover[valid] == expected[valid]).all()


def test_flights_differ_in_geometry_and_are_independent_of_count():
    flights = [flight_parameters(0, i) for i in range(4)]
    assert len({f.heading_deg for f in flights}) == 4
    assert len({f.pixel_spacing_range_m for f in flights}) == 4
    for f in flights:
        assert 0.6 <= f.pixel_spacing_range_m <= 1.2 and 0.5 <= f.pixel_spacing_azimuth_m <= 1.0
        assert 1 <= len(f.scenes) <= 3
        for scene in f.scenes:
            assert all(1536 // 2 <= n <= 2048 for n in scene.shape)
            incidence = f.incidence_angle_deg(scene, np.array([0, scene.shape[1] - 1]))
            assert 20 < incidence[0] < incidence[1] < 65
    assert flight_parameters(0, 2) == flights[2]


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_bytes(tmp_path, small_demo):
    again = write_demo_archive(tmp_path / "again", flights=3, seed=SMALL_SEED, settings=SMALL)
    assert _digest(again.root) == _digest(small_demo.root)
    other = write_demo_archive(tmp_path / "other", flights=3, seed=SMALL_SEED + 1, settings=SMALL)
    other_digest = _digest(other.root)
    assert other_digest["optical/orthophoto.tif"] != _digest(small_demo.root)["optical/orthophoto.tif"]
