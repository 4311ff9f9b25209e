"""SAR fidelity measures on inputs whose answer is known."""

import numpy as np
import pytest

from sar_pipeline import radiometry
from sar_pipeline.evaluation import metrics

BINS = metrics.fixed_bins_db(-30.0, 10.0, 0.5)


def gamma_speckle_db(looks: int, shape=(64, 64), count: int = 8, mean_intensity: float = 0.1, seed: int = 0):
    """Tiles of fully developed L-look speckle (gamma intensity, mean ``mean_intensity``) in dB."""
    rng = np.random.default_rng(seed)
    return [
        radiometry.intensity_to_db(rng.gamma(looks, mean_intensity / looks, shape)).astype(np.float32)
        for _ in range(count)
    ]


def test_identical_sets_are_at_zero_distance():
    tiles = gamma_speckle_db(4)
    d = metrics.amplitude_distances(tiles, [t.copy() for t in tiles], BINS)
    assert d.wasserstein_db == 0.0 and d.jensen_shannon_bits == 0.0 and d.ks_statistic == 0.0
    assert d.mean_difference_db == 0.0
    descriptors = np.stack([metrics.glcm_descriptors(t, -30, 10) for t in tiles])
    assert metrics.descriptor_distance(descriptors, descriptors.copy()) == 0.0


def test_shifted_histogram_gives_the_shift_as_wasserstein_distance():
    tiles = gamma_speckle_db(4, seed=1)
    shifted = [t + 3.0 for t in tiles]
    d = metrics.amplitude_distances(tiles, shifted, BINS)
    assert d.wasserstein_db == pytest.approx(3.0, abs=1e-4)
    assert d.mean_difference_db == pytest.approx(3.0, abs=1e-4)
    # an L=4 speckle histogram is ~5 dB wide: a 3 dB shift separates the CDFs a lot, not entirely
    assert 0.3 < d.ks_statistic < 1.0
    assert 0.1 < d.jensen_shannon_bits < 1.0
    # a larger shift is further on every measure; disjoint histograms reach JS = 1 bit and KS = 1
    far = metrics.amplitude_distances(tiles, [t + 30.0 for t in tiles], metrics.fixed_bins_db(-40, 40, 0.5))
    assert far.wasserstein_db == pytest.approx(30.0, abs=1e-3)
    assert far.ks_statistic == 1.0 and far.jensen_shannon_bits == pytest.approx(1.0)


def test_two_point_distributions_have_the_textbook_distances():
    # half the pixels at -20 dB and half at -10 vs all at -10: W1 = 0.5 * 10 dB, KS = 0.5
    real = np.concatenate([np.full(500, -20.0), np.full(500, -10.0)])
    generated = np.full(1000, -10.0)
    d = metrics.amplitude_distances(real, generated, BINS)
    assert d.wasserstein_db == pytest.approx(5.0)
    assert d.ks_statistic == pytest.approx(0.5)
    # JS of (1/2, 1/2) vs (0, 1): 1/2 KL(p||m) + 1/2 KL(q||m), m = (1/4, 3/4)
    p, q, m = np.array([0.5, 0.5]), np.array([0.0, 1.0]), np.array([0.25, 0.75])
    expected = 0.5 * np.sum(p * np.log2(p / m)) + 0.5 * q[1] * np.log2(q[1] / m[1])
    assert d.jensen_shannon_bits == pytest.approx(expected)


@pytest.mark.parametrize("looks", [1, 4, 16])
def test_gamma_speckle_with_l_looks_gives_enl_l(looks):
    summary = metrics.speckle_summary(gamma_speckle_db(looks, shape=(128, 128), seed=looks), window=16)
    # the homogeneous quarter of the windows is picked by lowest CV, which biases ENL up a little
    assert summary.equivalent_number_of_looks == pytest.approx(looks, rel=0.35)
    # CV of L-look intensity is 1/sqrt(L)
    assert summary.coefficient_of_variation == pytest.approx(1 / np.sqrt(looks), rel=0.05)
    assert summary.tiles == 8


def test_enl_orders_speckle_levels_and_log_ratio_measures_the_gap():
    one = metrics.speckle_summary(gamma_speckle_db(1, seed=3))
    sixteen = metrics.speckle_summary(gamma_speckle_db(16, seed=4))
    assert sixteen.equivalent_number_of_looks > 8 * one.equivalent_number_of_looks
    assert metrics.log_ratio(16.0, 1.0) == pytest.approx(np.log(16))
    assert metrics.log_ratio(1.0, 16.0) == pytest.approx(np.log(16))
    assert np.isnan(metrics.log_ratio(float("nan"), 1.0))


def test_glcm_distance_separates_textures_and_sees_direction():
    speckle_a = gamma_speckle_db(4, seed=5)
    speckle_b = gamma_speckle_db(4, seed=6)
    # the same speckle with bright lines every 8 rows (along range: a row-periodic pattern)
    stripes = [t + np.where(np.arange(64)[:, None] % 8 < 2, 10.0, 0.0) for t in gamma_speckle_db(4, seed=7)]

    def descriptors(tiles):
        return np.stack([metrics.glcm_descriptors(t, -30, 10) for t in tiles])

    same_kind = metrics.descriptor_distance(descriptors(speckle_a), descriptors(speckle_b))
    other_kind = metrics.descriptor_distance(descriptors(speckle_a), descriptors(stripes))
    assert other_kind > 5 * same_kind
    names = metrics.glcm_descriptor_names((1, 2, 4), (0, 45, 90, 135))
    assert len(names) == descriptors(stripes).shape[1] == 5 * 3 * 4
    # horizontal stripes change grey level going down the rows (90°: along azimuth), not along a row (0°)
    d = dict(zip(names, descriptors(stripes).mean(axis=0), strict=True))
    assert d["contrast_d1_a90"] > 1.3 * d["contrast_d1_a0"]


def test_bins_cover_the_range_and_out_of_range_values_are_counted():
    edges = metrics.fixed_bins_db(-25.0, 5.0, 0.7)
    assert edges[0] == -25.0 and edges[-1] == 5.0 and np.all(np.diff(edges) > 0)
    # everything below the first edge lands in the first bin: two such sets are identical
    d = metrics.amplitude_distances(np.full(10, -99.0), np.full(10, -40.0), edges)
    assert d.jensen_shannon_bits == 0.0 and d.wasserstein_db == pytest.approx(59.0)
    with pytest.raises(ValueError, match="no finite dB"):
        metrics.amplitude_distances([np.full((4, 4), np.nan)], [np.zeros((4, 4))], edges)
