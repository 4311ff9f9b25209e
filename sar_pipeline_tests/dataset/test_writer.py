import json

import geopandas
import pandas
import pyarrow.parquet as pq
import pytest
import shapely
from PIL import Image

from sar_pipeline.dataset import (
    current_version,
    dataset_info,
    dataset_split_paths,
    huggingface_data_files,
    load_dataset_table,
)
from sar_pipeline.dataset.collect import DatasetError
from sar_pipeline.dataset.split import leaking_pairs
from sar_pipeline.dataset.write import TrainingDatasetSettings, build_dataset
from sar_pipeline.errors import ConfigError, RasterError
from sar_pipeline_tests.dataset.fixtures import make_flight

# 'balanced': two small flights (a few dozen blocks) still get every split, and train in both flights
CONFIG = TrainingDatasetSettings(
    block_size_m=200.0,
    train_fraction=0.5,
    validation_fraction=0.2,
    test_fraction=0.3,
    row_group_size=8,
    assignment="balanced",
)


def two_flights(root):
    make_flight(root, "flight-a", rows=6, cols=6, rotation_deg=17.0, landcover=True)
    make_flight(root, "flight-b", rows=4, cols=5, origin=(501_500.0, 4_801_000.0))
    return ["flight-a", "flight-b"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("storage")
    result = build_dataset(root, two_flights(root), CONFIG)
    return root, result


def test_writes_three_splits_and_a_pointer(built):
    root, result = built
    assert current_version(root) == result.version
    pointer = json.loads((root / "dataset" / "current.json").read_text())
    # one shard file per flight and split, each under its flight's folder
    assert pointer["splits"] == result.files
    assert [rel.split("/")[:3] for rel in result.files["train"]] == [
        ["dataset", "shards", "flight-a"],
        ["dataset", "shards", "flight-b"],
    ]
    assert all((root / rel).is_file() for files in result.files.values() for rel in files)
    assert (root / "dataset" / result.version / "manifest.json").is_file()
    assert sum(result.row_counts.values()) + result.dropped_guard_tiles == 56
    assert all(n > 0 for n in result.row_counts.values()), result.row_counts
    assert dataset_info(root)["flights"] == ["flight-a", "flight-b"]


def test_pyarrow_reads_every_column(built, tmp_path):
    root, result = built
    table = pq.read_table(root / result.files["train"][0])
    assert (
        table.num_rows + pq.read_table(root / result.files["train"][1]).num_rows == result.row_counts["train"]
    )
    row = table.slice(0, 1).to_pylist()[0]
    assert row["text"].startswith("An aerial view")
    assert row["image"]["bytes"][:8] == b"\x89PNG\r\n\x1a\n"
    assert row["image"]["path"].startswith(f"flights/{row['flight_id']}/sar_tiles/")
    assert row["optical_image"]["bytes"][:4] == b"\x89PNG"
    assert row["frequency_band"] == "X" and row["polarizations"] == ["HH"]
    assert row["incidence_angle_deg"] == 45.0 and row["ground_sample_distance_m"] == 8.0
    # one dB range for the whole dataset: the pooled 0.5/99.5 percentiles of the tiles' valid pixels
    # (the fixture tiles are uniform levels 1–255 over -25…5 dB: about -24.9 and 4.9), rounded to 0.5 dB
    info = dataset_info(root)
    assert row["db_min"] == info["radiometry"]["db_min"] and row["bit_depth"] == 8
    assert (row["db_min"], row["db_max"]) == (-25.0, 5.0)
    assert row["normalisation"] == "db" and row["value_unit"] == "db" and row["amplitude_scale"] is None
    unrounded = build_dataset(tmp_path, two_flights(tmp_path), CONFIG.model_copy(update={"range_step_db": 0}))
    assert -25.0 < unrounded.rows[0]["db_min"] < -24.5 and 4.5 < unrounded.rows[0]["db_max"] < 5.0
    assert row["acquisition_datetime"].isoformat() == "2024-05-17T10:30:00+00:00"
    assert len(row["transform"]) == 6 and row["crs"] == "EPSG:32631"
    assert row["split"] == "train" and row["captioner_id"] == "template"
    # rows are sorted by flight, scene, tile row, tile column
    keys = list(
        zip(*(table.column(c).to_pylist() for c in ("flight_id", "tile_row", "tile_col")), strict=True)
    )
    assert keys == sorted(keys)


def test_geopandas_reads_the_footprints(built):
    root, result = built
    frames = []
    for test_file in result.files["test"]:  # each shard is a GeoParquet file of its own
        frame = geopandas.read_parquet(root / test_file)
        assert frame.crs.equals("OGC:CRS84") or frame.crs.to_epsg() == 4326
        assert set(frame.geometry.geom_type) == {"Polygon"}
        geo = json.loads(pq.read_schema(root / test_file).metadata[b"geo"])
        assert geo["version"] == "1.1.0" and geo["columns"]["geometry"]["bbox"] == pytest.approx(
            list(frame.total_bounds)
        )
        frames.append(frame)
    assert sum(len(f) for f in frames) == result.row_counts["test"]
    # footprints near 3°E 43.3°N (UTM 31N 500 km E, 4800 km N)
    minx, miny, maxx, maxy = pandas.concat(frames).total_bounds
    assert 2.9 < minx < maxx < 3.1 and 43.2 < miny < maxy < 43.4
    # the reader's table carries the bbox over every shard it read
    table = load_dataset_table(root, split="test")
    bbox = json.loads(table.schema.metadata[b"geo"])["columns"]["geometry"]["bbox"]
    assert bbox == pytest.approx([minx, miny, maxx, maxy])


def test_huggingface_datasets_yields_pil_images_and_text(built, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    root, result = built
    ds = datasets.load_dataset(
        "parquet",
        data_files=huggingface_data_files(root),
        cache_dir=str(tmp_path / "hf-cache"),
        split="train",
    )
    assert len(ds) == result.row_counts["train"]
    assert isinstance(ds.features["image"], datasets.Image)
    item = ds[0]
    assert isinstance(item["image"], Image.Image) and item["image"].size == (16, 16)
    assert isinstance(item["optical_image"], Image.Image) and item["optical_image"].mode == "RGB"
    assert item["text"].startswith("An aerial view")


def test_huggingface_loads_every_split_and_skips_empty_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    make_flight(tmp_path, "flight-f", rows=2, cols=2)
    # one huge block: every tile in one split, the other two files are empty
    result = build_dataset(tmp_path, ["flight-f"], TrainingDatasetSettings(block_size_m=1e6))
    (only,) = [s for s, n in result.row_counts.items() if n]
    # the empty splits have no shard file; they read back as empty tables of the full schema
    assert all(result.files[s] == [] for s in result.files if s != only)
    assert all(load_dataset_table(tmp_path, split=s).num_rows == 0 for s in result.files if s != only)
    files = huggingface_data_files(tmp_path)
    assert list(files) == [only]
    ds = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "hf-cache"))
    assert ds[only].num_rows == 4 and isinstance(ds[only][0]["image"], Image.Image)


