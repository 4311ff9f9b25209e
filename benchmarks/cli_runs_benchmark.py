"""A per-flight run of ``sar-pipeline run``: executed in its own process vs launched by the run launcher.

Both runs are recorded the same way (``run_control.create_located_run``: the code location's origin,
the job's snapshot, the in-process executor, a quiet console logger); what differs is who executes
them:

* **here**: ``run_control.execute_located_run`` in the CLI's process (what ``sar-pipeline run`` does);
* **launched**: the instance's run launcher (``DefaultRunLauncher``), through a workspace over the
  project's ``workspace.yaml`` (``WorkspaceProcessContext``: a code server process, once), then
  ``instance.launch_run``: a run worker process per run that loads the code location.

Per mode ``--runs`` flights of a tiny demo archive (one 300–360 px scene each), timed from creating
the run to its end, and for the launched runs also the one-off workspace load. It also checks that
the runs' job snapshot is the one the code location serves (what the UI compares before
re-executing).

    .venv/bin/python benchmarks/cli_runs_benchmark.py --workdir /tmp/cli_runs --runs 3

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path

from sar_pipeline.archive.demo import write_demo_archive
from sar_pipeline.archive.simulate import DemoSettings

TINY_FLIGHTS = DemoSettings(region_size_m=1000.0, scene_size_px=(300, 360), max_scenes_per_flight=1)
#: 64 px tiles and template captions: the stages stay cheap, the run's own cost shows
RUN_CONFIG = {"ops": {"sar_tiles": {"config": {"tile_size": 64}}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3, help="flights run per mode")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    archive = write_demo_archive(
        args.workdir / "archive", flights=2 * args.runs, seed=3, settings=TINY_FLIGHTS
    )
    os.environ.update(
        DAGSTER_HOME=str(args.workdir / "home"),
        SAR_PIPELINE_DATA=str(args.workdir / "data"),
        SAR_PIPELINE_ARCHIVE=str(archive.catalog_path),
    )
    (args.workdir / "home").mkdir()
    shutil.copyfile(Path(__file__).parent.parent / "dagster.yaml", args.workdir / "home" / "dagster.yaml")

    import dagster as dg
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    from sar_pipeline import run_control
    from sar_pipeline.cli import job_run_config, register_flights
    from sar_pipeline.definitions import defs as load_defs

    instance = dg.DagsterInstance.get()
    defs = load_defs()
    flights = register_flights(defs, instance)
    job = defs.resolve_job_def("flight_job")
    config = job_run_config(job, RUN_CONFIG)

    def one(flight: str, launch) -> float:
        start = time.perf_counter()
        run = run_control.create_located_run(instance, job, partition_key=flight, run_config=config)
        launch(run)
        while not (current := instance.get_run_by_id(run.run_id)).is_finished:
            time.sleep(0.2)
        assert current.status == dg.DagsterRunStatus.SUCCESS, (flight, current.status)
        return time.perf_counter() - start

    here = [
        one(f, lambda run: run_control.execute_located_run(instance, job, run)) for f in flights[: args.runs]
    ]
    start = time.perf_counter()
    with WorkspaceProcessContext(
        instance, WorkspaceFileTarget([str(run_control.WORKSPACE_FILE)])
    ) as workspace:
        request = workspace.create_request_context()
        location = request.get_code_location("sar_pipeline")
        served = location.get_repository("__repository__").get_full_job("flight_job")
        workspace_load = time.perf_counter() - start
        launched = [
            one(f, lambda run: instance.launch_run(run.run_id, request)) for f in flights[args.runs :]
        ]
    runs = instance.get_runs(filters=dg.RunsFilter(job_name="flight_job"))
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end",
        "run_launcher": type(instance.run_launcher).__name__,
        "here_s": [round(t, 1) for t in here],
        "launched_s": [round(t, 1) for t in launched],
        "here_median_s": round(statistics.median(here), 1),
        "launched_median_s": round(statistics.median(launched), 1),
        "workspace_load_s": round(workspace_load, 1),
        "snapshot_is_the_code_locations": all(
            r.job_snapshot_id == served.identifying_job_snapshot_id for r in runs
        ),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
