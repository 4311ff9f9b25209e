"""How a run executes its steps: Dagster's default (one process per step on the code location's host),
or one Kubernetes Job per step when the deployment names a ``k8s_job_executor`` configuration.

``$SAR_PIPELINE_K8S_EXECUTOR``: path of a YAML file with that configuration (``docker/k8s/executor.yaml``:
namespace, secrets, per-step resources, the shared cache volume). GPU steps add their GPU request
through their ``dagster-k8s/config`` tag (``sar_pipeline.defs.pools.GPU_STEP_TAGS``).
"""

import os
from pathlib import Path

import dagster as dg
import yaml

from sar_pipeline.errors import ConfigError

#: the environment variable naming the k8s_job_executor configuration file
K8S_EXECUTOR_VARIABLE = "SAR_PIPELINE_K8S_EXECUTOR"


@dg.definitions
def defs() -> dg.Definitions:
    path = os.environ.get(K8S_EXECUTOR_VARIABLE)
    if not path:
        return dg.Definitions()
    from dagster_k8s import k8s_job_executor

    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"${K8S_EXECUTOR_VARIABLE}={path}", f"cannot read the executor configuration: {exc}"
        ) from exc
    return dg.Definitions(executor=k8s_job_executor.configured(config, name="k8s_steps"))
