"""Which torch device a stage runs on: the one resolver of the ``device`` settings ('auto', 'cpu', 'cuda:1')."""

from __future__ import annotations


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` → ``"cuda"`` if available else ``"cpu"``; anything else is returned unchanged."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
