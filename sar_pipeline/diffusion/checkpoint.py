"""Training checkpoints: complete or absent, and read back without running any code they contain.

Layout of one checkpoint (written as ``checkpoint-<step>.partial``, then renamed)::

    checkpoint-<step>/
        state/                                  what resume reads: safetensors and JSON, nothing else
            unet.safetensors                    weights of each trained part (with an adapter: the
            text_encoder.safetensors            peft-wrapped model, base and adapter weights)
            optimizer.safetensors + .json       AdamW moments (tensors) and parameter groups
            lr_scheduler.json                   learning-rate schedule position
            ema.safetensors + .json             EMA of the UNet (use_ema)
            ema_text_encoder.safetensors + .json    EMA of the text encoder (use_ema, text encoder trained)
            grad_scaler.json                    fp16 loss scale (mixed_precision="fp16")
            progress.json                       step, epoch, batch position, loss history
            rng-<rank>.safetensors + .json      random states of each process
        pipeline/                               diffusers StableDiffusionPipeline (safetensors)
        checkpoint.json                         step, loss, learning rates… (written last)

Why not ``accelerate``'s ``save_state``/``load_state``: they pickle. ``load_state`` unpickles every
object registered for checkpointing with ``weights_only=False`` (a planted
``custom_checkpoint_0.pkl`` runs any command), reads optimizer, scheduler and RNG states through
``torch.load`` with numpy globals allowed, and silently skips RNG states it cannot read (resume is
then no longer exact). Here tensors go to safetensors and every other value to JSON, so reading a
checkpoint only ever parses data; a state folder holding any other file is refused, naming it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from sar_pipeline.errors import SarPipelineError
from sar_pipeline.retention import prune_checkpoints
from sar_pipeline.storage import discard, replace_dir

CHECKPOINT_PREFIX = "checkpoint-"
PARTIAL_SUFFIX = ".partial"
STATE_SUFFIXES = (".safetensors", ".json")


class CheckpointError(SarPipelineError):
    """A checkpoint folder that is half written, not a checkpoint of this trainer, or unsafe to read."""


@dataclass
class TrainingProgress:
    """Where a run is: optimizer steps done, current epoch, micro-batches of it consumed, losses."""

    global_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    history: list[list[float]] = field(default_factory=list)  # [step, mean loss of that step]
    validation_history: list[list[float]] = field(default_factory=list)  # [step, held-out loss]


# ----------------------------------------------------------------------------------------------
# complete checkpoints


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint written after optimizer step ``step``."""
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first. A ``.partial`` folder (half written) is never listed."""
    folder = Path(output_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [
        p
        for p in folder.iterdir()
        if p.is_dir()
        and p.name.startswith(CHECKPOINT_PREFIX)
        and not p.name.endswith(PARTIAL_SUFFIX)
        and (p / "checkpoint.json").is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def check_checkpoint(folder: Path) -> dict[str, Any]:
    """Return checkpoint.json of a complete, safe-to-read checkpoint; CheckpointError naming the fault.

    Safe to read: its ``state/`` holds only safetensors and JSON files. Anything else (a pickle
    such as an older version's ``custom_checkpoint_0.pkl``, ``*.bin``) is refused unread.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(folder, "checkpoint folder does not exist")
    if folder.name.endswith(PARTIAL_SUFFIX):
        raise CheckpointError(
            folder, "half-written checkpoint (.partial): the run was interrupted while saving it"
        )
    for part in ("checkpoint.json", "state/progress.json", "pipeline/model_index.json"):
        if not (folder / part).exists():
            raise CheckpointError(folder, f"half-written or foreign checkpoint: {part} is missing")
    info = _read_json(folder / "checkpoint.json")
    # sizes recorded when the checkpoint was published: a file cut short (disk full, a copy
    # interrupted, a truncated upload) is named here, before anything is loaded from it
    for relative, size in sorted((info.get("file_sizes") or {}).items()):
        path = folder / relative
        if not path.is_file():
            raise CheckpointError(path, "missing from the checkpoint (listed in checkpoint.json)")
        actual = path.stat().st_size
        if actual != size:
            raise CheckpointError(
                path, f"truncated or altered: {actual} bytes, checkpoint.json records {size}"
            )
    for path in sorted((folder / "state").rglob("*")):
        if path.is_file() and path.suffix not in STATE_SUFFIXES:
            raise CheckpointError(
                path,
                "refused: a checkpoint's state is read only from safetensors and JSON files, and "
                "this file could run code when loaded (pickle). If an older version wrote this "
                "checkpoint, start afresh (resume_from_checkpoint='') or remove the checkpoint",
            )
    return info


def publish_checkpoint(
    partial: Path, info: dict[str, Any], keep_last: int = 0, storage_root: str | os.PathLike | None = None
) -> Path:
    """Finish a checkpoint written into ``partial``: checkpoint.json last, then one rename, so the
    folder is complete or absent. Then apply retention to the run's checkpoints
    (:func:`sar_pipeline.retention.prune_checkpoints`): the last ``keep_last`` (0 keeps all), the best
    held-out loss and any a pointer under ``storage_root`` references are kept, the others deleted.
    """
    final = partial.with_name(partial.name.removesuffix(PARTIAL_SUFFIX))
    sizes = {str(p.relative_to(partial)): p.stat().st_size for p in sorted(partial.rglob("*")) if p.is_file()}
    (partial / "checkpoint.json").write_text(json.dumps({**info, "file_sizes": sizes}, indent=1))
    replace_dir(partial, final)
    if keep_last > 0:
        prune_checkpoints(list_checkpoints(final.parent.parent), keep_last, storage_root)
    return final


def discard_checkpoint(folder: Path) -> None:
    """Delete a checkpoint so that it is never seen half deleted (:func:`sar_pipeline.storage.discard`)."""
    discard(folder)


def remove_checkpoint_leftovers(output_dir: Path) -> list[Path]:
    """Delete what killed runs left in ``checkpoints/``: ``.partial`` folders never published and
    checkpoints hidden for deletion. Call before training starts (one trainer per run folder)."""
    folder = Path(output_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    leftovers = [
        p
        for p in sorted(folder.iterdir())
        if p.name.endswith(PARTIAL_SUFFIX) or (p.name.startswith(".") and ".deleting-" in p.name)
    ]
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return leftovers


def partial_checkpoint(output_dir: Path, step: int) -> Path:
    """The folder a checkpoint of ``step`` is written into before :func:`publish_checkpoint`."""
    return Path(output_dir) / "checkpoints" / (checkpoint_name(step) + PARTIAL_SUFFIX)


# ----------------------------------------------------------------------------------------------
# nested states (optimizer, scheduler, EMA, RNG) as safetensors + JSON


def _encode(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON form of ``value``; its tensors go to ``tensors`` under their path in the structure."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().to("cpu").contiguous()
        return {"tensor": path}
    if isinstance(value, dict):
        return {"dict": [[k, _encode(v, f"{path}/{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"{path}: cannot store a {type(value).__name__} in a checkpoint")


def _decode(value: Any, tensors: dict[str, torch.Tensor], source: Path) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors, source) for v in value]
    if isinstance(value, dict):
        if set(value) == {"tensor"}:
            if value["tensor"] not in tensors:
                raise CheckpointError(source, f"tensor {value['tensor']!r} is missing")
            return tensors[value["tensor"]]
        if set(value) == {"tuple"}:
            return tuple(_decode(v, tensors, source) for v in value["tuple"])
        if set(value) == {"dict"}:
            return {k: _decode(v, tensors, source) for k, v in value["dict"]}
        raise CheckpointError(source, f"unexpected entry {sorted(value)}")
    return value


def save_tree(folder: Path, name: str, value: Any) -> None:
    """Write a nested state (dicts, lists, tuples, tensors, numbers, strings) as ``name``.json
    (+ ``name``.safetensors when it holds tensors)."""
    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(value, name, tensors)
    if tensors:
        save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(encoded))


def load_tree(folder: Path, name: str) -> Any:
    """Read a state written by :func:`save_tree`; CheckpointError naming a missing or corrupt file."""
    tensor_file = folder / f"{name}.safetensors"
    tensors = _read_safetensors(tensor_file) if tensor_file.exists() else {}
    return _decode(_read_json(folder / f"{name}.json"), tensors, folder / f"{name}.json")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(path, "missing from the checkpoint")
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(path, f"not valid JSON: {exc}") from exc


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(path, f"not a readable safetensors file: {exc}") from exc


# ----------------------------------------------------------------------------------------------
# random states


def rng_state() -> dict[str, Any]:
    """This process's global random states: Python, NumPy, torch CPU and every CUDA device."""
    version, internal, gauss_next = random.getstate()
    algorithm, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "algorithm": algorithm,
            "keys": keys.tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["algorithm"],
            np.asarray(npy["keys"], dtype=np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------
# the training state of one checkpoint


def save_training_state(
    folder: Path,
    *,
    models: dict[str, torch.nn.Module],
    optimizer,
    lr_scheduler,
    progress: TrainingProgress,
    accumulation_step: int,
    rank: int,
    is_main: bool,
    ema: dict | None = None,
    grad_scaler=None,
) -> None:
    """Write the resumable state into ``folder`` (every process its RNG, the main process the rest).

    ``models`` maps a name to the unwrapped trained module; ``ema`` a trained part's name to its
    EMAModel; ``accumulation_step`` is accelerate's micro-step counter (which micro-batch of an
    accumulation cycle comes next).
    """
    folder.mkdir(parents=True, exist_ok=True)
    save_tree(folder, f"rng-{rank}", rng_state())
    if not is_main:
        return
    for name, model in models.items():
        save_model(model, str(folder / f"{name}.safetensors"))
    save_tree(folder, "optimizer", optimizer.state_dict())
    save_tree(folder, "lr_scheduler", lr_scheduler.state_dict())
    for name, average in (ema or {}).items():
        save_tree(folder, ema_file_name(name), average.state_dict())
    if grad_scaler is not None:
        save_tree(folder, "grad_scaler", grad_scaler.state_dict())
    (folder / "progress.json").write_text(
        json.dumps({**asdict(progress), "accumulation_step": accumulation_step})
    )


def ema_file_name(part: str) -> str:
    """State file (stem) of a trained part's EMA: ``ema`` for the UNet, ``ema_<part>`` otherwise."""
    return "ema" if part == "unet" else f"ema_{part}"


def load_training_state(
    folder: Path,
    *,
    models: dict[str, torch.nn.Module],
    optimizer,
    lr_scheduler,
    rank: int,
    ema: dict | None = None,
    grad_scaler=None,
) -> tuple[TrainingProgress, int]:
    """Restore what :func:`save_training_state` wrote; return (progress, accumulation_step).

    Reads only the safetensors and JSON files it names; CheckpointError names a missing or
    corrupt one.
    """
    for name, model in models.items():
        path = folder / f"{name}.safetensors"
        if not path.is_file():
            raise CheckpointError(path, f"missing: the checkpoint has no weights of the trained {name}")
        try:
            load_model(model, str(path), strict=True)
        except (SafetensorError, RuntimeError, OSError) as exc:
            raise CheckpointError(path, f"cannot load into the {name}: {exc}") from exc
    states = [("optimizer", optimizer.load_state_dict), ("lr_scheduler", lr_scheduler.load_state_dict)]
    for name, average in (ema or {}).items():
        states.append((ema_file_name(name), average.load_state_dict))
    if grad_scaler is not None:
        states.append(("grad_scaler", grad_scaler.load_state_dict))
    states.append((f"rng-{rank}", set_rng_state))
    for name, restore in states:
        try:
            restore(load_tree(folder, name))
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:
            raise CheckpointError(folder / f"{name}.json", f"does not fit this run ({exc})") from exc
    values = _read_json(folder / "progress.json")
    try:
        accumulation_step = values.pop("accumulation_step")
        progress = TrainingProgress(**values)
    except (TypeError, KeyError, AttributeError) as exc:
        raise CheckpointError(folder / "progress.json", f"unexpected content: {exc}") from exc
    return progress, accumulation_step
