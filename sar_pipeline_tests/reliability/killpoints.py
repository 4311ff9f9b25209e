"""kill -9 at seeded points: run a pipeline stage in a real process and SIGKILL it mid-write.

A *kill server* (``python -m sar_pipeline_tests.reliability.killpoints MODULE…``) imports the modules
a stage needs once, then forks one child per request, so that a trial costs the stage's own work,
not a Python start-up with Dagster, rasterio and torch. The child runs the stage (a function
``module:name`` called with keyword arguments) and dies by SIGKILL — no ``finally``, no ``atexit``,
no flush — at one of two kinds of point:

- ``kill_at_event=N``: the child kills itself with ``os.kill(os.getpid(), SIGKILL)`` just before its
  N-th file-system write under the watched folder. Writes are seen through Python's audit hooks
  (:pep:`578`): ``open`` for writing, ``os.rename``/``os.replace``, ``os.remove``, ``os.rmdir``,
  ``os.mkdir``, ``shutil.rmtree``… — every step of the temp-name-then-rename protocol, including the
  deletes inside ``rmtree``. A dry run lists a stage's events, so a trial draws N among them.
- ``kill_after_first_write_s=T``: a timer started at the child's first write under the watched
  folder sends it SIGKILL T seconds later, wherever it is — also inside a native writer (Parquet,
  GDAL, safetensors) between two audited events. (Timed from the first write, not from the start:
  Dagster's start-up time varies more on a loaded machine than a small stage's writing lasts.)

Each child appends the writes it saw to a trace file (``<seconds>\\t<event>\\t<path>``), so a trial knows
where its kill landed and when (seconds since it started); its stdout and stderr go to a log file.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sar_pipeline.processes import die_with_parent

#: audit events that change the file system (PEP 578 / the ``sys`` audit events table)
WRITE_EVENTS = frozenset(
    {
        "open",
        "os.rename",
        "os.remove",
        "os.rmdir",
        "os.mkdir",
        "os.truncate",
        "os.link",
        "os.symlink",
        "shutil.rmtree",
        "shutil.copyfile",
        "shutil.move",
    }
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

#: a stage that never ends is stopped (SIGKILL) after this long and reported as hung
HANG_S = 300.0


def _path(value: Any, dir_fd: Any = None) -> str | None:
    """An absolute path for an audit event argument (``dir_fd``-relative names resolved), else None."""
    if isinstance(value, int) or value is None:
        return None
    try:
        path = os.fsdecode(os.fspath(value))
        if isinstance(dir_fd, int) and not os.path.isabs(path):
            path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
        return os.path.abspath(path)
    except (TypeError, OSError):
        return None


def _written(event: str, args: tuple) -> str | None:
    """The path an audited file-system event writes, or None when it does not write."""
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        if isinstance(mode, str):
            writes = any(c in mode for c in "wax+")
        else:
            writes = bool((flags or 0) & _WRITE_FLAGS)
        return _path(path) if writes else None
    if event == "os.rename":
        src, dst = args[0], args[1]
        dir_fd = args[2] if len(args) > 2 else None
        a, b = _path(src, dir_fd), _path(dst, args[3] if len(args) > 3 else None)
        return f"{a} -> {b}" if a and b else None
    if event in ("os.remove", "os.rmdir", "os.mkdir"):
        dir_fd = args[-1] if len(args) > 1 else None
        return _path(args[0], dir_fd)
    if event in ("shutil.copyfile", "shutil.move", "os.link", "os.symlink"):
        return _path(args[1])
    return _path(args[0])


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install_kill_hook(
    root: str,
    kill_at_event: int | None,
    kill_after_first_write_s: float | None,
    trace_fd: int,
    exclude: tuple[str, ...] = (),
) -> None:
    """Count writes under ``root`` in this process, trace them to ``trace_fd``, and SIGKILL this
    process just before write number ``kill_at_event`` (1-based) or ``kill_after_first_write_s``
    seconds after its first write (None: never). Paths holding one of ``exclude`` are not counted
    (writes whose number varies from run to run, such as a logger's timed flushes)."""
    root = os.path.abspath(root).rstrip("/") + "/"
    count = 0
    started = time.monotonic()

    def hook(event: str, args: tuple) -> None:
        nonlocal count
        if event not in WRITE_EVENTS:
            return
        try:
            path = _written(event, args)
        except Exception:  # a hook must never break the operation it watches
            return
        if path is None or root not in path + "/" or any(part in path for part in exclude):
            return
        count += 1
        if count == 1 and kill_after_first_write_s is not None:
            timer = threading.Timer(kill_after_first_write_s, _kill_self)
            timer.daemon = True
            timer.start()
        os.write(trace_fd, f"{time.monotonic() - started:.4f}\t{event}\t{path}\n".encode())
        if count == kill_at_event:
            _kill_self()

    sys.addaudithook(hook)


def _resolve(name: str):
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def _child(request: dict[str, Any]) -> None:
    """In the forked child: run the stage under the kill hook; never returns."""
    code = 1
    try:
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        sys.stdout.reconfigure(line_buffering=True)
        sys.stderr.reconfigure(line_buffering=True)
        trace = os.open(request["trace"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        install_kill_hook(
            request["root"],
            request.get("kill_at_event"),
            request.get("kill_after_first_write_s"),
            trace,
            tuple(request.get("exclude", ())),
        )
        _resolve(request["stage"])(**request["kwargs"])
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait(pid: int) -> dict[str, Any]:
    started = time.monotonic()
    deadline = started + HANG_S
    hung = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() >= deadline:
            hung = True
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.002)
    return {
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "elapsed_s": time.monotonic() - started,
        "hung": hung,
    }


def serve(preload: list[str]) -> None:
    """Import ``preload`` (a ``module:function`` entry is also called: a warm-up), then fork a child
    per JSON request line on stdin; answer one JSON line each."""
    for entry in preload:
        if ":" in entry:
            _resolve(entry)()
        else:
            importlib.import_module(entry)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps(_wait(pid)), flush=True)


# ----------------------------------------------------------------------------------------------
# the test side


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How one child ended and the writes it made under the watched folder (in order)."""

    killed: bool
    exit_code: int | None
    elapsed_s: float
    #: ``<event>\t<path>`` of each write, in order
    writes: list[str]
    #: when each write came, seconds after the child started
    write_times: list[float]
    log: str

    def landed(self, root: Path) -> str:
        """Where the kill came: before which write (event kills), or after which one (timed kills)."""
        if not self.writes:
            return "before any write"
        return self.writes[-1].replace(f"{Path(root).resolve()}/", "").replace("\t", " ")


def draw_kill_point(
    rng: random.Random, dry: Outcome, timed: bool, stratum: tuple[int, int] = (0, 1)
) -> dict[str, Any]:
    """A kill point for a run like ``dry`` (an uninterrupted run of the same stage from the same
    state): before one of its writes drawn uniformly from slice ``stratum[0]`` of ``stratum[1]``
    equal slices of the run's writes (so that trials spread over the whole run), or (``timed``) at a
    delay after its first write drawn uniformly up to its last write (a run may end before a timed
    kill: it is then reported)."""
    if timed:
        span = dry.write_times[-1] - dry.write_times[0]
        return {"kill_after_first_write_s": round(rng.uniform(0.0, span), 4)}
    index, slices = stratum
    n = len(dry.writes)
    low = 1 + index * n // slices
    return {"kill_at_event": rng.randint(low, max(low, (index + 1) * n // slices))}


class KillServer:
    """The kill server as a context manager (it dies with this process, and on exit)."""

    def __init__(self, preload: list[str], workdir: Path, env: dict[str, str] | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__, *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            preexec_fn=die_with_parent(),
        )
        self._reply()
        self._count = 0

    def _reply(self) -> dict[str, Any]:
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the kill server stopped (exit {self._process.wait()})")
        return json.loads(line)

    def run(
        self,
        stage: str,
        root: Path,
        kill_at_event: int | None = None,
        kill_after_first_write_s: float | None = None,
        exclude: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> Outcome:
        """Run ``stage`` (``module:function``) with ``kwargs`` in a fresh child; kill it at write number
        ``kill_at_event`` under ``root`` or ``kill_after_first_write_s`` after its first write there
        (neither: let it finish). Writes to paths holding one of ``exclude`` are not counted."""
        self._count += 1
        trace = self.workdir / f"trace-{self._count}.tsv"
        log = self.workdir / f"log-{self._count}.txt"
        request = {
            "stage": stage,
            "kwargs": kwargs,
            "root": str(root),
            "kill_at_event": kill_at_event,
            "kill_after_first_write_s": kill_after_first_write_s,
            "exclude": list(exclude),
            "trace": str(trace),
            "log": str(log),
        }
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        reply = self._reply()
        if reply["hung"]:
            raise AssertionError(f"{stage} did not end within {HANG_S:.0f} s (log: {log})")
        lines = [line.split("\t", 1) for line in trace.read_text().splitlines()] if trace.exists() else []
        return Outcome(
            killed=reply["signal"] == signal.SIGKILL,
            exit_code=reply["exit_code"],
            elapsed_s=reply["elapsed_s"],
            writes=[write for _, write in lines],
            write_times=[float(when) for when, _ in lines],
            log=log.read_text() if log.exists() else "",
        )

    def finish(self, stage: str, root: Path, **kwargs: Any) -> Outcome:
        """Run ``stage`` to its end and fail, showing its log, unless it succeeded."""
        outcome = self.run(stage, root, **kwargs)
        assert outcome.exit_code == 0, f"{stage} failed:\n{outcome.log[-4000:]}"
        return outcome

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> KillServer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------
# what a reader may see


def hidden(relative: str) -> bool:
    """Whether a path (relative to the storage root) lies under a name a reader never takes: one
    starting with '.' (``.<name>.tmp-<pid>-…`` temporaries, ``.old-``/``.deleting-`` folders) or a
    ``.partial`` checkpoint."""
    return any(part.startswith(".") or part.endswith(".partial") for part in Path(relative).parts)


def visible_files(snapshot: dict[str, bytes]) -> dict[str, bytes]:
    """The files of ``snapshot`` a reader may take (see :func:`hidden`)."""
    return {k: v for k, v in snapshot.items() if not hidden(k)}


def partial_or_foreign(visible: dict[str, bytes], reference: dict[str, bytes]) -> list[str]:
    """Visible files that are not, byte for byte, the file of the same name in the reference output
    (the same inputs run without interruption): a partial, stale or duplicate file."""
    return sorted(k for k, v in visible.items() if reference.get(k) != v)


def incomplete_folders(
    visible: dict[str, bytes], reference: dict[str, bytes], folders: list[str]
) -> list[str]:
    """Published folders (``folders``, relative to the root) that are visible but do not hold every
    file the reference's folder holds: a folder seen half filled."""
    out = []
    for folder in folders:
        prefix = folder.rstrip("/") + "/"
        seen = {k for k in visible if k.startswith(prefix)}
        if seen and seen != {k for k in reference if k.startswith(prefix)}:
            out.append(folder)
    return out


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path → bytes), hidden ones included."""
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@dataclasses.dataclass
class Trials:
    """Kill -9 trials of a stage whose output is deterministic, each followed by a re-run.

    ``arguments(root)`` gives the stage's keyword arguments writing under ``root``; ``prepare(root)``
    writes the stage's inputs under an empty ``root``; ``published`` names the folders it publishes
    whole (relative to the root). Trial i starts from an empty root or, more often, from the complete
    output of the run before it (a re-materialisation; an empty root with probability ``empty_share``),
    and is killed at a point drawn by :func:`draw_kill_point` (one in ``timed_every`` after a delay).
    """

    server: KillServer
    stage: str
    arguments: Callable[[Path], dict[str, Any]]
    prepare: Callable[[Path], None]
    published: list[str]
    seed: int
    timed_every: int = 4
    empty_share: float = 0.3

    def reference(self, root: Path) -> tuple[dict[str, bytes], dict[str, Outcome]]:
        """The uninterrupted output under ``root`` and the dry runs (into an empty root, over its own output)."""
        self.prepare(root)
        empty = self.server.finish(self.stage, root, **self.arguments(root))
        reference = snapshot(root)
        over = self.server.finish(self.stage, root, **self.arguments(root))
        assert snapshot(root) == reference, "re-running over its own output changed it"
        return reference, {"empty": empty, "over": over}

    def run(
        self,
        root: Path,
        count: int,
        reference: dict[str, bytes],
        dry: dict[str, Outcome],
        check: Callable[[Path, str], None] | None = None,
    ) -> list[str]:
        """``count`` trials under ``root``; assert after each kill and each re-run; return one line per
        trial saying where its kill landed. ``check(root, what)``: more checks after each kill."""
        rng = random.Random(self.seed)
        lines = []
        timed_trials = count // self.timed_every
        event_trials = list(range(count - timed_trials))
        rng.shuffle(event_trials)  # which slice of the run's writes each event trial kills in
        for trial in range(count):
            start = "empty" if trial == 0 or rng.random() < self.empty_share else "over"
            if start == "empty":
                shutil.rmtree(root, ignore_errors=True)
                self.prepare(root)
            timed = trial % self.timed_every == self.timed_every - 1
            stratum = (0, 1) if timed else (event_trials.pop(), count - timed_trials)
            point = draw_kill_point(rng, dry[start], timed, stratum)
            killed = self.server.run(self.stage, root, **point, **self.arguments(root))
            what = f"trial {trial}: from {start} root, {point}: killed {killed.landed(root)}"
            lines.append(what if killed.killed else f"{what} (ended before the kill)")
            assert killed.killed or timed, what
            # at the kill: each file a reader can take is whole and final, each published folder whole
            seen = visible_files(snapshot(root))
            assert not partial_or_foreign(seen, reference), what
            assert not incomplete_folders(seen, reference, self.published), what
            if check is not None:
                check(root, what)
            # the re-run completes and leaves exactly what an uninterrupted run leaves: nothing of the
            # killed process (temporaries, half-swapped folders), no duplicate file, the same bytes
            self.server.finish(self.stage, root, **self.arguments(root))
            after = snapshot(root)
            assert sorted(after) == sorted(reference), what
            assert not partial_or_foreign(after, reference), what
        return lines


if __name__ == "__main__":
    serve(sys.argv[1:])
