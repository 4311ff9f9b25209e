"""The one device resolver: names in, names out; loading its module does not import torch."""

import subprocess
import sys

import torch

from sar_pipeline.devices import resolve_device


def test_auto_is_cuda_when_available_and_other_names_pass_through():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device() == resolve_device("auto")
    assert resolve_device("cpu") == "cpu" and resolve_device("cuda:1") == "cuda:1"
    assert torch.device(resolve_device("auto")).type in ("cuda", "cpu")


def test_generation_uses_the_same_resolver():
    from sar_pipeline.generation import model

    assert model.resolve_device is resolve_device


def test_importing_it_does_not_import_torch():
    code = "import sys, sar_pipeline.devices; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
