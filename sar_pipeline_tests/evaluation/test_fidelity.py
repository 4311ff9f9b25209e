"""sar_fidelity's parts that need no model: which split is held out, the table and the plots of a report."""

import json

import pytest

from sar_pipeline.errors import ConfigError, ModelError
from sar_pipeline.evaluation import fidelity
from sar_pipeline.evaluation.tiles import evaluation_split


def _dataset_info(storage, counts):
    folder = storage / "dataset" / "v1"
    folder.mkdir(parents=True)
    (folder / "dataset_info.json").write_text(json.dumps({"version": "v1", "row_counts": counts}))


def test_the_evaluation_split_is_test_else_validation_else_train_marked_not_held_out(tmp_path):
    _dataset_info(tmp_path / "a", {"train": 5, "validation": 2, "test": 0})
    assert evaluation_split(tmp_path / "a", "v1") == ("validation", True)
    _dataset_info(tmp_path / "b", {"train": 5, "validation": 2, "test": 1})
    assert evaluation_split(tmp_path / "b", "v1") == ("test", True)
    # the CPU demo's few tiles may all lie in train blocks
    _dataset_info(tmp_path / "c", {"train": 5, "validation": 0, "test": 0})
    assert evaluation_split(tmp_path / "c", "v1") == ("train", False)
    _dataset_info(tmp_path / "d", {"train": 0, "validation": 0, "test": 0})
    with pytest.raises(ConfigError, match="dataset version v1.*no tile to evaluate"):
        evaluation_split(tmp_path / "d", "v1")


def _scores(w1, clip, classes=("water",)):
    scores = {key: 0.5 for key in fidelity.METRICS}
    scores.update(wasserstein_db=w1, clip_score=clip)
    scores["by_landcover"] = {c: {"tiles": 3, "wasserstein_db": w1 + 1} for c in classes}
    return scores


def test_the_table_has_a_row_per_checkpoint_and_names_the_best():
    report = {
        "real": {"speckle_cv": 1.0, "speckle_enl": 4.0, "clip_score": 40.0, "retrieval_r1": 0.9},
        "base": {"scores": _scores(5.0, 10.0)},
        "checkpoints": [
            {"step": 100, "scores": _scores(3.0, 20.0)},
            {"step": 200, "scores": _scores(2.0, 25.0)},
        ],
        "best": 1,
    }
    rows = fidelity.table_rows(report)
    assert [r["model"] for r in rows] == [
        "base (before fine-tuning)",
        "checkpoint 100",
        "checkpoint 200 (best)",
        "real tiles (ceiling)",
    ]
    assert rows[-1]["wasserstein_db"] is None and rows[-1]["clip_score"] == 40.0
    table = fidelity.markdown_table(report)
    assert "| checkpoint 200 (best) | 2 |" in table
    assert "| water (3 tiles) |" in table and "| checkpoint 100 | 4 |" in table
    plots = fidelity.metric_plots(report)
    assert set(plots) == set(fidelity.METRICS)
    assert all(png.startswith(b"\x89PNG") for png in plots.values())


def test_fid_and_kid_columns_appear_only_where_they_were_computed():
    def report(with_inception: bool):
        extra = {"fid": 12.0, "kid": 0.01, "kid_std": 0.002} if with_inception else {}
        return {
            "real": {"speckle_cv": 1.0, "speckle_enl": 4.0, "clip_score": 40.0, "retrieval_r1": 0.9},
            "base": {"scores": {**_scores(5.0, 10.0), **extra}},
            "checkpoints": [{"step": 100, "scores": {**_scores(3.0, 20.0), **extra}}],
            "best": 0,
        }

    plain = report(False)
    assert "fid" not in fidelity.table_rows(plain)[0] and "FID" not in fidelity.markdown_table(plain)
    assert set(fidelity.metric_plots(plain)) == set(fidelity.METRICS)
    measured = report(True)
    rows = fidelity.table_rows(measured)
    assert rows[0]["fid"] == 12.0 and rows[1]["kid"] == 0.01 and rows[-1]["fid"] is None
    assert (
        "| FID (Inception-v3 features) | KID (Inception-v3, mean over subsets) |"
        in fidelity.markdown_table(measured)
    )
    assert set(fidelity.metric_plots(measured)) == set(fidelity.METRICS) | {"fid", "kid"}


def test_the_base_model_is_looked_for_in_this_machines_copy_of_the_storage_root(tmp_path):
    """A run trained on another machine recorded its paths there: the tiny base it kept in the storage
    root is found in this machine's copy; weights outside the root must be at the recorded path."""
    here = tmp_path / "here"
    (here / "models" / "tiny-base" / "v1").mkdir(parents=True)
    config = {
        "storage_root": "/cache/training-host/s3/lake",
        "base_model_path": "/cache/training-host/s3/lake/models/tiny-base/v1",
    }
    assert fidelity.base_model_path_here(config, here) == here / "models" / "tiny-base" / "v1"
    local = tmp_path / "weights" / "sd15"
    local.mkdir(parents=True)
    assert fidelity.base_model_path_here({**config, "base_model_path": str(local)}, here) == local
    with pytest.raises(
        ModelError,
        match=r"/opt/weights/sd15: the base model the run was fine-tuned from .*not on this machine",
    ):
        fidelity.base_model_path_here({**config, "base_model_path": "/opt/weights/sd15"}, here)
    with pytest.raises(ModelError, match="tiny-base/v2: the base model"):
        fidelity.base_model_path_here(
            {**config, "base_model_path": config["base_model_path"][:-1] + "2"}, here
        )
    with pytest.raises(ConfigError, match=r"train_config\.json: cannot read the run's training config"):
        fidelity.read_train_config(tmp_path)
