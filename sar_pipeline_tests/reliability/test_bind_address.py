"""Every server the project starts listens on this machine only unless a user says otherwise (issue 13,
security): the Dagster UI (``dg dev``, ``dagster dev``, ``dagster-webserver``), the generation web page
(``sar-pipeline serve``), every command the README, docs and scripts give; the containers bind
0.0.0.0 inside their own network namespace but publish their ports on the host's loopback only."""

from __future__ import annotations

import argparse
import inspect
import re
from pathlib import Path

import click
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: command lines that start a listening server
SERVER_COMMANDS = re.compile(
    r"dg dev|dagster dev|dagster-webserver|code-server start|dagster api grpc|sar-pipeline serve|\.launch\("
)
HOST_FLAG = re.compile(r"(?:--host|--dagit-host|(?<!\S)-h)[ =]+['\"]?([^\s'\",\]]+)")


def _host_option(command: click.Command) -> click.Option:
    (option,) = [p for p in command.params if p.name == "host"]
    return option


def _unset(default) -> bool:
    return default is None or str(default).endswith("UNSET")


def test_the_dagster_ui_binds_the_loopback_by_default():
    from dagster._cli.dev import dev_command as dagster_dev
    from dagster_dg_cli.cli.dev import dev_command as dg_dev
    from dagster_webserver.cli import dagster_webserver

    assert _host_option(dagster_webserver).default == "127.0.0.1"
    # dg dev and dagster dev pass --host on only when given: the webserver's default applies
    for dev in (dg_dev, dagster_dev):
        assert _unset(_host_option(dev).default), dev.name
    dev_source = inspect.getsource(__import__("dagster._cli.dev", fromlist=["x"]))
    assert '(["--host", host] if host else [])' in dev_source


def test_the_generation_page_binds_the_loopback_by_default():
    from sar_pipeline.cli_generation import add_commands
    from sar_pipeline.generation.webui import serve

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["serve"]).host == "127.0.0.1"
    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    source = inspect.getsource(serve)
    assert "server_name=host" in source and "share=False" in source


def _command_lines() -> list[tuple[Path, int, str]]:
    """Lines of the scripts, the package and the README's and docs' code blocks (prose may name
    addresses)."""
    out = []
    for path in [REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        fenced = False
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            fenced ^= line.lstrip().startswith("```")
            if fenced:
                out.append((path, number, line))
    for path in [*(REPO / "scripts").iterdir(), *sorted((REPO / "sar_pipeline").rglob("*.py"))]:
        if path.is_file():
            out += [
                (path, n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            ]
    return out


def test_commands_the_project_gives_bind_the_loopback():
    """README, docs, scripts and the package start no server on another address."""
    lines = _command_lines()
    assert any(
        "dg dev --host 127.0.0.1" in line for _, _, line in lines
    )  # the README's code blocks were read
    found = []
    for path, number, line in lines:
        where = f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        if "0.0.0.0" in line or re.search(r"share\s*=\s*True", line):
            found.append(where)
        if SERVER_COMMANDS.search(line):
            found += [where for host in HOST_FLAG.findall(line) if host not in LOOPBACK]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("compose", sorted((REPO / "docker").glob("compose*.yaml")), ids=lambda p: p.name)
def test_containers_publish_their_ports_on_the_loopback_only(compose):
    """Inside a container a server binds 0.0.0.0 (its own network namespace); what reaches the host is
    only what ``ports`` publishes, and that is bound to 127.0.0.1."""
    services = yaml.safe_load(compose.read_text())["services"]
    for name, service in services.items():
        assert service.get("network_mode") != "host", name
        for port in service.get("ports", []):
            published = (
                port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}"
            )
            assert published.startswith("127.0.0.1:"), (name, port)


def test_kubernetes_manifests_open_no_node_port():
    text = "\n".join(p.read_text() for p in (REPO / "docker" / "k8s").rglob("*.yaml"))
    for exposed in ("LoadBalancer", "NodePort", "hostNetwork: true", "hostPort"):
        assert exposed not in text
