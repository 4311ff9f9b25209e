"""The README's first command, end to end: demo archive → flights → dataset → tiny Stable Diffusion.

The fine-tuned model must have learnt something of the demo's SAR: over fixed seeds, samples of
"a river" are darker than samples of "an urban area" (water is dark in radar, buildings bright).
"""

import json
from pathlib import Path

import pytest
import torch

from sar_pipeline.cli import main
from sar_pipeline_tests.diffusion.synthetic import sample_mean_amplitude

SEEDS = (0, 1, 2, 3)


@pytest.mark.slow
def test_demo_main_job_trains_a_model_whose_samples_follow_the_prompt(tmp_path, monkeypatch):
    monkeypatch.setenv("SAR_PIPELINE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    for variable in ("SAR_PIPELINE_ARCHIVE", "SAR_PIPELINE_STORAGE"):
        monkeypatch.delenv(variable, raising=False)
    torch.set_num_threads(1)

    assert main(["demo"]) == 0

    storage = tmp_path / "data" / "storage"
    version = json.loads((storage / "dataset" / "current.json").read_text())["version"]
    (run,) = (storage / "models" / "sd").iterdir()
    assert run.name.startswith(version)
    summary = json.loads((run / "final.json").read_text())
    assert summary["steps"] == 300 and Path(summary["sample_grid"]).is_file()

    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(summary["pipeline"])
    pipe.set_progress_bar_config(disable=True)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor

    river = sample_mean_amplitude(pipe, "An aerial view of a river", SEEDS, size)
    urban = sample_mean_amplitude(pipe, "An aerial view of an urban area", SEEDS, size)
    print(f"demo model, mean amplitude (0..1): river {river:.3f}, urban {urban:.3f}")
    assert river + 0.05 < urban
