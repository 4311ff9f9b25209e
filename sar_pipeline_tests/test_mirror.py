"""The model stages' local copy of an object-store root (memory:// stands in for s3:// here; the
real S3 server test is sar_pipeline_tests/ops/test_s3.py)."""

import uuid

import pytest
from upath import UPath

from sar_pipeline.errors import ConfigError
from sar_pipeline.mirror import LocalMirror


def test_local_root_is_its_own_copy(tmp_path):
    mirror = LocalMirror(tmp_path / "root", tmp_path / "cache")
    assert mirror.local("models", "sd") == tmp_path / "root" / "models" / "sd"
    assert mirror.pull("models") == 0 and mirror.push("models") == 0
    assert mirror.uri(tmp_path / "root" / "x") == str(tmp_path / "root" / "x")


def test_pull_and_push_copy_only_what_changed_markers_last(tmp_path, monkeypatch):
    root = f"memory://lake-{uuid.uuid4().hex[:8]}/prefix"
    mirror = LocalMirror(root, tmp_path / "cache")
    run = mirror.local("models", "sd", "run")
    (run / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint-2" / "checkpoint.json").write_text("{}")
    (run / "checkpoints" / "checkpoint-2" / "weights.safetensors").write_bytes(b"w" * 10)
    (run / ".partial.tmp-1").write_text("half")  # a temporary: never uploaded
    order = []
    fs = UPath(root).fs
    real_put = fs.put_file
    monkeypatch.setattr(fs, "put_file", lambda src, dst, **kw: (order.append(dst), real_put(src, dst, **kw)))
    assert mirror.push("models", "sd", "run") == 2
    assert order[-1].endswith("checkpoint.json")  # the folder is complete only once this is there
    assert mirror.push("models", "sd", "run") == 0  # unchanged: nothing sent again
    assert mirror.uri(run / "checkpoints") == f"{root}/models/sd/run/checkpoints"

    other = LocalMirror(root, tmp_path / "other")
    assert other.pull("models", "sd", "run") == 2 and other.pull("models", "sd", "run") == 0
    assert (
        other.local("models", "sd", "run", "checkpoints", "checkpoint-2", "weights.safetensors")
    ).read_bytes() == b"w" * 10
    assert other.pull("nothing", "here") == 0

    # a rotated checkpoint disappears remotely too when pushed with prune
    (run / "checkpoints" / "checkpoint-2" / "weights.safetensors").unlink()
    mirror.push("models", "sd", "run", prune=True)
    assert not UPath(f"{root}/models/sd/run/checkpoints/checkpoint-2/weights.safetensors").exists()


def test_pointer_files_rewritten_at_the_same_size_are_transferred(tmp_path):
    """``latest.json`` naming checkpoint-4 instead of checkpoint-2 has the same size: a copy that
    compared sizes only would keep the old pointer on the other machine (and on the root)."""
    root = f"memory://lake-{uuid.uuid4().hex[:8]}/prefix"
    writer, reader = LocalMirror(root, tmp_path / "a"), LocalMirror(root, tmp_path / "b")
    pointer = writer.local("models", "sd", "latest.json")
    pointer.parent.mkdir(parents=True)
    for step in (2, 4):
        pointer.write_text(f'{{"checkpoint": "checkpoint-{step}"}}')
        assert writer.push("models", "sd", "latest.json") == 1
        assert reader.pull("models", "sd", "latest.json") == 1
        assert reader.local("models", "sd", "latest.json").read_text() == pointer.read_text()


def test_stored_parts_of_uris_relative_and_local_copy_paths(tmp_path):
    root = f"memory://lake-{uuid.uuid4().hex[:8]}/prefix"
    mirror = LocalMirror(root, tmp_path / "cache")
    parts = ("models", "sd", "run", "checkpoints", "checkpoint-2", "pipeline")
    assert mirror.stored_parts(f"{root}/{'/'.join(parts)}") == parts  # asset metadata
    assert mirror.stored_parts("/".join(parts)) == parts  # a pointer
    assert mirror.stored_parts(mirror.local(*parts)) == parts  # an older pointer on this machine
    assert mirror.stored_parts(tmp_path / "weights" / "sd15") is None  # outside the root
    assert mirror.stored_parts("memory://other/models/sd") is None
    with pytest.raises(ConfigError, match="climb"):
        mirror.stored_parts("models/../../etc")
    local = LocalMirror(tmp_path / "root", tmp_path / "cache")
    assert local.stored_parts(tmp_path / "root" / "models" / "sd") == ("models", "sd")
    assert local.pull_recorded(tmp_path / "root" / "models") == tmp_path / "root" / "models"
