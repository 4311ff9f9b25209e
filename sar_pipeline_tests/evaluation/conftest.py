"""A tiny trained world for the evaluation assets, built once per session: the generation tests' land-cover
dataset (dB mapping recorded) → tiny base → latents → an sd_model run of a few real steps with two checkpoints."""

import json
from pathlib import Path

import pytest
import torch

from sar_pipeline_tests.generation.world import train_tiny_world

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def eval_world(tmp_path_factory) -> dict:
    return train_tiny_world(tmp_path_factory.mktemp("eval_world"), "e1", n_train=16, checkpoint_every_steps=1)


def run_against_itself(world: dict, name: str) -> Path:
    """A copy of the world's run keeping its last checkpoint only, whose recorded base model is that
    checkpoint itself: a model that cannot beat its base."""
    import shutil

    run_dir = world["storage"] / "models" / "sd" / name
    shutil.copytree(world["run_dir"], run_dir)
    checkpoints = sorted((run_dir / "checkpoints").iterdir())
    for old in checkpoints[:-1]:
        shutil.rmtree(old)
    pipeline = checkpoints[-1] / "pipeline"
    config = json.loads((run_dir / "train_config.json").read_text())
    config.update(base_model_path=str(pipeline), output_dir=str(run_dir))
    (run_dir / "train_config.json").write_text(json.dumps(config))
    return pipeline


class TinyInception(torch.nn.Module):
    """NVIDIA's ``inception-2015-12-05.pt`` interface on a few fixed random filters:
    ``net(x, return_features=True)`` with x N × 3 × H × W, 0–255 → N × 16 features (else logits)."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, kernel_size=9, stride=8)
        self.head = torch.nn.Linear(16, 10)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator) / 9)
            self.conv.bias.zero_()

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = (img.to(torch.float32) - 128) / 128
        activations = torch.relu(self.conv(x))
        features = torch.cat([activations.mean(dim=(2, 3)), activations.std(dim=(2, 3))], dim=1)
        return features if return_features else self.head(features)


def write_tiny_inception(path: Path) -> Path:
    """A TorchScript :class:`TinyInception` saved at ``path`` (no download, a few kB)."""
    torch.jit.script(TinyInception()).save(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_inception(tmp_path_factory) -> Path:
    return write_tiny_inception(tmp_path_factory.mktemp("inception") / "inception-tiny.pt")
