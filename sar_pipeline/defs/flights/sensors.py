import datetime as dt
import json

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset

from sar_pipeline.defs.flights.partitions import flight_partitions
from sar_pipeline.defs.jobs import flight_job
from sar_pipeline.defs.resources import SarArchiveResource
from sar_pipeline.timestamps import iso_utc, parse_utc

#: Up to this many new flights in one tick get one ``flight_job`` run each (run key = flight id, shown
#: under the job). More (a first tick over a large archive, a bulk import) get ONE backfill of the
#: per-flight stages over all of them: the daemon creates a run by computing its execution plan
#: through the code server (~0.3 s each on an idle 2-core machine, several seconds under load), so a
#: tick requesting 1,000 runs would take many minutes, while a backfill request is one record and the
#: backfill daemon launches its runs as run slots free up (docs/benchmarks.md, "1,000 flights", "Sensor tick").
MAX_RUNS_PER_TICK = 10

#: Every this often the archive is listed whole (``since=None``) instead of only the flights updated
#: after the cursor's marker: a flight imported with an ``updated`` marker older than the newest one
#: seen (a historical campaign whose items carry only their acquisition time) is then still found.
FULL_LISTING_INTERVAL = dt.timedelta(hours=24)


def _read_cursor(cursor: str | None) -> dict:
    """``{"updated": newest marker seen, "full_listing": ISO time of the last whole listing}``; an
    empty dict for no cursor or one written by an earlier version (``{"seen": […]}``)."""
    try:
        state = json.loads(cursor) if cursor else {}
    except ValueError:
        return {}
    return state if isinstance(state, dict) and "full_listing" in state else {}


@dg.sensor(
    job=flight_job,
    minimum_interval_seconds=300,
    description="Adds a `flight` partition for each flight that appears in the archive and launches the "
    "per-flight stages for it (one run per flight, or one backfill when more than "
    f"{MAX_RUNS_PER_TICK} arrive at once). The cursor holds the newest `updated` marker seen: each "
    "tick asks the archive only for flights updated since (a whole listing once a day).",
)
def new_flights(context: dg.SensorEvaluationContext, archive: SarArchiveResource) -> dg.SensorResult:
    sar_archive = archive.get_archive()
    state = _read_cursor(context.cursor)
    now = dt.datetime.now(dt.UTC)
    last_full = state.get("full_listing")
    whole = last_full is None or now - parse_utc(last_full) >= FULL_LISTING_INTERVAL
    since = None if whole else state.get("updated")
    listed = sar_archive.list_flights(since=since)
    for problem in getattr(sar_archive, "problems", []):
        context.log.warning(f"archive problem: {problem}")
    # flights already registered are never requested again (a reset cursor, a re-listed flight)
    registered = set(context.instance.get_dynamic_partitions(flight_partitions.name))
    new = sorted({f.flight_id for f in listed} - registered)
    markers = [m for m in [state.get("updated"), *(f.updated for f in listed)] if m]
    cursor = json.dumps(
        {"updated": max(markers) if markers else None, "full_listing": iso_utc(now) if whole else last_full},
        sort_keys=True,
    )
    if not new:
        return dg.SensorResult(skip_reason=dg.SkipReason("no new flight"), cursor=cursor)
    add = [flight_partitions.build_add_request(new)]
    if len(new) <= MAX_RUNS_PER_TICK:
        requests = [dg.RunRequest(partition_key=f, run_key=f) for f in new]
    else:
        context.log.info(f"{len(new)} new flights: one backfill of the per-flight stages")
        requests = [flight_backfill_request(context, new)]
    return dg.SensorResult(run_requests=requests, dynamic_partitions_requests=add, cursor=cursor)


def flight_backfill_request(context: dg.SensorEvaluationContext, flight_ids: list[str]) -> dg.RunRequest:
    """One request the sensor daemon turns into a backfill of ``flight_job``'s assets over ``flight_ids``.

    ``RunRequest.for_asset_graph_subset`` is how Dagster's own automation sensors request
    backfills; its ``AssetGraphSubset`` is not public API (checked against Dagster 1.13 by
    ``test_many_new_flights_make_one_backfill``).
    """
    if context.repository_def is None:
        raise dg.DagsterInvariantViolationError(
            "new_flights needs its definitions to request a backfill (build_sensor_context(definitions=…))"
        )
    keys = context.repository_def.get_job(flight_job.name).asset_layer.executable_asset_keys
    subset = flight_partitions.empty_subset().with_partition_keys(flight_ids)
    graph_subset = AssetGraphSubset(partitions_subsets_by_asset_key=dict.fromkeys(sorted(keys), subset))
    return dg.RunRequest.for_asset_graph_subset(
        graph_subset, tags={"sar_pipeline/new_flights": str(len(flight_ids))}
    )
