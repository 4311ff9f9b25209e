"""The storage root: a local folder or an ``s3://`` prefix, reached through universal-pathlib.

Writes are atomic: data goes to a temporary name beside the target and is renamed into place
(on object stores a single PUT is already atomic), so a reader never sees a half-written file.
Folders are published whole (:func:`publish_dir`): swapped into place locally, uploaded under a
versioned name and pointed at on object storage, and read through :func:`resolve_dir`.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime as dt
import errno
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from pydantic import Field
from upath import UPath

from sar_pipeline import paths
from sar_pipeline.errors import ConfigError, SarPipelineError
from sar_pipeline.settings import Settings

#: the environment variable the deployment sets to choose the storage root (see :class:`StorageSettings`)
STORAGE_VARIABLE = "SAR_PIPELINE_STORAGE"
#: the environment variable that moves the model stages' local copy of a remote root (``cache_dir``)
CACHE_VARIABLE = "SAR_PIPELINE_CACHE"


class StorageSettings(Settings):
    """Where assets write their files."""

    uri: str = Field(
        default_factory=lambda: str(paths.storage_dir()),
        description="Local folder or fsspec URI (s3://bucket/prefix) under which every asset writes. "
        "Definitions read it from $SAR_PIPELINE_STORAGE when that is set; else <data>/storage "
        "($SAR_PIPELINE_DATA, default ./data). On s3:// the model stages work in a local copy (cache_dir).",
    )
    cache_dir: str = Field(
        default_factory=lambda: str(paths.data_dir() / "cache"),
        description="Local folder where the model stages (BLIP fine-tuning, latent cache, training) keep their "
        "copy of an s3:// storage root: what they read is downloaded there, what they write is uploaded "
        "from there (checkpoints as they are written); sar-pipeline generate downloads its model there too. "
        "Unused for a local root. Definitions and the command line read it from "
        "$SAR_PIPELINE_CACHE when that is set; else <data>/cache. On Kubernetes: a volume shared by the "
        "step pods and the training pod.",
    )


def storage_settings_from_environment() -> StorageSettings:
    """The storage root and its local copy as the deployment sets them ($SAR_PIPELINE_STORAGE,
    $SAR_PIPELINE_CACHE), each else its default: what the command line uses outside Dagster."""
    chosen = {"uri": os.environ.get(STORAGE_VARIABLE), "cache_dir": os.environ.get(CACHE_VARIABLE)}
    return StorageSettings(**{field: value for field, value in chosen.items() if value})


_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def validate_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is safe as one path component (no ``/``, no ``..``), else raise."""
    # fullmatch: ``$`` would also match before a trailing newline ("flight\n")
    if not isinstance(value, str) or not _SAFE_ID.fullmatch(value) or ".." in value:
        raise ConfigError(
            repr(value),
            f"not a valid {what}: use letters, digits, '.', '_' and '-' (no '/', no '..', "
            "at most 200 characters, starting with a letter or digit)",
        )
    return value


def as_path(uri: str | os.PathLike) -> UPath:
    """A ``UPath`` for a local path or an fsspec URI (``s3://bucket/prefix``)."""
    return UPath(uri)


def is_local(path: UPath | Path) -> bool:
    return getattr(path, "protocol", "") in ("", "file", "local")


def local_str(path: UPath | Path) -> str:
    """A path string GDAL/rasterio can open: local path, or ``s3://`` (rasterio maps it to /vsis3/)."""
    if is_local(path):
        return str(Path(path.path if isinstance(path, UPath) else path))
    return str(path)


