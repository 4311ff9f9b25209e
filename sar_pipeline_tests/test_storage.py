import pytest

from sar_pipeline.errors import ConfigError
from sar_pipeline.storage import atomic_local_dir, atomic_write_bytes, validate_id


@pytest.mark.parametrize("bad", ["", "a/b", "..", "a..b", "../etc", "/abs", ".hidden", "x" * 201])
def test_ids_that_would_escape_or_hide_are_refused_with_the_value_named(bad):
    with pytest.raises(ConfigError, match="not a valid flight id"):
        validate_id(bad, "flight id")


def test_atomic_write_leaves_nothing_behind_on_error(tmp_path):
    target = tmp_path / "out" / "file.bin"
    atomic_write_bytes(target, b"first")
    with pytest.raises(RuntimeError), atomic_local_dir(tmp_path / "ckpt") as d:
        (d / "weights").write_bytes(b"half")
        raise RuntimeError("killed while writing")
    assert target.read_bytes() == b"first"
    assert not (tmp_path / "ckpt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left visible


def test_model_stages_work_in_a_local_copy_of_a_remote_root(tmp_path):
    from sar_pipeline.defs.resources import StorageRoot

    local = StorageRoot(uri="/tmp/sar-storage")
    assert str(local.local_path("models", "sd")) == "/tmp/sar-storage/models/sd"
    remote = StorageRoot(uri="memory://bucket/root", cache_dir=str(tmp_path / "cache"))
    folder = remote.local_path("models", "sd")
    assert folder == tmp_path / "cache" / "memory" / "bucket" / "root" / "models" / "sd"
    assert remote.uri_of(folder / "run") == "memory://bucket/root/models/sd/run"
    with pytest.raises(ConfigError, match="not a valid path component"):
        remote.local_path("..", "etc")


def _listing(folder):
    return {p.name: p.read_text() for p in folder.iterdir()}


def test_a_folder_republished_on_object_storage_is_never_seen_half_uploaded(monkeypatch):
    """On s3:// a folder is uploaded under a new version and pointed at last: a reader sees the old
    folder whole until the pointer moves, then the new one whole, never stale or mixed objects."""
    import uuid

    from upath import UPath

    from sar_pipeline.storage import publish_dir, resolve_dir

    root = UPath(f"memory://sar-{uuid.uuid4().hex[:8]}/storage")
    target = root / "flights" / "f1" / "sar_tiles"
    with publish_dir(target) as publication:
        for name in ("a.png", "b.png", "stale.png"):
            (publication.local / name).write_text("v1")
    first = resolve_dir(target)
    assert first != target and first.name.startswith("sar_tiles@") and publication.final == first
    assert _listing(first) == {"a.png": "v1", "b.png": "v1", "stale.png": "v1"}

    seen_during_upload = []
    fs = target.fs
    real_put_file = fs.put_file

    def put_file_and_look(lpath, rpath, **kwargs):
        real_put_file(lpath, rpath, **kwargs)
        seen_during_upload.append(_listing(resolve_dir(target)))  # a reader, between two objects

    monkeypatch.setattr(fs, "put_file", put_file_and_look)
    with publish_dir(target) as publication:
        for name in ("a.png", "b.png"):
            (publication.local / name).write_text("v2")
    monkeypatch.undo()
    assert len(seen_during_upload) >= 2  # (fsspec may also put the folder itself)
    assert all(view == {"a.png": "v1", "b.png": "v1", "stale.png": "v1"} for view in seen_during_upload)
    assert _listing(resolve_dir(target)) == {"a.png": "v2", "b.png": "v2"}  # no stale object

    # a failed upload publishes nothing and leaves no version behind; the previous one stays current
    def failing_put(*args, **kwargs):
        raise OSError("connection reset")

    monkeypatch.setattr(fs, "put", failing_put)
    with pytest.raises(OSError, match="connection reset"), publish_dir(target) as publication:
        (publication.local / "a.png").write_text("v3")
    monkeypatch.undo()
    assert _listing(resolve_dir(target)) == {"a.png": "v2", "b.png": "v2"}
    # only the current version and the one before it (for readers that resolved it a moment ago) stay
    with publish_dir(target) as publication:
        (publication.local / "a.png").write_text("v4")
    versions = sorted(p.name for p in target.parent.iterdir() if p.name.startswith("sar_tiles@"))
    assert len(versions) == 2 and resolve_dir(target).name == versions[-1]


def test_a_locally_republished_folder_replaces_the_old_one_whole(tmp_path):
    from sar_pipeline.storage import publish_dir, resolve_dir

    target = tmp_path / "sar_tiles"
    for version, names in (("v1", ("a", "stale")), ("v2", ("a",))):
        with publish_dir(target) as publication:
            for name in names:
                (publication.local / name).write_text(version)
        assert str(publication.final) == str(target)
    assert _listing(resolve_dir(target)) == {"a": "v2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sar_tiles"]
