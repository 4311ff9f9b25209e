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
4. **launched** (``--launched N``): runs as users run them — a code server over gRPC
   (``dagster code-server start``), the daemon (``dagster-daemon run``), the instance's
   ``QueuedRunCoordinator`` and ``DefaultRunLauncher`` (one process per run loading the code
   location, and whatever processes its executor starts). A backfill of the
   no-op asset over N flights is recorded as the daemon records the ``new_flights`` sensor's request
   (``PartitionBackfill.from_asset_graph_subset``, as ``_submit_backfill_request`` does, plus a run
   config) and the daemon launches its runs; per run, from the run's own events: launch (``RUN_STARTING``) →
   start (``RUN_START``: the run process has loaded the code) → success, and the backfill's wall
   time. On SQLite (the project's ``dagster.yaml``) and, with ``--postgres``, on
   ``docker/dagster.yaml``. ``--launched-flights M`` then backfills the real per-flight stages over
   M flights the same way (64 px tiles, template captions), measured, not extrapolated, with each
   run's time split into its process start, its step processes' starts and its steps (from the
   step events). ``--executors`` repeats the launched backfills once per executor choice (run
   config of ``multi_or_in_process_executor``: ``multiprocess``, ``forkserver``,
   ``forkserver_preload``, ``in_process``; ``default`` = the code location's own choice),
   ``--rounds`` times, taking turns, each on flights of its own.
5. **backfill sample**: the per-flight stages (sar_scenes, sar_tiles at 64 px tiles, optical_tiles,
   template captions) materialised for ``--sample`` flights in one process, one run per flight; then
   ``build_dataset`` once per added flight (incremental versions, ``assignment="hash"``), recording
   the time of each build, the shards written and the bytes under ``dataset/``. The figures for all
   flights are extrapolated from the sample (printed as such).

    .venv/bin/python benchmarks/flights_benchmark.py --workdir /tmp/fb --flights 1000 --postgres
    .venv/bin/python benchmarks/flights_benchmark.py --workdir /tmp/fb --flights 50 --sample 4   # a quick look
    .venv/bin/python benchmarks/flights_benchmark.py --workdir /tmp/fb --flights 20 --skip sqlite postgres backfill \
        --launched 10 --launched-flights 20 --postgres   # launched runs and a real backfill via the daemon
    .venv/bin/python benchmarks/flights_benchmark.py --workdir /tmp/fb --flights 24 --skip sqlite postgres backfill \
        --launched-flights 4 --executors multiprocess forkserver_preload in_process --rounds 2   # executors

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


#: the per-flight stages' settings in launched backfills: tiles small enough for the tiny scenes
FLIGHT_RUN_CONFIG = {"ops": {"sar_tiles": {"config": {"tile_size": 64, "ground_sample_distance_m": 1.25}}}}

#: ``--executors``: how a launched run executes its steps, as run config of the code location's
#: executor. "default" adds nothing (whatever the definitions set); the others need Dagster's
#: ``multi_or_in_process_executor`` (the executor when the definitions name none): one process per step
#: (spawned: a fresh interpreter that loads the code location), the same through a forkserver that
#: has preloaded the job's module (each step forks from it), or every step in the run's own process.
EXECUTION_RUN_CONFIG = {
    "default": {},
    "multiprocess": {"execution": {"config": {"multiprocess": {}}}},
    "forkserver": {"execution": {"config": {"multiprocess": {"start_method": {"forkserver": {}}}}}},
    "in_process": {"execution": {"config": {"in_process": {}}}},
}


def _defs_modules() -> list[str]:
    """Every module under ``sar_pipeline.defs``: what building the definitions imports."""
    import pkgutil

    import sar_pipeline.defs

    return sorted(m.name for m in pkgutil.walk_packages(sar_pipeline.defs.__path__, "sar_pipeline.defs."))


#: the forkserver preloading, besides the job's module, every module the definitions import
EXECUTION_RUN_CONFIG["forkserver_preload"] = {
    "execution": {
        "config": {
            "multiprocess": {
                "start_method": {"forkserver": {"preload_modules": ["noop_location", *_defs_modules()]}}
            }
        }
    }
}


@contextlib.contextmanager
def deployment(workdir: Path, name: str, archive_path: Path, postgres: bool):
    """A code server (``benchmarks/noop_location.py``: the project plus the no-op asset) and the daemon
    on a fresh instance (SQLite: the project's dagster.yaml; Postgres: docker/dagster.yaml on a
    throwaway cluster); yields the instance as this process sees it."""
    from sar_pipeline import paths
    from sar_pipeline_tests.services import PostgresCluster, dagster_process, free_port, venv_tool

    root = workdir / f"launched-{name}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "home").mkdir(parents=True)
    config = paths.PROJECT_ROOT / ("docker" if postgres else "") / "dagster.yaml"
    shutil.copyfile(config, root / "home" / "dagster.yaml")
    port = free_port()
    workspace = root / "workspace.yaml"
    workspace.write_text(
        f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {port}\n      location_name: sar_pipeline\n"
    )
    with contextlib.ExitStack() as stack:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SAR_PIPELINE_", "DAGSTER_"))}
        if postgres:
            cluster = stack.enter_context(PostgresCluster())
            env.update(cluster.env())
            saved = {k: os.environ.get(k) for k in cluster.env()}
            os.environ.update(cluster.env())
            stack.callback(
                lambda: [
                    os.environ.pop(k) if v is None else os.environ.update({k: v}) for k, v in saved.items()
                ]
            )
        env.update(
            DAGSTER_HOME=str(root / "home"),
            SAR_PIPELINE_DATA=str(root / "data"),
            SAR_PIPELINE_ARCHIVE=str(archive_path / "catalog.json"),
            SAR_PIPELINE_STORAGE=str(root / "storage"),
            SAR_PIPELINE_RETRAIN_CRON="0 0 1 1 *",  # no retraining tick during the measurement
            HF_HUB_OFFLINE="1",
        )
        server = [venv_tool("dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(port)]
        server += ["-m", "noop_location", "-d", str(paths.PROJECT_ROOT / "benchmarks")]
        server += ["--location-name", "sar_pipeline"]
        stack.enter_context(
            dagster_process(server, env, root / "code-server.log", paths.PROJECT_ROOT, port=port)
        )
        daemon = [venv_tool("dagster-daemon"), "run", "-w", str(workspace)]
        stack.enter_context(dagster_process(daemon, env, root / "daemon.log", root))
        instance = stack.enter_context(dg.DagsterInstance.from_config(str(root / "home")))
        yield instance


def launched_backfill(
    instance: dg.DagsterInstance,
    asset_keys: list[str],
    flights: list[str],
    run_config: dict,
    timeout_s: float,
) -> dict:
    """Submit one backfill of ``asset_keys`` over ``flights`` (as the ``new_flights`` sensor does) and
    wait for the daemon to launch and finish its runs; per-run figures from the runs' events."""
    from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
    from dagster._core.execution.backfill import PartitionBackfill

    from sar_pipeline.defs.flights.partitions import flight_partitions

    instance.add_dynamic_partitions(flight_partitions.name, flights)
    subset = flight_partitions.empty_subset().with_partition_keys(flights)
    graph_subset = AssetGraphSubset(
        partitions_subsets_by_asset_key={dg.AssetKey(k): subset for k in asset_keys}
    )
    backfill_id = f"bench-{time.time_ns()}"
    submitted = time.time()
    # what the daemon's _submit_backfill_request does with the sensor's request, plus the run config
    # (a RunRequest carrying an asset graph subset drops its run_config)
    instance.add_backfill(
        PartitionBackfill.from_asset_graph_subset(
            backfill_id=backfill_id,
            dynamic_partitions_store=instance,
            backfill_timestamp=submitted,
            asset_graph_subset=graph_subset,
            tags={},
            title=None,
            description=None,
            run_config=run_config,
        )
    )
    done = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    runs_filter = dg.RunsFilter(tags={"dagster/backfill": backfill_id})
    while time.time() - submitted < timeout_s:
        runs = instance.get_runs(filters=runs_filter)
        if len(runs) == len(flights) and all(r.status in done for r in runs):
            break
        time.sleep(2)
    runs = instance.get_runs(filters=runs_filter)
    figures = []
    for run in runs:
        stamps, steps = {}, {}
        for record in instance.all_logs(run.run_id):
            event = record.dagster_event
            if event is None:
                continue
            # by name: the stored values of the run events are still PIPELINE_*
            name = event.event_type.name
            if name in ("RUN_ENQUEUED", "RUN_STARTING", "RUN_START", "RUN_SUCCESS", "RUN_FAILURE"):
                stamps.setdefault(name, record.timestamp)
            elif name in ("STEP_WORKER_STARTING", "STEP_START", "STEP_SUCCESS", "STEP_FAILURE"):
                steps.setdefault(event.step_key, {}).setdefault(name, record.timestamp)
        end = stamps.get("RUN_SUCCESS", stamps.get("RUN_FAILURE"))
        if "RUN_STARTING" in stamps and "RUN_START" in stamps and end is not None:
            # per step: its process start (worker starting → step start: a fresh interpreter or a
            # fork loading the code location; nothing in process) and the step itself
            process_s = sum(
                s["STEP_START"] - s["STEP_WORKER_STARTING"]
                for s in steps.values()
                if "STEP_WORKER_STARTING" in s and "STEP_START" in s
            )
            work_s = sum(
                s.get("STEP_SUCCESS", s.get("STEP_FAILURE", s["STEP_START"])) - s["STEP_START"]
                for s in steps.values()
                if "STEP_START" in s
            )
            figures.append(
                {
                    "ok": "RUN_SUCCESS" in stamps,
                    "queued_s": stamps["RUN_STARTING"] - stamps.get("RUN_ENQUEUED", stamps["RUN_STARTING"]),
                    "launch_to_start_s": stamps["RUN_START"] - stamps["RUN_STARTING"],
                    "start_to_end_s": end - stamps["RUN_START"],
                    "launch_to_end_s": end - stamps["RUN_STARTING"],
                    "step_processes_s": process_s,
                    "steps_s": work_s,
                    "end": end,
                }
            )

    def summary(key: str) -> dict:
        values = [f[key] for f in figures]
        if not values:
            return {}
        return {
            "median_s": round(statistics.median(values), 2),
            "mean_s": round(statistics.fmean(values), 2),
            "min_s": round(min(values), 2),
            "max_s": round(max(values), 2),
        }

    return {
        "flights": len(flights),
        "runs": len(runs),
        "succeeded": sum(f["ok"] for f in figures),
        "statuses": sorted({r.status.value for r in runs}),
        "backfill_wall_s": round(max((f["end"] for f in figures), default=time.time()) - submitted, 1),
        "launch_to_start": summary("launch_to_start_s"),
        "start_to_end": summary("start_to_end_s"),
        "launch_to_end": summary("launch_to_end_s"),
        "step_processes": summary("step_processes_s"),
        "steps": summary("steps_s"),
        "queued": summary("queued_s"),
    }


def launched_figures(
    workdir: Path,
    name: str,
    archive_path: Path,
    noop_runs: int,
    real_flights: int,
    postgres: bool,
    executors: list[str],
    rounds: int,
) -> dict:
    """The no-op backfill, then (``real_flights`` > 0) the per-flight stages over real flights; each
    once per executor in ``executors`` per round, the executors taking turns (so that they share the
    machine's load), each on flights of its own."""
    out = {}
    with deployment(workdir, name, archive_path, postgres) as instance:
        batches = [(r, e) for r in range(rounds) for e in executors]
        for k, (round_, executor) in enumerate(batches):
            label = executor if rounds == 1 else f"{executor}#{round_ + 1}"
            suffix = "" if executors == ["default"] else f"_{label}"
            if noop_runs:
                flights = [f"demo-flight-{k * noop_runs + i:03d}" for i in range(noop_runs)]
                out[f"noop_backfill{suffix}"] = launched_backfill(
                    instance,
                    ["noop_per_flight"],
                    flights,
                    EXECUTION_RUN_CONFIG[executor],
                    timeout_s=60 * noop_runs,
                )
                print(
                    json.dumps({name: {f"noop_backfill{suffix}": out[f"noop_backfill{suffix}"]}}), flush=True
                )
            if real_flights:
                from sar_pipeline.definitions import defs

                job = defs().resolve_job_def("flight_job")
                keys = [k.to_user_string() for k in sorted(job.asset_layer.executable_asset_keys)]
                flights = [f"demo-flight-{k * real_flights + i:03d}" for i in range(real_flights)]
                run_config = {**FLIGHT_RUN_CONFIG, **EXECUTION_RUN_CONFIG[executor]}
                figures = launched_backfill(instance, keys, flights, run_config, timeout_s=120 * real_flights)
                out[f"flight_backfill{suffix}"] = {**figures, "assets": keys, "load_average": os.getloadavg()}
                print(json.dumps({name: {f"flight_backfill{suffix}": figures}}), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--flights", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20, help="no-op partition runs per instance")
    parser.add_argument("--sample", type=int, default=8, help="flights backfilled for real")
    parser.add_argument("--postgres", action="store_true", help="also on a throwaway PostgreSQL")
    parser.add_argument("--launched", type=int, default=0, help="no-op runs launched through the daemon")
    parser.add_argument(
        "--launched-flights", type=int, default=0, help="flights backfilled through the daemon"
    )
    parser.add_argument(
        "--executors",
        nargs="+",
        default=["default"],
        choices=sorted(EXECUTION_RUN_CONFIG),
        help="launched runs once per executor (run config of multi_or_in_process_executor)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="launched backfills per executor, interleaved")
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
    if args.launched or args.launched_flights:
        for name in ("sqlite", "postgres"):
            if name == "postgres" and not args.postgres:
                continue
            key = f"launched_{name}"
            # the real per-flight backfill once (on SQLite, the embedded default); the no-op on both
            real = args.launched_flights if name == "sqlite" else 0
            out[key] = launched_figures(
                args.workdir,
                name,
                archive.root,
                args.launched,
                real,
                name == "postgres",
                args.executors,
                args.rounds,
            )
            print(json.dumps({key: out[key]}), flush=True)
    if "backfill" not in args.skip:
        out["backfill_sample"] = backfill_sample(args.workdir, archive.root, args.sample, args.flights)
    out["machine"]["load_average_end"] = os.getloadavg()
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
