"""FID/KID on a local TorchScript Inception: a tiny network with NVIDIA's interface, saved to a temp file."""

import math

import numpy as np
import pytest
import torch

from sar_pipeline.errors import ConfigError
from sar_pipeline.evaluation.inception import InceptionDistances, load_inception, prepare


def speckled_tiles(count: int, seed: int, side: int = 48) -> list[np.ndarray]:
    """Grey tiles in [0, 1]: gamma speckle (4 looks) over a random mean level per tile."""
    rng = np.random.default_rng(seed)
    tiles = []
    for _ in range(count):
        level = rng.uniform(0.2, 0.5)
        tiles.append(np.clip(level * rng.gamma(4, 1 / 4, (side, side)), 0, 1).astype(np.float32))
    return tiles


def distances(path, real, generated):
    inception = InceptionDistances(load_inception(path), seed=0)
    inception.set_real(real)
    return inception.score(generated)


def test_identical_sets_are_at_zero_fid_and_brighter_sets_further(tiny_inception):
    real = speckled_tiles(24, seed=1)
    inception = InceptionDistances(load_inception(tiny_inception), seed=0)
    inception.set_real(real)
    same = inception.score(real)
    assert abs(same["fid"]) < 1e-6 and abs(same["kid"]) < 0.05
    brighter = inception.score([np.clip(t + 0.1, 0, 1) for t in real])
    much_brighter = inception.score([np.clip(t + 0.3, 0, 1) for t in real])
    assert 0.01 < brighter["fid"] < much_brighter["fid"]
    # another draw of the same speckle is far closer than a brighter version of the same tiles
    assert distances(tiny_inception, real, speckled_tiles(24, seed=2))["fid"] < brighter["fid"] / 5
    assert same["kid"] < brighter["kid"] < much_brighter["kid"]
    # the real features are kept between generated sets, and KID's subsets are drawn with a fixed seed
    assert inception.score([np.clip(t + 0.1, 0, 1) for t in real]) == brighter


def test_a_set_of_fewer_than_two_images_has_no_distance(tiny_inception):
    scores = distances(tiny_inception, speckled_tiles(4, seed=1), speckled_tiles(1, seed=2))
    assert all(math.isnan(v) for v in scores.values())


def test_grey_tiles_are_shown_as_8_bit_grey_pictures_of_299_px():
    x = prepare(torch.full((2, 1, 64, 64), 0.5))
    assert x.shape == (2, 3, 299, 299) and x.dtype == torch.float32
    # 0.5 → the 8-bit level 128 (0.5 × 255 rounded), in all three channels
    assert torch.allclose(x, torch.tensor(128.0), atol=1e-3)
    ramp = prepare(torch.linspace(0, 1, 32 * 32).reshape(1, 1, 32, 32))
    assert ramp.min() >= 0 and ramp.max() <= 255 and torch.equal(ramp[:, 0], ramp[:, 2])


class NoFeatures(torch.nn.Module):
    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return img.mean(dim=(1, 2, 3))


def test_a_bad_network_file_is_named_with_the_reason(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.pt: no such file .*nothing is downloaded"):
        load_inception(tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="is a folder"):
        load_inception(tmp_path)
    state_dict = tmp_path / "pt_inception-2015-12-05.pth"
    torch.save({"conv.weight": torch.zeros(2)}, state_dict)  # a state dict, not TorchScript
    with pytest.raises(ConfigError, match=r"pt_inception-2015-12-05\.pth: not a TorchScript archive"):
        load_inception(state_dict)
    other = tmp_path / "other.pt"
    torch.jit.script(NoFeatures()).save(str(other))  # TorchScript, but not the Inception's interface
    with pytest.raises(ConfigError, match=r"other\.pt: fails on net\(x, return_features=True\)"):
        load_inception(other)
