"""FID and KID of a generated set against the real tiles, on the FID Inception-v3's pool features.

Nothing is downloaded: the distances are computed only when the user names a local weights file
(``FidelitySettings.inception_path``): pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``
(the TensorFlow Inception-v3 of the original FID, ``inception-2015-12-05``, ported to PyTorch by
M. Seitzer's pytorch-fid), read as a plain state dict (``torch.load(..., weights_only=True)``: a
pickled object or TorchScript code in the file is refused, never run), or a ``.safetensors``
conversion of it. The file is checked strictly against the network below: a missing or unexpected
parameter, or one of another shape, is a ConfigError naming the file and the first such names.

Why the network is written here: pytorch-fid and torch-fidelity build it on torchvision's
``Inception3``, and no torchvision installs beside our torch build (the only wheel for torch 2.13
on this project's machines is the CUDA one, whose operators fail to register against the CPU
torch: ``import torchvision`` raises); torch-fidelity moreover reads its weights with
``torch.load(weights_only=False)``. The other route, NVIDIA's TorchScript
``inception-2015-12-05.pt`` (StyleGAN2-ADA, clean-fid), runs code from the file, which this
package never does.

:class:`FIDInceptionV3` follows pytorch-fid's ``fid_inception_v3`` (``src/pytorch_fid/inception.py``:
torchvision's Inception-v3 with 1008 classes, no auxiliary classifier, and the blocks it patches to
match the TensorFlow graph: ``FIDInceptionA``, ``FIDInceptionC`` and ``FIDInceptionE_1`` average
without the zero padding, ``FIDInceptionE_2`` max-pools instead), which torch-fidelity's
``FeatureExtractorInceptionV3`` also uses. Its modules carry the same names (``Conv2d_1a_3x3.conv``,
``Mixed_7c.branch_pool.bn``, ``fc``…), so the published state dict loads as it is. Input
convention as pytorch-fid's: N × 3 × H × W in [0, 1], resized to 299 × 299 (bilinear) when it is
not already, then mapped to [-1, 1] (2x − 1; the TensorFlow graph's (x − 128) / 128 on 0…255
levels, within half a level). Output: the 2048-D pool3 features (the final average pool), what
FID and KID compare.

How a grey SAR tile is shown to the network (clean-fid's "clean" preparation, then pytorch-fid's
input range): its [0, 1] grey levels are quantised to the 8-bit levels a stored tile has (0…255),
resized to 299 × 299 with antialiased bicubic interpolation (in float, not re-quantised; the
network's own bilinear resize is then a no-op), divided by 255 back to [0, 1], and replicated over
the three colour channels (R = G = B, a grey picture).

The distances themselves are torchmetrics' ``FrechetInceptionDistance`` and
``KernelInceptionDistance`` with this network as their ``feature=`` module. FID is biased upward
on small sets (the features' covariance over fewer images than D dimensions is rank-deficient):
compare models only on the same held-out sets, as ``sar_fidelity`` does. KID is unbiased; its
subsets have :data:`KID_SUBSET_SIZE` images (fewer when a set is smaller), drawn with a fixed
seed. With fewer than 2 images on either side a distance is NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sar_pipeline.errors import ConfigError

#: the network's input side (pixels): Inception-v3's 299 × 299
INPUT_SIDE_PX = 299
#: length of the pool3 feature vector FID and KID compare
FEATURE_DIM = 2048
#: classes of the 2015-12-05 graph's classifier (1000 ImageNet classes and 8 unused), kept only so
#: that the published state dict loads strictly
NUM_CLASSES = 1008
#: KID subset size (Bińkowski et al. and torchmetrics' default), clipped to the smaller set
KID_SUBSET_SIZE = 1000
#: KID subsets averaged (torchmetrics' default)
KID_SUBSETS = 100
#: images per forward pass
BATCH_SIZE = 16
#: differing parameter names quoted in an error
_QUOTED_KEYS = 4

_ACCEPTED = (
    "FID/KID take the FID Inception-v3's state dict: pytorch-fid's pt_inception-2015-12-05-6726825d.pth "
    "(read with torch.load(weights_only=True)) or a .safetensors conversion of it, copied beforehand"
)


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (ε = 0.001, TensorFlow's) and ReLU: every layer of the network."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's 3 × 3 average pool leaves the zero padding out of the mean (pytorch-fid's patch)
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """35 × 35 block (Mixed_5b…5d): 1×1, 5×5, double 3×3 and pooled branches; 224 + ``pool_features`` channels."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pooled = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, pooled], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 → 17 (Mixed_6a): strided 3×3, strided double 3×3 and max-pool branches."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), branch3x3dbl, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionC(nn.Module):
    """17 × 17 block (Mixed_6b…6e): 1×1, factorised 7×7 (1×7, 7×1), double factorised 7×7 and pooled
    branches of ``channels_7x7`` inner channels; 768 channels out."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
            branch7x7dbl = layer(branch7x7dbl)
        branch7x7dbl = self.branch7x7dbl_5(branch7x7dbl)
        pooled = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, pooled], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 → 8 (Mixed_7a): strided 3×3, 7×7 then strided 3×3, and max-pool branches."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = x
        for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            branch7x7x3 = layer(branch7x7x3)
        return torch.cat([branch3x3, branch7x7x3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionE(nn.Module):
    """8 × 8 block: 1×1, 3×3 split into 1×3 | 3×1, double 3×3 split likewise, and pooled branches;
    2048 channels out. ``max_pool``: the graph's second such block (Mixed_7c, pytorch-fid's
    ``FIDInceptionE_2``) max-pools where the first (Mixed_7b, ``FIDInceptionE_1``) averages."""

    def __init__(self, in_channels: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pooled)], 1)


#: the Inception blocks in graph order (35², 17², 8² grids), named as in the published state dict
_MIXED_BLOCKS = tuple(
    f"Mixed_{n}" for n in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c")
)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3 (see the module docstring): N × 3 × H × W in [0, 1] → N × 2048 pool3
    features. ``fc`` (the 1008-class classifier) is part of the published state dict but not of
    the features."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pool3 features N × 2048 of ``images`` N × 3 × H × W in [0, 1] (RGB)."""
        x = images.to(torch.float32)
        if x.shape[-2:] != (INPUT_SIDE_PX, INPUT_SIDE_PX):
            x = F.interpolate(x, size=(INPUT_SIDE_PX, INPUT_SIDE_PX), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in _MIXED_BLOCKS:
            x = getattr(self, name)(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)


def prepare(greys: torch.Tensor) -> torch.Tensor:
    """Grey tiles N × 1 × H × W in [0, 1] → the network's input N × 3 × 299 × 299, float32 in
    [0, 1] (8-bit levels / 255, antialiased bicubic resize, the grey replicated over R, G and B)."""
    levels = torch.round(greys.to(torch.float32).clamp(0, 1) * 255)
    resized = torch.nn.functional.interpolate(
        levels, size=(INPUT_SIDE_PX, INPUT_SIDE_PX), mode="bicubic", align_corners=False, antialias=True
    )
    return (resized.clamp(0, 255) / 255).expand(-1, 3, -1, -1).contiguous()


class InceptionFeatures(torch.nn.Module):
    """torchmetrics' ``feature=`` module: grey tiles N × 1 × H × W in [0, 1] → the network's
    N × 2048 pool3 features (:func:`prepare`, then :class:`FIDInceptionV3`)."""

    def __init__(self, net: FIDInceptionV3, device: torch.device):
        super().__init__()
        self.net = net
        self.num_features = FEATURE_DIM  # read by torchmetrics instead of a trial forward pass
        self.device = device

    def forward(self, greys: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net(prepare(greys))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_state_dict(path: Path) -> Mapping[str, object]:
    """The tensors stored at ``path``: safetensors by its suffix, else torch.load with weights_only."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ConfigError(path, f"not a safetensors file ({_first_line(exc)}); {_ACCEPTED}") from exc
    try:
        # torch.load warns it is "dispatching to torch.jit.load"; with weights_only it raises instead
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", "'torch.load' received a zip file that looks like a TorchScript"
            )
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # of assorted types: UnpicklingError, RuntimeError, EOFError…
        reason = _first_line(exc)
        if "Weights only load failed" in reason:
            reason = "pickled objects other than tensors (a whole pickled model?), never unpickled here"
        elif "TorchScript" in reason:
            reason = "a TorchScript archive (such as NVIDIA's inception-2015-12-05.pt), whose code is never run here"
        raise ConfigError(
            path, f"not a state dict torch.load(weights_only=True) can read ({reason}); {_ACCEPTED}"
        ) from exc
    if not isinstance(state, Mapping):
        raise ConfigError(path, f"holds a {type(state).__name__}, not a state dict; {_ACCEPTED}")
    return state


def _quote(names: Sequence[str]) -> str:
    more = f" (+{len(names) - _QUOTED_KEYS} more)" if len(names) > _QUOTED_KEYS else ""
    return ", ".join(names[:_QUOTED_KEYS]) + more


def _check_state_dict(path: Path, state: Mapping[str, object], expected: Mapping[str, torch.Tensor]) -> None:
    """ConfigError naming ``path`` unless ``state`` has exactly ``expected``'s names and shapes
    (BatchNorm's ``num_batches_tracked`` counters may be absent: they do not enter the features)."""
    problems = []
    missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing:
        problems.append(f"missing {_quote(missing)}")
    if unexpected:
        problems.append(f"unexpected {_quote(unexpected)}")
    reshaped = [
        f"{k} {tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__} "
        f"(network: {tuple(expected[k].shape)})"
        for k, v in state.items()
        if k in expected and not (isinstance(v, torch.Tensor) and v.shape == expected[k].shape)
    ]
    if reshaped:
        problems.append(f"wrong shape {_quote(reshaped)}")
    if problems:
        raise ConfigError(path, f"not the FID Inception-v3's parameters: {'; '.join(problems)}; {_ACCEPTED}")


def load_inception(path: str | Path, device: str | torch.device = "cpu") -> InceptionFeatures:
    """:class:`FIDInceptionV3` with the weights at ``path`` (a ``.pth`` state dict read with
    ``torch.load(weights_only=True)``, or ``.safetensors``), on ``device``; ConfigError naming the
    file and the reason when it is missing, a folder, unreadable, holds pickled objects or
    TorchScript, or its parameters' names or shapes are not the network's."""
    path = Path(path).expanduser()
    device = torch.device(device)
    if not path.exists():
        raise ConfigError(path, f"no such file ({_ACCEPTED}); nothing is downloaded")
    if path.is_dir():
        raise ConfigError(path, f"is a folder, not the network's weights file ({_ACCEPTED})")
    state = dict(_read_state_dict(path))
    net = FIDInceptionV3()
    expected = net.state_dict()
    _check_state_dict(path, state, expected)
    for key, counter in expected.items():  # the counters a state dict saved without them lacks
        state.setdefault(key, counter)
    net.load_state_dict(state, strict=True)
    return InceptionFeatures(net.eval().requires_grad_(False).to(device), device)


def _batches(greys: Sequence[np.ndarray], device: torch.device):
    for start in range(0, len(greys), BATCH_SIZE):
        chunk = np.stack([np.asarray(g, np.float32) for g in greys[start : start + BATCH_SIZE]])
        yield torch.from_numpy(chunk)[:, None].to(device)


class InceptionDistances:
    """FID and KID of generated sets against one real set, the real features extracted once.

    ``features``: :func:`load_inception`'s module; ``seed``: of KID's subsets (the same draw for
    every generated set)."""

    def __init__(self, features: InceptionFeatures, seed: int = 0):
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        self.device = features.device
        self.seed = seed
        self.real_count = 0
        self.fid = FrechetInceptionDistance(feature=features, reset_real_features=False).to(self.device)
        with warnings.catch_warnings():  # "saves all extracted features": a few hundred tiles here
            warnings.simplefilter("ignore", UserWarning)
            self.kid = KernelInceptionDistance(
                feature=features, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, reset_real_features=False
            ).to(self.device)

    def set_real(self, greys: Sequence[np.ndarray]) -> None:
        """Extract the features of the real grey tiles (each H × W in [0, 1])."""
        for batch in _batches(greys, self.device):
            self.fid.update(batch, real=True)
            self.kid.update(batch, real=True)
        self.real_count = len(greys)

    def score(self, greys: Sequence[np.ndarray]) -> dict[str, float]:
        """``fid``, ``kid`` (mean over subsets) and ``kid_std`` of the generated grey tiles against
        the real ones (NaN where either set has fewer than 2 images)."""
        self.fid.reset()
        self.kid.reset()
        nan = {"fid": float("nan"), "kid": float("nan"), "kid_std": float("nan")}
        if self.real_count < 2 or len(greys) < 2:
            return nan
        for batch in _batches(greys, self.device):
            self.fid.update(batch, real=False)
            self.kid.update(batch, real=False)
        self.kid.subset_size = min(KID_SUBSET_SIZE, self.real_count, len(greys))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            kid_mean, kid_std = self.kid.compute()
        return {"fid": float(self.fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}
