"""Retention: delete dataset versions, latent caches and checkpoints that nothing keeps.

Without it storage grows with every re-materialisation: a dataset version per new flight, a latent
cache per dataset version, a checkpoint (~16 GB at SD 1.5 size with its optimizer state) every
``checkpoint_every_steps``. What is kept, and the one setting that says how many:

* dataset versions (``training_dataset``'s ``keep_versions``): the last N written, plus the one
  ``dataset/current.json`` names and every version a checkpoint was trained on (its
  ``checkpoint.json``) or a model pointer names (``models/<kind>/latest.json``). Then every shard no
  remaining version names is deleted, unless it was written within :data:`SHARD_GRACE_S` (a build
  that has written its shards but not yet published its manifest); so is what killed builds left
  under hidden names (``storage.remove_abandoned_temporaries``).
* latent caches (``latent_cache``'s ``keep_caches``): those of the last N dataset versions cached,
  plus those of every dataset version kept above for a pointer (the current one, the checkpoints').
* checkpoints of one training run (the recipe's ``checkpoints_total_limit``): the last N by step,
  plus the best (lowest held-out ``validation_loss`` in its ``checkpoint.json``), plus any checkpoint a
  pointer references (``models/<kind>/latest.json``, a ControlNet run's ``sd_model_path``).

Nothing a pointer references is ever deleted, whatever N is. A folder is deleted by renaming it to a
hidden name first, so a reader never finds it half deleted. Local storage roots only: on object
storage the model stages' checkpoints and latents are pruned in the local copy (and the pushed run
folder follows it), and dataset versions are left to the bucket's lifecycle rules.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sar_pipeline.dataset.read import MANIFEST_NAME, SHARDS_FOLDER, current_version, version_manifest
from sar_pipeline.errors import ConfigError
from sar_pipeline.storage import discard, remove_abandoned_temporaries

#: shard files written this recently (seconds) are never deleted: a dataset build may be about to
#: publish the manifest naming them
SHARD_GRACE_S = 3600.0

#: JSON files under ``models/`` whose path values are pointers to checkpoints
_POINTER_GLOBS = ("models/*/latest.json", "models/controlnet/*/controlnet_config.json")


@dataclasses.dataclass
class PruneResult:
    """What a prune deleted (names or paths relative to the storage root) and what it kept."""

    deleted: list[str] = dataclasses.field(default_factory=list)
    kept: list[str] = dataclasses.field(default_factory=list)


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _checkpoint_infos(root: Path) -> list[dict[str, Any]]:
    return [_json(p) for p in sorted(root.glob("models/*/*/checkpoints/*/checkpoint.json"))]


def pointer_paths(storage_root: str | os.PathLike) -> set[Path]:
    """Every path a model pointer under ``storage_root`` names (``latest.json``, ControlNet configs)."""
    root = Path(storage_root)
    found: set[Path] = set()
    for pattern in _POINTER_GLOBS:
        for pointer in root.glob(pattern):
            for value in _json(pointer).values():
                if isinstance(value, str) and os.sep in value:
                    found.add(Path(value).resolve())
    return found


def pointed_dataset_versions(storage_root: str | os.PathLike) -> set[str]:
    """Dataset versions something points at: ``dataset/current.json``, every checkpoint's
    ``dataset_version`` and every model pointer's."""
    root = Path(storage_root)
    versions = {info.get("dataset_version") for info in _checkpoint_infos(root)}
    versions |= {_json(p).get("dataset_version") for p in root.glob("models/*/latest.json")}
    try:
        versions.add(current_version(root))
    except ConfigError:
        pass
    return {v for v in versions if isinstance(v, str) and v}


def _keep_newest(dated: dict[Path, int], keep_last: int, protected: set[str]) -> PruneResult:
    """Keep the ``keep_last`` newest folders (``dated``: folder → time, ties by name) and those named
    in ``protected``; discard the others."""
    result = PruneResult()
    for rank, folder in enumerate(sorted(dated, key=lambda p: (-dated[p], p.name))):
        if rank < keep_last or folder.name in protected:
            result.kept.append(folder.name)
        else:
            discard(folder)
            result.deleted.append(folder.name)
    return result


def _pruned_folder(folder: Path, keep_last: int, setting: str) -> Path | None:
    """``folder`` when it exists (None: nothing to prune); ConfigError naming ``setting`` if it would
    keep nothing."""
    if keep_last < 1:
        raise ConfigError(setting, f"retention must keep at least one, got {keep_last}")
    return folder if folder.is_dir() else None


