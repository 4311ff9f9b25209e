"""FID/KID on the FID Inception-v3 (our port of pytorch-fid's network) with random weights saved as
the published state dict is (.pth) and as safetensors, in temp files."""

import math

import numpy as np
import pytest
import torch

from sar_pipeline.errors import ConfigError
from sar_pipeline.evaluation.inception import FIDInceptionV3, InceptionDistances, load_inception, prepare
from sar_pipeline_tests.evaluation.conftest import write_fid_inception


def speckled_tiles(count: int, seed: int, side: int = 48) -> list[np.ndarray]:
    """Grey tiles in [0, 1]: gamma speckle (4 looks) over a random mean level per tile."""
    rng = np.random.default_rng(seed)
    tiles = []
    for _ in range(count):
        level = rng.uniform(0.2, 0.5)
        tiles.append(np.clip(level * rng.gamma(4, 1 / 4, (side, side)), 0, 1).astype(np.float32))
    return tiles


def test_identical_sets_are_at_zero_fid_and_brighter_sets_further(fid_inception):
    real = speckled_tiles(5, seed=1)
    inception = InceptionDistances(load_inception(fid_inception), seed=0)
    inception.set_real(real)
    same = inception.score(real)
    brighter = inception.score([np.clip(t + 0.3, 0, 1) for t in real])
    assert abs(same["fid"]) < 1e-3 and brighter["fid"] > 10
    # another draw of the same speckle is closer than a brighter version of the same tiles
    assert 0 < inception.score(speckled_tiles(5, seed=2))["fid"] < brighter["fid"] / 5
    # KID is unbiased: near 0 (either sign) for identical sets, well above it for the brighter ones
    assert brighter["kid"] > 0 and abs(same["kid"]) < brighter["kid"] / 10
    # the real features are kept between generated sets, and KID's subsets are drawn with a fixed seed
    assert inception.score([np.clip(t + 0.3, 0, 1) for t in real]) == brighter


def test_a_set_of_fewer_than_two_images_has_no_distance(fid_inception):
    inception = InceptionDistances(load_inception(fid_inception), seed=0)
    inception.set_real(speckled_tiles(2, seed=1))
    assert all(math.isnan(v) for v in inception.score(speckled_tiles(1, seed=2)).values())


def test_the_network_is_the_fid_inception_v3():
    net = FIDInceptionV3().eval()
    # pytorch-fid's network is torchvision's Inception-v3 (27,161,264 parameters as torchvision
    # publishes it) without the auxiliary classifier (3,326,696) and with 1008 classes instead of
    # 1000 (+16,392); of these, 21,785,568 lie before the pool3 features
    assert sum(p.numel() for p in net.parameters()) == 27_161_264 - 3_326_696 + 16_392
    assert sum(p.numel() for n, p in net.named_parameters() if not n.startswith("fc.")) == 21_785_568
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == 94
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Mixed_6e.branch7x7dbl_5.conv.weight"] == (192, 192, 1, 7)
    assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    assert shapes["fc.weight"] == (1008, 2048) and "AuxLogits.fc.weight" not in shapes
    with torch.no_grad():
        assert net(torch.rand(1, 3, 299, 299)).shape == (1, 2048)
        assert net(torch.rand(1, 3, 64, 64)).shape == (1, 2048)  # resized to 299² first


def test_a_safetensors_conversion_gives_the_same_features(fid_inception, tmp_path):
    state = torch.load(fid_inception, weights_only=True)
    # a conversion may drop batch norm's counters: they do not enter the features
    kept = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    converted = write_fid_inception(tmp_path / "pt_inception-2015-12-05.safetensors", kept)
    greys = torch.from_numpy(np.stack(speckled_tiles(2, seed=3)))[:, None]
    features = load_inception(fid_inception)(greys)
    assert features.shape == (2, 2048) and features.std() > 0
    assert torch.equal(load_inception(converted)(greys), features)


def test_grey_tiles_are_shown_as_8_bit_grey_pictures_of_299_px():
    x = prepare(torch.full((2, 1, 64, 64), 0.5))
    assert x.shape == (2, 3, 299, 299) and x.dtype == torch.float32
    # 0.5 → the 8-bit level 128 (0.5 × 255 rounded), as a fraction of 255, in all three channels
    assert torch.allclose(x, torch.tensor(128 / 255), atol=1e-5)
    ramp = prepare(torch.linspace(0, 1, 32 * 32).reshape(1, 1, 32, 32))
    assert ramp.min() >= 0 and ramp.max() <= 1 and torch.equal(ramp[:, 0], ramp[:, 2])


class Scripted(torch.nn.Module):
    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return img.mean(dim=(1, 2, 3))


def test_a_bad_network_file_is_named_with_the_reason(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.pth: no such file .*nothing is downloaded"):
        load_inception(tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match="is a folder"):
        load_inception(tmp_path)
    torchscript = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(Scripted()).save(str(torchscript))  # code, which is never run
    with pytest.raises(ConfigError, match=r"inception-2015-12-05\.pt: .*a TorchScript archive .*never run"):
        load_inception(torchscript)
    pickled = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a whole pickled module, not a state dict
    with pytest.raises(ConfigError, match=r"model\.pth: .*pickled objects other than tensors"):
        load_inception(pickled)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], listed)
    with pytest.raises(ConfigError, match=r"list\.pth: holds a list, not a state dict"):
        load_inception(listed)
    junk = tmp_path / "weights.safetensors"
    junk.write_bytes(b"<html>403 Forbidden</html>")
    with pytest.raises(ConfigError, match=r"weights\.safetensors: not a safetensors file"):
        load_inception(junk)
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, other)
    with pytest.raises(
        ConfigError, match=r"other\.pth: .*missing Conv2d_1a_3x3\.conv\.weight, .*\(\+\d+ more\)"
    ):
        load_inception(other)


def test_a_state_dict_of_other_names_or_shapes_is_refused_naming_them(fid_inception, tmp_path):
    state = torch.load(fid_inception, weights_only=True)
    del state["Mixed_7c.branch_pool.conv.weight"]
    state["AuxLogits.fc.weight"] = torch.zeros(1000, 768)  # torchvision's ImageNet Inception has these
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    path = write_fid_inception(tmp_path / "inception_v3_google.safetensors", state)
    with pytest.raises(ConfigError) as raised:
        load_inception(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: not the FID Inception-v3's parameters")
    assert (
        "missing Mixed_7c.branch_pool.conv.weight" in message and "unexpected AuxLogits.fc.weight" in message
    )
    assert "fc.weight (1000, 2048) (network: (1008, 2048))" in message and "fc.bias (1000,)" in message
