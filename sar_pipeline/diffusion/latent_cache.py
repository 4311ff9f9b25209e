"""VAE latents of a dataset, computed once per (dataset version, VAE) and read by every training run.

The SD VAE encoder costs ~1.1 TFLOP per 512² image, ~30% of a training step: encoding each tile
once instead of every step is the largest single saving. Layout::

    <storage>/latents/<dataset_version>/<vae_id>/
        index.json                 dataset version, vae id, resolution, per split: shards, texts, tile ids
        train-00000.safetensors    "latents" (N×C×h×w, latent-distribution means, unscaled)
                                   "latents_flip_azimuth" (same tiles flipped along azimuth = rows)

We store the latent means (not samples). Most cached-latent trainers (diffusers' SDXL script,
kohya's sd-scripts) store or draw a SAMPLE of the posterior instead; the mean is our choice, made
because SD's VAE posterior std is tiny next to the latents' spread (the sample would differ from the
mean by well under the diffusion noise of any training timestep) and because one fixed latent per
tile keeps a resumed run bit-exact without storing the sampling noise. The azimuth-flipped tiles are encoded too, because flipping a latent is only
approximately the latent of the flipped image. ``vae_id`` covers the VAE's config and weights, and
``resolution`` is part of the folder's identity through the index (a mismatch is an error).
The folder is written atomically: if it exists under its final name, it is complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from sar_pipeline.dataset import load_dataset_table
from sar_pipeline.devices import resolve_device
from sar_pipeline.diffusion.models import vae_id as compute_vae_id
from sar_pipeline.errors import ConfigError, SarPipelineError
from sar_pipeline.settings import Settings
from sar_pipeline.storage import atomic_local_dir

# torch is imported where tensors are made: the code location imports this module (the latent_cache
# asset's settings) in every run, per-flight ones included, and torch alone takes seconds to import.
if TYPE_CHECKING:
    import torch

INDEX_NAME = "index.json"


class LatentCacheError(SarPipelineError):
    """A latent cache that is missing, incomplete or made for another VAE/resolution."""


class LatentCacheSettings(Settings):
    """Which dataset splits are encoded, and on which device."""

    splits: list[str] = Field(
        default=["train", "validation"],
        description="Dataset splits to encode (training reads 'train', its held-out loss 'validation').",
    )
    device: str = Field(
        default="auto",
        description="Device of the VAE encoder: 'auto' (the GPU when there is one, else the CPU), 'cpu', "
        "'cuda', 'cuda:1', …",
    )
    keep_caches: int = Field(
        default=2,
        ge=1,
        description="Retention: keep the latent caches of the last this many dataset versions cached, plus "
        "those of the current dataset version and of any a checkpoint or model pointer names; the others "
        "are deleted after each build (in the local copy on an s3:// root).",
    )

    @field_validator("splits")
    @classmethod
    def _known_splits(cls, splits: list[str]) -> list[str]:
        unknown = sorted(set(splits) - {"train", "validation", "test"})
        if unknown or not splits:
            raise ConfigError("splits", f"choose among 'train', 'validation', 'test' (got {splits})")
        return splits


@dataclass
class CachedSplit:
    """The latents of one dataset split, ready for training."""

    latents: torch.Tensor
    latents_flip_azimuth: torch.Tensor | None
    texts: list[str]
    tile_ids: list[str]
    scaling_factor: float
    resolution: int


def cache_dir(storage_root: str | Path, dataset_version: str, vae_id: str) -> Path:
    """``<storage>/latents/<dataset_version>/<vae_id>``."""
    return Path(storage_root) / "latents" / dataset_version / vae_id


def build_latent_cache(
    storage_root: str | Path,
    dataset_version: str,
    vae,
    resolution: int,
    splits: tuple[str, ...] = ("train",),
    shard_size: int = 512,
    batch_size: int = 8,
    with_azimuth_flip: bool = True,
    device: str = "cpu",
) -> Path:
    """Encode the tiles of ``splits`` with ``vae`` and write the cache; return its folder.

    If a complete cache already exists for this (version, VAE, resolution), it is reused.
    """
    from safetensors.torch import save_file

    from sar_pipeline.diffusion.data import tiles_from_table

    device = resolve_device(device)
    vid = compute_vae_id(vae)
    target = cache_dir(storage_root, dataset_version, vid)
    if (target / INDEX_NAME).is_file():
        index = json.loads((target / INDEX_NAME).read_text())
        if (
            index.get("resolution") == resolution
            and set(splits) <= set(index["splits"])
            and (index.get("with_azimuth_flip") or not with_azimuth_flip)
        ):
            return target
    vae = vae.to(device).eval()
    index = {
        "dataset_version": dataset_version,
        "vae_id": vid,
        "resolution": resolution,
        "scaling_factor": float(vae.config.scaling_factor),
        "shift_factor": float(getattr(vae.config, "shift_factor", None) or 0.0),
        "with_azimuth_flip": with_azimuth_flip,
        "splits": {},
    }
    with atomic_local_dir(target) as tmp:
        for split in splits:
            table = load_dataset_table(storage_root, version=dataset_version, split=split)
            shards = []
            for start in range(0, max(table.num_rows, 1), shard_size):
                part = table.slice(start, shard_size)
                if part.num_rows == 0:
                    break
                images, _, _ = tiles_from_table(part, resolution)
                tensors = {"latents": encode_latents(vae, images, batch_size, device)}
                if with_azimuth_flip:
                    # rows = azimuth: an azimuth flip is a flip of dim -2 (vertical), never of range (-1)
                    tensors["latents_flip_azimuth"] = encode_latents(vae, images.flip(-2), batch_size, device)
                name = f"{split}-{len(shards):05d}.safetensors"
                save_file(tensors, str(tmp / name))
                shards.append(name)
            index["splits"][split] = {
                "count": table.num_rows,
                "shards": shards,
                "texts": [str(t) for t in table.column("text").to_pylist()],
                "tile_ids": [str(t) for t in table.column("tile_id").to_pylist()]
                if "tile_id" in table.column_names
                else [str(i) for i in range(table.num_rows)],
            }
        (tmp / INDEX_NAME).write_text(json.dumps(index, indent=1))
    return target


def encode_latents(vae, images: torch.Tensor, batch_size: int = 8, device: str = "cpu") -> torch.Tensor:
    """Latent-distribution means (unscaled, float32, CPU) of images N×3×H×W in [-1, 1]."""
    import torch

    out = []
    dtype = next(vae.parameters()).dtype
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].to(device=device, dtype=dtype)
            out.append(vae.encode(x).latent_dist.mean.float().cpu())
    return torch.cat(out).contiguous()


def load_latent_cache(folder: str | Path, split: str = "train", resolution: int | None = None) -> CachedSplit:
    """Read one split of a cache written by ``build_latent_cache``."""
    folder = Path(folder)
    index_file = folder / INDEX_NAME
    if not index_file.is_file():
        raise LatentCacheError(
            folder, "no latent cache here (index.json missing): materialise latent_cache first"
        )
    index = json.loads(index_file.read_text())
    if resolution is not None and index["resolution"] != resolution:
        raise LatentCacheError(
            folder, f"cache was encoded at {index['resolution']} px but the run asks for {resolution} px"
        )
    if split not in index["splits"]:
        raise LatentCacheError(folder, f"cache has no {split!r} split (has {sorted(index['splits'])})")
    entry = index["splits"][split]
    for name in entry["shards"]:
        if not (folder / name).is_file():
            raise LatentCacheError(folder / name, "shard listed in index.json is missing")
    import torch
    from safetensors.torch import load_file

    parts = [load_file(str(folder / name)) for name in entry["shards"]]

    def joined(key: str) -> torch.Tensor:  # an empty split (a small dataset) has no shard
        return torch.cat([p[key] for p in parts]) if parts else torch.empty(0)

    latents = joined("latents")
    flips = joined("latents_flip_azimuth") if index.get("with_azimuth_flip") else None
    if latents.shape[0] != entry["count"]:
        raise LatentCacheError(folder, f"{split}: {latents.shape[0]} latents for {entry['count']} rows")
    return CachedSplit(
        latents, flips, entry["texts"], entry["tile_ids"], index["scaling_factor"], index["resolution"]
    )


def require_latent_cache(storage_root: str | Path, dataset_version: str, vae, resolution: int) -> Path:
    """The cache folder for (version, this VAE); LatentCacheError naming version and path if absent."""
    folder = cache_dir(storage_root, dataset_version, compute_vae_id(vae))
    if not (folder / INDEX_NAME).is_file():
        raise LatentCacheError(
            folder,
            f"dataset version {dataset_version!r} has no latent cache for this VAE at {resolution} px: "
            "materialise the latent_cache asset (or build_latent_cache) first",
        )
    return folder


def check_cache_vae(folder: str | Path, vae) -> None:
    """LatentCacheError unless the cache at ``folder`` was encoded by ``vae`` (its ``vae_id``): latents
    of another VAE decode to garbage, and nothing else would notice."""
    folder = Path(folder)
    index_file = folder / INDEX_NAME
    if not index_file.is_file():
        raise LatentCacheError(
            folder, "no latent cache here (index.json missing): materialise latent_cache first"
        )
    recorded = json.loads(index_file.read_text()).get("vae_id")
    expected = compute_vae_id(vae)
    if recorded != expected:
        raise LatentCacheError(
            folder,
            f"encoded by VAE {recorded!r}, but the base model's VAE is {expected!r}: rebuild the cache "
            "with this base model (build_latent_cache) or point latent_cache_dir at its cache",
        )


def write_latent_cache(
    folder: str | Path,
    latents: torch.Tensor,
    texts: list[str],
    scaling_factor: float,
    resolution: int,
    latents_flip_azimuth: torch.Tensor | None = None,
    dataset_version: str = "synthetic",
    vae_id: str = "synthetic",
) -> Path:
    """Write precomputed ``train`` latents as a cache folder (benchmarks; other encoders)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tensors = {"latents": latents.float().contiguous()}
    if latents_flip_azimuth is not None:
        tensors["latents_flip_azimuth"] = latents_flip_azimuth.float().contiguous()
    index = {
        "dataset_version": dataset_version,
        "vae_id": vae_id,
        "resolution": resolution,
        "scaling_factor": float(scaling_factor),
        "shift_factor": 0.0,
        "with_azimuth_flip": latents_flip_azimuth is not None,
        "splits": {
            "train": {
                "count": len(latents),
                "shards": ["train-00000.safetensors"],
                "texts": list(texts),
                "tile_ids": [str(i) for i in range(len(latents))],
            }
        },
    }
    with atomic_local_dir(folder) as tmp:
        save_file(tensors, str(tmp / "train-00000.safetensors"))
        (tmp / INDEX_NAME).write_text(json.dumps(index, indent=1))
    return folder
