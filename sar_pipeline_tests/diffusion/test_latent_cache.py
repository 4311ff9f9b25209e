import json

import pytest
import torch

from sar_pipeline.dataset import load_dataset_table
from sar_pipeline.diffusion import data
from sar_pipeline.diffusion.latent_cache import (
    LatentCacheError,
    build_latent_cache,
    cache_dir,
    load_latent_cache,
    require_latent_cache,
)
from sar_pipeline.diffusion.models import load_base_model, vae_id
from sar_pipeline_tests.diffusion.synthetic import write_synthetic_dataset


def test_cache_holds_the_vae_latents_of_tiles_and_azimuth_flips(tiny_world):
    vae = load_base_model(tiny_world["base"]).vae
    folder = require_latent_cache(tiny_world["storage"], "v1", vae, 64)
    assert folder == cache_dir(tiny_world["storage"], "v1", vae_id(vae))
    cached = load_latent_cache(folder, "train", resolution=64)
    assert cached.latents.shape == (32, 4, 16, 16)
    assert len(cached.texts) == 32 and cached.tile_ids[0].startswith("train-")
    table = load_dataset_table(tiny_world["storage"], version="v1", split="train")
    images, texts, _ = data.tiles_from_table(table, 64)
    assert texts == cached.texts
    with torch.no_grad():
        direct = vae.encode(images[:4]).latent_dist.mean
        flipped = vae.encode(images[:4].flip(-2)).latent_dist.mean  # rows = azimuth
    torch.testing.assert_close(cached.latents[:4], direct, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cached.latents_flip_azimuth[:4], flipped, rtol=1e-4, atol=1e-5)


def test_rebuilding_reuses_a_complete_cache(tiny_world):
    vae = load_base_model(tiny_world["base"]).vae
    folder = cache_dir(tiny_world["storage"], "v1", vae_id(vae))
    before = (folder / "index.json").stat().st_mtime_ns
    assert build_latent_cache(tiny_world["storage"], "v1", vae, 64) == folder
    assert (folder / "index.json").stat().st_mtime_ns == before


def test_version_without_cache_is_named(tiny_world, tmp_path):
    storage = tmp_path / "storage"
    write_synthetic_dataset(storage, "v2", n_per_class=2, size=64)
    vae = load_base_model(tiny_world["base"]).vae
    with pytest.raises(LatentCacheError) as err:
        require_latent_cache(storage, "v2", vae, 64)
    message = str(err.value)
    assert "'v2'" in message and str(storage / "latents" / "v2") in message


def test_resolution_mismatch_and_missing_shard(tiny_world, tmp_path):
    storage = tmp_path / "storage"
    write_synthetic_dataset(storage, "v3", n_per_class=2, size=64)
    vae = load_base_model(tiny_world["base"]).vae
    folder = build_latent_cache(storage, "v3", vae, 32, with_azimuth_flip=False)
    with pytest.raises(LatentCacheError, match="encoded at 32 px"):
        load_latent_cache(folder, resolution=64)
    shard = json.loads((folder / "index.json").read_text())["splits"]["train"]["shards"][0]
    (folder / shard).unlink()
    with pytest.raises(LatentCacheError, match="missing"):
        load_latent_cache(folder)


def test_cache_without_flips_is_rebuilt_when_flips_are_asked_for(tiny_world, tmp_path):
    storage = tmp_path / "storage"
    write_synthetic_dataset(storage, "v4", n_per_class=2, size=64)
    vae = load_base_model(tiny_world["base"]).vae
    folder = build_latent_cache(storage, "v4", vae, 64, with_azimuth_flip=False)
    assert load_latent_cache(folder).latents_flip_azimuth is None
    assert build_latent_cache(storage, "v4", vae, 64) == folder
    assert load_latent_cache(folder).latents_flip_azimuth.shape == (4, 4, 16, 16)


def test_an_empty_validation_split_reads_back_as_no_tiles(tiny_world, tmp_path):
    # a small dataset's spatial-block split can leave validation empty: the held-out loss is then
    # skipped, and reading the split must not fail
    storage = tmp_path / "storage"
    write_synthetic_dataset(storage, "v5", n_per_class=2, size=64, held_out_per_class=0)
    vae = load_base_model(tiny_world["base"]).vae
    folder = build_latent_cache(storage, "v5", vae, 64, splits=("train", "validation"))
    validation = load_latent_cache(folder, "validation", resolution=64)
    assert len(validation.latents) == 0 and validation.texts == []
    assert len(load_latent_cache(folder, "train", resolution=64).latents) == 4
