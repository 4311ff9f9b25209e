import json

import dagster as dg

from sar_pipeline.defs.flights.partitions import flight_partitions
from sar_pipeline.defs.jobs import flight_job
from sar_pipeline.defs.resources import SarArchiveResource


def new_flight_ids(listed: list[str], cursor: str | None, registered: set[str]) -> list[str]:
    """Flights listed by the archive that neither the cursor nor the instance has seen."""
    seen = set(json.loads(cursor)["seen"]) if cursor else set()
    return sorted(f for f in listed if f not in seen and f not in registered)


@dg.sensor(
    job=flight_job,
    minimum_interval_seconds=300,
    description="Adds a `flight` partition for each flight that appears in the archive and "
    "launches the per-flight stages for it. The cursor holds the flights already seen.",
)
def new_flights(context: dg.SensorEvaluationContext, archive: SarArchiveResource) -> dg.SensorResult:
    sar_archive = archive.get_archive()
    listed = [f.flight_id for f in sar_archive.list_flights()]
    for problem in getattr(sar_archive, "problems", []):
        context.log.warning(f"archive problem: {problem}")
    registered = set(context.instance.get_dynamic_partitions(flight_partitions.name))
    new = new_flight_ids(listed, context.cursor, registered)
    seen = sorted(set(json.loads(context.cursor)["seen"] if context.cursor else []) | set(listed))
    if not new:
        return dg.SensorResult(skip_reason=dg.SkipReason("no new flight"), cursor=json.dumps({"seen": seen}))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=f, run_key=f) for f in new],
        dynamic_partitions_requests=[flight_partitions.build_add_request(new)],
        cursor=json.dumps({"seen": seen}),
    )