def test_no_test_tile_touches_a_train_tile_in_the_files(built):
    root, _ = built
    table = load_dataset_table(root, columns=["geometry", "split"])
    geoms = list(shapely.from_wkb(table.column("geometry").to_pylist()))
    splits = table.column("split").to_pylist()
    assert leaking_pairs(geoms, splits, tolerance_m=1.0) == []
    test = [g for g, s in zip(geoms, splits, strict=True) if s == "test"]
    train = [g for g, s in zip(geoms, splits, strict=True) if s == "train"]
    assert test and train
    assert not any(a.intersects(b) for a in test for b in train)


def test_same_inputs_give_byte_identical_files(built, tmp_path):
    root, result = built
    again = build_dataset(root, ["flight-b", "flight-a"], CONFIG)
    assert again.version == result.version
    other_root = tmp_path / "other"
    elsewhere = build_dataset(other_root, two_flights(other_root), CONFIG)
    assert elsewhere.version == result.version
    assert elsewhere.files == result.files
    for files in result.files.values():
        for rel in files:
            assert (root / rel).read_bytes() == (other_root / rel).read_bytes(), rel
    # a different split config is a different dataset
    changed = TrainingDatasetSettings(block_size_m=200.0, seed=1, row_group_size=8)
    assert build_dataset(other_root, ["flight-a", "flight-b"], changed).version != result.version
    assert current_version(other_root) != result.version


def test_reader_api(built):
    root, result = built
    everything = load_dataset_table(root)
    assert everything.num_rows == sum(result.row_counts.values())
    assert set(everything.column("split").to_pylist()) == {"train", "validation", "test"}
    one = load_dataset_table(root, version=result.version, split="validation", columns=["tile_id", "text"])
    assert one.column_names == ["tile_id", "text"] and one.num_rows == result.row_counts["validation"]
    assert set(dataset_split_paths(root)) == {"train", "validation", "test"}
    with pytest.raises(ConfigError, match="unknown split"):
        load_dataset_table(root, split="holdout")
    with pytest.raises(ConfigError, match="not found"):
        load_dataset_table(root, version="0123456789abcdef")


