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


@pytest.mark.parametrize("bit_depth", [8, 16])
@settings(max_examples=50, deadline=None)
@given(mean=st.floats(1e-3, 1e4), cv=st.floats(0.05, 3), seed=st.integers(0, 1000))
def test_amplitude_normalisation_inverts_within_half_a_step(bit_depth, mean, cv, seed):
    params = RadiometryParams.amplitude(mean, cv * mean, bit_depth)
    scale = mean * (1 + 3 * cv)
    assert params.normalisation == "amplitude" and params.amplitude_scale == pytest.approx(scale)
    amplitude = np.random.default_rng(seed).uniform(0, 1.5 * scale, size=500)
    amplitude[1:4] = (0.0, scale, 2 * scale)
    db = radiometry.intensity_to_db(amplitude**2, floor_db=-np.inf)
    db[::17] = np.nan
    q = radiometry.quantize_db(db, params)
    assert q.dtype == (np.uint8 if bit_depth == 8 else np.uint16)
    ok = ~np.isnan(db)
    assert (q[~ok] == 0).all() and (q[ok] >= 1).all()
    # A / (μ + 3σ) clipped to [0, 1], on the levels 1 … max
    assert q[1] == 1 and q[2] == q[3] == params.max_value
    # the recorded mapping (as a dataset row holds it) gives the amplitude back within half a step
    back_db = radiometry.to_db(q, {k: v for k, v in params.to_dict().items() if v is not None})
    assert np.isnan(back_db[~ok]).all()
    back = 10 ** (back_db[ok].astype(np.float64) / 20)
    step = scale / (params.max_value - 1)
    # (plus the rounding of float32 dB in and out, a few 1e-6 relative)
    assert np.max(np.abs(back - np.clip(amplitude[ok], 0, scale))) <= step / 2 + 5e-6 * scale
    assert params.db_max == pytest.approx(20 * np.log10(scale))
    assert back_db[ok].min() >= params.db_min - 1e-3


def test_amplitude_statistics_from_the_db_histogram():
    amplitude = np.random.default_rng(3).rayleigh(2.0, 50_000) * np.repeat([1.0, 4.0], 25_000)
    histogram = radiometry.DbHistogram.of(radiometry.intensity_to_db(amplitude**2))
    mean, std = histogram.amplitude_moments()
    assert mean == pytest.approx(amplitude.mean(), rel=0.006)
    assert std == pytest.approx(amplitude.std(), rel=0.006)
    with pytest.raises(RasterError, match="no valid pixels"):
        radiometry.DbHistogram.of(np.array([np.nan])).amplitude_moments()
    with pytest.raises(ConfigError, match="amplitude_scale"):
        RadiometryParams(db_min=-1, db_max=1, normalisation="amplitude")


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
        assert invalid is None


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        ("amplitude (DN)", "amplitude"),
        ("DN", "amplitude"),
        ("digital number", "amplitude"),
        ("Amplitude", "amplitude"),
        ("magnitude", "amplitude"),
        ("sigma0", "intensity"),
        ("σ⁰", "intensity"),
        ("beta0", "intensity"),
        ("gamma0", "intensity"),
        ("intensity", "intensity"),
        ("power", "intensity"),
        ("linear", "intensity"),
        ("dB", "db"),
        ("sigma0 (dB)", "db"),
        ("decibel", "db"),
        ("complex", "complex"),
        ("kelvin", None),
        ("", None),
        (None, None),
    ],
)
def test_unit_strings_of_real_catalogues(text, unit):
    assert radiometry.parse_value_unit(text) == unit


def test_how_the_unit_was_decided_is_recorded():
    assert radiometry.resolve_value_unit(None, "complex64") == ("complex", "data type")
    assert radiometry.resolve_value_unit("amplitude (DN)", "uint8", "db") == ("amplitude", "declared")
    assert radiometry.resolve_value_unit(None, "float32", "db") == ("db", "assumed")
    # a unit nobody can read is an assumption too (sar_tiles warns, naming the string), not silence
    assert radiometry.resolve_value_unit("kelvin", "float32") == ("amplitude", "assumed")
    with pytest.raises(ConfigError, match="unknown unit"):
        radiometry.resolve_value_unit(None, "float32", "kelvin")


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
    assert (
        np.isnan(out[0, :3]).all() and out[0, 3] == 4.0 and invalid.tolist() == [[False, True, True, False]]
    )
    out, invalid = radiometry.to_intensity(values, "amplitude", nodata=np.nan)
    assert invalid.sum() == 1  # NaN is the declared nodata; only inf counts
    # zero backscatter: a valid pixel, or fill outside the swath (nodata) when asked
    out, _ = radiometry.to_intensity(values, "amplitude")
    assert out[0, 0] == 0.0
    out, invalid = radiometry.to_intensity(values, "amplitude", zero_is_nodata=True)
    assert np.isnan(out[0, 0]) and not invalid[0, 0]


