"""Retention: the last N dataset versions, latent caches and checkpoints are kept, plus the best and
whatever a pointer references; everything else goes."""

import json
import os
from pathlib import Path

import pytest

from sar_pipeline.dataset import current_version, load_dataset_table, version_files
from sar_pipeline.dataset.write import TrainingDatasetSettings, build_dataset
from sar_pipeline.diffusion.checkpoint import list_checkpoints, publish_checkpoint
from sar_pipeline.errors import ConfigError
from sar_pipeline.generation.model import write_latest, write_promoted
from sar_pipeline.retention import (
    SHARD_GRACE_S,
    checkpoints_to_keep,
    prune_dataset_versions,
    prune_latent_caches,
)
from sar_pipeline_tests.dataset.fixtures import make_flight

CONFIG = TrainingDatasetSettings(block_size_m=1e6, assignment="hash")
LATER = 10 * SHARD_GRACE_S  # "now" for pruning: every shard written by the test is past its grace


def _age(path: Path, seconds_ago: float) -> None:
    stamp = path.stat().st_mtime - seconds_ago
    os.utime(path, (stamp, stamp))


def four_versions(root: Path) -> list[str]:
    """Versions of flights {0}, {0, 1}, {0, 1, 2}, {0, 1, 3}, oldest first (manifests a minute apart):
    flight-2's shard is named by the third version alone."""
    for k in range(4):
        make_flight(root, f"flight-{k}", rows=1, cols=2, origin=(500_000.0 + 5000 * k, 4_800_000.0))
    flight_sets = [[0], [0, 1], [0, 1, 2], [0, 1, 3]]
    versions = [build_dataset(root, [f"flight-{k}" for k in ks], CONFIG).version for ks in flight_sets]
    for age, version in enumerate(reversed(versions)):
        _age(root / "dataset" / version / "manifest.json", 60.0 * age)
    return versions


def test_keeps_the_last_versions_the_current_and_a_checkpoints_and_their_shards(tmp_path):
    versions = four_versions(tmp_path)
    # a checkpoint trained on the oldest version: it stays, although beyond the last two
    checkpoint = tmp_path / "models" / "sd" / "run-a" / "checkpoints" / "checkpoint-00000010"
    checkpoint.mkdir(parents=True)
    (checkpoint / "checkpoint.json").write_text(json.dumps({"dataset_version": versions[0]}))
    # the current pointer moved back to the second version (a rebuild of its inputs)
    pointer = tmp_path / "dataset" / "current.json"
    pointer.write_text(json.dumps({"version": versions[1]}))

    result = prune_dataset_versions(tmp_path, keep_last=1, now=os.path.getmtime(pointer) + LATER)
    assert sorted(result.kept) == sorted([versions[3], versions[1], versions[0]])
    assert versions[2] in result.deleted and not (tmp_path / "dataset" / versions[2]).exists()
    # every kept version still reads whole; the shards only the deleted one named are gone
    for version in result.kept:
        assert all((tmp_path / f).is_file() for f in version_files(tmp_path, version))
        assert load_dataset_table(tmp_path, version=version).num_rows > 0
    assert current_version(tmp_path) == versions[1]
    kept_files = {f for v in result.kept for f in version_files(tmp_path, v)}
    on_disk = {
        p.relative_to(tmp_path).as_posix() for p in (tmp_path / "dataset" / "shards").rglob("*.parquet")
    }
    assert on_disk == kept_files
    assert not (tmp_path / "dataset" / "shards" / "flight-2").exists()
    assert not list((tmp_path / "dataset").glob(".*"))  # nothing half deleted left behind


def test_a_shard_just_written_is_never_deleted(tmp_path):
    versions = four_versions(tmp_path)
    result = prune_dataset_versions(tmp_path, keep_last=1)  # now: the shards are seconds old
    assert set(result.deleted) == set(versions[:3])
    # flight-2's shard, named by no kept version, was written moments ago: a build may be about to
    # publish a manifest naming it
    assert list((tmp_path / "dataset" / "shards" / "flight-2").glob("*.parquet"))
    with pytest.raises(ConfigError, match="keep_versions.*at least one"):
        prune_dataset_versions(tmp_path, keep_last=0)


def test_keeps_the_last_latent_caches_and_those_of_pointed_versions(tmp_path):
    for age, version in enumerate(["v4", "v3", "v2", "v1"]):
        index = tmp_path / "latents" / version / "vae-1" / "index.json"
        index.parent.mkdir(parents=True)
        index.write_text("{}")
        _age(index, 60.0 * age)
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "current.json").write_text(json.dumps({"version": "v1"}))
    write_latest(tmp_path, "sd_model", {"checkpoint": str(tmp_path / "elsewhere"), "dataset_version": "v2"})
    result = prune_latent_caches(tmp_path, keep_last=1)
    assert sorted(result.kept) == ["v1", "v2", "v4"] and result.deleted == ["v3"]
    assert sorted(p.name for p in (tmp_path / "latents").iterdir()) == ["v1", "v2", "v4"]


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _checkpoint(run: Path, step: int, validation_loss: float | None) -> Path:
    partial = run / "checkpoints" / f"checkpoint-{step:08d}.partial"
    (partial / "pipeline").mkdir(parents=True)
    (partial / "pipeline" / "model_index.json").write_text("{}")
    return partial


