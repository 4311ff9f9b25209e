"""The sar_clip and sar_fidelity assets and the promotion check, materialised on a tiny trained world."""

import json
from pathlib import Path

import dagster as dg
import pytest

from sar_pipeline.defs.evaluation.assets import sar_clip, sar_fidelity
from sar_pipeline.defs.evaluation.checks import sar_fidelity_beats_base
from sar_pipeline.defs.resources import StorageRoot
from sar_pipeline.evaluation import fidelity
from sar_pipeline.generation.model import default_sd_model_folder, read_latest, read_promoted, write_latest
from sar_pipeline_tests.evaluation.conftest import run_against_itself

CLIP_CONFIG = {"image_size_px": 32, "max_steps": 30, "batch_size": 8, "device": "cpu"}
FIDELITY_CONFIG = {
    "max_tiles": 2,
    "images_per_caption": 2,
    "steps": 2,
    "glcm_distances_px": [1, 2],
    "device": "cpu",
}


def _instance_with_dataset(version: str) -> dg.DagsterInstance:
    """An instance where training_dataset was materialised as ``version`` (what sar_clip reads)."""
    instance = dg.DagsterInstance.ephemeral()
    instance.report_runless_asset_event(
        dg.AssetMaterialization("training_dataset", metadata={"dataset_version": version})
    )
    return instance


def _materialise(assets, storage: Path, instance, config: dict):
    return dg.materialize(
        assets,
        resources={"storage": StorageRoot(uri=str(storage))},
        run_config={"ops": config},
        instance=instance,
        raise_on_error=False,
    )


@pytest.fixture(scope="module")
def clip_materialised(eval_world):
    instance = _instance_with_dataset("e1")
    result = _materialise([sar_clip], eval_world["storage"], instance, {"sar_clip": {"config": CLIP_CONFIG}})
    assert result.success
    return instance, result


def test_sar_clip_is_trained_saved_and_scored_against_chance(eval_world, clip_materialised):
    _, result = clip_materialised
    (materialization,) = result.asset_materializations_for_node("sar_clip")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert meta["dataset_version"] == "e1" and meta["train_pairs"] == 16
    assert (
        meta["evaluation_split"] == "test" and meta["evaluation_held_out"] and meta["evaluation_tiles"] == 2
    )
    for direction in ("text_to_image", "image_to_text"):
        for k in (1, 5):
            assert 0 <= meta[f"{direction}_r{k}"] <= 1 and 0 < meta[f"chance_{direction}_r{k}"] <= 1
    assert "R@1" in meta["retrieval"] and "loss_curve" in materialization.metadata
    folder = Path(meta["sar_clip"])
    assert folder.parent == eval_world["storage"] / "models" / "sar_clip"
    assert (folder / "model.safetensors").is_file() and (folder / "sar_clip.json").is_file()
    assert not list(folder.parent.glob(".*"))  # nothing half-written left beside it
    assert read_latest(eval_world["storage"], "sar_clip")["sar_clip"] == str(folder)


def _fidelity_run(eval_world, clip_materialised, pipeline: Path, **config):
    instance, _ = clip_materialised
    write_latest(eval_world["storage"], "sd_model", {"checkpoint": str(pipeline)})
    return _materialise(
        [sar_fidelity, sar_fidelity_beats_base],
        eval_world["storage"],
        instance,
        {"sar_fidelity": {"config": {**FIDELITY_CONFIG, **config}}},
    )


