"""Diffusion training assets: the latent cache, and the fine-tuned Stable Diffusion model.

``sd_model`` runs training in a separate process through Dagster Pipes (``sd_trainer`` resource);
each checkpoint the child writes is recorded as an observation of ``sd_model`` (step, loss,
learning rates, checkpoint folder, thumbnail grid of the validation prompts).
"""

import hashlib
import json
from pathlib import Path

import dagster as dg

from sar_pipeline import pictures
from sar_pipeline.dataset import current_version, version_files, version_manifest
from sar_pipeline.defs.pictures import picture
from sar_pipeline.defs.pools import GPU_POOL, GPU_STEP_TAGS
from sar_pipeline.defs.resources import StorageRoot
from sar_pipeline.defs.training.automation import retrain_condition, retrain_cron
from sar_pipeline.defs.training.resources import DiffusionBase, SdTrainerLauncher, trainer_in_own_pod
from sar_pipeline.diffusion import latent_cache as latents
from sar_pipeline.diffusion.config import BaseModelSettings, SdModelSettings, TrainRecipe, TrainSettings
from sar_pipeline.diffusion.latent_cache import LatentCacheSettings
from sar_pipeline.diffusion.launch import CONTROLNET_MODULE
from sar_pipeline.diffusion.models import load_vae
from sar_pipeline.errors import ConfigError, SarPipelineError
from sar_pipeline.generation.controlnet import ControlNetRecipe, ControlNetSettings
from sar_pipeline.generation.model import (
    LATEST_POINTERS,
    PROMOTED_POINTER,
    default_sd_model,
    stored_model_path,
    write_latest,
)
from sar_pipeline.lineage import latest_model_from_instance
from sar_pipeline.retention import prune_latent_caches
from sar_pipeline.storage import validate_id


def _grid_metadata(storage: StorageRoot, path: str | None) -> dict[str, dg.MetadataValue]:
    """The validation-prompt grid (a thumbnail and the file's path), if one was drawn."""
    if not path or not Path(path).is_file():
        return {}
    return {"sample_grid": picture(storage, Path(path).read_bytes(), "validation prompts", path=path)}


def _rounded(values: dict[str, float], digits: int = 3) -> dict[str, float]:
    """Prompt → mean brightness (0–1) rounded for display."""
    return {k: round(float(v), digits) for k, v in values.items()}


def upstream_dataset_version(context: dg.AssetExecutionContext, upstream: str, storage_root) -> str:
    """The dataset version of ``upstream``'s latest materialisation (its ``dataset_version`` metadata).

    ``dataset/current.json`` moves whenever training_dataset is re-materialised, possibly while this
    asset runs; what this asset was computed from is the materialisation recorded upstream, so
    latent_cache uses training_dataset's and sd_model uses latent_cache's: the model, its latents and
    its dataset are always one version.
    """
    event = context.instance.get_latest_materialization_event(dg.AssetKey(upstream))
    entry = event.asset_materialization.metadata.get("dataset_version") if event else None
    if entry is None:
        raise SarPipelineError(
            upstream, f"no materialisation with a dataset_version yet: materialise {upstream} first"
        )
    version = str(entry.value)
    try:
        pointed = current_version(storage_root)
    except ConfigError:
        pointed = None
    if pointed != version:
        context.log.info(
            f"dataset/current.json names {pointed}; this run uses {version}, the version of {upstream}'s "
            "latest materialisation"
        )
    return version


class LatentCacheConfig(dg.Config, LatentCacheSettings):
    """Which splits to encode, and where."""


def pull_dataset_version(storage: StorageRoot, version: str) -> None:
    """On an s3:// root, copy dataset ``version`` into the local copy: the pointer, the version's
    manifest folder and every shard it names (no-op on a local root)."""
    storage.pull("dataset", "current.json")
    storage.pull("dataset", version)
    for path in version_files(storage.local_path(), version):
        storage.pull(*path.split("/"))


