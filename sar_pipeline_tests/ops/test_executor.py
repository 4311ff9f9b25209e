"""The code location's executor: per-flight runs in process, pools still held, other runs one process per step."""

import threading
import time

import dagster as dg
from dagster._core.definitions.job_base import InMemoryJob

from sar_pipeline.definitions import defs
from sar_pipeline.defs.executor import per_flight_in_process_executor, runs_per_flight
from sar_pipeline.defs.flights.partitions import flight_partitions
from sar_pipeline.defs.pools import GPU_POOL

FLIGHT_ASSETS = ["sar_scenes", "sar_tiles", "optical_tiles", "captions"]


def _executor_for(job: dg.JobDefinition, config: dict | None = None):
    context = dg.InitExecutorContext(
        job=InMemoryJob(job),
        executor_def=per_flight_in_process_executor,
        executor_config=config or {},
        instance=dg.DagsterInstance.ephemeral(),
    )
    return per_flight_in_process_executor.executor_creation_fn(context)


def test_per_flight_runs_execute_in_process_and_every_other_run_per_step():
    from dagster._core.executor.in_process import InProcessExecutor
    from dagster._core.executor.multiprocess import MultiprocessExecutor

    definitions = defs()
    repository = definitions.get_repository_def()
    flight_job = definitions.resolve_job_def("flight_job")
    training_job = definitions.resolve_job_def("training_job")
    assert flight_job.executor_def is per_flight_in_process_executor
    assert training_job.executor_def is per_flight_in_process_executor
    # a backfill of the per-flight stages runs the implicit asset job on a subset of it
    backfill = repository.get_maybe_subset_job_def(
        "__ASSET_JOB", asset_selection={dg.AssetKey(k) for k in FLIGHT_ASSETS}
    )
    mixed = repository.get_maybe_subset_job_def(
        "__ASSET_JOB", asset_selection={dg.AssetKey(k) for k in [*FLIGHT_ASSETS, "training_dataset"]}
    )
    assert runs_per_flight(flight_job) and runs_per_flight(backfill)
    assert not runs_per_flight(training_job) and not runs_per_flight(mixed)

    assert isinstance(_executor_for(flight_job), InProcessExecutor)
    assert isinstance(_executor_for(backfill), InProcessExecutor)
    assert isinstance(_executor_for(training_job), MultiprocessExecutor)
    assert isinstance(_executor_for(mixed), MultiprocessExecutor)
    # run config still chooses, as with Dagster's multi_or_in_process_executor
    chosen = _executor_for(flight_job, {"multiprocess": {"max_concurrent": 2, "retries": {"enabled": {}}}})
    assert isinstance(chosen, MultiprocessExecutor)
    assert isinstance(
        _executor_for(training_job, {"in_process": {"retries": {"enabled": {}}}}), InProcessExecutor
    )


# a per-flight asset in pool "gpu", as BLIP captions are: notes its flight and the pool's slots in use
# while it runs, and fails for flight "bad"
STARTED: list[tuple[str, int]] = []


@dg.asset(partitions_def=flight_partitions, pool=GPU_POOL)
def gpu_step(context: dg.AssetExecutionContext) -> None:
    in_use = context.instance.event_log_storage.get_concurrency_info(GPU_POOL).active_slot_count
    STARTED.append((context.partition_key, in_use))
    if context.partition_key == "bad":
        raise ValueError("this flight's step fails")


def pool_job() -> dg.JobDefinition:
    return dg.Definitions(
        assets=[gpu_step],
        jobs=[dg.define_asset_job("pool_job", [gpu_step], partitions_def=flight_partitions)],
        executor=per_flight_in_process_executor,
    ).resolve_job_def("pool_job")


def _events(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [r.dagster_event.event_type.name for r in instance.all_logs(run_id) if r.dagster_event]


def test_in_process_per_flight_runs_wait_for_a_pool_slot_and_fail_alone(tmp_path):
    STARTED.clear()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions(flight_partitions.name, ["good", "bad"])
        storage = instance.event_log_storage
        storage.set_concurrency_slots(GPU_POOL, 1)
        # another run holds the only GPU slot
        assert storage.claim_concurrency_slot(GPU_POOL, "another-run", "its-step").is_claimed
        results = {}

        def launch(flight):
            results[flight] = dg.execute_job(
                dg.reconstructable(pool_job),
                instance,
                tags={"dagster/partition": flight},
                raise_on_error=False,
            )

        waiting = threading.Thread(target=launch, args=("good",))
        waiting.start()
        time.sleep(6)
        assert STARTED == []  # still waiting for the slot
        storage.free_concurrency_slots_for_run("another-run")
        waiting.join(timeout=120)
        assert not waiting.is_alive() and results["good"].success
        assert STARTED == [("good", 1)]  # it ran holding the slot
        assert "Executing steps in process" in " ".join(
            r.dagster_event.message or ""
            for r in instance.all_logs(results["good"].run_id)
            if r.dagster_event
        )
        # and gave it back
        assert storage.get_concurrency_info(GPU_POOL).active_slot_count == 0

        launch("bad")
        assert not results["bad"].success and "STEP_FAILURE" in _events(instance, results["bad"].run_id)
        good_run = instance.get_run_by_id(results["good"].run_id)
        assert good_run.status == dg.DagsterRunStatus.SUCCESS
        assert storage.get_concurrency_info(GPU_POOL).active_slot_count == 0
