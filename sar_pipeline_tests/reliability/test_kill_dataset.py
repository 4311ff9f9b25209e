"""kill -9 while ``training_dataset`` writes a dataset version, then re-run.

Each trial SIGKILLs the process materialising the dataset (two flights' tiles and captions) at a
seeded random point — just before one of its file-system writes under the storage root, or after a
random delay (inside the Parquet writer) — and checks what a reader finds at that moment and after
the re-run (docs/reliability.md, "Crash safety")."""

from __future__ import annotations

import json

from sar_pipeline.dataset import load_dataset_table
from sar_pipeline_tests.dataset.fixtures import make_flight
from sar_pipeline_tests.reliability.killpoints import KillServer, Trials

SEED = 20261128
TRIALS = 10
STAGE = "sar_pipeline_tests.reliability.stages:materialise_dataset"
PRELOAD = ["sar_pipeline_tests.reliability.stages", "sar_pipeline.defs.dataset.assets"]
FLIGHTS = ["flight-a", "flight-b"]
#: the dataset writer's own test settings: 56 tiles over two flights (22 kept beside guard blocks), row groups of 8
#: ('balanced': 200 m blocks are under two tiles wide, where 'hash' would drop most tiles as guard band)
SETTINGS = {
    "assignment": "balanced",
    "block_size_m": 200.0,
    "train_fraction": 0.5,
    "validation_fraction": 0.2,
    "test_fraction": 0.3,
    "row_group_size": 8,
}


def write_flights(root):
    """Two captioned flights' tiles (6 × 6 rotated with land cover, 4 × 5), as the flight stages write them."""
    make_flight(root, "flight-a", rows=6, cols=6, rotation_deg=17.0, landcover=True)
    make_flight(root, "flight-b", rows=4, cols=5, origin=(501_500.0, 4_801_000.0))


def assert_no_duplicate_rows(root, what: str) -> None:
    """The dataset ``current.json`` names, if any, reads whole and holds each tile once."""
    if not (root / "dataset" / "current.json").exists():
        return
    tile_ids = load_dataset_table(root).column("tile_id").to_pylist()
    assert len(tile_ids) == len(set(tile_ids)), what


def test_kill9_while_the_dataset_is_written_then_rerun(tmp_path):
    def arguments(storage):
        return {"storage": str(storage), "flight_ids": FLIGHTS, "settings": SETTINGS}

    with KillServer(PRELOAD, tmp_path / "work") as server:
        # over a previous output the version folder is complete and kept: only current.json and the
        # card's pictures are rewritten, so half the trials start from flights without a dataset
        trials = Trials(
            server, STAGE, arguments, prepare=write_flights, published=[], seed=SEED, empty_share=0.5
        )
        reference_root = tmp_path / "reference"
        reference, dry = trials.reference(reference_root)
        current = json.loads(reference["dataset/current.json"])
        trials.published = [f"dataset/{current['version']}"]
        assert sum(current["row_counts"].values()) >= 20
        lines = trials.run(tmp_path / "storage", TRIALS, reference, dry, check=assert_no_duplicate_rows)
        assert_no_duplicate_rows(tmp_path / "storage", "after the last re-run")
    print("\n".join(lines))
