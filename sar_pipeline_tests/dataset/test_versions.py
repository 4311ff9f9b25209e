"""Incremental dataset versions: per-flight shards shared between versions, read through the manifest."""

import os

import pytest

from sar_pipeline.dataset import current_version, load_dataset_table, version_files, version_manifest
from sar_pipeline.dataset import write as dataset_write
from sar_pipeline.dataset.write import TrainingDatasetSettings, build_dataset
from sar_pipeline_tests.dataset.fixtures import make_flight

# 'hash': a tile's split depends on the tile alone, so a new flight leaves earlier shards as they are
CONFIG = TrainingDatasetSettings(
    block_size_m=300.0,
    train_fraction=0.5,
    validation_fraction=0.2,
    test_fraction=0.3,
    assignment="hash",
    row_group_size=8,
)


def first_flights(root):
    make_flight(root, "flight-a", rows=5, cols=5, rotation_deg=17.0)
    make_flight(root, "flight-b", rows=3, cols=4, origin=(501_000.0, 4_800_500.0))
    return ["flight-a", "flight-b"]


def new_flight(root):
    # over the same ground as flight-a, rotated: its tiles touch and overlap flight-a's
    make_flight(root, "flight-c", rows=4, cols=4, rotation_deg=-40.0, origin=(500_100.0, 4_799_900.0))
    return "flight-c"


def shard_files(root):
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted((root / "dataset" / "shards").rglob("*"))
        if p.is_file()
    }


def test_a_new_flight_writes_its_shard_and_reuses_the_others_byte_for_byte(tmp_path):
    flights = first_flights(tmp_path)
    first = build_dataset(tmp_path, flights, CONFIG)
    assert first.shards_written == ["flight-a", "flight-b"]
    before = shard_files(tmp_path)
    stamps = {f: os.stat(tmp_path / f).st_mtime_ns for f in before}
    rows_before = load_dataset_table(tmp_path).to_pylist()

    second = build_dataset(tmp_path, [*flights, new_flight(tmp_path)], CONFIG)
    assert second.version != first.version and current_version(tmp_path) == second.version
    assert second.shards_written == ["flight-c"]
    after = shard_files(tmp_path)
    # every earlier file is still there, same bytes, never rewritten; the new ones are flight-c's
    assert {f: after[f] for f in before} == before
    assert all(os.stat(tmp_path / f).st_mtime_ns == stamps[f] for f in before)
    added = set(after) - set(before)
    assert added and all(f.startswith("dataset/shards/flight-c/") for f in added)
    # the new version names the earlier shards themselves
    assert set(version_files(tmp_path, first.version)) < set(version_files(tmp_path, second.version))
    # the earlier version reads back the same rows as before
    assert load_dataset_table(tmp_path, version=first.version).to_pylist() == rows_before
    assert version_manifest(tmp_path, first.version)["flights"] == flights


def test_an_incremental_version_equals_one_built_from_scratch(tmp_path):
    incremental = tmp_path / "incremental"
    flights = first_flights(incremental)
    build_dataset(incremental, flights, CONFIG)
    grown = build_dataset(incremental, [*flights, new_flight(incremental)], CONFIG)
    scratch = tmp_path / "scratch"
    all_flights = [*first_flights(scratch), new_flight(scratch)]
    whole = build_dataset(scratch, all_flights, CONFIG)
    assert whole.version == grown.version and whole.files == grown.files
    assert load_dataset_table(scratch).equals(load_dataset_table(incremental))
    # the split holds across flights: no tile of one split touches a tile of another
    splits = set(load_dataset_table(scratch, columns=["split"]).column("split").to_pylist())
    assert splits == {"train", "validation", "test"}


def test_a_failed_build_leaves_the_previous_version_current_and_nothing_half_written(tmp_path, monkeypatch):
    flights = first_flights(tmp_path)
    first = build_dataset(tmp_path, flights, CONFIG)
    rows_before = load_dataset_table(tmp_path).to_pylist()
    real_writer = dataset_write.write_split_file

    def dies_writing_flight_c(storage_root, rows, target, settings):
        real_writer(storage_root, rows, target, settings)
        if rows[0]["flight_id"] == "flight-c":
            raise OSError("killed mid-write")

    monkeypatch.setattr(dataset_write, "write_split_file", dies_writing_flight_c)
    with pytest.raises(OSError, match="killed mid-write"):
        build_dataset(tmp_path, [*flights, new_flight(tmp_path)], CONFIG)
    assert current_version(tmp_path) == first.version
    assert load_dataset_table(tmp_path).to_pylist() == rows_before
    # no shard file of flight-c under its name, no version folder but the first
    assert not list((tmp_path / "dataset" / "shards" / "flight-c").glob("*.parquet"))
    assert [p.name for p in (tmp_path / "dataset").iterdir() if p.is_dir() and p.name != "shards"] == [
        first.version
    ]
    monkeypatch.undo()
    second = build_dataset(tmp_path, [*flights, "flight-c"], CONFIG)
    assert second.shards_written == ["flight-c"] and current_version(tmp_path) == second.version


