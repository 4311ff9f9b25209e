"""A local copy of an object-store storage root, for the stages whose tools want plain folders.

transformers, diffusers, accelerate and safetensors read and write local folders. When the storage
root is ``s3://bucket/prefix``, the model stages (BLIP fine-tuning and scoring, latent cache, tiny
base model, diffusion training) work in ``<cache>/s3/bucket/prefix/…`` instead: they
:meth:`LocalMirror.pull` what they read (a dataset version, a latent cache, a run folder to resume)
and :meth:`LocalMirror.push` what they wrote (latents, each checkpoint as it is written, the run
folder at the end). On a local root the mirror *is* the root: nothing is copied.

Copies are incremental (a file whose size already matches is not transferred again). A pushed
folder's files go up in name order with the files that mark a folder complete last (``index.json``
of a latent cache, ``checkpoint.json`` of a checkpoint, ``model_index.json``, ``final.json``), so a
reader that checks for them never takes a half-uploaded folder for a finished one. Pointer files
(:data:`REWRITTEN_IN_PLACE`: ``dataset/current.json``, ``models/<kind>/latest.json``,
``models/sd/promoted.json``) are rewritten in place with content of the same size (another version,
another step), so they are always transferred.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from upath import UPath

from sar_pipeline.errors import ConfigError
from sar_pipeline.storage import as_path, is_local, local_str, resolve_dir

#: files that say a folder is complete: uploaded after everything else in it
COMPLETION_MARKERS = ("index.json", "checkpoint.json", "model_index.json", "final.json", "_COMPLETE")
#: pointer files: rewritten in place, often at the same size, so never skipped for a matching size
REWRITTEN_IN_PLACE = ("current.json", "latest.json", "promoted.json")


def _unchanged(name: str, size: int, other_size: int | None) -> bool:
    """Whether a copy of ``name`` (relative name in a transfer) can be skipped: sizes match and it is
    not a pointer file rewritten in place."""
    return other_size == size and Path(name).name not in REWRITTEN_IN_PLACE


class LocalMirror:
    """The local folder standing for storage root ``root_uri`` (itself when local)."""

    def __init__(self, root_uri: str | os.PathLike, cache_dir: str | os.PathLike):
        self.root: UPath = as_path(root_uri)
        self.remote = not is_local(self.root)
        if self.remote:
            self.local_root = (
                Path(cache_dir) / str(self.root.protocol or "remote") / self.root.path.strip("/")
            )
        else:
            self.local_root = Path(local_str(self.root))

    def local(self, *parts: str) -> Path:
        """``<local root>/parts…``."""
        return self.local_root.joinpath(*parts)

    def uri(self, local: str | os.PathLike) -> str:
        """The storage URI of a path under the local root (the path itself on a local root)."""
        local = Path(local)
        if not self.remote:
            return str(local)
        return str(self.root.joinpath(*local.relative_to(self.local_root).parts))

    def stored_parts(self, recorded: str | os.PathLike) -> tuple[str, ...] | None:
        """Where ``recorded`` lies under the storage root, as path parts: a storage URI under the
        root (what asset metadata records), a path relative to the root (what model pointers
        store) or a path under the local copy (what older pointers stored). None for anything else
        (local weights outside the root, another root's URI); ConfigError for a relative path
        climbing out of the root."""
        text, root = str(recorded), str(self.root).rstrip("/")
        if self.remote and text.startswith(root + "/"):
            rest = text[len(root) + 1 :]
        elif "://" in text:
            return None
        elif not Path(text).is_absolute():
            rest = Path(text).as_posix()
        else:
            try:
                rest = Path(text).relative_to(self.local_root).as_posix()
            except ValueError:
                return None
        parts = tuple(p for p in rest.split("/") if p not in ("", "."))
        if ".." in parts:
            raise ConfigError(text, "a path under the storage root cannot climb out of it ('..')")
        return parts or None

    def pull_recorded(self, recorded: str | os.PathLike) -> Path:
        """The local copy of a file or folder as metadata or a pointer records it
        (:meth:`stored_parts`), pulled first from a remote root (this machine's copy may be empty);
        a path outside the root as it is."""
        parts = self.stored_parts(recorded)
        if not parts:
            return Path(recorded)
        self.pull(*parts)
        return self.local(*parts)

    def _remote_files(self, remote: UPath) -> dict[str, int]:
        """Relative name → size of every object under ``remote`` (one listing)."""
        fs, base = remote.fs, remote.path.rstrip("/")
        if not fs.exists(base):
            return {}
        if fs.isfile(base):
            return {"": int(fs.info(base)["size"])}
        found = fs.find(base, detail=True)
        return {name[len(base) + 1 :]: int(info["size"]) for name, info in found.items()}

    def pull(self, *parts: str) -> int:
        """Copy ``parts`` (file or folder; a published folder's current version) from the storage
        root to the local copy, file by file, each file appearing whole; returns how many files were transferred (0 on a local root)."""
        if not self.remote:
            return 0
        # a folder published on object storage (storage.publish_dir) lives under the version its
        # pointer names: that version becomes the plain local folder
        remote = resolve_dir(self.root.joinpath(*parts))
        target = self.local(*parts)
        fetched = 0
        for name, size in self._remote_files(remote).items():
            local = target / name if name else target
            if local.is_file() and _unchanged(name or remote.name, local.stat().st_size, size):
                continue
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_name(f".{local.name}.tmp-{uuid.uuid4().hex[:8]}")
            remote.fs.get_file(f"{remote.path.rstrip('/')}/{name}" if name else remote.path, str(tmp))
            os.replace(tmp, local)
            fetched += 1
        return fetched

    def push(self, *parts: str, prune: bool = False) -> int:
        """Copy ``parts`` (file or folder) from the local copy to the storage root, completion
        markers last; ``prune``: also delete remote files under it that are gone locally (rotated
        checkpoints). Returns how many files were uploaded (0 on a local root)."""
        if not self.remote:
            return 0
        local = self.local(*parts)
        remote = self.root.joinpath(*parts)
        if local.is_file():
            files = {"": local}
        else:
            files = {p.relative_to(local).as_posix(): p for p in local.rglob("*") if p.is_file()}
            files = {k: v for k, v in files.items() if not Path(k).name.startswith(".")}  # temporaries
        existing = self._remote_files(remote)
        order = sorted(files, key=lambda k: (Path(k).name in COMPLETION_MARKERS, k))
        sent = 0
        base = remote.path.rstrip("/")
        for name in order:
            if _unchanged(name or local.name, files[name].stat().st_size, existing.get(name)):
                continue
            remote.fs.put_file(str(files[name]), f"{base}/{name}" if name else base)
            sent += 1
        if prune:
            stale = [f"{base}/{name}" for name in existing if name and name not in files]
            if stale:
                remote.fs.rm(stale)
        return sent
