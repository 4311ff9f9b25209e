"""SAR-CLIP: a CLIP trained contrastively on the dataset's own SAR tile / caption pairs.

Prompt adherence of a generated SAR tile cannot be judged by a CLIP trained on photographs (a SAR
river is dark and featureless, an optical one blue), so, as in ONERA's follow-up study, the judge is
a CLIP fine-tuned on SAR: here on the train split of the dataset itself (tile, caption), evaluated
by retrieval on the test split.

Two starting points, one code path (transformers ``CLIPModel``):

* ``base_model_path`` empty: a small CLIP built from a config (ViT on ``image_size_px`` tiles, a
  2-layer text transformer over the real CLIP BPE vocabulary), trained from scratch: the CPU demo;
* a local transformers CLIP folder (``config.json`` + safetensors, ``openai/clip-vit-base-patch32``
  or an OpenCLIP model converted with transformers' conversion script), fine-tuned. Nothing is
  downloaded.

The loss is CLIP's symmetric cross-entropy over a batch, except that tiles sharing a caption are
all positives of each other (template captions repeat: "a river and fields" on many tiles), so the
loss never pushes a tile away from its own words. Tiles are grey: replicated over the three input
channels, flipped along azimuth (rows) half the time as in diffusion training.

Retrieval on the test split (:func:`retrieval_recall`): image → text ranks the split's distinct
captions for each tile; text → image ranks the tiles for each distinct caption (a hit when any of
the first k tiles carries it). Both beside their chance level.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from sar_pipeline.devices import resolve_device
from sar_pipeline.errors import ModelError, SarPipelineError
from sar_pipeline.settings import Settings

# torch is imported inside the functions that use it: the code location imports this module (the
# sar_clip asset's settings) in every run, and torch alone takes seconds to import.
if TYPE_CHECKING:
    import torch

#: what the sar_clip folder holds beside the transformers files
SAR_CLIP_INFO = "sar_clip.json"


class SarClipSettings(Settings):
    """How the SAR-CLIP that scores prompt adherence is trained and evaluated."""

    base_model_path: str = Field(
        default="",
        description="Local transformers CLIP folder to fine-tune (config.json + safetensors, e.g. "
        "clip-vit-base-patch32 copied beforehand; nothing is downloaded); empty = a small CLIP built "
        "from a config and trained from scratch (the CPU demo).",
    )
    image_size_px: int = Field(
        default=64,
        ge=16,
        description="Small CLIP only: tile side in pixels its ViT reads (tiles are resized to it); a "
        "pretrained CLIP keeps its own.",
    )
    max_steps: int = Field(default=300, ge=1, description="Optimizer steps of contrastive training.")
    batch_size: int = Field(default=32, ge=2, description="Tile / caption pairs per step.")
    learning_rate: float | None = Field(
        default=None,
        gt=0.0,
        description="AdamW learning rate; empty = 1e-3 for the small CLIP from scratch, 1e-5 when "
        "fine-tuning pretrained weights.",
    )
    weight_decay: float = Field(default=0.01, ge=0.0, description="AdamW weight decay.")
    text_column: str = Field(
        default="caption",
        description="Dataset column holding the words of each tile: 'caption' (what the captioner "
        "wrote) or 'text' (with the activation token and acquisition words).",
    )
    seed: int = Field(default=0, description="Seed of initialisation, batch order and flips.")
    device: str = Field(default="auto", description="'auto' (a GPU when present), 'cpu', 'cuda', 'cuda:1', …")


def tiny_clip(image_size_px: int, seed: int = 0):
    """(model, tokenizer, image processor) of a small random-init CLIP with the real CLIP vocabulary."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from sar_pipeline.diffusion.models import build_clip_tokenizer

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        },
        vision_config={
            "image_size": image_size_px,
            "patch_size": max(4, image_size_px // 8),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        },
        projection_dim=64,
    )
    processor = CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": image_size_px},
        do_center_crop=True,
        crop_size={"height": image_size_px, "width": image_size_px},
        do_rescale=False,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return CLIPModel(config), build_clip_tokenizer(), processor


@dataclass
class SarClip:
    """A loaded SAR-CLIP: embeds grey SAR tiles and captions in one space."""

    model: Any  # transformers CLIPModel
    tokenizer: Any
    processor: Any  # transformers CLIPImageProcessor
    path: Path | None = None
    info: dict[str, Any] | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def pixel_values(self, greys: list[np.ndarray], flip: np.ndarray | None = None) -> torch.Tensor:
        """Grey tiles ([0, 1], rows × cols, native SAR orientation) → the model's input: replicated
        over RGB, resized (bilinear, antialiased) to the image processor's crop size and normalised
        with its mean and std; ``flip[i]`` flips tile i along azimuth (rows) first.

        Done in torch rather than by the image processor itself (PIL per image): the same
        resize and normalisation, ten times faster on the small tiles of training.
        """
        import torch

        size = _crop_size(self.processor)
        mean = torch.tensor(self.processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        batch = []
        for i, grey in enumerate(greys):
            x = torch.from_numpy(np.clip(np.asarray(grey, np.float32), 0.0, 1.0))
            if flip is not None and flip[i]:
                x = x.flip(0)
            x = x[None, None]
            if tuple(x.shape[-2:]) != (size, size):
                x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
            batch.append(x)
        pixels = (torch.cat(batch).expand(-1, 3, -1, -1) - mean) / std
        return pixels.to(self.device)

    def tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}

    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=pixel_values))

    def _text_features(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return _features(self.model.get_text_features(**tokens))

    def embed_images(self, greys: list[np.ndarray], batch_size: int = 64) -> torch.Tensor:
        """Unit-length embeddings (N × D, CPU float32) of grey tiles in [0, 1]."""
        import torch

        self.model.eval()
        with torch.no_grad():
            parts = [
                self._image_features(self.pixel_values(greys[i : i + batch_size]))
                for i in range(0, len(greys), batch_size)
            ]
        return torch.nn.functional.normalize(torch.cat(parts).float(), dim=-1).cpu()

    def embed_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Unit-length embeddings (N × D, CPU float32) of captions."""
        import torch

        self.model.eval()
        with torch.no_grad():
            parts = [
                self._text_features(self.tokens(texts[i : i + batch_size]))
                for i in range(0, len(texts), batch_size)
            ]
        return torch.nn.functional.normalize(torch.cat(parts).float(), dim=-1).cpu()


def _crop_size(processor) -> int:
    """Side (pixels) of the square input of a CLIP image processor (its crop size, else its size)."""
    for name in ("crop_size", "size"):
        value = getattr(processor, name, None)
        if value is None:
            continue
        if isinstance(value, int):
            return value
        for key in ("height", "shortest_edge"):
            side = value.get(key) if hasattr(value, "get") else getattr(value, key, None)
            if side:
                return int(side)
    raise ModelError("SAR-CLIP image processor", "has no crop_size or size")


def _features(output: Any) -> torch.Tensor:
    # transformers returns a tensor, or (newer releases) an output object holding the projection
    import torch

    if isinstance(output, torch.Tensor):
        return output
    for name in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise ModelError("SAR-CLIP", f"unexpected feature output {type(output).__name__}")


def load_pretrained_clip(path: str | Path) -> tuple[Any, Any, Any]:
    """(model, tokenizer, image processor) of a local transformers CLIP folder; ModelError naming
    what is missing. Only local files are read."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder = Path(path)
    if not folder.is_dir():
        raise ModelError(
            folder, "SAR-CLIP base model folder does not exist (a local transformers CLIP folder)"
        )
    if not (folder / "config.json").is_file():
        raise ModelError(folder, "not a transformers CLIP folder: config.json is missing")
    try:
        model = CLIPModel.from_pretrained(folder, local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(folder, f"cannot load the CLIP model, tokenizer or image processor: {exc}") from exc
    return model, tokenizer, processor


def load_sar_clip(path: str | Path, device: str = "auto") -> SarClip:
    """A SAR-CLIP folder written by :func:`train_sar_clip` (or any local transformers CLIP folder)."""
    import torch

    model, tokenizer, processor = load_pretrained_clip(path)
    info_path = Path(path) / SAR_CLIP_INFO
    info = json.loads(info_path.read_text()) if info_path.is_file() else None
    return SarClip(
        model.to(torch.device(resolve_device(device))).eval(), tokenizer, processor, Path(path), info
    )


def contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    caption_ids: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """CLIP's symmetric cross-entropy with every pair sharing a caption as a positive.

    ``image_embeds``, ``text_embeds``: B × D (normalised here); ``caption_ids``: B integers, equal
    for equal captions; ``logit_scale``: CLIP's learnt log temperature.
    """
    import torch

    image_embeds = torch.nn.functional.normalize(image_embeds, dim=-1)
    text_embeds = torch.nn.functional.normalize(text_embeds, dim=-1)
    logits = logit_scale.exp().clamp(max=100.0) * image_embeds @ text_embeds.T
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    return 0.5 * (
        torch.nn.functional.cross_entropy(logits, targets)
        + torch.nn.functional.cross_entropy(logits.T, targets)
    )


def train_sar_clip(
    greys: list[np.ndarray], captions: list[str], settings: SarClipSettings, progress: bool = True
) -> tuple[SarClip, list[float]]:
    """Train a SAR-CLIP on grey tiles ([0, 1]) and their captions; returns it and the loss per step.

    Starts from ``settings.base_model_path`` (a local transformers CLIP) or a small CLIP from a
    config. Deterministic for a seed on the CPU.
    """
    import torch
    from tqdm.auto import tqdm

    if len(greys) != len(captions):
        raise ValueError(f"{len(greys)} tiles but {len(captions)} captions")
    if len(greys) < 2:
        raise SarPipelineError("SAR-CLIP training", f"needs at least 2 tile/caption pairs, got {len(greys)}")
    if settings.base_model_path:
        model, tokenizer, processor = load_pretrained_clip(settings.base_model_path)
        learning_rate = settings.learning_rate or 1e-5
    else:
        model, tokenizer, processor = tiny_clip(settings.image_size_px, settings.seed)
        learning_rate = settings.learning_rate or 1e-3
    clip = SarClip(model.to(torch.device(resolve_device(settings.device))), tokenizer, processor)
    distinct = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    caption_ids = torch.tensor([distinct[c] for c in captions])
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=settings.weight_decay)
    rng = np.random.default_rng(settings.seed)
    batch = min(settings.batch_size, len(greys))
    order: list[int] = []
    losses = []
    model.train()
    for _ in tqdm(range(settings.max_steps), desc="SAR-CLIP", disable=not progress):
        if len(order) < batch:
            order.extend(rng.permutation(len(greys)).tolist())
        idx, order = order[:batch], order[batch:]
        flip = rng.random(batch) < 0.5
        pixels = clip.pixel_values([greys[i] for i in idx], flip)
        tokens = clip.tokens([captions[i] for i in idx])
        loss = contrastive_loss(
            clip._image_features(pixels),
            clip._text_features(tokens),
            caption_ids[idx].to(clip.device),
            model.logit_scale,
        )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise SarPipelineError(
                f"SAR-CLIP loss at step {len(losses)}", f"is {losses[-1]}: lower sar_clip.learning_rate"
            )
    model.eval()
    return clip, losses


def save_sar_clip(clip: SarClip, folder: Path, info: dict[str, Any]) -> None:
    """Write the model (safetensors), tokenizer, image processor and ``sar_clip.json`` into ``folder``
    (which the caller publishes atomically)."""
    folder = Path(folder)
    clip.model.save_pretrained(folder, safe_serialization=True)
    clip.tokenizer.save_pretrained(folder)
    clip.processor.save_pretrained(folder)
    (folder / SAR_CLIP_INFO).write_text(json.dumps(info, indent=1, default=str))


def _chance_text_to_image(total: int, relevant: int, k: int) -> float:
    """Chance that k tiles drawn at random out of ``total`` include one of ``relevant``."""
    if relevant <= 0:
        return 0.0
    if total - relevant < k:
        return 1.0
    return 1.0 - math.comb(total - relevant, k) / math.comb(total, k)


def retrieval_recall(
    image_embeds: torch.Tensor, captions: list[str], text_embeds: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> dict[str, float]:
    """Recall@k of image → text and text → image retrieval, and their chance levels.

    ``image_embeds``: N × D (tile i has caption ``captions[i]``); ``text_embeds``: one row per
    *distinct* caption, in first-seen order of ``captions``. Keys: ``image_to_text_r1``,
    ``text_to_image_r5``, ``chance_image_to_text_r1``, …, and ``distinct_captions``, ``tiles``.
    """
    import torch

    distinct = list(dict.fromkeys(captions))
    if text_embeds.shape[0] != len(distinct):
        raise ValueError(f"{text_embeds.shape[0]} text embeddings for {len(distinct)} distinct captions")
    index = {c: i for i, c in enumerate(distinct)}
    truth = torch.tensor([index[c] for c in captions])
    sims = (
        torch.nn.functional.normalize(image_embeds, dim=-1)
        @ torch.nn.functional.normalize(text_embeds, dim=-1).T
    )
    n, m = sims.shape
    counts = torch.bincount(truth, minlength=m)
    out: dict[str, float] = {"tiles": n, "distinct_captions": m}
    for k in ks:
        top_text = sims.topk(min(k, m), dim=1).indices
        out[f"image_to_text_r{k}"] = float((top_text == truth[:, None]).any(dim=1).float().mean())
        out[f"chance_image_to_text_r{k}"] = min(k, m) / m
        top_images = sims.T.topk(min(k, n), dim=1).indices  # m × k tile indices
        out[f"text_to_image_r{k}"] = float(
            (truth[top_images] == torch.arange(m)[:, None]).any(dim=1).float().mean()
        )
        out[f"chance_text_to_image_r{k}"] = float(
            np.mean([_chance_text_to_image(n, int(counts[j]), min(k, n)) for j in range(m)])
        )
    return out


def evaluate_retrieval(clip: SarClip, greys: list[np.ndarray], captions: list[str]) -> dict[str, float]:
    """:func:`retrieval_recall` of ``clip`` on grey tiles and their captions (the test split)."""
    distinct = list(dict.fromkeys(captions))
    return retrieval_recall(clip.embed_images(greys), captions, clip.embed_texts(distinct))


def adherence(clip: SarClip, greys: list[np.ndarray], captions: list[str]) -> dict[str, float]:
    """How well tiles follow their captions under the SAR-CLIP.

    ``clip_score``: 100 × mean cosine similarity of each tile with its own caption, floored at 0
    per tile (Hessel et al.'s CLIPScore without its 2.5 weight, as torchmetrics computes it).
    ``retrieval_r1``: share of tiles whose own caption ranks first among the set's distinct captions
    (``chance_r1`` = 1 / distinct captions).
    """
    import torch

    images = clip.embed_images(greys)
    distinct = list(dict.fromkeys(captions))
    texts = clip.embed_texts(distinct)
    index = {c: i for i, c in enumerate(distinct)}
    truth = torch.tensor([index[c] for c in captions])
    own = (images * texts[truth]).sum(dim=1)
    ranked = (images @ texts.T).argmax(dim=1)
    return {
        "clip_score": float((100.0 * own).clamp(min=0).mean()),
        "retrieval_r1": float((ranked == truth).float().mean()),
        "chance_r1": 1.0 / len(distinct),
    }


def input_side_px(settings: SarClipSettings) -> int:
    """Tile side (pixels) the SAR-CLIP reads: the pretrained model's crop size, else ``image_size_px``."""
    if not settings.base_model_path:
        return settings.image_size_px
    from transformers import CLIPImageProcessor

    folder = Path(settings.base_model_path)
    try:
        processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(folder, f"cannot read the CLIP image processor: {exc}") from exc
    return _crop_size(processor)


def train_on_dataset(
    storage_root: str | Path, version: str, settings: SarClipSettings, progress: bool = False
) -> tuple[SarClip, list[float], dict[str, Any]]:
    """Train a SAR-CLIP on the train split of dataset ``version`` and evaluate its retrieval on the
    held-out split (test, else validation; else the train split itself, recorded as not held out);
    returns it, the loss per step and what :func:`save_sar_clip` records (settings, splits, pair
    counts, retrieval with chance levels)."""
    from sar_pipeline.evaluation.tiles import evaluation_split, read_split_tiles

    side = input_side_px(settings)
    train = read_split_tiles(storage_root, version, "train", side, settings.text_column)
    split, is_held_out = evaluation_split(storage_root, version)
    held_out = read_split_tiles(storage_root, version, split, side, settings.text_column)
    clip, losses = train_sar_clip(train.greys, train.texts, settings, progress=progress)
    info = {
        "settings": settings.model_dump(),
        "dataset_version": version,
        "train_pairs": len(train),
        "train_distinct_captions": len(set(train.texts)),
        "evaluation_split": held_out.split,
        "evaluation_held_out": is_held_out,
        "retrieval": evaluate_retrieval(clip, held_out.greys, held_out.texts),
        "final_loss": losses[-1],
    }
    return clip, losses, info
