"""The storage root: a local folder or an ``s3://`` prefix, reached through universal-pathlib.

Writes are atomic: data goes to a temporary name beside the target and is renamed into place
(on object stores a single PUT is already atomic), so a reader never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import sys
import tempfile
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


class StorageSettings(Settings):
    """Where assets write their files."""

    uri: str = Field(
        default_factory=lambda: str(paths.storage_dir()),
        description="Local folder or fsspec URI (s3://bucket/prefix) under which every asset writes. "
        "Definitions read it from $SAR_PIPELINE_STORAGE when that is set; else <data>/storage "
        "($SAR_PIPELINE_DATA, default ./data). The model stages need a local or mounted folder.",
    )


_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def validate_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is safe as one path component (no ``/``, no ``..``), else raise."""
    if not isinstance(value, str) or not _SAFE_ID.match(value) or ".." in value:
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
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
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


@contextlib.contextmanager
def atomic_local_dir(path: UPath | Path) -> Iterator[Path]:
    """Yield a local folder to fill; on success it replaces ``path`` as a whole.

    Used for checkpoints and multi-file outputs: a folder that exists under its final name is
    complete, and a failure (or a kill) while filling it leaves the previous folder in place.
    Leftovers of writers killed earlier are removed first. Remote targets are uploaded file by
    file, then a ``_COMPLETE`` marker is written last.
    """
    path = UPath(path)
    if is_local(path):
        target = Path(path.path)
        with _scratch_beside(target) as tmp:
            yield tmp
            replace_dir(tmp, target)
    else:
        with tempfile.TemporaryDirectory() as d:
            yield Path(d)
            path.fs.put(d.rstrip("/") + "/", path.path, recursive=True)
            (path / "_COMPLETE").write_text("")


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