def prune_dataset_versions(
    storage_root: str | os.PathLike, keep_last: int, now: float | None = None
) -> PruneResult:
    """Delete dataset versions beyond the last ``keep_last`` written that nothing points at, then
    every shard file no remaining version names (older than :data:`SHARD_GRACE_S`)."""
    root = Path(storage_root)
    folder = _pruned_folder(root / "dataset", keep_last, "keep_versions")
    if folder is None:
        return PruneResult()
    versions = [p for p in folder.iterdir() if not p.name.startswith(".") and (p / MANIFEST_NAME).is_file()]
    dated = {p: (p / MANIFEST_NAME).stat().st_mtime_ns for p in versions}
    result = _keep_newest(dated, keep_last, pointed_dataset_versions(root))
    named = set()
    for version in result.kept:
        for shard in version_manifest(root, version)["shards"]:
            named.add(f"dataset/{SHARDS_FOLDER}/{shard['flight_id']}/{shard['key']}.json")
            named.update(f["path"] for f in shard["files"].values())
    cutoff = (time.time() if now is None else now) - SHARD_GRACE_S
    shards = folder / SHARDS_FOLDER
    for path in sorted(shards.rglob("*")) if shards.is_dir() else []:
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not path.name.startswith(".") and rel not in named:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                result.deleted.append(rel)
    # what killed builds left under names no build writes again (a shard or version of other inputs)
    for leftover_folder in [folder, *(sorted(shards.iterdir()) if shards.is_dir() else [])]:
        for leftover in remove_abandoned_temporaries(leftover_folder, SHARD_GRACE_S, now):
            result.deleted.append(leftover.relative_to(root).as_posix())
    for flight in sorted(shards.iterdir()) if shards.is_dir() else []:
        if flight.is_dir() and not any(flight.iterdir()):
            flight.rmdir()
    return result


def prune_latent_caches(storage_root: str | os.PathLike, keep_last: int) -> PruneResult:
    """Delete latent caches (``latents/<dataset_version>/``) beyond those of the last ``keep_last``
    dataset versions cached, except those of dataset versions something points at."""
    root = Path(storage_root)
    folder = _pruned_folder(root / "latents", keep_last, "keep_caches")
    if folder is None:
        return PruneResult()
    remove_abandoned_temporaries(folder, SHARD_GRACE_S)  # caches a killed build or prune left behind
    caches = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    # a version folder holds one cache per VAE; its newest index.json dates it
    dated = {p: max((i.stat().st_mtime_ns for i in p.glob("*/index.json")), default=0) for p in caches}
    return _keep_newest(dated, keep_last, pointed_dataset_versions(root))


def checkpoints_to_keep(checkpoints: list[Path], keep_last: int, pointed: Iterable[Path] = ()) -> set[Path]:
    """Of one run's complete checkpoints (sorted by step), those retention keeps: the last
    ``keep_last`` (0 = all), the one with the lowest ``validation_loss``, and any holding a pointed path."""
    if keep_last <= 0:
        return set(checkpoints)
    keep = set(checkpoints[-keep_last:])
    losses = {c: _json(c / "checkpoint.json").get("validation_loss") for c in checkpoints}
    scored = [
        (loss, int(c.name.rsplit("-", 1)[-1]), c)
        for c, loss in losses.items()
        if isinstance(loss, int | float)
    ]
    if scored:
        keep.add(min(scored)[2])  # the earliest of equal losses
    for target in pointed:
        for c in checkpoints:
            if target == c.resolve() or c.resolve() in target.parents:
                keep.add(c)
    return keep


def prune_checkpoints(
    checkpoints: list[Path], keep_last: int, storage_root: str | os.PathLike | None = None
) -> PruneResult:
    """Delete the checkpoints of one run (complete ones, sorted by step) that
    :func:`checkpoints_to_keep` does not keep; pointers are read under ``storage_root`` (when given)."""
    pointed = pointer_paths(storage_root) if storage_root is not None else set()
    keep = checkpoints_to_keep(checkpoints, keep_last, pointed)
    result = PruneResult()
    for c in checkpoints:
        if c in keep:
            result.kept.append(c.name)
        else:
            discard(c)
            result.deleted.append(c.name)
    return result
