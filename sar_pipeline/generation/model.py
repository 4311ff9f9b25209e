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
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sar_pipeline.captioning.base import DEFAULT_ACTIVATION_TOKEN
from sar_pipeline.devices import resolve_device
from sar_pipeline.diffusion.models import inspect_base_model
from sar_pipeline.errors import ModelError

# torch is imported inside the functions that load models: the code location imports this module (the
# model pointers) in every run, and torch alone takes seconds to import.
if TYPE_CHECKING:
    import torch

    from sar_pipeline.mirror import LocalMirror

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
    target = torch.device(resolve_device(device))
    if target.type == "cpu" and torch_dtype == torch.float16:
        raise ModelError(f"dtype {dtype}", "float16 sampling needs a GPU; use float32 or bfloat16 on the CPU")
    try:
        with warnings.catch_warnings():
            # diffusers 0.42 renamed torch_dtype to dtype and warns on the old name, which the
            # earlier versions we accept know only (casting after loading warns in 0.42 too)
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
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
#
# A pointer stores its model folders relative to the storage root (``models/sd/<run>/checkpoints/
# checkpoint-<step>/pipeline``), so that any machine reading the same root finds them: under the
# root itself when it is a local folder, or in this machine's local copy of an ``s3://`` root
# (``sar_pipeline.mirror``), pulled there when missing. Pointers written before stored absolute
# paths of the machine that wrote them; those are still read, as the paths they name (valid on
# that machine, or where the same path is shared). A folder outside the storage root (local
# weights) is stored absolute.

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
#: pointer fields naming a model folder (stored relative to the storage root)
POINTER_FOLDER_KEYS = ("checkpoint", "controlnet", "sar_clip", "sd_model")


def storage_mirror(storage_root: str | Path | LocalMirror) -> LocalMirror:
    """``storage_root`` as its local copy: itself for a local folder; for an ``s3://`` URI the copy
    under the cache folder the environment sets (``storage_settings_from_environment``)."""
    from sar_pipeline.mirror import LocalMirror
    from sar_pipeline.storage import storage_settings_from_environment

    if isinstance(storage_root, LocalMirror):
        return storage_root
    return LocalMirror(storage_root, storage_settings_from_environment().cache_dir)


def stored_model_path(storage_root: str | Path | LocalMirror, folder: str | Path) -> str:
    """What a pointer stores for ``folder``: its path relative to the storage root (``/``
    separators) when it lies under the root or its local copy, else the absolute path."""
    parts = storage_mirror(storage_root).stored_parts(folder)
    return "/".join(parts) if parts else str(folder)


def pull_model_folder(storage_root: str | Path | LocalMirror, recorded: str | Path) -> Path:
    """Where the model folder ``recorded`` (a pointer's relative path, an older pointer's absolute
    path, or a storage URI from asset metadata) is on this machine: under the local copy, pulled
    from an ``s3://`` root first with what loading it reads beside it (the checkpoint's
    ``checkpoint.json``, the run's ``train_config.json`` / ``controlnet_config.json``; not the
    optimizer state); a folder outside the storage root as it is."""
    mirror = storage_mirror(storage_root)
    here = mirror.pull_recorded(recorded)
    parts = mirror.stored_parts(recorded) or ()
    if len(parts) >= 4 and parts[-3] == "checkpoints":  # <run>/checkpoints/checkpoint-N/<folder>
        mirror.pull(*parts[:-1], "checkpoint.json")
        for name in ("train_config.json", "controlnet_config.json"):
            mirror.pull(*parts[:-3], name)
    return here


def _write_pointer(
    storage_root: str | Path | LocalMirror, where: tuple[str, ...], info: dict[str, Any]
) -> Path:
    """Write pointer ``info`` at ``where`` in the local copy (folders stored relative to the root,
    :func:`stored_model_path`) and upload it to a remote root; the local file's path."""
    from sar_pipeline.storage import atomic_write_bytes

    mirror = storage_mirror(storage_root)
    stored = {
        key: stored_model_path(mirror, value) if key in POINTER_FOLDER_KEYS and value else value
        for key, value in info.items()
    }
    path = mirror.local(*where)
    atomic_write_bytes(path, json.dumps(stored, indent=1, default=str).encode())
    mirror.push(*where)
    return path


