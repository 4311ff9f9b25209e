"""Training data: tile decoding, captions as token ids, and the resumable batch order and random streams.

The dataset (``sar_pipeline.dataset``, read with ``load_dataset_table``) is Parquet with an
``image`` column in the Hugging Face ``datasets`` Image layout (struct<bytes, path>, 8-bit
single-band or RGB PNG, 512×512, rows = azimuth, columns = range) and a ``text`` column.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from sar_pipeline.captioning.base import prompt_text
from sar_pipeline.errors import ConfigError, RasterError


def decode_tile(image_bytes: bytes, resolution: int, source: str = "tile") -> torch.Tensor:
    """PNG bytes → float32 tensor 3×R×R in [-1, 1] (single band repeated over RGB, bilinear resize).

    8-bit and 16-bit images alike: each is scaled by its own full range (255 or 65535), so a 16-bit
    tile is not clipped to white as an RGB conversion would.
    """
    try:
        img = Image.open(io.BytesIO(image_bytes))
        img.load()
    except Exception as exc:
        raise RasterError(source, f"cannot decode tile image: {exc}") from exc
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32) / 65535.0
        if arr.shape != (resolution, resolution):
            arr = np.asarray(
                Image.fromarray(arr, mode="F").resize((resolution, resolution), Image.Resampling.BILINEAR)
            )
        arr = np.repeat(np.clip(arr, 0.0, 1.0)[..., None], 3, axis=-1) * 2.0 - 1.0
    else:
        img = img.convert("RGB")
        if img.size != (resolution, resolution):
            img = img.resize((resolution, resolution), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1).contiguous()


def tiles_from_table(table: pa.Table, resolution: int) -> tuple[torch.Tensor, list[str], list[str]]:
    """Decode every tile of a dataset table: (N×3×R×R tensor, texts, tile ids)."""
    images = table.column("image").to_pylist()
    texts = [str(t) for t in table.column("text").to_pylist()]
    ids = (
        [str(t) for t in table.column("tile_id").to_pylist()]
        if "tile_id" in table.column_names
        else [str(i) for i in range(table.num_rows)]
    )
    tensors = []
    for image, tile_id in zip(images, ids, strict=True):
        if not image or not image.get("bytes"):
            raise RasterError(tile_id, "dataset row has no image bytes")
        tensors.append(decode_tile(image["bytes"], resolution, source=tile_id))
    return torch.stack(tensors) if tensors else torch.empty(0, 3, resolution, resolution), texts, ids


def stored_tile_size(storage_root: str | Path, dataset_version: str, split: str = "train") -> tuple[int, int]:
    """(height, width) in pixels of the first tile of ``split`` as the dataset stores it (before any
    resize to the training resolution; a dataset's tiles share the tile size they were cut at).
    Reads one row group's images only."""
    import pyarrow.parquet as pq

    from sar_pipeline.dataset import dataset_split_paths

    for path in dataset_split_paths(storage_root, dataset_version)[split]:  # its shards, in order
        with path.open("rb") as f:
            parquet = pq.ParquetFile(f)
            if parquet.metadata.num_rows == 0:
                continue
            first = parquet.read_row_group(0, columns=["image"]).column("image")[0].as_py()
        if not first or not first.get("bytes"):
            raise RasterError(path, "first dataset row has no image bytes")
        with Image.open(io.BytesIO(first["bytes"])) as img:
            return img.height, img.width
    raise ConfigError(f"dataset {dataset_version}", f"the {split} split holds no tile")


def load_class_images(folder: str | Path, resolution: int) -> torch.Tensor:
    """Prior-preservation class images (PNG/JPEG files in ``folder``) as N×3×R×R in [-1, 1]."""
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise ConfigError(folder, "class_data_dir holds no PNG/JPEG class images")
    return torch.stack([decode_tile(p.read_bytes(), resolution, source=str(p)) for p in files])


def epoch_order(num_items: int, seed: int, epoch: int) -> list[int]:
    """The order of items in ``epoch``: a permutation that depends only on (seed, epoch).

    Resume recomputes it and skips the batches already consumed, so the data order of a resumed
    run is exactly that of an uninterrupted one.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=gen).tolist()


def epoch_batches(num_items: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1):
    """Index batches of one epoch for one process (the global order sharded round-robin, last partial dropped)."""
    order = epoch_order(num_items, seed, epoch)
    global_batch = batch_size * world
    n_batches = len(order) // global_batch
    return [
        order[b * global_batch + rank * batch_size : b * global_batch + (rank + 1) * batch_size]
        for b in range(n_batches)
    ]


def step_generators(
    seed: int, step: int, micro: int, rank: int, data_device: torch.device, device: torch.device
) -> tuple[torch.Generator, torch.Generator]:
    """The random streams of one micro-batch: data side (flips, caption dropout, class images) on
    ``data_device``, noise and timesteps on ``device``.

    They depend only on (seed, step, micro, rank), so a resumed run draws exactly what an
    uninterrupted one would have drawn; each stream has its own key (:func:`stream_key`), so the
    flips and dropouts are not the noise's first draws under another name.
    """
    return (
        torch.Generator(device=data_device).manual_seed(stream_key("data", seed, step, micro, rank)),
        torch.Generator(device=device).manual_seed(stream_key("noise", seed, step, micro, rank)),
    )


def stream_key(stream: str, *parts: int) -> int:
    """A 63-bit seed for the random stream ``stream`` at ``parts`` (seed, step, …): a hash, so keys of
    different streams or neighbouring steps share nothing (no arithmetic relation between them)."""
    text = ":".join([stream, *(str(int(p)) for p in parts)]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") >> 1


def with_activation_token(texts: list[str], activation_token: str, learned_token: str = "") -> list[str]:
    """Captions, each starting with the activation token (composed where it is missing, in the
    dataset's form: :func:`sar_pipeline.captioning.base.prompt_text`), led by ``learned_token``."""
    return [prompt_text(t, activation_token, learned_token) for t in texts]


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids (N × model_max_length), padded and truncated to the text encoder's length; SDXL's
    pair of tokenizers (a tuple) gives both ids stacked, N × 2 × model_max_length."""
    if isinstance(tokenizer, tuple):
        return torch.stack([tokenize(t, texts) for t in tokenizer], dim=1)
    return tokenizer(
        texts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
