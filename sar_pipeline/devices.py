"""Which torch device a stage runs on: the one resolver of the ``device`` settings ('auto', 'cpu', 'cuda:1').

It returns the device's name (a ``str``), which torch's ``.to()`` and most libraries take; code that
needs a ``torch.device`` (``.type``) wraps it: ``torch.device(resolve_device(name))``. torch is
imported when the function is called, not with this module: the code location imports it without torch.
"""

from __future__ import annotations


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` → ``"cuda"`` if available else ``"cpu"``; anything else is returned unchanged."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