def test_sar_fidelity_scores_each_checkpoint_against_the_base_and_the_real_tiles(
    eval_world, clip_materialised, fid_inception
):
    result = _fidelity_run(
        eval_world, clip_materialised, eval_world["pipeline"], inception_path=str(fid_inception)
    )
    observations = [
        e.event_specific_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert [o.metadata["step"].value for o in observations] == [1, 2]
    assert all(o.metadata["fid"].value >= 0 for o in observations)
    (materialization,) = result.asset_materializations_for_node("sar_fidelity")
    meta = materialization.metadata
    assert meta["run"].value == "run1" and meta["tiles"].value == 2
    # one row per model: base, the two checkpoints, the real tiles (the ceiling of adherence)
    rows = meta["table"].value.records
    assert [r.data["model"].split(" (")[0] for r in rows] == [
        "base",
        "checkpoint 1",
        "checkpoint 2",
        "real tiles",
    ]
    assert all(0 <= r.data["clip_score"] <= 100 for r in rows)
    assert rows[-1].data["wasserstein_db"] is None  # the real tiles are what the others are measured against
    # with a local Inception: FID and KID columns, measured against the real tiles too
    assert all(r.data["fid"] >= 0 for r in rows[:-1]) and rows[-1].data["fid"] is None
    assert "kid" in rows[0].data and "FID (Inception-v3 features)" in meta["table_markdown"].value
    best_step = meta["best_step"].value
    assert best_step in (1, 2) and f"checkpoint {best_step} (best)" in meta["table_markdown"].value
    assert meta["best_checkpoint"].value.endswith(f"checkpoint-{best_step:08d}/pipeline")
    report = json.loads(Path(meta["report"].value).read_text())
    # the world's tiles have land cover: amplitude distances per main class too
    assert set(report["base"]["scores"]["by_landcover"]) <= {"water", "field", "forest", "urban"}
    assert report["base"]["scores"]["by_landcover"]
    assert "per main land-cover class" in meta["table_markdown"].value
    # a plot per metric against the training step, as a file under the storage root; metadata a thumbnail
    plots = Path(meta["report"].value).parent / "plots"
    assert {p.stem for p in plots.glob("*.png")} == set(fidelity.METRICS) | {"fid", "kid"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots.glob("*.png"))
    assert str(plots / "wasserstein_db.png") in meta["plot_wasserstein_db"].value
    assert len(meta["plot_wasserstein_db"].value) < 60_000

    # the check's verdict follows the promotion rule on the report's own numbers
    (check,) = result.get_asset_check_evaluations()
    best = report["checkpoints"][report["best"]]["scores"]
    assert check.passed == fidelity.beats_base(best, report["base"]["scores"])[0]


def test_a_bad_inception_file_fails_sar_fidelity_naming_it(eval_world, clip_materialised, tmp_path):
    bad = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    bad.write_bytes(b"<html>403 Forbidden</html>")  # what a failed download leaves behind
    result = _fidelity_run(eval_world, clip_materialised, eval_world["pipeline"], inception_path=str(bad))
    assert not result.success
    (failure,) = result.get_step_failure_events()
    message = failure.event_specific_data.error.to_string()
    assert f"{bad}: not a state dict torch.load(weights_only=True) can read" in message
    assert "or a .safetensors conversion of it" in message


def test_a_model_no_better_than_its_base_is_not_promoted(eval_world, clip_materialised):
    promoted_before = read_promoted(eval_world["storage"])
    pipeline = run_against_itself(eval_world, "run-self")
    result = _fidelity_run(eval_world, clip_materialised, pipeline)
    meta = result.asset_materializations_for_node("sar_fidelity")[0].metadata
    report = json.loads(Path(meta["report"].value).read_text())
    # the same weights and seeds draw the same images: not one distance apart from the base
    assert report["checkpoints"][0]["scores"]["wasserstein_db"] == report["base"]["scores"]["wasserstein_db"]
    assert not report["promotable"] and not meta["beats_base"].value
    assert "not below the base model's" in report["reasons"][0]
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and "not below the base model's" in check.description
    # no inception_path: FID/KID are simply absent, not an error
    assert "fid" not in report["base"]["scores"] and "fid" not in meta["table"].value.records[0].data
    assert "FID" not in meta["table_markdown"].value
    # a warning, not a failed run: the job (training_job, the demo) goes on, generation keeps its default
    assert check.severity == dg.AssetCheckSeverity.WARN and result.success
    assert read_promoted(eval_world["storage"]) == promoted_before


def test_the_check_promotes_a_model_that_beats_its_base_and_generation_prefers_it(
    eval_world, clip_materialised, tmp_path
):
    instance, _ = clip_materialised
    storage = eval_world["storage"]
    later = eval_world["run_dir"] / "checkpoints" / "checkpoint-00000002" / "pipeline"
    earlier = eval_world["run_dir"] / "checkpoints" / "checkpoint-00000001" / "pipeline"
    scores = {"wasserstein_db": 1.0, "clip_score": 30.0, "glcm_distance": 0.5}
    report = {
        "run": "run1",
        "dataset_version": "e1",
        "real": {"clip_score": 40.0},
        "base": {"scores": {"wasserstein_db": 4.0, "clip_score": 20.0, "glcm_distance": 2.0}},
        "checkpoints": [{"step": 1, "pipeline": str(earlier), "scores": scores}],
        "best": 0,
    }
    path = storage / "evaluation" / "hand-made-report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))
    instance.report_runless_asset_event(
        dg.AssetMaterialization("sar_fidelity", metadata={"report": dg.MetadataValue.path(str(path))})
    )
    write_latest(storage, "sd_model", {"checkpoint": str(later)})
    result = dg.materialize(
        [sar_fidelity_beats_base],
        resources={"storage": StorageRoot(uri=str(storage))},
        instance=instance,
        selection=dg.AssetSelection.checks(sar_fidelity_beats_base),
    )
    (check,) = result.get_asset_check_evaluations()
    assert check.passed
    assert read_promoted(storage)["checkpoint"] == str(earlier) and read_promoted(storage)["step"] == 1
    # generation's default is now the promoted checkpoint, not the latest sd_model
    assert default_sd_model_folder(storage) == earlier
    # where nothing was promoted, the latest sd_model
    write_latest(tmp_path, "sd_model", {"checkpoint": str(later)})
    assert default_sd_model_folder(tmp_path) == later


def test_best_checkpoint_and_the_promotion_rule_on_known_scores():
    def entry(w, g, c):
        return {"scores": {"wasserstein_db": w, "glcm_distance": g, "clip_score": c}}

    # the second is best on two of three measures
    assert fidelity.best_checkpoint([entry(3.0, 1.0, 10.0), entry(2.0, 0.5, 9.0), entry(4.0, 2.0, 11.0)]) == 1
    base = {"wasserstein_db": 2.0, "clip_score": 10.0}
    assert fidelity.beats_base({"wasserstein_db": 1.0, "clip_score": 11.0}, base) == (True, [])
    ok, reasons = fidelity.beats_base({"wasserstein_db": 1.0, "clip_score": 10.0}, base)
    assert not ok and reasons == ["SAR-CLIP score 10.000 is not above the base model's 10.000"]
    ok, reasons = fidelity.beats_base({"wasserstein_db": 2.5, "clip_score": 9.0}, base)
    assert not ok and len(reasons) == 2