def test_checkpoints_keep_the_last_the_best_and_the_pointed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # relative pointers resolve under the storage root, not here
    run = tmp_path / "models" / "sd" / "run-a"
    losses = {10: 0.30, 20: 0.12, 30: 0.25, 40: 0.20, 50: None, 60: 0.22}
    pipeline = "models/sd/run-a/checkpoints/checkpoint-{:08d}/pipeline"
    # generation's pointers: the latest sd_model names step 30, the promoted one step 10
    write_latest(tmp_path, "sd_model", {"checkpoint": str(tmp_path / pipeline.format(30)), "run": "run-a"})
    write_promoted(tmp_path, {"checkpoint": str(tmp_path / pipeline.format(10))})
    stored = {
        name: _json(tmp_path / "models" / "sd" / f"{name}.json")["checkpoint"]
        for name in ("latest", "promoted")
    }
    assert stored == {"latest": pipeline.format(30), "promoted": pipeline.format(10)}  # relative to the root
    # a pointer written before pointers were relative: an absolute path (the ControlNet's sd_model)
    old = tmp_path / "models" / "controlnet" / "latest.json"
    old.parent.mkdir(parents=True)
    old.write_text(
        json.dumps({"controlnet": "/elsewhere/controlnet", "sd_model": str(tmp_path / pipeline.format(40))})
    )
    for step, loss in losses.items():
        publish_checkpoint(
            _checkpoint(run, step, loss),
            {"step": step, "validation_loss": loss},
            keep_last=2,
            storage_root=tmp_path,
        )
    kept = [int(c.name.split("-")[1]) for c in list_checkpoints(run)]
    # last two (50, 60), the best held-out loss (20), the pointed ones (latest 30, promoted 10, old 40)
    assert kept == [10, 20, 30, 40, 50, 60]
    old.unlink()
    publish_checkpoint(_checkpoint(run, 70, None), {"step": 70}, keep_last=2, storage_root=tmp_path)
    assert [int(c.name.split("-")[1]) for c in list_checkpoints(run)] == [10, 20, 30, 60, 70]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    # 0 keeps everything
    everything = list_checkpoints(run)
    assert checkpoints_to_keep(everything, 0) == set(everything)


@pytest.fixture(scope="module")
def s3_lake():
    """moto's S3 server on 127.0.0.1 (the one the S3 tests start) with an empty bucket ``lake``."""
    import boto3

    from sar_pipeline_tests.services import S3Server

    with S3Server() as server, pytest.MonkeyPatch.context() as patch:
        for key, value in server.env().items():
            patch.setenv(key, value)
        client = boto3.client("s3")
        client.create_bucket(Bucket="lake")
        yield client


def _keys(client, prefix: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="lake", Prefix=prefix)
    return {item["Key"][len(prefix) :] for page in pages for item in page.get("Contents", [])}


def test_on_s3_keeps_the_last_the_current_and_the_pointed_versions_and_their_shards(s3_lake, tmp_path):
    import time

    local, root = tmp_path / "flights", "s3://lake/storage"
    for k in range(4):
        make_flight(local, f"flight-{k}", rows=1, cols=2, origin=(500_000.0 + 5000 * k, 4_800_000.0))
    for path in sorted(local.rglob("*")):
        if path.is_file():
            s3_lake.upload_file(str(path), "lake", "storage/" + path.relative_to(local).as_posix())
    versions = []
    for ks in [[0], [0, 1], [0, 1, 2], [0, 1, 3]]:
        versions.append(build_dataset(root, [f"flight-{k}" for k in ks], CONFIG).version)
        time.sleep(1.1)  # versions are dated by their pointer's LastModified (whole seconds on S3)
    # the current pointer moved back to the second version; the promoted model was trained on the first
    s3_lake.put_object(
        Bucket="lake", Key="storage/dataset/current.json", Body=json.dumps({"version": versions[1]}).encode()
    )
    promoted = tmp_path / "promoted"
    write_promoted(promoted, {"checkpoint": "elsewhere", "dataset_version": versions[0]})
    s3_lake.upload_file(str(promoted / "models/sd/promoted.json"), "lake", "storage/models/sd/promoted.json")
    # a version folder no pointer names: the upload of a build killed before it wrote the pointer
    abandoned = "dataset/0123456789abcdef@20250101T000000000000-deadbeef/manifest.json"
    s3_lake.put_object(Bucket="lake", Key="storage/" + abandoned, Body=b"{}")
    # the model stages' local copy holds a latest.json naming the third version
    mirror = tmp_path / "cache"
    write_latest(mirror, "sd_model", {"checkpoint": "elsewhere", "dataset_version": versions[2]})
    flight_2 = {k for k in _keys(s3_lake, "storage/") if k.startswith("dataset/shards/flight-2/")}
    assert flight_2

    # every version is pointed at or among the last: nothing goes
    assert prune_dataset_versions(root, keep_last=1, pointer_roots=[mirror]).deleted == []
    # without the local copy's pointer the third version goes, but its shard was written moments ago
    result = prune_dataset_versions(root, keep_last=1)
    assert result.deleted == [versions[2]]
    assert sorted(result.kept) == sorted([versions[3], versions[1], versions[0]])
    keys = _keys(s3_lake, "storage/")
    assert not {k for k in keys if k.startswith(f"dataset/{versions[2]}")}  # pointer and folder
    assert flight_2 <= keys and abandoned in keys

    # past the grace time the shard only the deleted version named goes, and so does the abandoned upload
    later = prune_dataset_versions(root, keep_last=1, now=time.time() + LATER)
    assert set(later.deleted) == flight_2 | {abandoned}
    keys = _keys(s3_lake, "storage/")
    kept_files = {f for v in result.kept for f in version_files(root, v)}
    assert {k for k in keys if k.startswith("dataset/shards/") and k.endswith(".parquet")} == kept_files
    for version in result.kept:
        assert load_dataset_table(root, version=version).num_rows > 0
    assert current_version(root) == versions[1]
