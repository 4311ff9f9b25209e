"""GPU scheduling: every step that puts a model on a GPU holds a slot of pool ``gpu``."""

import json
import os
import subprocess
import sys

from sar_pipeline.diffusion.latent_cache import LatentCacheSettings

PROBE = """
import json
from sar_pipeline.definitions import defs
d = defs()
graph = d.resolve_asset_graph()
pools = {key.to_user_string(): graph.get(key).pools for key in graph.get_all_asset_keys()}
captioner = d.resources["captioner"].process_config_and_initialize()
print(json.dumps({"pools": {k: sorted(v or []) for k, v in pools.items()}, "kind": captioner.kind,
                  "model_path": captioner.model_path}))
"""


def _definitions(env: dict[str, str]) -> dict:
    """Load the definitions in a fresh interpreter (pools are fixed when the modules are imported)."""
    clean = {k: v for k, v in os.environ.items() if k != "SAR_PIPELINE_CAPTIONER_MODEL"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_gpu_steps_share_the_gpu_pool_and_blip_captions_join_it(tmp_path):
    template = _definitions({})
    for name in ("latent_cache", "sd_model", "controlnet_model", "blip_remote_sensing", "caption_metrics"):
        assert template["pools"][name] == ["gpu"], name
    # the template captioner needs no GPU: flights caption in parallel
    assert template["kind"] == "template" and template["pools"]["captions"] == []
    for name in ("sar_scenes", "sar_tiles", "optical_tiles", "training_dataset"):
        assert template["pools"][name] == [], name

    blip = _definitions({"SAR_PIPELINE_CAPTIONER_MODEL": str(tmp_path / "blip")})
    assert blip["kind"] == "blip" and blip["model_path"] == str(tmp_path / "blip")
    assert blip["pools"]["captions"] == ["gpu"]


def test_latent_cache_uses_the_gpu_when_there_is_one():
    assert LatentCacheSettings().device == "auto"
