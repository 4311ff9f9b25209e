"""Loading a fine-tuned model for generation: which folder, what it was trained on, its sampler.

A model is a diffusers ``StableDiffusionPipeline`` (or ``StableDiffusionXLPipeline``) folder: normally ``pipeline/`` of an
``sd_model`` checkpoint (``models/sd/<run>/checkpoints/checkpoint-<step>/pipeline``), whose
``checkpoint.json`` (step, dataset version) and run's ``train_config.json`` (activation token,
zero terminal SNR, storage root) are read when present; any other diffusers folder also loads,
with the defaults of a plain SD 1.5 model. A ControlNet is a ``ControlNetModel`` folder (the
``controlnet/`` of a ``controlnet_model`` checkpoint). Only local files are read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sar_pipeline.captioning.base import DEFAULT_ACTIVATION_TOKEN
from sar_pipeline.diffusion.models import inspect_base_model
from sar_pipeline.errors import ModelError

# torch is imported inside the functions that load models: the code location imports this module (the
# model pointers) in every run, and torch alone takes seconds to import.
if TYPE_CHECKING:
    import torch

#: scheduler name → (diffusers class, options added to the model's own schedule)
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "unipc": ("UniPCMultistepScheduler", {}),
}

#: the guidance rescale Lin et al. (2024) recommend for zero-terminal-SNR models
ZERO_SNR_GUIDANCE_RESCALE = 0.7


@dataclass
class GenerationModel:
    """A loaded pipeline and what generation needs to know about it."""

    pipe: Any  # diffusers StableDiffusionPipeline or StableDiffusionXLPipeline
    path: Path
    family: str = "sd15"  # or "sdxl" (two text encoders, pooled embedding, size/crop time ids)
    original_size: tuple[int, int] | None = None  # SDXL: (height, width) of the tiles it was trained on
    activation_token: str = DEFAULT_ACTIVATION_TOKEN
    learned_token: str = ""  # the textual-inversion token training put before every text
    zero_terminal_snr: bool = False
    checkpoint_step: int | None = None
    dataset_version: str | None = None
    storage_root: str | None = None
    run_dir: Path | None = None
    controlnet: Any = None
    controlnet_path: Path | None = None
    controlnet_step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        """The tile side in pixels the model was trained at."""
        return int(self.pipe.unet.config.sample_size) * self.vae_scale_factor

    @property
    def device(self) -> torch.device:
        return self.pipe.unet.device


def resolve_device(device: str) -> torch.device:
    """``'auto'`` → CUDA when available, else CPU; any other name as given."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def make_scheduler(name: str, model_scheduler_config: dict[str, Any]):
    """The sampler ``name`` (:data:`SCHEDULERS`) on the model's own noise schedule (betas, zero
    terminal SNR rescale, timestep spacing, prediction type carried over from its config)."""
    import diffusers

    if name not in SCHEDULERS:
        raise ModelError(f"scheduler {name!r}", f"unknown; choose one of {sorted(SCHEDULERS)}")
    class_name, options = SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(model_scheduler_config, **options)


