"""compare-recipes: recipes trained with the same data, seed and budget, scored as sar_fidelity scores."""

import json
from pathlib import Path

import pytest

from sar_pipeline.cli import main
from sar_pipeline.errors import ConfigError
from sar_pipeline.evaluation import comparison


def _settings_file(world: dict, path: Path) -> Path:
    settings = {
        "recipes": {
            "paper": {},
            "hybrid": {"text_encoder_lora": True, "learned_token": "<sar>"},
        },
        "base": {"preset": "tiny", "base_model_path": str(world["base"]), "resolution": 64},
        "train": {"train_batch_size": 4, "validation_prompts": [], "log_every_steps": 1},
        "fidelity": {
            "max_tiles": 2,
            "steps": 2,
            "glcm_distances_px": [1],
            "glcm_angles_deg": [0.0, 90.0],
            "device": "cpu",
        },
        "sar_clip_settings": {"image_size_px": 32, "max_steps": 5, "batch_size": 8, "device": "cpu"},
    }
    path.write_text(json.dumps(settings))  # JSON is YAML
    return path


def test_compare_recipes_trains_each_recipe_alike_and_tables_them_beside_the_base(
    eval_world, tmp_path, capsys
):
    config = _settings_file(eval_world, tmp_path / "comparison.yaml")
    output = tmp_path / "comparison"
    argv = ["compare-recipes", "--storage", str(eval_world["storage"]), "--config", str(config)]
    assert main([*argv, "--steps", "1", "--output", str(output)]) == 0

    report = json.loads((output / "report.json").read_text())
    assert report["dataset_version"] == "e1" and report["split"] == "test" and report["tiles"] == 2
    assert [row["model"] for row in report["rows"]] == ["base", "paper", "hybrid", "real tiles"]
    # the same dataset version, base model, seed and step budget for every recipe; the recipe alone differs
    configs = {
        run["recipe"]: json.loads((Path(run["run_dir"]) / "train_config.json").read_text())
        for run in report["runs"]
    }
    for cfg in configs.values():
        assert (cfg["dataset_version"], cfg["seed"], cfg["max_train_steps"]) == ("e1", 0, 1)
        assert cfg["base_model_path"] == str(eval_world["base"])
        assert json.loads((Path(cfg["output_dir"]) / "final.json").read_text())["steps"] == 1
    assert not configs["paper"]["text_encoder_lora"] and configs["hybrid"]["text_encoder_lora"]
    assert configs["hybrid"]["learned_token"] == "<sar>"
    # every model scored on the same measures; the real tiles have only what is not a distance to them
    for run in report["runs"]:
        assert set(comparison.COLUMNS) <= set(run["scores"])
    assert report["rows"][-1]["wasserstein_db"] is None and report["rows"][-1]["clip_score"] > 0

    table = (output / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    names = [line.split("|")[1].strip() for line in rows[:5]]
    assert names == ["model", "base (before fine-tuning; floor)", "paper", "hybrid", "real tiles (ceiling)"]
    assert "**" in table  # the best recipe of each column marked
    assert "| model |" in capsys.readouterr().out

    # run again: the trained runs are reused, only the scoring is redone
    finals = {p: p.stat().st_mtime_ns for p in output.glob("runs/*/final.json")}
    assert len(finals) == 2
    assert main([*argv, "--steps", "1", "--output", str(output), "--recipes", "hybrid"]) == 0
    assert {p: p.stat().st_mtime_ns for p in finals} == finals
    assert "hybrid seed 0: reusing" in capsys.readouterr().out
    rows = json.loads((output / "report.json").read_text())["rows"]
    assert [row["model"] for row in rows] == ["base", "hybrid", "real tiles"]


def test_the_budget_and_seed_are_the_comparisons_own_and_unknown_options_are_named(tmp_path):
    with pytest.raises(ConfigError, match="recipes.fast.*max_train_steps"):
        comparison.read_settings(None, {"recipes": {"fast": {"max_train_steps": 5}}})
    with pytest.raises(ConfigError, match="use_lorra"):
        comparison.read_settings(None, {"recipes": {"paper": {}, "typo": {"use_lorra": True}}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: []\n")
    with pytest.raises(ConfigError, match="bad.yaml.*seeds"):
        comparison.read_settings(bad, {})
    settings = comparison.read_settings(None, {"max_train_steps": 7, "seeds": None})
    assert settings.max_train_steps == 7 and settings.seeds == [0]
    assert list(settings.recipes) == ["paper", "hybrid", "lora"]


def test_each_column_marks_the_recipe_best_by_its_own_direction():
    real = {"speckle_enl": 10.0}
    rows = [
        {
            "model": "base",
            "wasserstein_db": 0.1,
            "clip_score": 99.0,
            "mean_difference_db": 0.0,
            "speckle_enl": 10.0,
        },
        {
            "model": "a",
            "wasserstein_db": 1.0,
            "clip_score": 30.0,
            "mean_difference_db": -0.2,
            "speckle_enl": 5.0,
        },
        {
            "model": "b",
            "wasserstein_db": 2.0,
            "clip_score": 40.0,
            "mean_difference_db": 0.5,
            "speckle_enl": 30.0,
        },
        {"model": "real tiles", "wasserstein_db": None, "clip_score": 90.0, "speckle_enl": 10.0},
    ]
    best = comparison.best_recipes(rows, real)
    # lower distance, higher adherence, mean difference nearest 0, ENL nearest the real tiles' (log scale);
    # the base model and the real tiles never compete
    assert best["wasserstein_db"] == ["a"] and best["clip_score"] == ["b"]
    assert best["mean_difference_db"] == ["a"] and best["speckle_enl"] == ["a"]
    rows[2]["wasserstein_db"] = 1.0
    assert comparison.best_recipes(rows, real)["wasserstein_db"] == ["a", "b"]  # a tie marks both
