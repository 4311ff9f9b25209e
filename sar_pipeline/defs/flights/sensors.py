import json

import dagster as dg

from sar_pipeline.defs.flights.partitions import flight_partitions
from sar_pipeline.defs.jobs import flight_job
from sar_pipeline.defs.resources import SarArchiveResource


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
    seen = set(json.loads(context.cursor)["seen"]) if context.cursor else set()
    # the instance's partitions count as seen too: a reset cursor re-requests nothing
    registered = set(context.instance.get_dynamic_partitions(flight_partitions.name))
    new = sorted(f for f in listed if f not in seen and f not in registered)
    cursor = json.dumps({"seen": sorted(seen | set(listed))})
    if not new:
        return dg.SensorResult(skip_reason=dg.SkipReason("no new flight"), cursor=cursor)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=f, run_key=f) for f in new],
        dynamic_partitions_requests=[flight_partitions.build_add_request(new)],
        cursor=cursor,
    )