def require_train_tiles(storage_root: str, version: str) -> None:
    """Raise naming the dataset version and the settings to change when its train split is empty
    (nothing to train on; the tiny base's VAE and the trainer would fail on it with no clear cause)."""
    counts = version_manifest(storage_root, version)["row_counts"]
    if not counts.get("train"):
        raise SarPipelineError(
            f"dataset version {version}",
            f"its train split is empty (rows per split: {counts}): with few ground blocks the spatial "
            "split can put every block in validation/test, or drop the tiles as guard band. Set "
            "training_dataset's block_size_m so that the flights span dozens of blocks (several tiles "
            "wide each), or its assignment to 'balanced' (shares close to the fractions even with few "
            "blocks; a new flight may then rewrite earlier flights' shards), and re-materialise it",
        )


@dg.asset(
    group_name="training",
    deps=[dg.AssetKey("training_dataset")],
    kinds={"pytorch", "safetensors"},
    pool=GPU_POOL,
    op_tags=GPU_STEP_TAGS,
    automation_condition=retrain_condition(retrain_cron()),
    description="VAE latents of the dataset version training_dataset last materialised (tiles and their azimuth "
    "flips), computed once per "
    "dataset version and VAE: `latents/<dataset_version>/<vae_id>/*.safetensors` + `index.json`.",
)
def latent_cache(
    context: dg.AssetExecutionContext,
    config: LatentCacheConfig,
    storage: StorageRoot,
    diffusion_base: DiffusionBase,
) -> dg.MaterializeResult:
    # an s3:// root: work in its local copy, with the dataset version and any earlier cache pulled
    version = upstream_dataset_version(context, "training_dataset", storage.root())
    pull_dataset_version(storage, version)
    storage.pull("latents", version)
    root = str(storage.local_path())
    require_train_tiles(root, version)
    vae = load_vae(diffusion_base.model_path(storage, version), diffusion_base.single_file_config)
    folder = latents.build_latent_cache(
        root,
        version,
        vae,
        diffusion_base.tile_resolution(),
        splits=tuple(config.splits),
        device=config.device,
    )
    storage.push("latents", version, folder.name)
    pruned = prune_latent_caches(storage.local_path(), config.keep_caches)
    index = json.loads((folder / latents.INDEX_NAME).read_text())
    context.log.info(f"latent cache at {storage.uri_of(folder)}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(storage.uri_of(folder)),
            "dataset_version": version,
            "vae_id": index["vae_id"],
            "resolution_px": index["resolution"],
            "scaling_factor": index["scaling_factor"],
            **{f"{s}_tiles": v["count"] for s, v in index["splits"].items()},
            "deleted_by_retention": dg.MetadataValue.json(pruned.deleted),
        }
    )


class SdModelConfig(dg.Config, SdModelSettings):
    """The training recipe (defaults: the paper; the tiny preset changes those it names) and the run's name."""


