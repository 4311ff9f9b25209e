"""kill -9 of a run materialising a flight, on a persistent Dagster instance: what ``sar-pipeline run``
does next (issue 13: a flight killed mid-tiling was reported "new: none" and never retried).

Each trial SIGKILLs the run at a seeded write under the storage root; the next ``sar-pipeline run``
first fails the dead run (``run_control.fail_dead_runs``), then must list the flight as not done
(``unfinished_partitions``), re-run it to completion, and list nothing after that."""

from __future__ import annotations

import random

import dagster as dg

from sar_pipeline import run_control
from sar_pipeline.defs.flights.partitions import flight_partitions
from sar_pipeline_tests.reliability.killpoints import KillServer, draw_kill_point
from sar_pipeline_tests.reliability.stages import FLIGHT_ASSETS, flight_arguments
from sar_pipeline_tests.reliability.test_kill_tiling import PRELOAD, SEED, STAGE, archive  # noqa: F401

TRIALS = 4


def test_a_run_killed_mid_flight_is_failed_and_its_flight_run_again(archive, tmp_path):  # noqa: F811
    flight = archive.flight_ids[0]
    home = tmp_path / "dagster_home"
    home.mkdir()
    instance = dg.DagsterInstance.local_temp(tempdir=str(home))
    instance.add_dynamic_partitions(flight_partitions.name, [flight])
    keys = [dg.AssetKey(name) for name in FLIGHT_ASSETS]

    with KillServer(PRELOAD, tmp_path / "work") as server:
        dry = server.finish(STAGE, tmp_path / "dry", **flight_arguments(archive, tmp_path / "dry", flight))
        rng = random.Random(SEED)
        storage = tmp_path / "storage"
        lines = []
        for trial in range(TRIALS):
            point = draw_kill_point(rng, dry, False, (trial, TRIALS))
            killed = server.run(STAGE, storage, **point, **flight_arguments(archive, storage, flight, home))
            what = f"trial {trial}: {point}, killed {killed.landed(storage)}"
            lines.append(what)
            assert killed.killed, what
            # what the next `sar-pipeline run` does first: fail the run whose process is gone
            failed = run_control.fail_dead_runs(instance)
            assert len(failed) == 1 and "is gone" in failed[0], (what, failed)
            todo, running = run_control.unfinished_partitions(instance, keys, flight_partitions, [flight])
            assert (todo, running) == ([flight], []), what
            # then runs the flight again, to completion, after which nothing is left to do
            server.finish(STAGE, storage, **flight_arguments(archive, storage, flight, home))
            assert run_control.unfinished_partitions(instance, keys, flight_partitions, [flight]) == ([], [])
            assert not run_control.fail_dead_runs(instance)
    print("\n".join(lines))
