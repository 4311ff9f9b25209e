"""The project's code location plus one no-op asset partitioned by flight, for the launched-run benchmark.

A run launched by the ``DefaultRunLauncher`` (the daemon, ``dg launch``) starts a process that loads
this file, as it would load ``sar_pipeline.definitions``, and the default multiprocess executor starts
one more per step: loading the whole project here makes the no-op run pay what a per-flight run pays
before its first line of work.
"""

import dagster as dg

from sar_pipeline import definitions as project  # not its defs function: one Definitions here
from sar_pipeline.defs.flights.partitions import flight_partitions


@dg.asset(partitions_def=flight_partitions, group_name="benchmark")
def noop_per_flight() -> dg.MaterializeResult:
    """Does nothing: what a launched partition run costs Dagster and the code location."""
    return dg.MaterializeResult(metadata={"ok": True})


defs = dg.Definitions.merge(project.defs(), dg.Definitions(assets=[noop_per_flight]))
