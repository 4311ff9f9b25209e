"""The README's first command, end to end: demo archive → flights → dataset → tiny Stable Diffusion
→ ControlNet → a few generated images.

The fine-tuned model must have learnt something of the demo's SAR: over fixed seeds, samples of
"a river" are darker than samples of "an urban area" (water is dark in radar, buildings bright).
The ControlNet must follow its sketch better than the text-only model (land-cover classifier
agreement), and refining the demo's simulated tiles must bring their speckle closer to the real
tiles' while keeping their layout.
"""

import json
from pathlib import Path

import pytest

from sar_pipeline.cli import main
from sar_pipeline.generation.model import default_sd_model
from sar_pipeline_tests.diffusion.synthetic import sample_mean_amplitude

SEEDS = (0, 1, 2, 3)


@pytest.mark.slow
def test_demo_main_job_trains_a_model_whose_samples_follow_the_prompt(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAR_PIPELINE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    for variable in ("SAR_PIPELINE_ARCHIVE", "SAR_PIPELINE_STORAGE"):
        monkeypatch.delenv(variable, raising=False)

    assert main(["demo"]) == 0

    storage = tmp_path / "data" / "storage"
    version = json.loads((storage / "dataset" / "current.json").read_text())["version"]
    (run,) = [p for p in (storage / "models" / "sd").iterdir() if p.is_dir()]  # beside the pointers
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

    # the evaluation: the SAR-CLIP retrieves above chance, and the fine-tuned model beats the untrained base
    # on amplitude distance and adherence, so the check promoted its best checkpoint
    clip_info = json.loads(next((storage / "models" / "sar_clip").glob("*/sar_clip.json")).read_text())
    retrieval = clip_info["retrieval"]
    print(f"SAR-CLIP retrieval on {clip_info['evaluation_split']}: {retrieval}")
    assert retrieval["text_to_image_r1"] > retrieval["chance_text_to_image_r1"]
    report = json.loads((storage / "evaluation" / "sar_fidelity" / run.name / "report.json").read_text())
    best, base = report["checkpoints"][report["best"]], report["base"]["scores"]
    for name, scores in (
        ("base", base),
        (f"checkpoint {best['step']}", best["scores"]),
        ("real", report["real"]),
    ):
        print(
            f"sar_fidelity {name}: "
            + ", ".join(f"{k} {scores[k]:.3f}" for k in sorted(scores) if k != "by_landcover")
        )
    assert best["scores"]["wasserstein_db"] < base["wasserstein_db"]
    assert best["scores"]["clip_score"] > base["clip_score"]
    # promoted: generation's default model is the best checkpoint
    assert default_sd_model(storage) == (Path(best["pipeline"]), "promoted")

    # the ControlNet: adherence to the sketch, per the classifier trained on the dataset's own tiles
    (cn_run,) = (storage / "models" / "controlnet").glob("*/final.json")
    cn = json.loads(cn_run.read_text())
    print(
        f"ControlNet adherence {cn['adherence']:.3f} vs text only {cn['text_only_adherence']:.3f} "
        f"(classifier on real tiles {cn['classifier_accuracy_real']:.3f}); by step {cn['adherence_by_step']}"
    )
    assert cn["adherence"] > cn["text_only_adherence"] + 0.03

    # the demo ended by generating: text, img2img, refine-simulated (+ GeoTIFF), sketch
    generated = tmp_path / "data" / "generated" / "demo"
    for prefix in ("text-seed0", "text-seed1", "img2img-", "refined-", "sketch-"):
        assert list(generated.glob(prefix + "*.png")), prefix
    assert list(generated.glob("refined-*.tif"))

    # lineage: a generated PNG's checkpoint joined to the sd_model run in the Dagster instance
    capsys.readouterr()
    assert main(["provenance", str(next(generated.glob("text-seed0*.png")))]) == 0
    lineage = capsys.readouterr().out
    print(lineage)
    assert "sd_model run: " in lineage and "not in this Dagster instance" not in lineage
    assert "demo-flight-000" in lineage and f"dataset version: {version}" in lineage

    # refine-simulated: speckle closer to the real tiles' than the simulated input's, layout kept
    from sar_pipeline.generation.model import load_generation_model
    from sar_pipeline.generation.output import dataset_radiometry
    from sar_pipeline.generation.refine import strength_sweep
    from sar_pipeline.generation.settings import GenerationSettings
    from sar_pipeline.generation.webui import dataset_simulated_and_real

    model = load_generation_model(summary["pipeline"])
    simulated, real, prompts = dataset_simulated_and_real(model, 4)
    params = dataset_radiometry(model.storage_root, model.dataset_version)
    sweep = strength_sweep(model, simulated, real, prompts, [0.2, 0.4], params, GenerationSettings(steps=20))
    print("refine-simulated sweep:", json.dumps(sweep))
    at_02 = sweep["by_strength"][0]
    assert at_02["enl_distance_to_real"] < sweep["input_enl_distance_to_real"]
    assert at_02["structure_correlation"] > 0.8
