"""Point 1 of running at scale: Dagster's storage on PostgreSQL, runs through the queue and the launcher.

The ``deployment`` fixture (conftest) starts a real PostgreSQL cluster, a code server over gRPC and
the daemon with ``docker/dagster.yaml``; the ``new_flights`` sensor registers the one flight of a demo
archive, the queued run goes through the run launcher, and the automation sensor (on by default)
builds a new dataset version once the flight's captions land. Everything is read back from Postgres.
"""

import contextlib

import dagster as dg
import psycopg2

PER_FLIGHT = ("sar_scenes", "sar_tiles", "optical_tiles", "captions")


def _rows(deployment, sql: str, *args) -> list[tuple]:
    with contextlib.closing(psycopg2.connect(**deployment.postgres.connect_args())) as conn:
        cursor = conn.cursor()
        cursor.execute(sql, args)
        return cursor.fetchall()


def test_a_new_flight_flows_to_a_new_dataset_version_through_the_daemon(deployment):
    instance = deployment.instance()
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert instance.get_dynamic_partitions("flight") == [deployment.flight_id]

    runs = {run.job_name: run for run in instance.get_runs()}
    flight_run, dataset_run = runs["flight_job"], runs["__ASSET_JOB"]
    assert flight_run.status == dg.DagsterRunStatus.SUCCESS, deployment.log("daemon")[-3000:]
    assert flight_run.tags["dagster/partition"] == deployment.flight_id
    assert flight_run.tags["dagster/sensor_name"] == "new_flights"
    # launched from the code location named once (pyproject / workspace.yaml): the UI lists it under its job
    assert flight_run.remote_job_origin.location_name == "sar_pipeline"
    assert dataset_run.status == dg.DagsterRunStatus.SUCCESS
    assert dataset_run.tags["dagster/sensor_name"] == "automation"
    assert dataset_run.asset_selection == {dg.AssetKey("training_dataset")}

    for name in PER_FLIGHT:
        event = instance.get_latest_materialization_event(dg.AssetKey(name))
        assert event is not None and event.run_id == flight_run.run_id, name
        assert event.dagster_event.partition == deployment.flight_id
    dataset = instance.get_latest_materialization_event(dg.AssetKey("training_dataset"))
    assert dataset.run_id == dataset_run.run_id
    assert dataset.asset_materialization.metadata["flights"].value == [deployment.flight_id]


def test_runs_event_log_and_materialisations_are_in_postgres(deployment):
    instance = deployment.instance()
    ids = {run.run_id for run in instance.get_runs()}
    rows = dict(_rows(deployment, "SELECT run_id, status FROM runs"))
    assert set(rows) == ids and set(rows.values()) == {"SUCCESS"}
    materialised = {
        key
        for (key,) in _rows(
            deployment,
            "SELECT DISTINCT asset_key FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'",
        )
    }
    expected = {dg.AssetKey(n).to_string() for n in (*PER_FLIGHT, "training_dataset")}
    assert expected <= materialised
    # per-flight check results carry their flight
    (partition,) = {
        p
        for (p,) in _rows(
            deployment,
            "SELECT DISTINCT partition FROM asset_check_executions WHERE asset_key = %s",
            dg.AssetKey("captions").to_string(),
        )
    }
    assert partition == deployment.flight_id
    # the dynamic partition the sensor added, and the sensor's cursor (instigator state), too
    assert _rows(deployment, "SELECT partition FROM dynamic_partitions") == [(deployment.flight_id,)]
    assert _rows(deployment, "SELECT count(*) FROM jobs WHERE job_body LIKE %s", "%new_flights%")[0][0] >= 1


def test_credentials_come_from_the_environment_only(deployment):
    password = deployment.postgres.password
    config = (deployment.root / "dagster_home" / "dagster.yaml").read_text()
    assert password not in config and "DAGSTER_POSTGRES_PASSWORD" in config
    leaked = _rows(deployment, "SELECT count(*) FROM event_logs WHERE event LIKE %s", f"%{password}%")
    assert leaked == [(0,)]
    for log in ("daemon", "code-server"):
        assert password not in deployment.log(log)
