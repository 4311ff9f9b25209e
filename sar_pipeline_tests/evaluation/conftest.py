"""A tiny trained world for the evaluation assets, built once per session: the generation tests' land-cover
dataset (dB mapping recorded) → tiny base → latents → an sd_model run of a few real steps with two checkpoints."""

import json
from pathlib import Path

import pytest
import torch

from sar_pipeline_tests.generation.world import train_tiny_world


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


def random_fid_inception_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The FID Inception-v3's parameters (our :class:`FIDInceptionV3`, the published state dict's names
    and shapes), randomly initialised: He-normal convolutions (activations keep their scale through
    the 94 ReLU layers, so features of different pictures differ) and batch norms near identity."""
    from sar_pipeline.evaluation.inception import FIDInceptionV3

    generator = torch.Generator().manual_seed(seed)
    state = FIDInceptionV3().state_dict()
    for name, tensor in state.items():
        if name.endswith("conv.weight"):
            fan_in = tensor[0].numel()
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * (2 / fan_in) ** 0.5)
        elif name.endswith(("bn.weight", "running_var")):
            tensor.copy_(0.75 + 0.5 * torch.rand(tensor.shape, generator=generator))
        elif name.endswith(("bn.bias", "running_mean")):
            tensor.copy_(0.05 * torch.randn(tensor.shape, generator=generator))
    return state


def write_fid_inception(path: Path, state: dict[str, torch.Tensor] | None = None) -> Path:
    """``state`` (default: :func:`random_fid_inception_state_dict`) saved at ``path`` as the published
    weights are (``torch.save`` of the state dict), or as safetensors when ``path`` ends so (~95 MB)."""
    state = random_fid_inception_state_dict() if state is None else state
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def fid_inception(tmp_path_factory) -> Path:
    """Random FID Inception weights at ``…/pt_inception-2015-12-05-6726825d.pth`` (no download)."""
    return write_fid_inception(tmp_path_factory.mktemp("inception") / "pt_inception-2015-12-05-6726825d.pth")
