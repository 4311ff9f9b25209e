"""Model pointers (``models/<kind>/latest.json``, ``models/sd/promoted.json``) name their model
relative to the storage root, so another machine with its own copy of the root finds (and pulls)
it; memory:// stands in for s3:// here (the S3 server test is sar_pipeline_tests/ops/test_s3.py)."""

import json
import uuid

import pytest

from sar_pipeline.errors import ModelError
from sar_pipeline.generation.model import (
    default_sd_model,
    latest_model_folder,
    read_latest,
    write_latest,
    write_promoted,
)
from sar_pipeline.mirror import LocalMirror

RUN = ("models", "sd", "run-a")


def _checkpoint(mirror: LocalMirror, step: int):
    """A checkpoint in the layout training writes: pipeline/, checkpoint.json, optimizer state."""
    folder = mirror.local(*RUN, "checkpoints", f"checkpoint-{step:08d}")
    (folder / "pipeline").mkdir(parents=True)
    (folder / "pipeline" / "model_index.json").write_text("{}")
    (folder / "optimizer.bin").write_bytes(b"o" * 100)
    (folder / "checkpoint.json").write_text(json.dumps({"step": step}))
    return folder / "pipeline"


def test_a_model_written_on_one_machine_is_pulled_by_another(tmp_path):
    root = f"memory://lake-{uuid.uuid4().hex[:8]}/storage"
    trainer, generator = LocalMirror(root, tmp_path / "a"), LocalMirror(root, tmp_path / "b")
    latest, promoted = _checkpoint(trainer, 4), _checkpoint(trainer, 2)
    trainer.local(*RUN, "train_config.json").write_text(json.dumps({"storage_root": str(trainer.local_root)}))
    trainer.push(*RUN)
    write_latest(trainer, "sd_model", {"checkpoint": str(latest), "run": "run-a"})
    pointer = json.loads(trainer.local("models", "sd", "latest.json").read_text())
    assert pointer["checkpoint"] == "models/sd/run-a/checkpoints/checkpoint-00000004/pipeline"

    # the other machine: an empty copy; the pointer and the model come from the root
    here = latest_model_folder(generator, "sd_model")
    assert here == generator.local(*RUN, "checkpoints", "checkpoint-00000004", "pipeline")
    assert (here / "model_index.json").is_file() and (here.parent / "checkpoint.json").is_file()
    assert generator.local(*RUN, "train_config.json").is_file()  # what loading reads beside it
    assert not (here.parent / "optimizer.bin").exists()  # not what generation needs
    assert read_latest(generator, "sd_model")["checkpoint"] == str(here)

    # promoted on the first machine: the other one now prefers it
    write_promoted(trainer, {"checkpoint": str(promoted), "step": 2})
    assert default_sd_model(generator) == (
        generator.local(*RUN, "checkpoints", "checkpoint-00000002", "pipeline"),
        "promoted",
    )
    # what a Dagster instance recorded (a storage URI) is pulled the same way
    third = LocalMirror(root, tmp_path / "c")
    uri = f"{root}/models/sd/run-a/checkpoints/checkpoint-00000004/pipeline"
    assert latest_model_folder(third, "sd_model", uri) == third.local(
        *RUN, "checkpoints", "checkpoint-00000004", "pipeline"
    )
    assert (third.local(*RUN, "checkpoints", "checkpoint-00000004", "pipeline", "model_index.json")).is_file()


def test_a_pointer_with_an_absolute_path_is_still_read(tmp_path):
    """Pointers written before they were relative name the writing machine's path: read as is."""
    storage, weights = tmp_path / "storage", tmp_path / "weights" / "pipeline"
    weights.mkdir(parents=True)
    pointer = storage / "models" / "sd" / "latest.json"
    pointer.parent.mkdir(parents=True)
    pointer.write_text(json.dumps({"checkpoint": str(weights)}))
    assert latest_model_folder(storage, "sd_model") == weights
    # a folder outside the storage root stays absolute when written
    write_latest(storage, "sd_model", {"checkpoint": str(weights)})
    assert json.loads(pointer.read_text())["checkpoint"] == str(weights)
    weights.rmdir()
    with pytest.raises(ModelError, match="gone"):
        latest_model_folder(storage, "sd_model")
