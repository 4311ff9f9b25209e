"""How a run executes its steps: a per-flight run in its own process, every other run one process per step
(Dagster's default), or one Kubernetes Job per step when the deployment names a ``k8s_job_executor``
configuration.

Why per-flight runs execute in process
--------------------------------------
A run of the per-flight stages (``flight_job``, or a backfill/UI run whose every asset is partitioned
by ``flight``) is many small steps: the four stages and their checks, nine steps of a few seconds at
most. Under the multiprocess executor each step is a fresh interpreter that loads the code location
again: on the loaded 2-core development machine a launched per-flight run (4 at once) spent 209–294 s
starting step processes for 20–29 s of steps. In the run's own process the same runs took 22–25 s
from launch to success, 4.0–6.3× the flights per hour; a forkserver preloading every module of the
definitions reached only 2.6–2.7× (``docs/benchmarks.md``, "Executors for per-flight runs"). Nothing a
per-flight run relies on changes:

- pools still apply: the in-process executor claims a slot of a step's pool (``gpu`` for BLIP
  captions) from the instance before the step starts and waits while none is free, as the
  multiprocess one does (Dagster 1.13, ``dagster._core.executor.in_process``:
  ``InstanceConcurrencyContext``; ``sar_pipeline_tests/ops/test_executor.py``);
- a failed step fails its run, i.e. its flight; other flights are other runs, other processes;
- the runs, their steps and events look as before in the UI; the steps run one after another in
  dependency order (the multiprocess executor ran a stage's checks side by side), and the run's
  stdout/stderr are captured once for all its steps instead of once per step.

Every other run (the dataset, the model stages, a run mixing both) keeps one process per step: its
steps may hold a model on the GPU, and a process that ends returns all of that memory before the next
GPU step (e.g. the training subprocess) starts.

Run config still chooses explicitly (``execution: config: in_process: {}`` or ``multiprocess: {…}``,
as with Dagster's ``multi_or_in_process_executor``); without it the run's assets decide.

``$SAR_PIPELINE_K8S_EXECUTOR``: path of a YAML file with a ``k8s_job_executor`` configuration
(``docker/k8s/executor.yaml``: namespace, secrets, per-step resources, the shared cache volume); then
every step of every run is a Kubernetes Job (per-flight runs too: a BLIP ``captions`` step needs its
own GPU pod). GPU steps add their GPU request through their ``dagster-k8s/config`` tag
(``sar_pipeline.defs.pools.GPU_STEP_TAGS``).
"""

import os
from pathlib import Path

import dagster as dg
import yaml

from sar_pipeline.defs.flights.partitions import flight_partitions
from sar_pipeline.errors import ConfigError

#: the environment variable naming the k8s_job_executor configuration file
K8S_EXECUTOR_VARIABLE = "SAR_PIPELINE_K8S_EXECUTOR"


def runs_per_flight(job: dg.JobDefinition) -> bool:
    """Whether every asset ``job`` (a job, or the subset of one that a run executes) materialises is
    partitioned by ``flight``: per-flight stages only."""
    keys = job.asset_layer.executable_asset_keys
    graph = job.asset_layer.asset_graph
    return bool(keys) and all(graph.get(key).partitions_def == flight_partitions for key in keys)


#: Dagster's own choice between one process per step and all steps in process, made optional
_EXECUTION_MODES = dg.multi_or_in_process_executor.config_schema.as_field().config_type


@dg.executor(
    name="per_flight_in_process",
    config_schema=dg.Field(_EXECUTION_MODES, is_required=False),
    requirements=lambda config: dg.multi_or_in_process_executor.get_requirements(config or {}),
)
def per_flight_in_process_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """Dagster's ``multi_or_in_process_executor``; without run config choosing, in process for a
    per-flight run and one process per step for any other (module docstring)."""
    # process_config (not public API, Dagster 1.13): fills the chosen mode's defaults (retries…)
    from dagster._config import process_config

    config = init_context.executor_config
    if not config:
        mode = "in_process" if runs_per_flight(init_context.job.get_definition()) else "multiprocess"
        config = process_config(_EXECUTION_MODES, {mode: {}}).value
    chosen = dg.InitExecutorContext(
        job=init_context.job,
        executor_def=dg.multi_or_in_process_executor,
        executor_config=config,
        instance=init_context.instance,
    )
    return dg.multi_or_in_process_executor.executor_creation_fn(chosen)


@dg.definitions
def defs() -> dg.Definitions:
    path = os.environ.get(K8S_EXECUTOR_VARIABLE)
    if not path:
        return dg.Definitions(executor=per_flight_in_process_executor)
    from dagster_k8s import k8s_job_executor

    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"${K8S_EXECUTOR_VARIABLE}={path}", f"cannot read the executor configuration: {exc}"
        ) from exc
    return dg.Definitions(executor=k8s_job_executor.configured(config, name="k8s_steps"))
