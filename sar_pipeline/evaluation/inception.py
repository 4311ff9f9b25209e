"""FID and KID of a generated set against the real tiles, on Inception-v3 features read from a local file.

Nothing is downloaded: the distances are computed only when the user names a local network
(``FidelitySettings.inception_path``). The file accepted is a **TorchScript archive**
(``torch.jit.load``) called as ``net(images, return_features=True)`` on a float32 batch
N × 3 × 299 × 299 of values 0…255 and returning the N × D pool features: the interface of
NVIDIA's ``inception-2015-12-05.pt`` (the TensorFlow Inception-v3 of the original FID, converted
for StyleGAN2-ADA and used by clean-fid; D = 2048). Other formats (a torchvision or pytorch-fid
state dict, a TensorFlow graph) are refused: reading them needs torchvision or torch-fidelity,
which do not install beside our torch build.

How a grey SAR tile is shown to the network (clean-fid's "clean" preparation): its [0, 1] grey
levels are quantised to the 8-bit levels a stored tile has (0…255), resized to 299 × 299 with
antialiased bicubic interpolation (in float, not re-quantised; the network's own bilinear resize
is then a no-op), and replicated over the three colour channels (R = G = B, a grey picture).

The distances themselves are torchmetrics' ``FrechetInceptionDistance`` and
``KernelInceptionDistance`` with this network as their ``feature=`` module. FID is biased upward
on small sets (the features' covariance over fewer images than D dimensions is rank-deficient):
compare models only on the same held-out sets, as ``sar_fidelity`` does. KID is unbiased; its
subsets have :data:`KID_SUBSET_SIZE` images (fewer when a set is smaller), drawn with a fixed
seed. With fewer than 2 images on either side a distance is NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from sar_pipeline.errors import ConfigError

#: the network's input side (pixels): Inception-v3's 299 × 299
INPUT_SIDE_PX = 299
#: KID subset size (Bińkowski et al. and torchmetrics' default), clipped to the smaller set
KID_SUBSET_SIZE = 1000
#: KID subsets averaged (torchmetrics' default)
KID_SUBSETS = 100
#: images per forward pass
BATCH_SIZE = 16

_ACCEPTED = (
    "FID/KID take a TorchScript Inception-v3 called as net(images, return_features=True), such as "
    "NVIDIA's inception-2015-12-05.pt (StyleGAN2-ADA, clean-fid), copied beforehand"
)


def prepare(greys: torch.Tensor) -> torch.Tensor:
    """Grey tiles N × 1 × H × W in [0, 1] → the network's input N × 3 × 299 × 299, float32 0…255
    (8-bit levels, antialiased bicubic resize, the grey replicated over R, G and B)."""
    levels = torch.round(greys.to(torch.float32).clamp(0, 1) * 255)
    resized = torch.nn.functional.interpolate(
        levels, size=(INPUT_SIDE_PX, INPUT_SIDE_PX), mode="bicubic", align_corners=False, antialias=True
    )
    return resized.clamp(0, 255).expand(-1, 3, -1, -1).contiguous()


class InceptionFeatures(torch.nn.Module):
    """torchmetrics' ``feature=`` module: grey tiles N × 1 × H × W in [0, 1] → the network's
    N × ``num_features`` pool features (:func:`prepare`, then ``net(x, return_features=True)``)."""

    def __init__(self, net: torch.nn.Module, num_features: int, device: torch.device):
        super().__init__()
        self.net = net
        self.num_features = num_features  # read by torchmetrics instead of a trial forward pass
        self.device = device

    def forward(self, greys: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net(prepare(greys), return_features=True)


def load_inception(path: str | Path, device: str | torch.device = "cpu") -> InceptionFeatures:
    """The TorchScript Inception at ``path`` (see the module docstring) on ``device``, checked by one
    forward pass on a blank 299² image; ConfigError naming the file and the reason when it is
    missing, not TorchScript, or does not answer ``net(x, return_features=True)`` with one feature
    vector per image."""
    path = Path(path).expanduser()
    device = torch.device(device)
    if not path.exists():
        raise ConfigError(path, f"no such file ({_ACCEPTED}); nothing is downloaded")
    if path.is_dir():
        raise ConfigError(path, f"is a folder, not the network file ({_ACCEPTED})")
    try:
        net = torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            path, f"not a TorchScript archive torch.jit.load can read ({first}); {_ACCEPTED}"
        ) from exc
    probe = torch.zeros(1, 3, INPUT_SIDE_PX, INPUT_SIDE_PX, device=device)
    try:
        with torch.no_grad():
            out = net(probe, return_features=True)
    except Exception as exc:  # a TorchScript call fails with assorted types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            path, f"fails on net(x, return_features=True) with x 1 × 3 × 299 × 299 ({first}); {_ACCEPTED}"
        ) from exc
    if not (isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == 1 and out.shape[1] > 0):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            path, f"net(x, return_features=True) gave {shape} for one image, not 1 × D features; {_ACCEPTED}"
        )
    return InceptionFeatures(net, int(out.shape[1]), device)


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
