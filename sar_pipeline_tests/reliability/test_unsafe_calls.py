"""Nothing in the package can execute what a data file or a config says (issue 13, security): the
source is read as Python syntax trees, not grepped, so an alias (``import pickle as p``, ``from torch
import load``) is caught and a method that merely shares a name (``model.eval()``) is not.

Refused: importing a pickle-family module (pickle, dill, cloudpickle, joblib, shelve, marshal…);
``torch.load`` without ``weights_only=True``; ``yaml.load`` without a safe loader (and
``yaml.unsafe_load``/``full_load``); the ``eval``/``exec``/``compile`` builtins and ``__import__``;
``import_module`` of a name that is not a literal; any call with ``shell=True``; ``os.system``,
``os.popen``, the ``os.exec*``/``os.spawn*`` family; ``numpy.load(allow_pickle=True)``,
``pandas.read_pickle``; ``trust_remote_code=True``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: what ships and runs: the package, the scripts' Python, the benchmarks
SOURCES = [REPO / "sar_pipeline", REPO / "benchmarks"]

PICKLE_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "cloudpickle",
    "joblib",
    "shelve",
    "marshal",
    "jsonpickle",
}
ALWAYS_UNSAFE = {
    "os.system": "runs a shell command",
    "os.popen": "runs a shell command",
    "pty.spawn": "starts a program",
    "yaml.unsafe_load": "can construct any Python object",
    "yaml.unsafe_load_all": "can construct any Python object",
    "yaml.full_load": "can construct Python objects",
    "yaml.full_load_all": "can construct Python objects",
    "pandas.read_pickle": "unpickles",
    "torch.jit.load": "loads TorchScript code",
    "asyncio.create_subprocess_shell": "runs a shell command",
    "builtins.eval": "evaluates code",
    "builtins.exec": "executes code",
    "builtins.compile": "compiles code",
    "builtins.__import__": "imports by name",
}
OS_EXEC_PREFIXES = ("os.exec", "os.spawn", "os.posix_spawn")
SAFE_YAML_LOADERS = {"yaml.SafeLoader", "yaml.CSafeLoader", "yaml.BaseLoader", "yaml.CBaseLoader"}
BUILTINS = {"eval", "exec", "compile", "__import__"}


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


class UnsafeCalls(ast.NodeVisitor):
    """Collects ``(line, finding)`` for one module; names are resolved through its imports."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}  # local name → dotted origin ("p" → "pickle")
        self.defined: set[str] = set()  # module-level names that shadow a builtin
        self.findings: list[tuple[int, str]] = []

    def flag(self, node: ast.AST, what: str) -> None:
        self.findings.append((node.lineno, what))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] in PICKLE_MODULES:
                self.flag(node, f"imports {alias.name} (unpickling runs code)")
            local = alias.asname or alias.name.split(".")[0]
            self.aliases[local] = alias.name if alias.asname else alias.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if module.split(".")[0] in PICKLE_MODULES:
            self.flag(node, f"imports from {module} (unpickling runs code)")
        for alias in node.names:
            self.aliases[alias.asname or alias.name] = f"{module}.{alias.name}"

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name in BUILTINS:
            self.defined.add(node.name)
        self.generic_visit(node)

    def dotted(self, node: ast.AST) -> str | None:
        """``a.b.c`` with ``a`` resolved through the imports; a bare builtin as ``builtins.x``."""
        if isinstance(node, ast.Name):
            if node.id in self.aliases:
                return self.aliases[node.id]
            if node.id in BUILTINS and node.id not in self.defined:
                return f"builtins.{node.id}"
            return node.id
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def visit_Call(self, node: ast.Call) -> None:
        name = self.dotted(node.func) or ""
        if name in ALWAYS_UNSAFE:
            self.flag(node, f"{name} ({ALWAYS_UNSAFE[name]})")
        elif name.startswith(OS_EXEC_PREFIXES):
            self.flag(node, f"{name} (starts a program)")
        elif name == "torch.load" and not _is_true(_keyword(node, "weights_only")):
            self.flag(node, "torch.load without weights_only=True (unpickles)")
        elif name in ("yaml.load", "yaml.load_all"):
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or self.dotted(loader) not in SAFE_YAML_LOADERS:
                self.flag(node, f"{name} without a safe Loader (can construct any Python object)")
        elif name == "numpy.load" and _is_true(_keyword(node, "allow_pickle")):
            self.flag(node, "numpy.load(allow_pickle=True) (unpickles)")
        elif name == "importlib.import_module" and not (node.args and isinstance(node.args[0], ast.Constant)):
            self.flag(node, "import_module of a computed name (imports what data says)")
        shell = _keyword(node, "shell")
        if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
            self.flag(node, f"{name or 'a call'} with shell= (a shell parses the command)")
        if _is_true(_keyword(node, "trust_remote_code")):
            self.flag(node, f"{name} with trust_remote_code=True (runs a model folder's code)")
        self.generic_visit(node)


