"""The model stages' local copy of an object-store root (memory:// stands in for s3:// here; the
real S3 server test is sar_pipeline_tests/ops/test_s3.py)."""

import uuid

from upath import UPath

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