def atomic_write_bytes(path: UPath | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that it appears whole or not at all."""
    with atomic_local_file(path) as tmp:
        Path(tmp).write_bytes(data)


# -- temporary names ---------------------------------------------------------------------------
# A temporary file or folder is named ``.<target>.tmp-<pid>-<random>`` beside its target, so that a
# process killed with SIGKILL (no ``finally`` runs) leaves something the next writer of the same
# target recognises as its own kind and as dead: the pid no longer runs. Same for the ``.old-``
# name a replaced folder briefly takes where the file system cannot swap two folders atomically.

_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}(?P<suffix>.*)$")


def _temp_sibling(target: Path, kind: str, suffix: str = "") -> Path:
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True  # no /proc (macOS): the signal test is all we have


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Delete what writers of ``target`` killed mid-write left beside it; return what was removed.

    A leftover ``.old-`` folder is the previous complete output whose replacement never landed: it
    is put back under ``target``'s name when nothing else holds that name. Entries of live
    processes (another writer at work) are left alone.
    """
    parent = target.parent
    if not parent.is_dir():
        return []
    removed: list[Path] = []
    for entry in sorted(parent.iterdir()):
        match = _TEMP_NAME.match(entry.name)
        if not match or match["target"] != target.name or pid_alive(int(match["pid"])):
            continue
        if match["kind"] == "old" and not target.exists():
            os.replace(entry, target)
            continue
        _remove_entry(entry)
        removed.append(entry)
    return removed


def _remove_entry(entry: Path) -> None:
    """Delete a file, a link or a whole folder; already gone is fine."""
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


_DELETING_NAME = re.compile(r"^\.(?P<target>.+)\.deleting-(?P<pid>\d+)$")


def remove_abandoned_temporaries(folder: Path, older_than_s: float, now: float | None = None) -> list[Path]:
    """Delete what killed processes left in ``folder`` under names no writer will look at again;
    return what was removed.

    :func:`remove_stale_temporaries` runs when a target is written again; a target that never is (a
    dataset shard or version whose inputs changed since) would keep its killed writer's ``.tmp-``
    file or folder forever. Those are removed here once their process is gone and they were last
    modified more than ``older_than_s`` ago (a writer on another host, whose process this one cannot
    see, is never that slow on one temporary). Folders hidden for deletion (``.<name>.deleting-<pid>``,
    :func:`discard`) are removed whatever their age: nothing reads them. ``.old-`` folders are left to
    their target's next writer, which puts them back.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    cutoff = (time.time() if now is None else now) - older_than_s
    removed = []
    for entry in sorted(folder.iterdir()):
        match = _TEMP_NAME.match(entry.name)
        abandoned = bool(_DELETING_NAME.match(entry.name)) or (
            match is not None
            and match["kind"] == "tmp"
            and not pid_alive(int(match["pid"]))
            and entry.lstat().st_mtime < cutoff
        )
        if not abandoned:
            continue
        _remove_entry(entry)
        removed.append(entry)
    return removed


# -- write failures of the storage itself --------------------------------------------------------

_STORAGE_ERRNOS = {
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "file too large for the file system (or the process's file-size limit)",
}


class StorageError(SarPipelineError):
    """The storage root cannot take a write: read-only, full, over quota, no permission."""


@contextlib.contextmanager
def storage_errors(target: UPath | Path) -> Iterator[None]:
    """Turn an ``OSError`` of the storage itself (read-only, full, …) into one :class:`StorageError`
    naming the output being written and the cause; other errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        cause = _STORAGE_ERRNOS.get(exc.errno or -1)
        if cause is None:
            raise
        where = exc.filename or target
        raise StorageError(
            target,
            f"cannot write under the storage root: {cause} ({errno.errorcode.get(exc.errno, exc.errno)} "
            f"at {where}). Free space or make the storage root writable ($SAR_PIPELINE_STORAGE, "
            "storage.uri), then re-run",
        ) from exc


# -- atomic outputs ------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_local_file(path: UPath | Path, suffix: str = "") -> Iterator[str]:
    """Yield a local file name to write; on success it becomes ``path`` in one step.

    Local targets get a temporary name in the same folder and ``os.replace``; remote targets
    are written locally and uploaded with one PUT. On error nothing is left at ``path`` (the
    previous file, if any, stays); a storage that cannot take the write raises :class:`StorageError`.
    """
    path = UPath(path)
    if is_local(path):
        target = Path(path.path)
        with storage_errors(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(target)
            tmp = _temp_sibling(target, "tmp", suffix)
            try:
                yield str(tmp)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
    else:
        with tempfile.TemporaryDirectory() as d:
            tmp = os.path.join(d, path.name)
            yield tmp
            path.parent.mkdir(parents=True, exist_ok=True)
            path.fs.put_file(tmp, path.path)


@contextlib.contextmanager
def _scratch_beside(target: Path) -> Iterator[Path]:
    """A new temporary folder beside ``target`` (leftovers of killed writers removed first);
    deleted on exit unless it was moved away. Storage failures become :class:`StorageError`."""
    with storage_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        tmp = _temp_sibling(target, "tmp")
        tmp.mkdir()
        try:
            yield tmp
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


#: suffix of the pointer object naming the current version of a folder on object storage
POINTER_SUFFIX = ".current"
#: separator between a folder's name and its version on object storage (``sar_tiles@20240601T…-ab12cd34``)
VERSION_SEPARATOR = "@"


@dataclasses.dataclass(frozen=True)
class DirPublication:
    """A folder being published: fill ``local``; on success it is readable at ``final``."""

    local: Path
    #: where the folder will be read: ``path`` itself locally, ``path@<version>`` on object storage
    final: UPath


@contextlib.contextmanager
def publish_dir(path: UPath | Path) -> Iterator[DirPublication]:
    """Yield a local folder to fill; on success it replaces ``path`` as a whole, atomically for readers.

    Locally the folder is filled under a temporary name beside ``path`` and swapped into place
    (:func:`replace_dir`; leftovers of writers killed earlier are removed first, a failure leaves the
    previous folder in place). Object stores have no rename and no atomic
    multi-object write, so there the folder is uploaded under a new versioned name
    (``<name>@<UTC time>-<random>``, :attr:`DirPublication.final`), then one object
    ``<name>.current`` naming that version is written last (a single PUT is atomic), then versions
    older than the one it replaced are deleted. A reader resolves the folder with :func:`resolve_dir`
    and so sees the old version whole or the new one whole, never a half-uploaded or mixed folder, and
    no stale object of an earlier version. On error nothing is published (a half-uploaded version that
    no pointer names is deleted).
    """
    path = UPath(path)
    if is_local(path):
        target = Path(path.path)
        with _scratch_beside(target) as tmp:
            yield DirPublication(tmp, path)
            replace_dir(tmp, target)
        return
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    final = path.parent / f"{path.name}{VERSION_SEPARATOR}{stamp}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as d:
        yield DirPublication(Path(d), final)
        try:
            path.fs.put(d.rstrip("/") + "/", final.path, recursive=True)
        except BaseException:
            _remove_remote(final)
            raise
    previous = _pointed_version(path)
    pointer = path.parent / f"{path.name}{POINTER_SUFFIX}"
    pointer.write_text(json.dumps({"folder": final.name}))
    for version in _versions(path):
        if version.name not in (final.name, previous):
            _remove_remote(version)


def resolve_dir(path: UPath | Path) -> UPath:
    """Where the folder published at ``path`` (by :func:`publish_dir`) is read: ``path`` locally; on
    object storage the version its ``<name>.current`` pointer names (``path`` itself when none)."""
    path = UPath(path)
    if is_local(path):
        return path
    current = _pointed_version(path)
    return path.parent / current if current else path


def relative_path(path: UPath | Path, root: UPath | Path) -> str:
    """``path`` relative to ``root`` with ``/`` separators (what manifests and pointers store)."""
    base, full = UPath(root).path.rstrip("/"), UPath(path).path
    if not full.startswith(base + "/"):
        raise ConfigError(str(path), f"not under {root}")
    return full[len(base) + 1 :]


def _pointed_version(path: UPath) -> str | None:
    pointer = path.parent / f"{path.name}{POINTER_SUFFIX}"
    try:
        return str(json.loads(pointer.read_text())["folder"])
    except FileNotFoundError:
        return None
    except (KeyError, ValueError) as exc:
        raise ConfigError(pointer, f"not a folder pointer ({exc})") from exc


def _versions(path: UPath) -> list[UPath]:
    prefix = f"{path.name}{VERSION_SEPARATOR}"
    try:
        return sorted(p for p in path.parent.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []


def _remove_remote(path: UPath) -> None:
    try:
        path.fs.rm(path.path, recursive=True)
    except FileNotFoundError:
        pass


def discard(path: Path) -> None:
    """Delete a local folder (or file) so that it is never seen half deleted: hidden under a
    ``.<name>.deleting-<pid>`` name by one rename, then removed."""
    hidden = path.with_name(f".{path.name}.deleting-{os.getpid()}")
    os.replace(path, hidden)
    if hidden.is_dir() and not hidden.is_symlink():
        shutil.rmtree(hidden, ignore_errors=True)
    else:
        hidden.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_local_dir(path: UPath | Path) -> Iterator[Path]:
    """Yield a local folder to fill; on success it replaces ``path`` as a whole (:func:`publish_dir`).

    For writers that do not need the published name (checkpoints, model folders: always local);
    readers of a folder that may live on object storage go through :func:`resolve_dir`.
    """
    with publish_dir(path) as publication:
        yield publication.local


@contextlib.contextmanager
def staging_dir(near: UPath | Path) -> Iterator[Path]:
    """A scratch folder for files whose final place is decided after they are written (a version
    named by their hash): beside ``near`` on a local root, so that what a killed process leaves is
    found and removed by the next writer, else a local temporary folder. Removed on exit."""
    near = UPath(near)
    if is_local(near):
        with _scratch_beside(Path(near.path)) as tmp:
            yield tmp
    else:
        with tempfile.TemporaryDirectory() as d:
            yield Path(d)


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(new: Path, target: Path) -> None:
    """Put folder ``new`` at ``target``, replacing a previous folder there so that a reader (or a
    kill) at any instant finds either the old folder or the new one under ``target``."""
    if not target.exists():
        os.replace(new, target)
        return
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # ``new`` now holds the old content
        return
    # no atomic swap on this file system: the old folder steps aside for a moment under an
    # ``.old-<pid>-`` name that remove_stale_temporaries restores if this process dies right here
    old = _temp_sibling(target, "old")
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
