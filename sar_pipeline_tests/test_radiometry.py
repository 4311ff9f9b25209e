"""Radiometry: units → intensity → dB → 8/16-bit and back; speckle statistics."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sar_pipeline import radiometry
from sar_pipeline.errors import ConfigError, RasterError
from sar_pipeline.radiometry import RadiometryParams


@pytest.mark.parametrize("bit_depth", [8, 16])
@settings(max_examples=50, deadline=None)
@given(db_min=st.floats(-50, 0), span=st.floats(5, 60), seed=st.integers(0, 1000))
def test_quantisation_inverts_within_half_a_step(bit_depth, db_min, span, seed):
    params = RadiometryParams(db_min=db_min, db_max=db_min + span, bit_depth=bit_depth)
    db = np.random.default_rng(seed).uniform(db_min - 5, db_min + span + 5, size=500).astype(np.float32)
    db[::17] = np.nan
    q = radiometry.quantize_db(db, params)
    assert q.dtype == (np.uint8 if bit_depth == 8 else np.uint16)
    assert (q[np.isnan(db)] == 0).all() and (q[~np.isnan(db)] >= 1).all()
    back = radiometry.to_db(q, params.to_dict())
    assert np.isnan(back[np.isnan(db)]).all()
    expected = np.clip(db, params.db_min, params.db_max)
    step = span / (params.max_value - 1)
    ok = ~np.isnan(db)
    assert np.max(np.abs(back[ok] - expected[ok])) <= step / 2 + 1e-4 * span


def test_units_all_reach_the_same_intensity():
    intensity = np.array([[0.01, 1.0], [4.0, 0.25]], dtype=np.float32)
    amplitude = np.sqrt(intensity)
    db = 10 * np.log10(intensity)
    complex_ = (amplitude * np.exp(1j * 0.7)).astype(np.complex64)
    # integer-scaled amplitude (e.g. a uint16 GEC product): value = raw * scale + offset
    raw = np.round(amplitude / 0.001).astype(np.uint16)
    for values, unit, scale in [(amplitude, "amplitude", None), (intensity, "intensity", None), (db, "db", None),
                                (complex_, "complex", None), (raw, "amplitude", 0.001)]:  # fmt: skip
        got, invalid = radiometry.to_intensity(values, unit, scale=scale, source="x.tif")
        np.testing.assert_allclose(got, intensity, rtol=2e-3, err_msg=unit)
        assert invalid == 0
    assert radiometry.resolve_value_unit(None, "complex64") == "complex"
    assert radiometry.resolve_value_unit(None, "float32", "db") == "db"
    assert radiometry.resolve_value_unit("power", "float32") == "intensity"
    with pytest.raises(ConfigError, match="unknown unit"):
        radiometry.resolve_value_unit("kelvin", "float32")


@pytest.mark.parametrize("unit", ["amplitude", "intensity"])
def test_negative_amplitude_is_an_error_naming_the_file(unit):
    values = np.array([[0.5, -0.2], [0.0, 1.0]], dtype=np.float32)
    with pytest.raises(RasterError, match="negative") as err:
        radiometry.to_intensity(values, unit, nodata=0.0, source="/archive/scene_7.tif")
    assert err.value.source == "/archive/scene_7.tif"
    # a negative value equal to the declared nodata is not an error
    out, _ = radiometry.to_intensity(values, unit, nodata=-0.2, source="x")
    assert np.isnan(out[0, 1])


def test_nodata_and_nonfinite_become_nan_and_are_counted():
    values = np.array([[0.0, np.nan, np.inf, 2.0]], dtype=np.float32)
    out, invalid = radiometry.to_intensity(values, "amplitude", nodata=0.0)
    assert np.isnan(out[0, :3]).all() and out[0, 3] == 4.0 and invalid == 2
    out, invalid = radiometry.to_intensity(values, "amplitude", nodata=np.nan)
    assert invalid == 1  # NaN is the declared nodata; only inf counts


def test_percentile_range_and_bad_params():
    lo, hi = radiometry.percentile_db_range(np.arange(101, dtype=float), 1, 99)
    assert (lo, hi) == pytest.approx((1.0, 99.0))
    with pytest.raises(RasterError):
        radiometry.percentile_db_range(np.array([np.nan]), 1, 99)
    with pytest.raises(ConfigError):
        RadiometryParams(db_min=0, db_max=-1)
    with pytest.raises(ConfigError):
        RadiometryParams(db_min=-1, db_max=1, bit_depth=12)


@pytest.mark.parametrize("looks", [1, 4, 9])
def test_enl_of_gamma_speckle_matches_the_number_of_looks(looks):
    rng = np.random.default_rng(looks)
    intensity = rng.gamma(looks, 1.0 / looks, size=(256, 256))
    # a textured half (varying mean) must not pull the ENL down: homogeneous windows are chosen
    intensity[:, 128:] *= np.repeat(rng.uniform(0.2, 5, size=(256, 8)), 16, axis=1)
    stats = radiometry.speckle_statistics(intensity, window=16, homogeneous_fraction=0.25)
    assert stats.equivalent_number_of_looks == pytest.approx(looks, rel=0.2)
    assert stats.n_windows > 10
    homogeneous = radiometry.speckle_statistics(rng.gamma(looks, 1.0 / looks, size=(128, 128)))
    assert homogeneous.coefficient_of_variation == pytest.approx(1 / np.sqrt(looks), rel=0.1)
    assert homogeneous.mean == pytest.approx(1.0, rel=0.05)


def test_real_slc_speckle_statistics():
    """The real TerraSAR-X SLC chip: complex → intensity, single look speckle (ENL near 1)."""
    import os
    from pathlib import Path

    root = os.environ.get("SAR_PIPELINE_REALDATA")
    if not root:
        pytest.skip("SAR_PIPELINE_REALDATA unset: real TerraSAR-X SLC chip not available")
    files = sorted(Path(root, "deepdespeckling").rglob("*.npy"))
    if not files:
        pytest.skip(f"no .npy SLC chip under {root}/deepdespeckling")
    arr = np.load(files[0])
    slc = arr[..., 0] + 1j * arr[..., 1] if arr.ndim == 3 and arr.shape[-1] == 2 else arr
    intensity, invalid = radiometry.to_intensity(slc, "complex", source=files[0])
    stats = radiometry.speckle_statistics(intensity, window=16, homogeneous_fraction=0.1)
    assert invalid == 0
    assert 0.5 < stats.equivalent_number_of_looks < 2.0
