"""What ``sar-pipeline run`` prints under a run's line: a summary of what the stages logged, not the
event log (``run_control.logged_summary``)."""

import dagster as dg

from sar_pipeline.run_control import logged_summary


@dg.op
def tiling(context: dg.OpExecutionContext) -> int:
    for k in range(5):
        context.log.info(f"left out: tile {k}")
    context.log.warning("scene 7: no tile kept")
    raise dg.Failure("no tile kept")


@dg.op
def captions(context: dg.OpExecutionContext, tiles: int) -> None:
    context.log.info("never runs")


@dg.job
def flight():
    captions(tiling())


def test_the_summary_keeps_warnings_and_counts_the_rest_without_dagsters_own_lines():
    instance = dg.DagsterInstance.ephemeral()
    result = flight.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert logged_summary(instance, result.run_id) == [
        "tiling: WARNING: scene 7: no tile kept",
        "tiling: left out: tile 0 (and 4 more messages: the run's log)",
    ]  # not Dagster's "Dependencies for step captions failed … Not executing" (captions never started)
