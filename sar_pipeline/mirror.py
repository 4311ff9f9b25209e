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
reader that checks for them never takes a half-uploaded folder for a finished one.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from upath import UPath

from sar_pipeline.storage import as_path, is_local, local_str, resolve_dir

#: files that say a folder is complete: uploaded after everything else in it
COMPLETION_MARKERS = ("index.json", "checkpoint.json", "model_index.json", "final.json", "_COMPLETE")


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
            if local.is_file() and local.stat().st_size == size:
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
            if existing.get(name) == files[name].stat().st_size:
                continue
            remote.fs.put_file(str(files[name]), f"{base}/{name}" if name else base)
            sent += 1
        if prune:
            stale = [f"{base}/{name}" for name in existing if name and name not in files]
            if stale:
                remote.fs.rm(stale)
        return sent