def test_histograms_pool_and_give_percentiles_and_clipped_fractions():
    rng = np.random.default_rng(0)
    a, b = rng.normal(-12, 4, 20000), rng.normal(3, 2, 5000)
    pooled = radiometry.DbHistogram.pooled([radiometry.DbHistogram.of(a), radiometry.DbHistogram.of(b)])
    both = np.concatenate([a, b])
    assert pooled.total == both.size
    lo, hi = pooled.percentiles(1, 99)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(both, [1, 99])), abs=0.1)
    below, above = pooled.fractions_outside(lo, hi)
    assert below == pytest.approx(0.01, abs=0.002) and above == pytest.approx(0.01, abs=0.002)
    stored = radiometry.DbHistogram.from_start_db(pooled.start_db, pooled.counts.tolist())
    assert stored.first_bin == pooled.first_bin and stored.total == pooled.total
    with pytest.raises(RasterError):
        radiometry.DbHistogram.of(np.array([np.nan])).percentiles(1, 99)
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
    assert invalid is None
    assert 0.5 < stats.equivalent_number_of_looks < 2.0


def test_speckle_statistics_only_where_they_mean_something():
    rng = np.random.default_rng(2)
    speckle = rng.gamma(4, 0.25, size=(64, 64))
    stats, note = radiometry.speckle_if_meaningful(speckle)
    assert note == "" and stats.equivalent_number_of_looks == pytest.approx(4, rel=0.3)
    # upsampled 10×: neighbours repeat one source pixel
    assert radiometry.speckle_if_meaningful(np.kron(speckle[:8, :8], np.ones((8, 8))), 8.0)[0] is None
    # an 8-bit DN product saturated at 255 (ENL 1e31 was once reported)
    saturated = np.full((64, 64), 255.0**2)
    saturated[::7, ::5] = 254.0**2
    stats, note = radiometry.speckle_if_meaningful(saturated)
    assert stats is None and "near-constant" in note


@pytest.mark.parametrize("bit_depth", [8, 16])
@settings(max_examples=60, deadline=None)
@given(
    db_min=st.floats(-50, -5),
    span=st.floats(5, 60),
    amplitude=st.lists(st.floats(1e-4, 1e2), min_size=1, max_size=64),
)
def test_amplitude_survives_db_and_quantisation_within_half_a_step(bit_depth, db_min, span, amplitude):
    """amplitude → intensity → dB → 8/16-bit → dB → intensity → amplitude: inside the dB range the
    amplitude comes back within half a quantisation step (in dB), outside it at the range's bound;
    brighter never quantises darker."""
    params = RadiometryParams(db_min=db_min, db_max=db_min + span, bit_depth=bit_depth)
    amplitude = np.sort(np.asarray(amplitude, dtype=np.float32))
    intensity, invalid = radiometry.to_intensity(amplitude, "amplitude", source="x.tif")
    assert invalid is None
    db = radiometry.intensity_to_db(intensity)
    q = radiometry.quantize_db(db, params)
    assert (np.diff(q.astype(np.int64)) >= 0).all() and (q >= 1).all()
    back = np.sqrt(radiometry.db_to_intensity(radiometry.to_db(q, params)))
    step_db = span / (params.max_value - 1)
    error_db = 20 * np.log10(back / np.clip(amplitude, 10 ** (db_min / 20), 10 ** ((db_min + span) / 20)))
    assert np.max(np.abs(error_db)) <= step_db / 2 + 1e-4 * span


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(1e-8, 1e4), min_size=1, max_size=32))
def test_db_and_intensity_invert_each_other(values):
    """Over backscatter's range (-80 to +40 dB) the float32 dB round trip loses < 2·10⁻⁶ of the intensity."""
    intensity = np.asarray(values, dtype=np.float32)
    np.testing.assert_allclose(
        radiometry.db_to_intensity(radiometry.intensity_to_db(intensity)), intensity, rtol=2e-6
    )