def read_json_or_empty(path: Path) -> dict[str, Any]:
    """A JSON object file's content, {} when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def load_generation_model(path: str | Path, device: str = "auto", dtype: str = "float32") -> GenerationModel:
    """Load a StableDiffusionPipeline or StableDiffusionXLPipeline folder for generation (local files only).

    ModelError names a missing component (``unet/``, ``vae/``, …) or file, or an unreadable model.
    """
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    folder = Path(path)
    if (folder / "pipeline" / "model_index.json").is_file():  # a checkpoint folder: its pipeline
        folder = folder / "pipeline"
    family, _ = inspect_base_model(folder)
    pipeline_class = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    safety = {} if family == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    target = resolve_device(device)
    if target.type == "cpu" and torch_dtype == torch.float16:
        raise ModelError(f"dtype {dtype}", "float16 sampling needs a GPU; use float32 or bfloat16 on the CPU")
    try:
        pipe = pipeline_class.from_pretrained(
            folder, local_files_only=True, torch_dtype=torch_dtype, **safety
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(folder, f"cannot load the model: {exc}") from exc
    pipe = pipe.to(target)
    pipe.set_progress_bar_config(disable=True)
    checkpoint = read_json_or_empty(folder.parent / "checkpoint.json")
    run_dir = folder.parent.parent.parent if checkpoint else None
    train_config = read_json_or_empty(run_dir / "train_config.json") if run_dir else {}
    scheduler_config = dict(pipe.scheduler.config)
    return GenerationModel(
        pipe=pipe,
        path=folder,
        family=family,
        # the stored tile size SDXL was trained with (its time ids' original size); None: the drawn size
        original_size=tuple(checkpoint["sdxl_time_ids"][:2]) if checkpoint.get("sdxl_time_ids") else None,
        activation_token=train_config.get("activation_token", DEFAULT_ACTIVATION_TOKEN),
        learned_token=train_config.get("learned_token", ""),
        zero_terminal_snr=bool(scheduler_config.get("rescale_betas_zero_snr", False)),
        checkpoint_step=checkpoint.get("step"),
        dataset_version=checkpoint.get("dataset_version") or train_config.get("dataset_version"),
        storage_root=train_config.get("storage_root") or None,
        run_dir=run_dir,
    )


def load_controlnet(model: GenerationModel, path: str | Path) -> None:
    """Attach the ControlNet at ``path`` (a ``controlnet_model`` checkpoint or a ControlNetModel folder)."""
    import torch
    from diffusers import ControlNetModel

    folder = Path(path)
    if (folder / "controlnet" / "config.json").is_file():
        folder = folder / "controlnet"
    if not folder.is_dir():
        raise ModelError(folder, "ControlNet folder does not exist")
    if not (folder / "config.json").is_file():
        raise ModelError(folder, "incomplete ControlNet: config.json is missing")
    if not list(folder.glob("*.safetensors")):
        raise ModelError(folder, "incomplete ControlNet: no .safetensors weight file")
    try:
        controlnet = ControlNetModel.from_pretrained(folder, local_files_only=True)
        if model.pipe.unet.dtype != torch.float32:
            controlnet = controlnet.to(model.pipe.unet.dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(folder, f"cannot load the ControlNet: {exc}") from exc
    # a ControlNet is made from one UNet (from_unet): one of the other family cannot feed this one
    for name in ("cross_attention_dim", "addition_embed_type"):
        theirs, ours = controlnet.config.get(name), model.pipe.unet.config.get(name)
        if theirs != ours:
            raise ModelError(
                folder,
                f"this ControlNet was made for another model ({name} {theirs!r}, the {model.family} "
                f"model at {model.path} has {ours!r}): train a ControlNet for this model",
            )
    model.controlnet = controlnet.to(model.device)
    model.controlnet_path = folder
    model.controlnet_step = read_json_or_empty(folder.parent / "checkpoint.json").get("step")


def default_guidance_rescale(model: GenerationModel, value: float | None) -> float:
    """The guidance rescale to use: ``value``, or 0.7 for a zero-terminal-SNR model and 0 otherwise."""
    if value is not None:
        return value
    return ZERO_SNR_GUIDANCE_RESCALE if model.zero_terminal_snr else 0.0


# ----------------------------------------------------------------------------------------------
# the latest model of each training asset, as a pointer file under the storage root

#: asset → its pointer file under the storage root, written when the asset materialises
LATEST_POINTERS = {
    "sd_model": ("models", "sd", "latest.json"),
    "controlnet_model": ("models", "controlnet", "latest.json"),
    "sar_clip": ("models", "sar_clip", "latest.json"),
}
#: asset → the metadata key / pointer field holding the folder generation loads
MODEL_KEYS = {"sd_model": "checkpoint", "controlnet_model": "controlnet", "sar_clip": "sar_clip"}
#: the sd_model checkpoint sar_fidelity's check promoted (it beat the base model): generation's default
PROMOTED_POINTER = ("models", "sd", "promoted.json")


def write_latest(storage_root: str | Path, asset: str, info: dict[str, Any]) -> Path:
    """Record ``info`` (at least the model folder under :data:`MODEL_KEYS`) as ``asset``'s latest."""
    from sar_pipeline.storage import atomic_write_bytes

    path = Path(storage_root).joinpath(*LATEST_POINTERS[asset])
    atomic_write_bytes(path, json.dumps(info, indent=1, default=str).encode())
    return path


def read_latest(storage_root: str | Path, asset: str) -> dict[str, Any] | None:
    """The pointer :func:`write_latest` wrote for ``asset`` (None when there is none)."""
    info = read_json_or_empty(Path(storage_root).joinpath(*LATEST_POINTERS[asset]))
    return info or None


def latest_model_folder(storage_root: str | Path, asset: str, from_instance: str | None = None) -> Path:
    """The folder of ``asset``'s latest materialisation: ``from_instance`` (what the Dagster instance
    recorded, when the caller could ask it), else the storage root's pointer; ModelError saying
    which asset to materialise when there is neither."""
    folder = from_instance or (read_latest(storage_root, asset) or {}).get(MODEL_KEYS[asset])
    if not folder:
        how = "sar-pipeline demo / run, or materialise it in the UI"
        raise ModelError(
            asset,
            f"no {asset} materialised yet (storage root {storage_root}): materialise the {asset} asset ({how})",
        )
    if not Path(folder).exists():
        raise ModelError(folder, f"the latest {asset} folder is gone: materialise {asset} again")
    return Path(folder)


def write_promoted(storage_root: str | Path, info: dict[str, Any]) -> Path:
    """Record ``info`` (at least ``checkpoint``: the pipeline folder) as the promoted sd_model."""
    from sar_pipeline.storage import atomic_write_bytes

    path = Path(storage_root).joinpath(*PROMOTED_POINTER)
    atomic_write_bytes(path, json.dumps(info, indent=1, default=str).encode())
    return path


def read_promoted(storage_root: str | Path) -> dict[str, Any] | None:
    """The pointer :func:`write_promoted` wrote (None when no model was promoted yet)."""
    info = read_json_or_empty(Path(storage_root).joinpath(*PROMOTED_POINTER))
    return info or None


def default_sd_model_folder(storage_root: str | Path, from_instance: str | None = None) -> Path:
    """Generation's default model: the promoted sd_model checkpoint (one that beat the base model
    under sar_fidelity) when there is one, else the latest sd_model (:func:`latest_model_folder`)."""
    return default_sd_model(storage_root, from_instance)[0]


def default_sd_model(storage_root: str | Path, from_instance: str | None = None) -> tuple[Path, str]:
    """:func:`default_sd_model_folder` and which it is: ``"promoted"`` or ``"latest"``."""
    promoted = (read_promoted(storage_root) or {}).get("checkpoint")
    if not promoted:
        return latest_model_folder(storage_root, "sd_model", from_instance), "latest"
    if not Path(promoted).exists():
        raise ModelError(
            promoted,
            f"the promoted sd_model folder is gone: pass --model, or remove {Path(*PROMOTED_POINTER)} "
            "under the storage root to use the latest sd_model",
        )
    return Path(promoted), "promoted"
