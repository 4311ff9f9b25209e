"""How a training run is started: the child's command line and environment, and what config may change.

The training child always runs this code location's own interpreter (``sys.executable``) on
``sar_pipeline.diffusion.train``: run config never names an executable, a module or a script.
Run config may only add environment variables from :data:`ALLOWED_ENV` (no ``LD_PRELOAD``,
``PYTHONPATH`` or ``PATH``, which would let it run other code) and launcher flags from
:data:`LAUNCHER_FLAGS` (no ``--no_python``, ``--config_file`` or ``--module``).

A deployment that trains in another image (a GPU pod) does not point this at another Python: it
runs the same module in that image through Dagster Pipes (``dagster_k8s.PipesK8sClient``), the
image being part of the deployment's code, not of run config.
"""

from __future__ import annotations

import fnmatch
import sys

from pydantic import Field, field_validator

from sar_pipeline.errors import ConfigError
from sar_pipeline.settings import Settings

TRAIN_MODULE = "sar_pipeline.diffusion.train"
#: the ControlNet trainer (``controlnet_model``): one process (it does not shard its batches)
CONTROLNET_MODULE = "sar_pipeline.generation.controlnet"
#: the only programs a training child may run (chosen by the asset's code, never by run config)
TRAINING_MODULES = (TRAIN_MODULE, CONTROLNET_MODULE)

# Environment variables run config may set in the training child (shell-style patterns).
ALLOWED_ENV = (
    "HF_*",
    "CUDA_*",
    "NCCL_*",
    "TORCH_*",
    "PYTORCH_*",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "TOKENIZERS_PARALLELISM",
    "CUBLAS_WORKSPACE_CONFIG",
    "PYTHONHASHSEED",
)
# ... except these, which load shared libraries or compiled extensions from a path.
DENIED_ENV = ("*PLUGIN*", "TORCH_EXTENSIONS_DIR")

# Launcher flags run config may add: name (underscores; dashes are read as underscores) → takes a value.
# accelerate launch (multi-GPU) and torchrun (multi-CPU) spellings; nothing that runs another
# program or reads another config file.
LAUNCHER_FLAGS = {
    "main_process_port": True,
    "main_process_ip": True,
    "num_machines": True,
    "machine_rank": True,
    "gpu_ids": True,
    "same_network": False,
    "num_cpu_threads_per_process": True,
    "master_port": True,
    "master_addr": True,
    "nnodes": True,
    "node_rank": True,
    "rdzv_backend": True,
    "rdzv_endpoint": True,
    "rdzv_id": True,
    "max_restarts": True,
    "monitor_interval": True,
    "quiet": False,
}


def env_name_allowed(name: str) -> bool:
    """Whether run config may set environment variable ``name`` in the training child."""
    return any(fnmatch.fnmatchcase(name, p) for p in ALLOWED_ENV) and not any(
        fnmatch.fnmatchcase(name, p) for p in DENIED_ENV
    )