def test_no_dataset_yet_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="materialise training_dataset"):
        current_version(tmp_path)


def test_missing_caption_names_the_tile(tmp_path):
    ids = make_flight(tmp_path, "flight-c", rows=2, cols=2, caption_rows=slice(0, 3))
    with pytest.raises(DatasetError) as err:
        build_dataset(tmp_path, ["flight-c"], CONFIG)
    assert ids[3] in str(err.value) and "captions.parquet" in str(err.value)
    skipped = []
    result = build_dataset(tmp_path, ["flight-c"], CONFIG, on_error=skipped.append)
    assert sum(result.row_counts.values()) + result.dropped_guard_tiles == 3
    assert len(skipped) == 1 and ids[3] in result.skipped[0]


def test_unreadable_image_names_the_file(tmp_path):
    ids = make_flight(tmp_path, "flight-d", rows=2, cols=2)
    bad = tmp_path / "flights" / "flight-d" / "sar_tiles" / f"{ids[1]}.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(RasterError) as err:
        build_dataset(tmp_path, ["flight-d"], CONFIG)
    assert str(bad) in str(err.value) and "not a readable image" in str(err.value)
    (tmp_path / "flights" / "flight-d" / "optical_tiles" / f"{ids[2]}.png").unlink()
    skipped = []
    result = build_dataset(tmp_path, ["flight-d"], CONFIG, on_error=skipped.append)
    assert sum(result.row_counts.values()) + result.dropped_guard_tiles == 2
    assert "not a readable image" in str(skipped[0]) and "optical tile file not found" in str(skipped[1])
    assert ids[2] in str(skipped[1])


def test_empty_caption_and_missing_manifest(tmp_path):
    make_flight(tmp_path, "flight-e", rows=1, cols=2)
    with pytest.raises(RasterError, match=r"flight-x/sar_tiles/manifest.parquet: tile manifest missing"):
        build_dataset(tmp_path, ["flight-e", "flight-x"], CONFIG)
    cap = tmp_path / "flights" / "flight-e" / "captions.parquet"
    table = pq.read_table(cap)
    pq.write_table(table.set_column(table.schema.get_field_index("text"), "text", [["  ", "ok text"]]), cap)
    with pytest.raises(DatasetError, match="caption text is empty"):
        build_dataset(tmp_path, ["flight-e"], CONFIG)


def test_acquisition_words_can_be_appended_to_the_text(tmp_path):
    make_flight(tmp_path, "flight-g", rows=1, cols=2)
    config = TrainingDatasetSettings(block_size_m=1e6, include_metadata_text=True)
    result = build_dataset(tmp_path, ["flight-g"], config)
    texts = load_dataset_table(tmp_path, columns=["text"]).column("text").to_pylist()
    assert len(texts) == 2
    assert all(t.endswith(", X-band, HH polarisation, incidence 45°, 8.0 m ground resolution") for t in texts)
    plain = build_dataset(tmp_path, ["flight-g"], TrainingDatasetSettings(block_size_m=1e6))
    assert plain.version != result.version


def test_unparsable_acquisition_time_names_the_tile(tmp_path):
    ids = make_flight(tmp_path, "flight-h", rows=1, cols=2)
    manifest = tmp_path / "flights" / "flight-h" / "sar_tiles" / "manifest.parquet"
    table = pq.read_table(manifest)
    table = table.set_column(table.schema.get_field_index("datetime"), "datetime", [["yesterday", None]])
    pq.write_table(table, manifest)
    with pytest.raises(DatasetError, match=rf"{ids[0]}.*'yesterday' is not ISO 8601"):
        build_dataset(tmp_path, ["flight-h"], CONFIG)
    skipped = []
    result = build_dataset(tmp_path, ["flight-h"], CONFIG, on_error=skipped.append)
    assert len(skipped) == 1 and sum(result.row_counts.values()) + result.dropped_guard_tiles == 1
    # any other column of the wrong type is named too, not a bare ValueError
    table = pq.read_table(manifest).drop_columns(["datetime"])
    bad = [["a", "b", "c", "d", "e", "f"], None]
    table = table.set_column(table.schema.get_field_index("transform"), "transform", [bad])
    pq.write_table(table, manifest)
    with pytest.raises(DatasetError, match=rf"{ids[0]}.*malformed manifest row"):
        build_dataset(tmp_path, ["flight-h"], CONFIG)


