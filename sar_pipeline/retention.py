"""Retention: delete dataset versions, latent caches and checkpoints that nothing keeps.

Without it storage grows with every re-materialisation: a dataset version per new flight, a latent
cache per dataset version, a checkpoint (~16 GB at SD 1.5 size with its optimizer state) every
``checkpoint_every_steps``. What is kept, and the one setting that says how many:

* dataset versions (``training_dataset``'s ``keep_versions``): the last N written, plus the one
  ``dataset/current.json`` names and every version a checkpoint was trained on (its
  ``checkpoint.json``) or a model pointer names (``models/<kind>/latest.json``,
  ``models/sd/promoted.json``). Then every shard no remaining version names is deleted, unless it was
  written within :data:`SHARD_GRACE_S` (a build that has written its shards but not yet published
  its manifest); so is what killed builds left under hidden names
  (``storage.remove_abandoned_temporaries``). On an ``s3://`` root the same rules apply through the
  storage root's file system (:func:`prune_dataset_versions`): a version is its
  ``dataset/<version>.current`` pointer and the ``dataset/<version>@<time>-<random>/`` folder it names
  (``storage.publish_dir``); the pointer goes first, so a reader never resolves a half-deleted
  folder; version folders no pointer names (an upload a killed build left) go after the grace time.
* latent caches (``latent_cache``'s ``keep_caches``): those of the last N dataset versions cached,
  plus those of every dataset version kept above for a pointer (the current one, the checkpoints').
* checkpoints of one training run (the recipe's ``checkpoints_total_limit``): the last N by step,
  plus the best (lowest held-out ``validation_loss`` in its ``checkpoint.json``), plus any checkpoint a
  pointer references (``models/<kind>/latest.json``, ``models/sd/promoted.json``, a ControlNet run's
  ``sd_model_path``; paths relative to the storage root, or absolute in older pointers).

Nothing a pointer references is ever deleted, whatever N is. A local folder is deleted by renaming it
to a hidden name first, so a reader never finds it half deleted. On object storage the model stages'
checkpoints and latents are pruned in the local copy (and the pushed run folder follows it), so
the pointers are read there: ``sd_model`` pulls them before training (each writer uploads its
pointer). The local copy is also passed to the dataset's prune with ``pointer_roots`` (pointers
written there by earlier versions, which kept ``models/sd/latest.json`` only in that copy).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from upath import UPath

from sar_pipeline.dataset.read import MANIFEST_NAME, SHARDS_FOLDER, current_version, version_manifest
from sar_pipeline.errors import ConfigError
from sar_pipeline.storage import (
    POINTER_SUFFIX,
    VERSION_SEPARATOR,
    as_path,
    discard,
    is_local,
    remove_abandoned_temporaries,
)

#: shard files written this recently (seconds) are never deleted: a dataset build may be about to
#: publish the manifest naming them
SHARD_GRACE_S = 3600.0

#: JSON files under ``models/`` whose path values are pointers to checkpoints
_POINTER_GLOBS = (
    "models/*/latest.json",
    "models/*/promoted.json",
    "models/controlnet/*/controlnet_config.json",
)


@dataclasses.dataclass
class PruneResult:
    """What a prune deleted (names or paths relative to the storage root) and what it kept."""

    deleted: list[str] = dataclasses.field(default_factory=list)
    kept: list[str] = dataclasses.field(default_factory=list)


def _json(path: Path | UPath) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _checkpoint_infos(root: Path | UPath) -> list[dict[str, Any]]:
    return [_json(p) for p in sorted(root.glob("models/*/*/checkpoints/*/checkpoint.json"))]


def pointer_paths(storage_root: str | os.PathLike) -> set[Path]:
    """Every path a model pointer under the local folder ``storage_root`` names (``latest.json``,
    ``promoted.json``, ControlNet configs): relative paths (what pointers store) under
    ``storage_root``, absolute ones (older pointers, models outside the root) as they are."""
    root = Path(storage_root)
    found: set[Path] = set()
    for pattern in _POINTER_GLOBS:
        for pointer in root.glob(pattern):
            for value in _json(pointer).values():
                if isinstance(value, str) and "/" in value and "://" not in value:
                    found.add((root / value).resolve())  # an absolute value replaces the root
    return found


def pointed_dataset_versions(
    storage_root: str | os.PathLike | UPath, pointer_roots: Iterable[str | os.PathLike | UPath] = ()
) -> set[str]:
    """Dataset versions something points at: ``dataset/current.json``, every checkpoint's
    ``dataset_version`` and every model pointer's (``latest.json``, ``promoted.json``), read under
    ``storage_root`` (a local folder or an ``s3://`` prefix) and under each of ``pointer_roots``
    (the model stages' local copy of a remote root)."""
    versions: set[Any] = set()
    for root in [as_path(storage_root), *(as_path(r) for r in pointer_roots)]:
        versions |= {info.get("dataset_version") for info in _checkpoint_infos(root)}
        for pattern in ("models/*/latest.json", "models/*/promoted.json"):
            versions |= {_json(p).get("dataset_version") for p in root.glob(pattern)}
    try:
        versions.add(current_version(storage_root))
    except ConfigError:
        pass
    return {v for v in versions if isinstance(v, str) and v}


def _keep_newest(
    dated: dict[Any, float], keep_last: int, protected: set[str], remove: Callable[[Any], None] = discard
) -> PruneResult:
    """Keep the ``keep_last`` newest folders (``dated``: folder → time, ties by name) and those named
    in ``protected``; ``remove`` the others."""
    result = PruneResult()
    for rank, folder in enumerate(sorted(dated, key=lambda p: (-dated[p], p.name))):
        if rank < keep_last or folder.name in protected:
            result.kept.append(folder.name)
        else:
            remove(folder)
            result.deleted.append(folder.name)
    return result


def _pruned_folder(folder: Path, keep_last: int, setting: str) -> Path | None:
    """``folder`` when it exists (None: nothing to prune); ConfigError naming ``setting`` if it would
    keep nothing."""
    if keep_last < 1:
        raise ConfigError(setting, f"retention must keep at least one, got {keep_last}")
    return folder if folder.is_dir() else None


def _named_shard_files(root: Path | UPath, versions: Iterable[str]) -> set[str]:
    """Every shard file (``.json`` and Parquet files, relative to the root) the ``versions`` name."""
    named = set()
    for version in versions:
        for shard in version_manifest(root, version)["shards"]:
            named.add(f"dataset/{SHARDS_FOLDER}/{shard['flight_id']}/{shard['key']}.json")
            named.update(f["path"] for f in shard["files"].values())
    return named


def prune_dataset_versions(
    storage_root: str | os.PathLike | UPath,
    keep_last: int,
    now: float | None = None,
    pointer_roots: Iterable[str | os.PathLike | UPath] = (),
) -> PruneResult:
    """Delete dataset versions beyond the last ``keep_last`` written that nothing points at, then
    every shard file no remaining version names (older than :data:`SHARD_GRACE_S`).

    ``storage_root``: a local folder or an ``s3://`` prefix (pruned through its file system);
    ``pointer_roots``: more folders whose model pointers and checkpoints protect the versions they
    name (the model stages' local copy of a remote root). ``now``: the time (Unix seconds) the
    grace time counts back from, default the clock.
    """
    if not is_local(as_path(storage_root)):
        return _prune_remote_dataset_versions(as_path(storage_root), keep_last, now, pointer_roots)
    root = Path(as_path(storage_root).path)
    folder = _pruned_folder(root / "dataset", keep_last, "keep_versions")
    if folder is None:
        return PruneResult()
    versions = [p for p in folder.iterdir() if not p.name.startswith(".") and (p / MANIFEST_NAME).is_file()]
    dated = {p: (p / MANIFEST_NAME).stat().st_mtime_ns for p in versions}
    result = _keep_newest(dated, keep_last, pointed_dataset_versions(root, pointer_roots))
    named = _named_shard_files(root, result.kept)
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


def _modified(info: dict[str, Any]) -> float:
    """An object's last modification (Unix seconds) from its fsspec ``info`` (S3: ``LastModified``)."""
    stamp = info.get("LastModified", info.get("mtime", info.get("created", 0.0)))
    return stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp or 0.0)


def _prune_remote_dataset_versions(
    root: UPath, keep_last: int, now: float | None, pointer_roots: Iterable[str | os.PathLike | UPath]
) -> PruneResult:
    """:func:`prune_dataset_versions` on object storage: one listing of ``dataset/``, deletes by key."""
    if keep_last < 1:
        raise ConfigError("keep_versions", f"retention must keep at least one, got {keep_last}")
    fs = root.fs
    base = (root / "dataset").path.rstrip("/")
    try:
        listing = fs.find(base, detail=True)
    except FileNotFoundError:
        return PruneResult()
    objects = {key[len(base) + 1 :]: info for key, info in listing.items() if key.startswith(base + "/")}
    # a version: its pointer ``<version>.current`` (written last by publish_dir, so dated by it)
    pointers = {
        key[: -len(POINTER_SUFFIX)]: _modified(info)
        for key, info in objects.items()
        if "/" not in key and key.endswith(POINTER_SUFFIX)
    }
    named_folders = {v: _json(root / "dataset" / f"{v}{POINTER_SUFFIX}").get("folder") for v in pointers}

    def remove_version(version: UPath) -> None:
        # the pointer first: from then on no reader resolves the folder, then the folder's objects
        fs.rm(f"{base}/{version.name}{POINTER_SUFFIX}")
        folders = {k.split("/", 1)[0] for k in objects if k.split(VERSION_SEPARATOR, 1)[0] == version.name}
        for folder in sorted(folders):
            fs.rm(f"{base}/{folder}", recursive=True)

    dated = {root / "dataset" / v: stamp for v, stamp in pointers.items()}
    result = _keep_newest(dated, keep_last, pointed_dataset_versions(root, pointer_roots), remove_version)
    named = _named_shard_files(root, result.kept)
    cutoff = (time.time() if now is None else now) - SHARD_GRACE_S
    for key, info in sorted(objects.items()):
        top = key.split("/", 1)[0]
        version = top.split(VERSION_SEPARATOR, 1)[0]
        if key.startswith(f"{SHARDS_FOLDER}/"):
            orphan = f"dataset/{key}" not in named
        else:
            # a version folder its pointer does not name: an upload a killed build left, or the
            # folder a republication replaced (kept by publish_dir for readers of a moment before)
            orphan = (
                "/" in key
                and VERSION_SEPARATOR in top
                and version not in result.deleted
                and named_folders.get(version) != top
            )
        if orphan and _modified(info) < cutoff:
            fs.rm(f"{base}/{key}")
            result.deleted.append(f"dataset/{key}")
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
