"""Fixtures of the captioning tests: a tiny BLIP folder, the real-data folder, small tile manifests."""

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_blip_dir(tmp_path_factory) -> Path:
    import torch

    from sar_pipeline.captioning.tiny import write_tiny_blip

    torch.set_num_threads(2)
    return write_tiny_blip(tmp_path_factory.mktemp("blip") / "tiny-blip", image_size=64)


@pytest.fixture(scope="session")
def realdata() -> Path:
    value = os.environ.get("SAR_PIPELINE_REALDATA")
    if not value:
        pytest.skip("SAR_PIPELINE_REALDATA unset: set it to ../shared/realdata to run the real-data tests")
    return Path(value)
