"""How ``sar-pipeline run`` keeps the Dagster instance usable when runs die or are interrupted.

A run process killed with SIGKILL (or a host that lost power) leaves its run ``STARTED`` forever
and keeps the pool slots it held: the next run of a ``gpu`` stage then waits for a slot that is
never freed. Dagster's daemon fails such runs only where the run launcher can check its workers
(Kubernetes, Docker); runs of ``sar-pipeline run`` (executed in its own process) and of the
embedded ``dg dev`` have no such check. So, before anything is run, :func:`fail_dead_runs` fails every
in-progress run whose process no longer exists on this host (the pids Dagster records in each
run's engine events, with the process start time guarding against a reused pid) and frees its
slots; slots still held by finished runs are freed too.

While it runs, :class:`RunGuard` makes SIGTERM act as SIGINT, waits for busy pools in its own loop
(interruptible, saying which run holds them), and, should Dagster itself wait for a slot, turns an
interrupt into a clean stop: Dagster swallows SIGINT/SIGTERM while a run waits for a pool slot
(they are only acted on inside a step), so the guard notices the signal through
``signal.set_wakeup_fd`` and raises ``KeyboardInterrupt`` in the main thread itself.

The runs are recorded as the UI records the runs it launches — the code location's origin
(``workspace.yaml``), the job's own snapshot — so the UI lists them under their jobs and re-executes
them; they execute here, in process (:func:`create_located_run`, :func:`execute_located_run`), with
Dagster's console logger quiet (the event log is the UI's run page).

This module uses Dagster (like ``cli.py``); domain code never imports it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
from dagster._core.events import DagsterEventType
from dagster._core.execution.api import execute_run
from dagster._core.execution.job_execution_result import JobExecutionResult
from dagster._core.origin import JobPythonOrigin
from dagster._core.remote_origin import CodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.storage.dagster_run import RunsFilter

from sar_pipeline import paths
from sar_pipeline.storage import pid_alive

HOST_TAG = "sar_pipeline/host"
PID_TAG = "sar_pipeline/pid"

# engine-event messages that name the process running a run (run worker, in-process or
# multiprocess executor), e.g. "Executing steps in process (pid: 4242)"
_RUN_PROCESS_MESSAGE = re.compile(
    r"^(Started process for run|Started process for resuming job|Executing steps in process|"
    r"Executing steps using multiprocess executor: parent process) \(pid: (\d+)\)"
)
IN_PROGRESS = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)


class Interrupted(KeyboardInterrupt):
    """``sar-pipeline run`` was asked to stop (SIGINT/SIGTERM); the current run was stopped."""


# ----------------------------------------------------------------------------------------------
# dead runs


def _process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (Unix time), from /proc; None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _judged_here(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Whether this host can tell if ``run``'s process lives: it ran here (our tag), or the instance
    is the embedded SQLite one (one machine by construction)."""
    host = run.tags.get(HOST_TAG)
    if host is not None:
        return host == socket.gethostname()
    return "sqlite" in type(instance.run_storage).__name__.lower()