def unsafe_calls(source: str, filename: str = "<string>") -> list[tuple[int, str]]:
    """Every unsafe import or call in ``source`` as ``(line, what)``."""
    visitor = UnsafeCalls()
    visitor.visit(ast.parse(source, filename))
    return visitor.findings


def python_files() -> list[Path]:
    return sorted(p for root in SOURCES for p in root.rglob("*.py"))


def test_no_code_execution_from_data_or_config_in_the_package():
    assert len(python_files()) > 50  # the walk found the package
    found = [
        f"{path.relative_to(REPO)}:{line}: {what}"
        for path in python_files()
        for line, what in unsafe_calls(path.read_text(encoding="utf-8"), str(path))
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "import pickle",
        "import cloudpickle as cp",
        "from pickle import loads",
        "from dill import load",
        "import torch\ntorch.load(p)",
        "import torch\ntorch.load(p, weights_only=False)",
        "from torch import load\nload(p, map_location='cpu')",
        "import torch as t\nt.load(p)",
        "import yaml\nyaml.load(text)",
        "import yaml\nyaml.load(text, Loader=yaml.Loader)",
        "import yaml\nyaml.load(text, yaml.FullLoader)",
        "import yaml\nyaml.unsafe_load(text)",
        "from yaml import full_load\nfull_load(text)",
        "eval(expression)",
        "exec(code, {})",
        "compile(text, 'x', 'exec')",
        "__import__(name)",
        "import builtins\nbuiltins.eval(x)",
        "import subprocess\nsubprocess.run(cmd, shell=True)",
        "import subprocess as sp\nsp.Popen(cmd, shell=flag)",
        "from subprocess import check_output\ncheck_output('ls', shell=True)",
        "import os\nos.system(cmd)",
        "from os import popen\npopen(cmd)",
        "import os\nos.execvp('sh', ['sh'])",
        "import numpy as np\nnp.load(p, allow_pickle=True)",
        "import pandas as pd\npd.read_pickle(p)",
        "import importlib\nimportlib.import_module(config['module'])",
        "from transformers import AutoModel\nAutoModel.from_pretrained(p, trust_remote_code=True)",
    ],
)
def test_each_unsafe_form_is_caught(source):
    assert unsafe_calls(source), source


@pytest.mark.parametrize(
    "source",
    [
        "model.eval()",
        "unet.eval().to(device)",
        "import torch\ntorch.load(p, weights_only=True, map_location='cpu')",
        "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)",
        "import yaml\nyaml.safe_load(text)",
        "import subprocess\nsubprocess.run(['java', '-cp', jar], check=False)",
        "import subprocess\nsubprocess.run(cmd, shell=False)",
        "import numpy as np\nnp.load(p)",
        "import importlib\nimportlib.import_module('sar_pipeline.cli')",
        "from safetensors.torch import load_file\nload_file(p)",
        "def eval(x):\n    return x\neval(1)",
        "text = 'import pickle; eval(x)'",
    ],
)
def test_safe_forms_are_not_flagged(source):
    assert unsafe_calls(source) == []
