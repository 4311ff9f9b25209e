"""How a diffusion training run is launched: out of process, through Dagster Pipes."""

import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

from sar_pipeline.defs.resources import StorageRoot
from sar_pipeline.diffusion.config import BaseModelSettings
from sar_pipeline.diffusion.launch import (
    TRAIN_MODULE,
    TrainerLaunchSettings,
    TrainerPodSettings,
    launch_command,
)
from sar_pipeline.diffusion.models import ensure_tiny_base
from sar_pipeline.processes import start_child


class SdTrainerLauncher(dg.ConfigurableResource, TrainerLaunchSettings):
    """Runs ``sar_pipeline.diffusion.train`` in a child process that reports back through Pipes.

    Locally: a subprocess of this code location's own Python (``python -m …`` for one process,
    ``accelerate launch --multi_gpu --num_processes N`` for DDP on GPUs, torchrun + gloo for DDP on
    CPUs), watched while it runs so each checkpoint is recorded when written. Run config cannot
    choose the executable; ``env`` and ``accelerate_args`` take only allow-listed names
    (``sar_pipeline.diffusion.launch``). To train in a GPU pod, subclass and override ``launch``
    to run the same command with ``dagster_k8s.PipesK8sClient`` (the image is deployment code) and
    call ``on_message`` with ``invocation.get_custom_messages()`` afterwards; the asset does not
    change.
    """

    def command(self, config_path: str, module: str = TRAIN_MODULE) -> tuple[list[str], dict[str, str]]:
        """The child's command line and added environment for a training config file."""
        return launch_command(config_path, self, module)

    def launch(
        self,
        context: dg.AssetExecutionContext,
        config_path: str,
        extras: Mapping[str, Any] | None = None,
        on_message: Callable[[Any], None] | None = None,
        module: str = TRAIN_MODULE,
    ) -> dg.PipesClientCompletedInvocation:
        """Run training to completion (raises if the child fails).

        ``on_message`` is called with each custom message (one per checkpoint) while the child
        still runs, so checkpoints show up in Dagster as they are written.
        """
        command, launch_env = self.command(config_path, module)
        context.log.info("launching: " + " ".join(command))
        handled = 0
        with dg.open_pipes_session(
            context=context,
            context_injector=dg.PipesEnvContextInjector(),
            message_reader=dg.PipesTempFileMessageReader(),
            extras=dict(extras or {}),
        ) as session:
            # dies with this process, even when it is killed with SIGKILL (processes.die_with_parent)
            process = start_child(
                command, env={**os.environ, **launch_env, **session.get_bootstrap_env_vars()}
            )
            try:
                while process.poll() is None:
                    time.sleep(1.0)
                    messages = session.get_custom_messages()
                    for message in messages[handled:]:
                        if on_message is not None:
                            on_message(message)
                    handled = len(messages)
            except dg.DagsterExecutionInterruptedError:
                context.log.info("interrupted: sending SIGINT to the training process")
                process.send_signal(signal.SIGINT)
                process.wait(timeout=60)
                raise
            if process.returncode != 0:
                raise dg.Failure(
                    description=f"training process failed with code {process.returncode}: see its log above"
                )
        for message in session.get_custom_messages()[handled:]:  # those sent just before exit
            if on_message is not None:
                on_message(message)
        return dg.PipesClientCompletedInvocation(session)


#: the environment variable naming the image the training pod runs (Kubernetes deployments)
TRAINER_IMAGE_VARIABLE = "SAR_PIPELINE_TRAINER_IMAGE"


#: the ConfigMap and Secret of docker/k8s/ every pod of the deployment takes its environment from
K8S_ENV_CONFIG_MAP = "sar-pipeline-env"
K8S_SECRET = "sar-pipeline-secrets"


def trainer_in_own_pod() -> bool:
    """Whether training runs in its own Kubernetes GPU pod (the deployment set ``$SAR_PIPELINE_TRAINER_IMAGE``)."""
    return bool(os.environ.get(TRAINER_IMAGE_VARIABLE))


class SdTrainerK8s(SdTrainerLauncher, TrainerPodSettings):
    """Runs the same training command as :class:`SdTrainerLauncher` in a GPU pod through
    ``dagster_k8s.PipesK8sClient``: image ``$SAR_PIPELINE_TRAINER_IMAGE`` (the code location's CUDA
    image), ``nvidia.com/gpu`` requested, the shared cache volume mounted where the step pod has it
    (``config_path`` lies on it), the deployment's ConfigMap and Secret as environment. Checkpoints
    are reported when the pod has finished (its log is the message channel)."""

    def launch(
        self,
        context: dg.AssetExecutionContext,
        config_path: str,
        extras: Mapping[str, Any] | None = None,
        on_message: Callable[[Any], None] | None = None,
        module: str = TRAIN_MODULE,
    ) -> dg.PipesClientCompletedInvocation:
        from dagster_k8s import PipesK8sClient

        image = os.environ.get(TRAINER_IMAGE_VARIABLE)
        if not image:
            raise dg.Failure(description=f"${TRAINER_IMAGE_VARIABLE} is not set: no image to train in")
        command, launch_env = self.command(config_path, module)
        context.log.info(f"launching in a pod of {image} with {self.gpus} GPU(s): " + " ".join(command))
        invocation = PipesK8sClient().run(
            context=context,
            image=image,
            command=command,
            namespace=self.namespace,
            env=launch_env,
            base_pod_spec=self.pod_spec([K8S_ENV_CONFIG_MAP], [K8S_SECRET]),
            extras=dict(extras or {}),
        )
        for message in invocation.get_custom_messages():
            if on_message is not None:
                on_message(message)
        return invocation


class DiffusionBase(dg.ConfigurableResource, BaseModelSettings):
    """The base model and tile resolution shared by ``latent_cache`` and ``sd_model`` (they must agree)."""

    def model_path(self, storage: StorageRoot, dataset_version: str) -> str:
        """The base model folder; tiny: written once (default: per dataset version under models/tiny-base/)."""
        if not self.is_tiny:
            return self.base_model_path
        if self.base_model_path:
            folder = self.base_model_path
        else:  # shared through the storage root (pulled, written once, pushed)
            storage.pull("models", "tiny-base", dataset_version)
            folder = storage.local_path("models", "tiny-base", dataset_version)
        ensure_tiny_base(
            folder,
            str(storage.local_path()),
            dataset_version,
            self.tile_resolution(),
            self.tiny_vae_steps,
            family=self.family,
        )
        if not self.base_model_path:
            storage.push("models", "tiny-base", dataset_version)
        return str(folder)


@dg.definitions
def defs() -> dg.Definitions:
    # the embedded deployment is the CPU demo: no weights ship with it (sd15 needs base_model_path)
    trainer = SdTrainerK8s() if trainer_in_own_pod() else SdTrainerLauncher()
    return dg.Definitions(resources={"sd_trainer": trainer, "diffusion_base": DiffusionBase(preset="tiny")})
