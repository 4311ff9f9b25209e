"""BLIP captioner: ``BlipForConditionalGeneration`` loaded from a local folder (base, large or our fine-tune).

Nothing is downloaded: the folder must hold a transformers BLIP captioning checkpoint
(``config.json`` with ``model_type: blip``, weights, and the processor files).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sar_pipeline.captioning.base import CaptionInput, check_optical_not_blank
from sar_pipeline.devices import resolve_device
from sar_pipeline.errors import ModelError, RasterError

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def check_blip_folder(model_path: str | Path) -> Path:
    """Return ``model_path`` as a Path if it looks like a BLIP captioning checkpoint, else raise ModelError."""
    if "://" in str(model_path):
        # Path() would fold "s3://b/m" into the relative "s3:/b/m" and report it missing
        raise ModelError(
            model_path, "BLIP loads from a local folder; copy the checkpoint from object storage first"
        )
    path = Path(model_path).expanduser()
    if not path.exists():
        raise ModelError(path, "BLIP model folder does not exist")
    if not path.is_dir():
        raise ModelError(path, "BLIP model path is a file; give the checkpoint folder (with config.json)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelError(path, "no config.json: not a transformers checkpoint folder")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(config_file, f"unreadable config.json: {e}") from e
    model_type = config.get("model_type")
    if model_type != "blip":
        raise ModelError(
            path, f"not a BLIP checkpoint: config.json has model_type {model_type!r}, expected 'blip'"
        )
    architectures = config.get("architectures") or []
    if architectures and "BlipForConditionalGeneration" not in architectures:
        raise ModelError(
            path,
            f"BLIP checkpoint is not a captioning model: architectures {architectures} (need BlipForConditionalGeneration)",
        )
    if not any((path / name).is_file() for name in _WEIGHT_FILES):
        raise ModelError(path, f"no weights: expected one of {', '.join(_WEIGHT_FILES)}")
    if not any((path / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
        raise ModelError(path, "no processor files (preprocessor_config.json / processor_config.json)")
    return path


def checkpoint_version(path: Path) -> str:
    """A short content id of a checkpoint: hash of its config and the names and sizes of its weight files."""
    h = hashlib.sha256((path / "config.json").read_bytes())
    for name in sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".bin")):
        h.update(f"{name}:{(path / name).stat().st_size}".encode())
    return h.hexdigest()[:12]


def resolve_dtype(dtype: str, device: str):
    """Torch dtype for ``"auto"`` (bf16 on a GPU that has it, fp16 on other GPUs, fp32 on CPU) or a name."""
    import torch

    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if dtype == "auto":
        if not device.startswith("cuda"):
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in names:
        raise ModelError(f"dtype={dtype!r}", f"unknown dtype; use auto or one of {sorted(names)}")
    return names[dtype]


class BlipCaptioner:
    """Batched BLIP captioning on CPU or GPU, greedy (``num_beams=1``) or beam search.

    ``model_path``: local checkpoint folder. ``dtype``: auto/float32/float16/bfloat16 (half
    precision only makes sense on a GPU). Captions are generated deterministically (no sampling).
    ``preprocess``: ``"processor"`` runs the checkpoint's image processor (PIL, on the CPU);
    ``"device"`` does the same resize (bicubic, antialiased) and normalisation with torch on the
    model's device — pixel values differ by interpolation round-off only, and a GPU is no longer
    waiting for the CPU at high batch throughput.
    """

    def __init__(
        self,
        model_path: str | Path,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 16,
        num_beams: int = 3,
        max_new_tokens: int = 40,
        progress: bool = True,
        preprocess: str = "processor",
    ):
        import torch
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self.model_path = check_blip_folder(model_path)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.num_beams = num_beams
        self.max_new_tokens = max_new_tokens
        self.progress = progress
        if preprocess not in ("processor", "device"):
            raise ModelError(f"preprocess={preprocess!r}", "use 'processor' or 'device'")
        self.preprocess = preprocess
        try:
            self.processor = BlipProcessor.from_pretrained(str(self.model_path))
            self.model = BlipForConditionalGeneration.from_pretrained(str(self.model_path), dtype=self.dtype)
        except Exception as e:  # transformers raises many kinds; the user needs the path and the cause
            raise ModelError(self.model_path, f"cannot load as BLIP captioning model: {e}") from e
        self.model.to(self.device).eval()
        self._torch = torch
        self.captioner_id = f"blip:{self.model_path.name}"
        self.version = checkpoint_version(self.model_path)

    needs = frozenset({"optical"})

    def caption(self, inputs: Sequence[CaptionInput]) -> list[str]:
        """Caption each input's optical tile; RasterError naming the tile if it has none or it is blank."""
        return [text for text, _ in self.caption_with_scores(inputs)]

    def caption_with_scores(self, inputs: Sequence[CaptionInput]) -> list[tuple[str, float]]:
        """Captions with their mean log-probability per generated token (natural log, ≤ 0; higher = surer)."""
        images = []
        for item in inputs:
            if item.optical_rgb is None:
                raise RasterError(
                    item.tile_id, "no optical tile: the BLIP captioner captions the optical image"
                )
            check_optical_not_blank(item.optical_rgb, item.tile_id)
            images.append(_as_rgb(item.optical_rgb, item.tile_id))
        return self.caption_images(images, with_scores=True)

    def caption_images(self, images: Sequence, with_scores: bool = False) -> list:
        """Caption a sequence of RGB images (PIL or uint8 arrays), ``batch_size`` at a time.

        Returns the captions, or ``(caption, mean token log-probability)`` pairs if ``with_scores``.
        """
        from PIL import Image
        from tqdm.auto import tqdm

        torch = self._torch
        results: list = []
        starts = range(0, len(images), self.batch_size)
        for start in tqdm(starts, desc="BLIP captions", unit="batch", disable=not self.progress):
            chunk = images[start : start + self.batch_size]
            if self.preprocess == "device":
                pixel_values = self.pixel_values_on_device(chunk)
            else:
                batch = [im if isinstance(im, Image.Image) else Image.fromarray(im) for im in chunk]
                pixel_values = self.processor(images=batch, return_tensors="pt")["pixel_values"]
                pixel_values = pixel_values.to(self.device, self.dtype)
            with torch.inference_mode():
                out = self.model.generate(
                    pixel_values=pixel_values,
                    num_beams=self.num_beams,
                    do_sample=False,
                    max_new_tokens=self.max_new_tokens,
                    output_scores=with_scores,
                    return_dict_in_generate=with_scores,
                )
            sequences = out.sequences if with_scores else out
            texts = [t.strip() for t in self.processor.batch_decode(sequences, skip_special_tokens=True)]
            if with_scores:
                results.extend(zip(texts, self._sequence_scores(out), strict=True))
            else:
                results.extend(texts)
        return results

    def _sequence_scores(self, out) -> list[float]:
        torch = self._torch
        if getattr(out, "sequences_scores", None) is not None:  # beam search: length-normalised already
            return [float(v) for v in out.sequences_scores]
        steps = self.model.text_decoder.compute_transition_scores(
            out.sequences, out.scores, normalize_logits=True
        )
        generated = out.sequences[:, -steps.shape[1] :]
        pad = self.processor.tokenizer.pad_token_id
        # tokens after the end of a caption are padding: not part of its score
        keep = (generated != pad).to(steps.dtype)
        mean = (steps.float() * keep).sum(1) / keep.sum(1).clamp(min=1)
        return [float(v) for v in torch.nan_to_num(mean, neginf=-1e4)]

    def pixel_values_on_device(self, images: Sequence):
        """BLIP pixel values computed with torch on the model's device: (batch, 3, H, W) in ``self.dtype``."""
        torch = self._torch
        image_processor = self.processor.image_processor
        height, width = image_processor.size["height"], image_processor.size["width"]
        mean = torch.tensor(image_processor.image_mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(image_processor.image_std, device=self.device).view(1, 3, 1, 1)
        out = []
        for image in images:
            arr = _as_rgb(np.asarray(image))
            x = torch.from_numpy(arr).to(self.device, non_blocking=True).permute(2, 0, 1)[None].float()
            x = torch.nn.functional.interpolate(
                x, size=(height, width), mode="bicubic", align_corners=False, antialias=True
            )
            out.append(x)
        x = torch.cat(out).clamp_(0, 255).mul_(image_processor.rescale_factor)
        return ((x - mean) / std).to(self.dtype)


def _as_rgb(image: np.ndarray, source: str = "optical tile") -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise RasterError(source, f"optical tile: expected (rows, cols, 3) RGB, got shape {arr.shape}")
    return np.ascontiguousarray(arr[:, :, :3].astype(np.uint8, copy=False))
