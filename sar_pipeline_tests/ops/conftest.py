"""A deployment on this machine, as docker/compose.yaml runs it: Postgres, a code server over gRPC,
the daemon (and, for the browser test, the webserver), all on 127.0.0.1, with docker/dagster.yaml.

One deployment per test session: a one-flight demo archive registered by the ``new_flights``
sensor, run through the queue and the run launcher, and the dataset built by the automation sensor.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest

from sar_pipeline import paths
from sar_pipeline.archive.demo import write_demo_archive
from sar_pipeline_tests.services import PostgresCluster, dagster_process, free_port, venv_tool

#: how long the daemon may take to register the flight, run it and build the dataset
DEPLOYMENT_TIMEOUT_S = 240


class Deployment:
    """What the tests read: the Postgres cluster, the instance, the environment and the processes' logs."""

    def __init__(self, root: Path, postgres: PostgresCluster, env: dict[str, str], workspace: Path):
        self.root, self.postgres, self.env, self.workspace = root, postgres, env, workspace
        self.flight_id = ""

    def instance(self) -> dg.DagsterInstance:
        """The deployment's instance (Postgres), seen from this process through the same environment
        variables (set in this process while the fixture lives)."""
        return dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"])

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _failures(instance: dg.DagsterInstance) -> list[str]:
    """The error messages of failed runs (step and run failures)."""
    messages = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])):
        for record in instance.all_logs(run.run_id):
            event = record.dagster_event
            if event is not None and event.event_type in (
                dg.DagsterEventType.STEP_FAILURE,
                dg.DagsterEventType.RUN_FAILURE,  # stored as "PIPELINE_FAILURE"
                dg.DagsterEventType.ENGINE_EVENT,
            ):
                error = getattr(event.event_specific_data, "error", None)
                messages.append(f"{run.job_name} {event.event_type_value}: {record.message} {error or ''}")
    return messages


def _wait_for(predicate, what: str, deployment: Deployment, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    instance = deployment.instance()
    while time.monotonic() < deadline:
        if predicate():
            return
        failures = _failures(instance)
        if failures:
            raise AssertionError(f"{what}: a run failed\n" + "\n".join(failures)[-6000:])
        time.sleep(2)
    runs = [(r.job_name, r.status.value, r.run_id) for r in instance.get_runs()]
    daemon = [line for line in deployment.log("daemon").splitlines() if "AssetDaemon" not in line]
    raise AssertionError(
        f"{what} after {timeout_s:.0f} s; runs: {runs}; daemon log:\n" + "\n".join(daemon[-40:])
    )


@pytest.fixture(scope="session")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("deployment")
    demo = write_demo_archive(root / "archive", flights=1, seed=3)
    home = root / "dagster_home"
    home.mkdir()
    shutil.copyfile(paths.PROJECT_ROOT / "docker" / "dagster.yaml", home / "dagster.yaml")
    grpc_port = free_port()
    workspace = root / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - grpc_server:\n"
        f"      host: 127.0.0.1\n      port: {grpc_port}\n      location_name: sar_pipeline\n"
    )
    with PostgresCluster() as postgres, pytest.MonkeyPatch.context() as patch:
        for key, value in postgres.env().items():
            patch.setenv(key, value)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SAR_PIPELINE_", "DAGSTER_"))},
            **postgres.env(),
            "DAGSTER_HOME": str(home),
            "SAR_PIPELINE_DATA": str(root / "data"),
            "SAR_PIPELINE_ARCHIVE": str(demo.catalog_path),
            "SAR_PIPELINE_STORAGE": str(root / "storage"),
            # no retraining tick while the test runs (the model stages are tested elsewhere)
            "SAR_PIPELINE_RETRAIN_CRON": "0 0 1 1 *",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        d = Deployment(root, postgres, env, workspace)
        d.flight_id = demo.flight_ids[0]
        code_server = [venv_tool("dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(grpc_port)]
        code_server += ["-m", "sar_pipeline.definitions", "--location-name", "sar_pipeline"]
        with (
            dagster_process(code_server, env, root / "code-server.log", paths.PROJECT_ROOT, port=grpc_port),
            dagster_process(
                [venv_tool("dagster-daemon"), "run", "-w", str(workspace)], env, root / "daemon.log", root
            ),
        ):
            # what a user does in the UI's Automation tab: turn the new_flights sensor on
            started = subprocess.run(
                [venv_tool("dagster"), "sensor", "start", "new_flights", "-w", str(workspace)],
                env=env,
                cwd=root,
                capture_output=True,
                text=True,
            )
            assert started.returncode == 0, started.stdout + started.stderr
            instance = d.instance()
            storage = root / "storage"
            _wait_for(
                lambda: (
                    (storage / "dataset" / "current.json").exists()
                    and instance.get_latest_materialization_event(dg.AssetKey("training_dataset")) is not None
                    and not instance.get_runs(
                        filters=dg.RunsFilter(
                            statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.QUEUED]
                        )
                    )
                ),
                "no dataset version built by the daemon",
                d,
                DEPLOYMENT_TIMEOUT_S,
            )
            yield d