def test_tiles_that_failed_a_blocking_check_or_have_nodata_stay_out(tmp_path):
    from sar_pipeline.geo.manifest import read_manifest, write_manifest

    ids = make_flight(tmp_path, "flight-c", rows=2, cols=3)
    manifest = tmp_path / "flights" / "flight-c" / "sar_tiles" / "manifest.parquet"
    rows = read_manifest(manifest)
    rows[0]["failed_checks"] = json.dumps(["gsd_matches_config"])  # what sar_tiles records per tile
    rows[1]["nodata_fraction"] = 0.02  # a black wedge of nodata at the swath edge
    write_manifest(rows, manifest)
    skipped = []
    result = build_dataset(tmp_path, ["flight-c"], TrainingDatasetSettings(block_size_m=1e6), skipped.append)
    written = {r["tile_id"] for r in result.rows}
    assert ids[0] not in written and ids[1] not in written and set(ids[2:]) <= written
    assert any(ids[0] in str(e) and "gsd_matches_config" in str(e) for e in skipped)
    assert any(ids[1] in reason and "max_nodata_fraction" in reason for reason in result.left_out)
    # a higher threshold lets the edge tile in
    lenient = build_dataset(
        tmp_path,
        ["flight-c"],
        TrainingDatasetSettings(block_size_m=1e6, max_nodata_fraction=0.05),
        skipped.append,
    )
    assert ids[1] in {r["tile_id"] for r in lenient.rows}


def test_amplitude_normalisation_is_recorded_with_its_inverse(tmp_path):
    import io

    import numpy as np

    from sar_pipeline import radiometry

    ids = make_flight(tmp_path, "flight-n", rows=2, cols=3)
    settings = TrainingDatasetSettings(block_size_m=1e6, normalisation="amplitude")
    result = build_dataset(tmp_path, ["flight-n"], settings)
    # μ and σ of the amplitude of every valid pixel of every tile (the fixture's tiles: 8-bit dB levels
    # over -25…5 dB, 0 = nodata)
    tile_params = {"db_min": -25.0, "db_max": 5.0, "bit_depth": 8}
    tiles = {
        i: np.asarray(Image.open(tmp_path / "flights" / "flight-n" / "sar_tiles" / f"{i}.png")) for i in ids
    }
    amplitudes = {
        i: 10 ** (radiometry.to_db(t, tile_params).astype(np.float64) / 20) for i, t in tiles.items()
    }
    pooled = np.concatenate([a[np.isfinite(a)] for a in amplitudes.values()])
    info = dataset_info(tmp_path)["radiometry"]
    assert info["normalisation"] == "amplitude" and "μ + 3σ" in info["chosen"]
    assert info["amplitude_mean"] == pytest.approx(pooled.mean(), rel=0.006)
    assert info["amplitude_std"] == pytest.approx(pooled.std(), rel=0.006)
    scale = info["amplitude_mean"] + 3 * info["amplitude_std"]
    assert info["amplitude_scale"] == pytest.approx(scale)
    table = load_dataset_table(tmp_path, version=result.version)
    assert table.num_rows == len(ids)
    for row in table.to_pylist():
        assert (row["normalisation"], row["value_unit"]) == ("amplitude", "amplitude")
        assert row["amplitude_scale"] == info["amplitude_scale"] and row["db_max"] == info["db_max"]
        image = np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])))
        original = amplitudes[row["tile_id"]]
        # nodata kept; every level is A / (μ + 3σ) clipped to [0, 1], and the row's mapping inverts it
        # within half a level
        assert np.array_equal(image == 0, ~np.isfinite(original))
        back = 10 ** (radiometry.to_db(image, row).astype(np.float64) / 20)
        valid = image > 0
        step = scale / 254
        assert np.abs(back[valid] - np.clip(original[valid], 0, scale)).max() <= step / 2 + 1e-5 * scale
        assert row["clipped_high_fraction"] == pytest.approx(np.mean(original[valid] > scale), abs=0.02)
    # another normalisation is another dataset version
    assert build_dataset(tmp_path, ["flight-n"], TrainingDatasetSettings(block_size_m=1e6)).version != (
        result.version
    )


def test_a_reversed_percentile_pair_or_half_a_fixed_range_is_refused():
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="percentile_low .* must be below percentile_high"):
        TrainingDatasetSettings(percentile_low=99, percentile_high=1)
    with pytest.raises(pydantic.ValidationError, match="set both db_min and db_max"):
        TrainingDatasetSettings(db_min=-30)
    with pytest.raises(pydantic.ValidationError, match="db_min .* must be below db_max"):
        TrainingDatasetSettings(db_min=10, db_max=-30)
    with pytest.raises(pydantic.ValidationError, match="bit_depth must be 8 or 16"):
        TrainingDatasetSettings(bit_depth=12)