def test_a_shard_file_lost_since_is_written_again(tmp_path):
    flights = first_flights(tmp_path)
    first = build_dataset(tmp_path, flights, CONFIG)
    lost = tmp_path / version_files(tmp_path)[0]
    data = lost.read_bytes()
    lost.unlink()
    again = build_dataset(tmp_path, flights, CONFIG)
    assert again.version == first.version and again.shards_written == ["flight-a"]
    assert lost.read_bytes() == data


def dataset_bytes(root):
    return sum(p.stat().st_size for p in (root / "dataset").rglob("*") if p.is_file())


def test_with_the_default_settings_a_new_flight_adds_its_shard_and_rewrites_none(tmp_path):
    # Flights of 1.6 km tiles spanning several default 5 km blocks each, the new one on new ground:
    # a split that balances shares over all blocks ('balanced') would move earlier blocks here.
    far = {"tile_px": 16, "gsd_m": 100.0}
    flights = []
    for k, origin in enumerate(
        [(500_000.0, 4_800_000.0), (520_000.0, 4_790_000.0), (480_000.0, 4_820_000.0)]
    ):
        make_flight(tmp_path, f"flight-{k}", rows=6, cols=6, origin=origin, **far)
        flights.append(f"flight-{k}")
    build_dataset(tmp_path, flights)  # no settings: every default
    before = shard_files(tmp_path)
    stamps = {f: os.stat(tmp_path / f).st_mtime_ns for f in before}
    size_before = dataset_bytes(tmp_path)

    make_flight(tmp_path, "flight-new", rows=8, cols=8, origin=(540_000.0, 4_830_000.0), **far)
    grown = build_dataset(tmp_path, [*flights, "flight-new"])
    assert grown.shards_written == ["flight-new"]
    after = shard_files(tmp_path)
    # no earlier shard file rewritten: same paths, same bytes, same modification time
    assert {f: after[f] for f in before} == before
    assert all(os.stat(tmp_path / f).st_mtime_ns == stamps[f] for f in before)
    # the new version names the earlier shard files themselves
    assert set(before) - {f for f in before if f.endswith(".json")} <= set(version_files(tmp_path))
    # storage grew by the new flight's shard, plus a version manifest and current.json (a few KB)
    new_shard = sum(len(data) for f, data in after.items() if f not in before)
    assert all(f.startswith("dataset/shards/flight-new/") for f in set(after) - set(before))
    growth = dataset_bytes(tmp_path) - size_before
    assert new_shard <= growth <= new_shard + 16_000


def test_with_a_fixed_db_range_a_flight_that_moves_the_pooled_range_rewrites_no_earlier_shard(tmp_path):
    # a new flight 15 dB brighter than the first ones: it moves the pooled percentiles' upper end
    pooled_settings = CONFIG
    fixed_settings = TrainingDatasetSettings(**{**CONFIG.model_dump(), "db_min": -30.0, "db_max": 25.0})
    written = {}
    for name, settings in (("pooled", pooled_settings), ("fixed", fixed_settings)):
        root = tmp_path / name
        flights = first_flights(root)
        build_dataset(root, flights, settings)
        before = shard_files(root)
        stamps = {f: os.stat(root / f).st_mtime_ns for f in before}
        make_flight(
            root, "flight-bright", rows=5, cols=5, origin=(502_000.0, 4_801_000.0), db_range=(-10.0, 20.0)
        )
        grown = build_dataset(root, [*flights, "flight-bright"], settings)
        written[name] = grown.shards_written
        if name == "fixed":
            after = shard_files(root)
            # no earlier shard file rewritten: same paths, same bytes, same modification time
            assert {f: after[f] for f in before} == before
            assert all(os.stat(root / f).st_mtime_ns == stamps[f] for f in before)
            assert all(f.startswith("dataset/shards/flight-bright/") for f in set(after) - set(before))
    # with the pooled range (the default) the same flight moves the range, so every shard is new
    assert written["pooled"] == ["flight-a", "flight-b", "flight-bright"]
    assert written["fixed"] == ["flight-bright"]
