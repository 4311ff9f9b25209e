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


def test_model_stages_refuse_a_remote_storage_root_with_the_reason():
    from sar_pipeline.defs.resources import StorageRoot

    local = StorageRoot(uri="/tmp/sar-storage")
    assert str(local.local_path("models", "sd")) == "/tmp/sar-storage/models/sd"
    with pytest.raises(ConfigError, match=r"storage.uri=memory://bucket/root.*local or mounted storage root"):
        StorageRoot(uri="memory://bucket/root").local_path("models", "sd")