def run_process(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """(pid, when it was logged) of the process that last took ``run_id`` over, or None."""
    found = None
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        match = _RUN_PROCESS_MESSAGE.match(entry.user_message or "")
        if match:
            found = (int(match.group(2)), entry.timestamp)
    return found


def dead_run_reason(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """Why ``run`` (in progress) is dead — its process is gone — or None when it lives or cannot be judged."""
    if not _judged_here(instance, run):
        return None
    process = run_process(instance, run.run_id)
    if process is None:
        tagged = run.tags.get(PID_TAG)
        if tagged is None or not tagged.isdigit():
            return None
        process = (int(tagged), 0.0)
    pid, logged = process
    if pid_alive(pid):
        started = _process_start_time(pid)
        if started is None or started <= logged + 1.0:
            return None  # the same process, still running
        return f"its process {pid} is gone (the pid now belongs to a process started later)"
    return f"its process {pid} is gone (killed, or the machine restarted)"


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fail every in-progress run whose process is gone, free its pool slots, and free slots that
    finished runs still hold. Returns one line per run handled."""
    handled = []
    for record in instance.get_run_records(filters=RunsFilter(statuses=list(IN_PROGRESS))):
        run = record.dagster_run
        reason = dead_run_reason(instance, run)
        if reason is None:
            continue
        message = f"sar-pipeline: run {run.run_id} of {run.job_name} marked failed: {reason}"
        if run.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message)
        else:
            instance.report_run_failed(run, message)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        handled.append(message.removeprefix("sar-pipeline: "))
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        holders = storage.get_concurrency_run_ids()
        if holders:
            finished = instance.get_runs(filters=RunsFilter(run_ids=list(holders)))
            for run in finished:
                if run.is_finished:
                    storage.free_concurrency_slots_for_run(run.run_id)
                    handled.append(f"freed the pool slots still held by finished run {run.run_id}")
    return handled


# ----------------------------------------------------------------------------------------------
# flights to (re)run


def unfinished_partitions(
    instance: dg.DagsterInstance,
    asset_keys: Sequence[dg.AssetKey],
    partitions_def: dg.PartitionsDefinition,
    partition_keys: Sequence[str],
) -> tuple[list[str], list[str]]:
    """(to run, running): partitions where some asset was never materialised or its latest attempt
    failed, and partitions that a live run is materialising now."""
    todo, running = set(), set()
    for key in asset_keys:
        status = instance.get_status_by_partition(key, list(partition_keys), partitions_def) or {}
        for partition in partition_keys:
            value = status.get(partition)
            if value == dg.AssetPartitionStatus.IN_PROGRESS:
                running.add(partition)
            elif value != dg.AssetPartitionStatus.MATERIALIZED:
                todo.add(partition)
    return sorted(todo - running), sorted(running)


# ----------------------------------------------------------------------------------------------
# runs of the code location, executed here


#: the UI's workspace: its one code location (``sar_pipeline``) is the one runs of ``sar-pipeline
#: run`` belong to, so the UI lists them under their jobs and re-executes them like its own
WORKSPACE_FILE = paths.PROJECT_ROOT / "workspace.yaml"

#: the console logger's level in these runs: Dagster prints every event (one DEBUG line each) to the
#: terminal otherwise; the events stay in the event log (the UI's run page), and the CLI prints one
#: line per run plus a summary of what our own code logged (:func:`logged_summary`)
CONSOLE_LOG_LEVEL = "CRITICAL"


@functools.cache
def code_location_origin() -> CodeLocationOrigin | None:
    """The code location as the UI loads it (:data:`WORKSPACE_FILE`, read once per process), or None
    without that file (an installed package run outside the project folder)."""
    from dagster._core.workspace.load import location_origins_from_yaml_paths

    if not WORKSPACE_FILE.is_file():
        return None
    (origin,) = location_origins_from_yaml_paths([str(WORKSPACE_FILE)])
    return origin


def job_origins(job_name: str) -> tuple[RemoteJobOrigin | None, JobPythonOrigin | None]:
    """(the job as the UI's code location serves it, the job as its run worker loads it) — what a
    run launched from the UI records; (None, None) without :data:`WORKSPACE_FILE`."""
    location = code_location_origin()
    if location is None:
        return None, None
    remote = RemoteJobOrigin(RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME), job_name)
    target = location.loadable_target_origin
    repository = ReconstructableRepository.for_module(
        target.module_name, target.attribute or "defs", target.working_directory
    )
    return remote, repository.get_reconstructable_job(job_name).get_python_origin()


def cli_run_config(job: dg.JobDefinition, run_config: Mapping[str, Any] | None) -> dict:
    """``run_config`` plus what ``sar-pipeline run`` adds unless the file says otherwise: every step
    in this process, the dataset and model stages' too (``execution: in_process``, as the command
    always ran them: a step process would load the code location again, docs/benchmarks.md; not
    for a Kubernetes executor) and a quiet console logger (:data:`CONSOLE_LOG_LEVEL`)."""
    from sar_pipeline.defs.executor import per_flight_in_process_executor

    config = dict(run_config or {})
    choosable = {dg.multi_or_in_process_executor.name, per_flight_in_process_executor.name}
    if "execution" not in config and job.executor_def.name in choosable:
        config["execution"] = {"config": {"in_process": {}}}
    if "loggers" not in config and set(job.loggers) == {"console"}:
        config["loggers"] = {"console": {"config": {"log_level": CONSOLE_LOG_LEVEL}}}
    return config


def create_located_run(
    instance: dg.DagsterInstance,
    job: dg.JobDefinition,
    partition_key: str | None = None,
    run_config: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
) -> dg.DagsterRun:
    """A new run of ``job`` (a job of ``sar_pipeline.definitions``) recorded as the UI records one it
    launches: with the code location's origin (so the run carries the ``.dagster/repository`` tag the
    job's page selects runs by, and re-executes from the UI), the job's own snapshot (the UI shows no
    'snapshot changed' warning), the partition's tags, and :func:`cli_run_config`."""
    from dagster._core.execution.execute_in_process import merge_run_tags

    config = cli_run_config(job, run_config)
    if partition_key is not None and not run_config and job.partitioned_config:
        config = {**job.partitioned_config.get_run_config_for_partition_key(partition_key), **config}
    run_tags = merge_run_tags(job, partition_key, tags, None, instance, config)
    remote, code = job_origins(job.name)
    return instance.create_run_for_job(
        job_def=job, run_config=config, tags=run_tags, remote_job_origin=remote, job_code_origin=code
    )


def execute_located_run(
    instance: dg.DagsterInstance, job: dg.JobDefinition, run: dg.DagsterRun
) -> JobExecutionResult:
    """Execute ``run`` (:func:`create_located_run`) here, as a run worker does (``execute_run``),
    on the already loaded ``job``."""
    return execute_run(InMemoryJob(job), run, instance, raise_on_error=False)


def logged_summary(instance: dg.DagsterInstance, run_id: str, per_step: int = 3) -> list[str]:
    """What our own code logged in run ``run_id`` (not Dagster's events), short: per step, each
    warning or error (up to ``per_step``) and the number of other messages with the first one."""
    steps: dict[str, list[Any]] = {}
    started = set()  # our code runs only in started steps ("Dependencies … Not executing" is Dagster's)
    for entry in instance.all_logs(run_id):
        if entry.dagster_event is not None:
            if entry.dagster_event.event_type == DagsterEventType.STEP_START:
                started.add(entry.step_key)
        elif entry.step_key in started and entry.level >= logging.INFO and entry.user_message:
            steps.setdefault(entry.step_key, []).append(entry)
    lines = []
    for step, entries in steps.items():
        loud = [e for e in entries if e.level >= logging.WARNING]
        quiet = [e for e in entries if e.level < logging.WARNING]
        for entry in loud[:per_step]:
            lines.append(f"{step}: {logging.getLevelName(entry.level)}: {_short(entry.user_message)}")
        if len(loud) > per_step:
            lines.append(f"{step}: {len(loud) - per_step} more warnings")
        if quiet:
            lines.append(
                f"{step}: {_short(quiet[0].user_message)}"
                + (f" (and {len(quiet) - 1} more messages: the run's log)" if len(quiet) > 1 else "")
            )
    return lines


def _short(message: str, width: int = 160) -> str:
    line = " ".join(message.split())
    return line if len(line) <= width else line[: width - 1] + "…"


# ----------------------------------------------------------------------------------------------
# running jobs, interruptibly


def job_pools(job: dg.JobDefinition) -> set[str]:
    """The concurrency pools the job's ops/assets claim."""
    return {pool for node in job.graph.node_defs if (pool := getattr(node, "pool", None))}


def _raise_in_main_thread(exc_type: type[BaseException]) -> None:
    """Raise ``exc_type`` in the main thread at its next bytecode, waking it from a sleep first."""
    main = threading.main_thread().ident
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(main), ctypes.py_object(exc_type))
    signal.pthread_kill(main, signal.SIGINT)  # ends its time.sleep; the handler then raises


def failure_message(result: JobExecutionResult) -> str | None:
    """'<step>: <message>' of the run's first failed step, the user's error rather than Dagster's
    wrapper around it (messages are already redacted: ``SarPipelineError``); None when none failed."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            error = event.step_failure_data.error
            while error.cause is not None and error.message.startswith("dagster._core.errors."):
                error = error.cause
            return f"{event.step_key}: {error.message.strip()}"
    return None


def was_interrupted(result: JobExecutionResult) -> bool:
    """Whether a step of the run stopped on SIGINT/SIGTERM (Dagster fails the step and the run)."""
    for event in result.all_events:
        if event.event_type == DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error
            if error is not None and error.cls_name == "DagsterExecutionInterruptedError":
                return True
    return False


class RunGuard:
    """Runs jobs here for ``sar-pipeline run``: tagged with this process, after busy pools
    are free, stoppable by SIGINT/SIGTERM at any point (see module doc). Use as a context manager
    in the main thread."""

    def __init__(
        self, instance: dg.DagsterInstance, say: Callable[[str], None] = print, poll_seconds: float = 2.0
    ):
        self.instance = instance
        self.say = say
        self.poll_seconds = poll_seconds
        self.interrupted = False
        self._executing: str | None = None  # the id of the run being executed
        self._stop = threading.Event()

    # -- signals ------------------------------------------------------------------------------

    def __enter__(self) -> RunGuard:
        self._old_term = signal.signal(signal.SIGTERM, self._on_signal)
        self._old_int = signal.signal(signal.SIGINT, self._on_signal)
        self._reader, writer = socket.socketpair()
        writer.setblocking(False)
        self._writer = writer
        self._old_wakeup = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self._watchdog = threading.Thread(target=self._watch, name="sar-pipeline-signals", daemon=True)
        self._watchdog.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        signal.set_wakeup_fd(self._old_wakeup)
        signal.signal(signal.SIGTERM, self._old_term)
        signal.signal(signal.SIGINT, self._old_int)
        self._writer.close()
        self._watchdog.join(timeout=5)
        self._reader.close()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        """Outside a run (our own code runs): stop at once."""
        self.interrupted = True
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def _watch(self) -> None:
        """Notice SIGINT/SIGTERM even while Dagster's handler swallows them; if the run then waits
        for a pool slot rather than running a step, stop it from here."""
        self._reader.settimeout(0.5)
        noticed_at = None
        while not self._stop.is_set():
            try:
                data = self._reader.recv(16)
            except TimeoutError:
                data = b""
            except OSError:
                return
            if any(b in (signal.SIGINT, signal.SIGTERM) for b in data):
                self.interrupted = True
                noticed_at = noticed_at or time.monotonic()
            run_id = self._executing
            if noticed_at is None or run_id is None:
                continue
            if time.monotonic() - noticed_at > 1.0 and self._waiting_for_slot(run_id):
                self.say("interrupted while waiting for a pool slot: stopping")
                self._executing = None
                _raise_in_main_thread(KeyboardInterrupt)

    def _waiting_for_slot(self, run_id: str) -> bool:
        storage = self.instance.event_log_storage
        for key in storage.get_concurrency_keys():
            if run_id in storage.get_concurrency_info(key).pending_run_ids:
                return True
        return False

    # -- pools --------------------------------------------------------------------------------

    def wait_for_pools(self, pools: set[str]) -> None:
        """Return when each pool has a free slot; until then say who holds it, failing dead holders."""
        storage = self.instance.event_log_storage
        if not pools or not storage.supports_global_concurrency_limits:
            return
        said = set()
        while True:
            busy = {}
            for pool in sorted(pools):
                info = storage.get_concurrency_info(pool)
                limit = info.limit if info.limit is not None else info.slot_count
                if limit and len(info.claimed_slots) >= limit:
                    busy[pool] = sorted(info.active_run_ids)
            if not busy:
                return
            for pool, holders in busy.items():
                if (pool, tuple(holders)) not in said:
                    said.add((pool, tuple(holders)))
                    self.say(
                        f"pool {pool!r} is busy (run {', '.join(holders)}): waiting for it "
                        "(Ctrl-C or SIGTERM stops here)"
                    )
            for line in fail_dead_runs(self.instance):
                self.say(f"recovered: {line}")
            time.sleep(self.poll_seconds)

    # -- running ------------------------------------------------------------------------------

    def execute(
        self,
        job: dg.JobDefinition,
        partition_key: str | None = None,
        run_config: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> JobExecutionResult:
        """Run ``job`` in this process on this instance, once its pools are free, as a run of the
        code location (:func:`create_located_run`, :func:`execute_located_run`); raises
        :class:`Interrupted` (after marking the run canceled) when a signal stopped it."""
        self.wait_for_pools(job_pools(job))
        own_tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
        run = create_located_run(
            self.instance,
            job,
            partition_key=partition_key,
            run_config=run_config,
            tags={**own_tags, **(tags or {})},
        )
        self._executing = run.run_id
        try:
            result = execute_located_run(self.instance, job, run)
        except KeyboardInterrupt as exc:
            self._executing = None
            current = self.instance.get_run_by_id(run.run_id)
            if current is not None and not current.is_finished:
                self.instance.report_run_canceled(current, "sar-pipeline run was interrupted")
                self.instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            raise Interrupted(run.run_id) from exc
        finally:
            self._executing = None
        if self.interrupted or was_interrupted(result):
            self.interrupted = True
            raise Interrupted(result.run_id)
        return result


@contextlib.contextmanager
def guarded(instance: dg.DagsterInstance, say: Callable[[str], None] = print) -> Iterator[RunGuard]:
    """A :class:`RunGuard` for ``instance``, after failing dead runs and freeing their slots."""
    for line in fail_dead_runs(instance):
        say(f"recovered: {line}")
    with RunGuard(instance, say) as guard:
        yield guard