@dg.asset(
    group_name="training",
    deps=[latent_cache, dg.AssetKey("training_dataset")],
    kinds={"pytorch", "diffusers"},
    pool=GPU_POOL,
    # with the trainer in its own GPU pod (SdTrainerK8s), this step only watches it: no GPU here
    op_tags=None if trainer_in_own_pod() else GPU_STEP_TAGS,
    automation_condition=retrain_condition(retrain_cron()),
    description="Stable Diffusion fine-tuned on the dataset (UNet + text encoder by default, paper §4.1), trained out "
    "of process through Dagster Pipes; checkpoints are recorded as observations; final weights are a diffusers "
    "pipeline folder (safetensors) under `models/sd/<run>/checkpoints/`.",
)
def sd_model(
    context: dg.AssetExecutionContext,
    config: SdModelConfig,
    storage: StorageRoot,
    diffusion_base: DiffusionBase,
    sd_trainer: SdTrainerLauncher,
) -> dg.MaterializeResult:
    # an s3:// root: train in its local copy (dataset, latents and an earlier run of the same name
    # pulled; each checkpoint pushed as soon as it is reported, the whole run folder at the end)
    version = upstream_dataset_version(context, "latent_cache", storage.root())
    pull_dataset_version(storage, version)
    storage.pull("latents", version)
    root = str(storage.local_path())
    # the recipe on the base model; options left empty take the preset's values
    settings = {
        **diffusion_base.model_dump(include=set(BaseModelSettings.model_fields)),
        **config.model_dump(include=set(TrainRecipe.model_fields)),
        "base_model_path": diffusion_base.model_path(storage, version),
        "storage_root": root,
        "dataset_version": version,
    }
    cfg = TrainSettings.from_dict(settings, source="sd_model config")
    recipe_hash = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:8]
    run_name = validate_id(config.run_name or f"{version}-{recipe_hash}", "run name")
    storage.pull("models", "sd", run_name)
    # the model pointers, which the trainer's checkpoint retention reads: what they name is kept
    for pointer in (*LATEST_POINTERS.values(), PROMOTED_POINTER):
        storage.pull(*pointer)
    run_dir = storage.local_path("models", "sd", run_name)
    cfg = cfg.model_copy(update={"output_dir": str(run_dir)})
    config_path = run_dir / "train_config.json"
    cfg.write(config_path)

    def record_checkpoint(message) -> None:
        if not isinstance(message, dict) or message.get("kind") != "checkpoint":
            return
        checkpoint = Path(message["checkpoint"])
        storage.push(*checkpoint.relative_to(storage.local_path()).parts)
        context.log_event(
            dg.AssetObservation(
                asset_key="sd_model",
                metadata={
                    "step": message["step"],
                    "loss": round(float(message["loss"]), 5),
                    # held-out MSE at fixed timesteps and noise: comparable between checkpoints
                    **(
                        {"validation_loss": round(float(message["validation_loss"]), 5)}
                        if message.get("validation_loss") is not None
                        else {}
                    ),
                    "learning_rates": dg.MetadataValue.json(message["learning_rates"]),
                    "checkpoint": dg.MetadataValue.path(storage.uri_of(message["pipeline"])),
                    "validation_mean_brightness": dg.MetadataValue.json(
                        _rounded(message.get("validation_mean_brightness") or {})
                    ),
                    **_grid_metadata(storage, message.get("sample_grid")),
                },
            )
        )

    invocation = sd_trainer.launch(
        context, str(config_path), extras={"run_name": run_name}, on_message=record_checkpoint
    )
    storage.push("models", "sd", run_name, prune=True)
    summary = json.loads((run_dir / "final.json").read_text())
    history = json.loads((run_dir / "losses.json").read_text())
    curves = {"training": ([s for s, _ in history], [v for _, v in history])}
    if summary.get("validation_losses"):
        validation = summary["validation_losses"]
        curves["validation (held-out, fixed noise)"] = (
            [s for s, _ in validation],
            [v for _, v in validation],
        )
    loss_png = pictures.line_plot_png(curves, "training and validation loss", "step", "MSE")
    last = json.loads((Path(summary["checkpoint"]) / "checkpoint.json").read_text())
    child = invocation.get_materialize_result()
    # generation's default model when no Dagster instance is at hand (sar-pipeline generate), also
    # uploaded to a remote root for the other machines
    write_latest(
        storage.mirror(),
        "sd_model",
        {"checkpoint": summary["pipeline"], "run": run_name, "dataset_version": version},
    )
    return dg.MaterializeResult(
        metadata={
            **(child.metadata or {}),
            "final_loss": round(float(summary["final_loss"]), 5)
            if summary["final_loss"] is not None
            else "none",
            **(
                {"validation_loss": round(float(last["validation_loss"]), 5)}
                if last.get("validation_loss") is not None
                else {}
            ),
            "checkpoint": dg.MetadataValue.path(storage.uri_of(summary["pipeline"])),
            "run": run_name,
            "dataset_version": version,
            "steps": summary["steps"],
            "images_per_second": round(float(summary["images_per_second"]), 2),
            "hyperparameters": dg.MetadataValue.json(cfg.model_dump()),
            "loss_curve": picture(storage, loss_png, "loss curve"),
            # mean pixel value (0–1) of each validation prompt's sample at the last checkpoint
            "validation_mean_brightness": dg.MetadataValue.json(
                _rounded(last.get("validation_mean_brightness") or {})
            ),
            **_grid_metadata(storage, summary["sample_grid"]),
        }
    )


class ControlNetConfig(dg.Config, ControlNetRecipe):
    """How the sketch → SAR ControlNet is trained (empty options: the base model preset's values)."""


