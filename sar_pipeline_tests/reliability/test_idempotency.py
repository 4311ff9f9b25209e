"""Re-materialising a flight's stages or the dataset with the same inputs gives byte-identical files.

Run in two processes with different ``PYTHONHASHSEED`` (so a set or a hash-ordered dict whose order
reaches a file shows up), into two storage roots at different paths, and once more over the output
already there: every file's SHA-256 must be the same (docs/reliability.md, "Idempotency")."""

from __future__ import annotations

import hashlib
import os

import pytest

from sar_pipeline.archive.demo import write_demo_archive
from sar_pipeline.archive.simulate import SMALL_DEMO_SETTINGS
from sar_pipeline_tests.reliability.killpoints import KillServer, snapshot
from sar_pipeline_tests.reliability.stages import flight_arguments

PRELOAD = [
    "sar_pipeline_tests.reliability.stages",
    "sar_pipeline.defs.flights.assets",
    "sar_pipeline.defs.geo.assets",
    "sar_pipeline.defs.captions.assets",
    "sar_pipeline.defs.dataset.assets",
]
#: few tiles over two small flights: blocks of 40 m so that every split gets some
DATASET = {"block_size_m": 40.0, "row_group_size": 8}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_demo_archive(
        tmp_path_factory.mktemp("archive") / "demo", flights=2, seed=3, settings=SMALL_DEMO_SETTINGS
    )


def hashes(root) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (relative path → hex digest)."""
    return {path: hashlib.sha256(data).hexdigest() for path, data in snapshot(root).items()}


def materialise_all(server: KillServer, archive, storage) -> None:
    """Every flight's stages, then the dataset over them, as ``sar-pipeline run`` orders them."""
    for flight in archive.flight_ids:
        server.finish(
            "sar_pipeline_tests.reliability.stages:materialise_flight",
            storage,
            **flight_arguments(archive, storage, flight),
        )
    server.finish(
        "sar_pipeline_tests.reliability.stages:materialise_dataset",
        storage,
        storage=str(storage),
        flight_ids=list(archive.flight_ids),
        settings=DATASET,
    )


def test_rematerialising_flights_and_the_dataset_gives_byte_identical_files(archive, tmp_path):
    runs = {}
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        with KillServer(PRELOAD, tmp_path / f"work-{hash_seed}", env=env) as server:
            storage = tmp_path / f"storage-{hash_seed}"
            materialise_all(server, archive, storage)
            runs[hash_seed] = hashes(storage)
            if hash_seed == "2":  # and once more, over its own output
                materialise_all(server, archive, storage)
                runs["again"] = hashes(storage)
    first = runs["1"]
    flights = [k for k in first if k.startswith("flights/")]
    assert any(k.endswith("sar_tiles/manifest.parquet") for k in flights)
    assert any(k.endswith("captions.parquet") for k in flights)
    assert any(k.startswith("dataset/shards/") for k in first) and "dataset/current.json" in first
    for name, other in runs.items():
        assert sorted(other) == sorted(first), name
        assert [k for k in first if other[k] != first[k]] == [], name
