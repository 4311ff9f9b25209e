"""Throwaway services for tests and benchmarks, on 127.0.0.1 only, in temporary folders.

- :class:`PostgresCluster`: a PostgreSQL cluster made by Debian's ``initdb`` (package ``postgresql``,
  which ``scripts/setup`` installs when missing), password authentication, one database.
- :class:`S3Server`: moto's S3-compatible server (``moto[server]``) on a free port.
- :func:`dagster_process`: a Dagster command-line process (code server, daemon, webserver) with its
  output in a log file, stopped with SIGTERM (then SIGKILL) when the block ends.

Credentials reach the services' clients only through environment variables (``env()``), as in a
deployment. Usable outside pytest (``benchmarks/`` measure run overhead on Postgres with them).
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(
    port: int, timeout_s: float, process: subprocess.Popen | None = None, log: Path | None = None
):
    """Wait until 127.0.0.1:``port`` accepts connections; raise with the log's tail if it never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            break
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f} s\n{tail}")


def postgres_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` holding ``initdb`` (Debian's layout), or ``initdb`` on PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name)
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class PostgresCluster:
    """A PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 only.

    PostgreSQL refuses to run as root: as root, the server runs as the ``postgres`` system user
    (created by Debian's package) through ``runuser``. Use as a context manager.
    """

    def __init__(self, user: str = "dagster", database: str = "dagster"):
        self.user, self.database = user, database
        self.password = secrets.token_urlsafe(16)
        self.port = free_port()
        self.bindir = postgres_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL is not installed (initdb not found): run scripts/setup")
        self.folder = Path(tempfile.mkdtemp(prefix="sar-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"

    def _as_server_user(self, args: Sequence[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)

    def _run(self, *args: str) -> None:
        out = subprocess.run(self._as_server_user(args), capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"{' '.join(args)} failed: {out.stdout}{out.stderr}")

    def start(self) -> PostgresCluster:
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        pwfile = self.folder / "pw"
        pwfile.write_text(self.password + "\n")
        os.chmod(pwfile, 0o600)
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        )
        pwfile.unlink()
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "start",
        )
        import psycopg2

        with contextlib.closing(psycopg2.connect(**self.connect_args("postgres"))) as conn:
            conn.autocommit = True
            conn.cursor().execute(f'CREATE DATABASE "{self.database}"')
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError):
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def connect_args(self, database: str | None = None) -> dict[str, object]:
        """Keyword arguments of ``psycopg2.connect`` for this cluster."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "dbname": database or self.database,
        }

    def env(self) -> dict[str, str]:
        """The variables ``docker/dagster.yaml`` reads its Postgres connection from."""
        return {
            "DAGSTER_POSTGRES_HOST": "127.0.0.1",
            "DAGSTER_POSTGRES_PORT": str(self.port),
            "DAGSTER_POSTGRES_USER": self.user,
            "DAGSTER_POSTGRES_PASSWORD": self.password,
            "DAGSTER_POSTGRES_DB": self.database,
        }

    def __enter__(self) -> PostgresCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


class S3Server:
    """moto's S3 server on 127.0.0.1 (in this process, a thread); ``env()`` points clients at it."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.access_key = "test-" + secrets.token_hex(4)
        self.secret_key = secrets.token_urlsafe(24)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What boto3/s3fs (``AWS_*``, ``AWS_ENDPOINT_URL``) and GDAL's /vsis3/ (``AWS_S3_ENDPOINT``,
        ``AWS_HTTPS``, ``AWS_VIRTUAL_HOSTING``) need to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_S3_ENDPOINT": f"127.0.0.1:{self.port}",
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
        }

    def __enter__(self) -> S3Server:
        self.server.start()
        wait_for_port(self.port, 30)
        _forget_s3_clients()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()
        _forget_s3_clients()


def _forget_s3_clients() -> None:
    """Drop fsspec's cached S3 file systems: an instance is cached by its arguments, not by the
    environment, so one made while an earlier server ran would keep that server's endpoint and keys."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@contextlib.contextmanager
def dagster_process(
    args: Sequence[str],
    env: dict[str, str],
    log: Path,
    cwd: Path,
    port: int | None = None,
    timeout_s: float = 120,
) -> Iterator[subprocess.Popen]:
    """Run ``args`` (e.g. ``["dagster-daemon", "run", …]``) in its own process group; wait for
    ``port`` when given; on exit SIGTERM the group, then SIGKILL what is left after 20 s."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            list(args), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        if port is not None:
            wait_for_port(port, timeout_s, process, log)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def venv_tool(name: str) -> str:
    """The console script ``name`` of this interpreter's environment (``.venv/bin/dagster``…)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def http_ok(url: str, timeout_s: float = 5) -> bool:
    """Whether ``url`` (on 127.0.0.1) answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except OSError:
        return False