@dg.asset(
    group_name="training",
    # after sar_fidelity (and its blocking check, which promotes): a run of training_job then trains
    # the ControlNet on the model that run promoted, not on the one promoted before
    deps=[sd_model, latent_cache, dg.AssetKey("training_dataset"), dg.AssetKey("sar_fidelity")],
    kinds={"pytorch", "diffusers"},
    pool=GPU_POOL,
    op_tags=None if trainer_in_own_pod() else GPU_STEP_TAGS,
    description="ControlNet for sketch → SAR (paper §4.2, Figure 7), initialised from the UNet of the model "
    "generation uses by default (the promoted sd_model, else the latest; metadata sd_model / "
    "sd_model_source) with ControlNetModel.from_unet (SD 1.5 or SDXL) and trained out of process "
    "through Dagster Pipes on conditioning pictures derived from the dataset (land cover in the fixed palette, else a sketch of the despeckled tile); each "
    "checkpoint is an observation with a sketch | generated | real grid and its adherence to the sketch.",
)
def controlnet_model(
    context: dg.AssetExecutionContext,
    config: ControlNetConfig,
    storage: StorageRoot,
    diffusion_base: DiffusionBase,
    sd_trainer: SdTrainerLauncher,
) -> dg.MaterializeResult:
    # an s3:// root: train in this machine's local copy, with the dataset version, its latents and
    # the sd_model pulled; the run folder and the pointer pushed at the end
    storage.pull("dataset", "current.json")
    root = str(storage.local_path())
    version = current_version(root)
    pull_dataset_version(storage, version)
    storage.pull("latents", version)
    # the model sketch generation uses by default (the promoted sd_model, else the latest), so the
    # ControlNet it attaches was trained on that very UNet
    sd_folder, sd_source = default_sd_model(
        storage.mirror(), latest_model_from_instance("sd_model", context.instance)
    )
    cfg = ControlNetSettings.model_validate(
        {
            **config.model_dump(),
            "preset": diffusion_base.preset,
            # relative to the storage root: the run's config names the same model on any machine
            "sd_model_path": stored_model_path(storage.mirror(), sd_folder),
            "storage_root": root,
            "dataset_version": version,
            "output_dir": "",
        }
    )
    recipe_hash = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:8]
    run_name = validate_id(f"{sd_folder.parent.parent.parent.name}-{recipe_hash}", "run name")
    run_dir = storage.local_path("models", "controlnet", run_name)
    cfg = cfg.model_copy(update={"output_dir": str(run_dir)})
    config_path = run_dir / "controlnet_config.json"
    cfg.write(config_path)

    def record_checkpoint(message) -> None:
        if not isinstance(message, dict) or "adherence" not in message:
            return
        context.log_event(
            dg.AssetObservation(
                asset_key="controlnet_model",
                metadata={
                    "step": message["step"],
                    "loss": round(float(message["loss"]), 5),
                    "checkpoint": dg.MetadataValue.path(storage.uri_of(message["controlnet"])),
                    # share of sketch patches whose class a land-cover classifier finds in the output
                    "adherence": message["adherence"],
                    "text_only_adherence": message["text_only_adherence"],
                    **_grid_metadata(storage, message.get("sample_grid")),
                },
            )
        )

    invocation = sd_trainer.launch(
        context,
        str(config_path),
        extras={"run_name": run_name},
        on_message=record_checkpoint,
        module=CONTROLNET_MODULE,
    )
    storage.push("models", "controlnet", run_name, prune=True)
    summary = json.loads((run_dir / "final.json").read_text())
    write_latest(
        storage.mirror(),
        "controlnet_model",
        {"controlnet": summary["controlnet"], "sd_model": str(sd_folder), "sd_model_source": sd_source},
    )
    child = invocation.get_materialize_result()
    return dg.MaterializeResult(
        metadata={
            **(child.metadata or {}),
            "controlnet": dg.MetadataValue.path(storage.uri_of(summary["controlnet"])),
            "sd_model": dg.MetadataValue.path(storage.uri_of(sd_folder)),
            # "promoted" (sar_fidelity's check promoted it) or "latest" (none promoted yet)
            "sd_model_source": sd_source,
            "dataset_version": version,
            "steps": summary["steps"],
            "adherence": summary["adherence"],
            "text_only_adherence": summary["text_only_adherence"],
            "adherence_by_step": dg.MetadataValue.json(summary["adherence_by_step"]),
            "legend": dg.MetadataValue.md(
                pictures.markdown_image(Path(summary["legend"]).read_bytes(), "sketch palette")
            ),
            **_grid_metadata(storage, summary["sample_grid"]),
        }
    )
