"""The project's code location plus one no-op asset partitioned by flight, for the launched-run benchmark.

A run launched by the ``DefaultRunLauncher`` (the daemon, ``dg launch``) starts a process that loads
this module, as it would load ``sar_pipeline.definitions``, and a multiprocess executor starts one
more per step: loading the whole project here makes the no-op run pay what a per-flight run pays
before its first line of work. Loaded as a module (``dagster code-server start -m noop_location -d
benchmarks``), with its definitions built by a ``@dg.definitions`` function, as the project's own
``sar_pipeline.definitions`` is: a forkserver's default preload (the job's module) then preloads
what it would preload in a deployment.
"""

import dagster as dg

from sar_pipeline import definitions as project
from sar_pipeline.defs.flights.partitions import flight_partitions


@dg.asset(partitions_def=flight_partitions, group_name="benchmark")
def noop_per_flight() -> dg.MaterializeResult:
    """Does nothing: what a launched partition run costs Dagster and the code location."""
    return dg.MaterializeResult(metadata={"ok": True})


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(project.defs(), dg.Definitions(assets=[noop_per_flight]))