def _read_pointer(storage_root: str | Path | LocalMirror, where: tuple[str, ...]) -> dict[str, Any] | None:
    """The pointer at ``where`` (pulled from a remote root first), its folders as paths on this
    machine (relative ones under the local copy; not pulled); None when there is none."""
    mirror = storage_mirror(storage_root)
    mirror.pull(*where)
    info = read_json_or_empty(mirror.local(*where))
    for key in POINTER_FOLDER_KEYS:
        if isinstance(info.get(key), str) and info[key]:
            parts = mirror.stored_parts(info[key])
            info[key] = str(mirror.local(*parts)) if parts else info[key]
    return info or None


def write_latest(storage_root: str | Path | LocalMirror, asset: str, info: dict[str, Any]) -> Path:
    """Record ``info`` (at least the model folder under :data:`MODEL_KEYS`) as ``asset``'s latest,
    in the local copy and on a remote root (see the pointer notes above :data:`LATEST_POINTERS`)."""
    return _write_pointer(storage_root, LATEST_POINTERS[asset], info)


def read_latest(storage_root: str | Path | LocalMirror, asset: str) -> dict[str, Any] | None:
    """The pointer :func:`write_latest` wrote for ``asset``, its folders as paths on this machine
    (None when there is none)."""
    return _read_pointer(storage_root, LATEST_POINTERS[asset])


def latest_model_folder(
    storage_root: str | Path | LocalMirror, asset: str, from_instance: str | None = None
) -> Path:
    """The folder of ``asset``'s latest materialisation on this machine (pulled from a remote root
    when missing, :func:`pull_model_folder`): ``from_instance`` (what the Dagster instance recorded,
    when the caller could ask it), else the storage root's pointer; ModelError saying which asset to
    materialise when there is neither."""
    folder = from_instance or (read_latest(storage_root, asset) or {}).get(MODEL_KEYS[asset])
    if not folder:
        how = "sar-pipeline demo / run, or materialise it in the UI"
        raise ModelError(
            asset,
            f"no {asset} materialised yet (storage root {storage_root}): materialise the {asset} asset ({how})",
        )
    here = pull_model_folder(storage_root, folder)
    if not here.exists():
        raise ModelError(here, f"the latest {asset} folder is gone: materialise {asset} again")
    return here


def write_promoted(storage_root: str | Path | LocalMirror, info: dict[str, Any]) -> Path:
    """Record ``info`` (at least ``checkpoint``: the pipeline folder) as the promoted sd_model, in
    the local copy and on a remote root."""
    return _write_pointer(storage_root, PROMOTED_POINTER, info)


def read_promoted(storage_root: str | Path | LocalMirror) -> dict[str, Any] | None:
    """The pointer :func:`write_promoted` wrote, its folders as paths on this machine (None when no
    model was promoted yet)."""
    return _read_pointer(storage_root, PROMOTED_POINTER)


def default_sd_model_folder(storage_root: str | Path | LocalMirror, from_instance: str | None = None) -> Path:
    """Generation's default model: the promoted sd_model checkpoint (one that beat the base model
    under sar_fidelity) when there is one, else the latest sd_model (:func:`latest_model_folder`);
    pulled from a remote root when missing."""
    return default_sd_model(storage_root, from_instance)[0]


def default_sd_model(
    storage_root: str | Path | LocalMirror, from_instance: str | None = None
) -> tuple[Path, str]:
    """:func:`default_sd_model_folder` and which it is: ``"promoted"`` or ``"latest"``."""
    promoted = (read_promoted(storage_root) or {}).get("checkpoint")
    if not promoted:
        return latest_model_folder(storage_root, "sd_model", from_instance), "latest"
    here = pull_model_folder(storage_root, promoted)
    if not here.exists():
        raise ModelError(
            here,
            f"the promoted sd_model folder is gone: pass --model, or remove {Path(*PROMOTED_POINTER)} "
            "under the storage root to use the latest sd_model",
        )
    return here, "promoted"
