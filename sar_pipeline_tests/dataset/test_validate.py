import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from sar_pipeline.dataset.validate import incomplete_rows, leaking_tiles, unexpectedly_empty_splits
from sar_pipeline.dataset.write import TrainingDatasetSettings, build_dataset
from sar_pipeline_tests.dataset.fixtures import make_flight

CONFIG = TrainingDatasetSettings(
    block_size_m=500.0, train_fraction=0.6, validation_fraction=0.2, test_fraction=0.2
)


def built(tmp_path):
    make_flight(tmp_path, "flight-a", rows=8, cols=8, rotation_deg=-12.0)
    result = build_dataset(tmp_path, ["flight-a"], CONFIG)
    (train,) = result.files["train"]  # one flight: one shard file per split
    return tmp_path / train, result


def test_a_clean_dataset_passes(tmp_path):
    _, result = built(tmp_path)
    assert leaking_tiles(tmp_path, tolerance_m=1.0) == []
    assert incomplete_rows(tmp_path) == []
    assert unexpectedly_empty_splits(tmp_path)["empty"] == []
    assert result.row_counts["train"] > 0


def test_leakage_and_missing_text_are_found(tmp_path):
    train_path, _ = built(tmp_path)
    table = pq.read_table(train_path)
    # relabel one train tile that has a train neighbour as validation: the pair now straddles splits
    geoms = shapely.from_wkb(table.column("geometry").to_pylist())
    moved = next(i for i, g in enumerate(geoms) if sum(shapely.dwithin(g, h, 1e-6) for h in geoms) > 1)
    split = table.column("split").to_pylist()
    split[moved] = "validation"
    text = table.column("text").to_pylist()
    text[moved] = "  "
    table = table.set_column(table.schema.get_field_index("split"), "split", pa.array(split))
    table = table.set_column(table.schema.get_field_index("text"), "text", pa.array(text))
    pq.write_table(table, train_path)
    leaks = leaking_tiles(tmp_path, tolerance_m=1.0)
    assert leaks and all(table.column("tile_id")[moved].as_py() in (p["tile_a"], p["tile_b"]) for p in leaks)
    problems = incomplete_rows(tmp_path)
    assert problems == [
        {"tile_id": table.column("tile_id")[moved].as_py(), "split": "train", "problem": "no text"}
    ]
    assert pc.sum(pc.equal(table.column("split"), "validation")).as_py() == 1