class TrainerLaunchSettings(Settings):
    """How many training processes run, where, and the little run config may add to their launch."""

    num_processes: int = Field(
        default=1, ge=1, description="Training processes (GPUs); > 1 runs accelerate launch (DDP)."
    )
    cpu: bool = Field(
        default=False,
        description="Train on CPUs (DDP through torchrun + gloo when num_processes > 1), e.g. CI.",
    )
    accelerate_args: list[str] = Field(
        default_factory=list,
        description="Extra launcher flags for num_processes > 1 (accelerate launch / torchrun), e.g. "
        "['--main_process_port', '29501']. Only rendezvous and port flags are accepted: "
        + ", ".join(f"--{name}" for name in LAUNCHER_FLAGS)
        + ".",
    )
    env: dict[str, str] = Field(
        default_factory=lambda: {"HF_HUB_OFFLINE": "1"},
        description="Environment variables added to the training child's (models never download: "
        "HF_HUB_OFFLINE=1). Only names matching " + ", ".join(ALLOWED_ENV) + " are accepted, "
        "except " + ", ".join(DENIED_ENV) + ".",
    )

    @field_validator("env")
    @classmethod
    def _allowed_env(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not env_name_allowed(name):
                raise ConfigError(
                    f"env.{name}",
                    "not an allowed variable for the training process (it could make it run other "
                    f"code); allowed: {', '.join(ALLOWED_ENV)}, except {', '.join(DENIED_ENV)}",
                )
        return env

    @field_validator("accelerate_args")
    @classmethod
    def _allowed_flags(cls, args: list[str]) -> list[str]:
        expects_value = None
        for arg in args:
            if expects_value is not None:
                expects_value = None
                continue
            if not arg.startswith("--"):
                raise ConfigError(
                    f"accelerate_args {arg!r}", "not a launcher flag (only --name or --name=value)"
                )
            name, has_value, _ = arg[2:].partition("=")
            key = name.replace("-", "_")
            if key not in LAUNCHER_FLAGS:
                raise ConfigError(
                    f"accelerate_args --{name}",
                    f"not an allowed launcher flag; allowed: {', '.join('--' + f for f in LAUNCHER_FLAGS)}",
                )
            if LAUNCHER_FLAGS[key] and not has_value:
                expects_value = arg
            elif not LAUNCHER_FLAGS[key] and has_value:
                raise ConfigError(f"accelerate_args --{name}", "takes no value")
        if expects_value is not None:
            raise ConfigError(f"accelerate_args {expects_value}", "needs a value")
        return args


def launch_command(
    config_path: str, settings: TrainerLaunchSettings, module: str = TRAIN_MODULE
) -> tuple[list[str], dict[str, str]]:
    """Command line and environment (``settings.env`` plus the launcher's own) of a training run
    of ``module`` (one of :data:`TRAINING_MODULES`).

    One process: ``python -m sar_pipeline.diffusion.train``; several GPUs: ``accelerate launch
    --multi_gpu``; several CPU processes: torchrun with gloo (``accelerate launch --cpu`` starts
    several CPU processes only through mpirun). ``python`` is always ``sys.executable``.
    """
    if module not in TRAINING_MODULES:
        raise ConfigError(module, f"not a training program; expected one of {TRAINING_MODULES}")
    python = sys.executable
    train = ["-m", module, "--config", config_path]
    env = dict(settings.env)
    if settings.cpu:
        env["ACCELERATE_USE_CPU"] = "1"
    if settings.num_processes <= 1 or module == CONTROLNET_MODULE:
        return [python, *train], env
    if settings.cpu:
        launcher = [python, "-m", "torch.distributed.run", "--nproc_per_node", str(settings.num_processes)]
    else:
        launcher = [
            python,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(settings.num_processes),
        ]
    return [*launcher, *settings.accelerate_args, *train], env


class TrainerPodSettings(Settings):
    """The GPU pod a Kubernetes deployment trains in (its image comes from the deployment's
    environment, ``$SAR_PIPELINE_TRAINER_IMAGE``, never from run config)."""

    namespace: str = Field(default="default", description="Kubernetes namespace of the training pod.")
    gpus: int = Field(
        default=1, ge=1, description="GPUs the pod requests (nvidia.com/gpu); num_processes should equal it."
    )
    memory_gi: int = Field(default=64, ge=1, description="Memory the pod requests and is limited to, GiB.")
    volume_claim: str = Field(
        default="sar-pipeline-cache",
        description="PersistentVolumeClaim mounted at the same path as in the code location's pods, holding "
        "the training folder (train_config.json, dataset and latent copies, checkpoints).",
    )
    mount_path: str = Field(default="/cache", description="Where volume_claim is mounted in both pods.")
    service_account_name: str = Field(default="sar-pipeline", description="Service account of the pod.")

    def pod_spec(self, env_from_config_maps: list[str], env_from_secrets: list[str]) -> dict:
        """The pod spec (Kubernetes API field names) the training container runs in."""
        resources = {
            "requests": {"nvidia.com/gpu": str(self.gpus), "memory": f"{self.memory_gi}Gi"},
            "limits": {"nvidia.com/gpu": str(self.gpus), "memory": f"{self.memory_gi}Gi"},
        }
        env_from = [{"configMapRef": {"name": n}} for n in env_from_config_maps]
        env_from += [{"secretRef": {"name": n}} for n in env_from_secrets]
        return {
            "restartPolicy": "Never",
            "serviceAccountName": self.service_account_name,
            "containers": [
                {
                    "name": "train",
                    "resources": resources,
                    "envFrom": env_from,
                    "volumeMounts": [{"name": "cache", "mountPath": self.mount_path}],
                }
            ],
            "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": self.volume_claim}}],
        }
