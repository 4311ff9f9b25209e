"""1,000 flights: the sensor tick that registers them, the per-partition run overhead, a backfill sample.

Phases (each timed with ``time.perf_counter``; ``--skip`` leaves phases out):

1. **archive**: a demo archive of ``--flights`` tiny flights (one 300–360 px scene each, 1 km region),
   written by the demo archive writer (``sar_pipeline.archive.demo.write_demo_archive``).
2. **tick** on a fresh instance: the ``new_flights`` sensor evaluated as the daemon does
   (``build_sensor_context`` with the definitions), then what the daemon does with its result: add
   the dynamic partitions and submit the one backfill request (``_submit_backfill_request``, the
   daemon's own code). Then a tick with the cursor and nothing new, and a tick after one more flight
   lands (``add_demo_flight``).
3. **overhead**: ``--runs`` runs of a no-op asset partitioned by ``flight`` (one partition each, on
   the instance that now holds the flights' partitions and the backfill), in process
   (``dg.materialize``): what Dagster itself costs per partition run (run record, event log, step),
   without launching a process. On SQLite (``DagsterInstance.local_temp``) and, with ``--postgres``,
   on a throwaway PostgreSQL cluster on 127.0.0.1 (``sar_pipeline_tests.services.PostgresCluster``)
   through ``docker/dagster.yaml``.
4. **backfill sample**: the per-flight stages (sar_scenes, sar_tiles at 64 px tiles, optical_tiles,
   template captions) materialised for ``--sample`` flights in one process, one run per flight; then
   ``build_dataset`` once per added flight (incremental versions, ``assignment="hash"``), recording
   the time of each build, the shards written and the bytes under ``dataset/``. The figures for all
   flights are extrapolated from the sample (printed as such).

    .venv/bin/python benchmarks/flights_benchmark.py --workdir /tmp/fb --flights 1000 --postgres
    .venv/bin/python benchmarks/flights_benchmark.py --workdir /tmp/fb --flights 50 --sample 4   # a quick look

Prints one JSON object (also written to ``--json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path

import dagster as dg

from sar_pipeline.archive.demo import add_demo_flight, write_demo_archive
from sar_pipeline.archive.simulate import DemoSettings

#: one small scene per flight: the archive and the per-flight stages stay cheap, the Dagster side
#: (partitions, runs, events) is what grows with the number of flights
TINY_FLIGHTS = DemoSettings(region_size_m=1000.0, scene_size_px=(300, 360), max_scenes_per_flight=1)
SEED = 12


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def write_archive(workdir: Path, flights: int):
    """The demo archive with ``flights`` flights (kept between runs of the benchmark: extended only)."""
    return _timed(write_demo_archive, workdir / "archive", flights=flights, seed=SEED, settings=TINY_FLIGHTS)


def sensor_ticks(instance: dg.DagsterInstance, archive_path: Path) -> dict:
    """Time the first tick over the whole archive (sensor + partitions + backfill submission), a tick
    with nothing new, and a tick after one more flight."""
    from dagster._daemon.sensor import _submit_backfill_request

    from sar_pipeline.definitions import defs
    from sar_pipeline.defs.flights.sensors import new_flights
    from sar_pipeline.defs.resources import SarArchiveResource

    definitions = defs()
    catalog = archive_path / "catalog.json"

    def tick(cursor):
        context = dg.build_sensor_context(
            instance=instance,
            cursor=cursor,
            definitions=definitions,
            resources={"archive": SarArchiveResource(uri=str(catalog))},
        )
        result, evaluate_s = _timed(new_flights, context)
        apply_s = 0.0
        start = time.perf_counter()
        for add in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys))
        for k, request in enumerate(result.run_requests or []):
            if request.requires_backfill_daemon():
                _submit_backfill_request(f"bench-{int(time.time())}-{k}", request, instance)
        apply_s = time.perf_counter() - start
        added = sum(len(a.partition_keys) for a in result.dynamic_partitions_requests or [])
        return result, {
            "evaluate_s": round(evaluate_s, 3),
            "apply_s": round(apply_s, 3),
            "total_s": round(evaluate_s + apply_s, 3),
            "flights_added": added,
            "requests": len(result.run_requests or []),
        }

    first, first_figures = tick(None)
    second, second_figures = tick(first.cursor)
    add_demo_flight(archive_path)
    _, third_figures = tick(second.cursor)
    return {"first_tick": first_figures, "idle_tick": second_figures, "one_new_flight_tick": third_figures}


@dg.asset(partitions_def=dg.DynamicPartitionsDefinition(name="flight"))
def noop_per_flight() -> dg.MaterializeResult:
    """Does nothing: what a partition run costs Dagster itself."""
    return dg.MaterializeResult(metadata={"ok": True})


def run_overhead(instance: dg.DagsterInstance, flights: list[str], runs: int) -> dict:
    """Seconds per in-process run of :func:`noop_per_flight`, one partition each."""
    times = []
    for flight in flights[:runs]:
        result, seconds = _timed(
            dg.materialize, [noop_per_flight], instance=instance, partition_key=flight, raise_on_error=True
        )
        assert result.success
        times.append(seconds)
    return {
        "runs": len(times),
        "first_s": round(times[0], 3),
        "median_s": round(statistics.median(times), 3),
        "mean_s": round(statistics.fmean(times), 3),
        "max_s": round(max(times), 3),
    }


@contextlib.contextmanager
def postgres_instance(workdir: Path):
    """A Dagster instance on a throwaway PostgreSQL cluster (docker/dagster.yaml, env credentials)."""
    from sar_pipeline import paths
    from sar_pipeline_tests.services import PostgresCluster

    home = workdir / "pg-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    shutil.copyfile(paths.PROJECT_ROOT / "docker" / "dagster.yaml", home / "dagster.yaml")
    with PostgresCluster() as cluster:
        saved = {k: os.environ.get(k) for k in cluster.env()}
        os.environ.update(cluster.env())
        try:
            with dg.DagsterInstance.from_config(str(home)) as instance:
                yield instance
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def instance_figures(instance: dg.DagsterInstance, archive_path: Path, runs: int) -> dict:
    """Ticks over the whole archive, then the run overhead, on ``instance``."""
    ticks = sensor_ticks(instance, archive_path)
    flights = sorted(instance.get_dynamic_partitions("flight"))
    return {**ticks, "partitions": len(flights), "run_overhead": run_overhead(instance, flights, runs)}


def backfill_sample(workdir: Path, archive_path: Path, sample: int, total: int) -> dict:
    """The per-flight stages for ``sample`` flights, then one incremental dataset build per flight."""
    from sar_pipeline.dataset.write import TrainingDatasetSettings, build_dataset
    from sar_pipeline.defs.captions.assets import captions
    from sar_pipeline.defs.captions.resources import CaptionerResource
    from sar_pipeline.defs.flights.assets import sar_scenes
    from sar_pipeline.defs.geo.assets import optical_tiles, sar_tiles
    from sar_pipeline.defs.geo.resources import LandCoverResource, OpticalResource
    from sar_pipeline.defs.resources import SarArchiveResource, StorageRoot

    storage = workdir / "storage"
    shutil.rmtree(storage, ignore_errors=True)
    resources = {
        "storage": StorageRoot(uri=str(storage)),
        "archive": SarArchiveResource(uri=str(archive_path / "catalog.json")),
        "optical": OpticalResource(kind="mosaic", uri=str(archive_path / "optical" / "orthophoto.tif")),
        "landcover": LandCoverResource(),
        "captioner": CaptionerResource(),
    }
    flights = [f"demo-flight-{i:03d}" for i in range(sample)]
    per_flight = []
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("flight", flights)
        for flight in flights:
            result, seconds = _timed(
                dg.materialize,
                [sar_scenes, sar_tiles, optical_tiles, captions],
                instance=instance,
                partition_key=flight,
                resources=resources,
                run_config={
                    "ops": {"sar_tiles": {"config": {"tile_size": 64, "ground_sample_distance_m": 1.25}}}
                },
            )
            assert result.success
            per_flight.append(seconds)
    settings = TrainingDatasetSettings(assignment="hash", block_size_m=250.0)
    builds = []
    for k in range(1, sample + 1):
        result, seconds = _timed(build_dataset, storage, flights[:k], settings)
        dataset_bytes = sum(p.stat().st_size for p in (storage / "dataset").rglob("*") if p.is_file())
        shard_bytes = sum(p.stat().st_size for p in (storage / "dataset" / "shards").rglob("*.parquet"))
        builds.append(
            {
                "flights": k,
                "build_s": round(seconds, 3),
                "shards_written": len(result.shards_written),
                "rows": sum(result.row_counts.values()),
                "dataset_bytes": dataset_bytes,
                "shard_bytes": shard_bytes,
            }
        )
    stage_s = statistics.median(per_flight)
    return {
        "flights": sample,
        "per_flight_stages_s": [round(s, 3) for s in per_flight],
        "per_flight_stages_median_s": round(stage_s, 3),
        "extrapolated_all_flights_one_process_h": round(stage_s * total / 3600, 2),
        "dataset_builds": builds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--flights", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20, help="no-op partition runs per instance")
    parser.add_argument("--sample", type=int, default=8, help="flights backfilled for real")
    parser.add_argument("--postgres", action="store_true", help="also on a throwaway PostgreSQL")
    parser.add_argument("--skip", nargs="*", default=[], choices=["sqlite", "postgres", "backfill"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    archive, archive_s = write_archive(args.workdir, args.flights)
    out = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
        "flights": args.flights,
        "archive_write_s": round(archive_s, 1),
    }
    # each instance gets a fresh copy of the archive: the "one new flight" tick extends it
    for name in ("sqlite", "postgres"):
        if name in args.skip or (name == "postgres" and not args.postgres):
            continue
        copy = args.workdir / f"archive-{name}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(archive.root, copy)
        if name == "sqlite":
            home = args.workdir / "sqlite-home"
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir()
            with dg.DagsterInstance.local_temp(str(home)) as instance:
                out[name] = instance_figures(instance, copy, args.runs)
        else:
            with postgres_instance(args.workdir) as instance:
                out[name] = instance_figures(instance, copy, args.runs)
        shutil.rmtree(copy, ignore_errors=True)
        print(json.dumps({name: out[name]}), flush=True)
    if "backfill" not in args.skip:
        out["backfill_sample"] = backfill_sample(args.workdir, archive.root, args.sample, args.flights)
    out["machine"]["load_average_end"] = os.getloadavg()
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
