"""What the UNet is conditioned on besides the noisy latent: the text, and for SDXL the size/crop time ids.

One function, :func:`text_conditioning`, serves training (the objective), the held-out loss and
generation, for both model families:

* SD 1.5: the CLIP text encoder's last hidden states (``encoder_hidden_states``), nothing else.
* SDXL (Podell et al. 2023): two text encoders read the same text — CLIP ViT-L
  (``CLIPTextModel``) and OpenCLIP bigG (``CLIPTextModelWithProjection``). The UNet's
  cross-attention reads their penultimate hidden states side by side (768 + 1280 = 2048 features
  at full size); its ``text_time`` addition embedding reads the second encoder's pooled, projected
  embedding (``text_embeds``) and six "micro-conditioning" numbers per image (``time_ids``):
  the original image size, the top-left corner of the crop taken from it, and the target size,
  each (height, width) in pixels (:func:`sdxl_time_ids`).

:class:`SdxlTextEncoders` holds SDXL's two encoders as one module, so the training loop treats
"the text encoder" alike for both families (one parameter group, one EMA, one DDP wrapper, one
adapter, one entry of a checkpoint's state); its token ids are the two tokenizers' ids stacked
(N × 2 × 77, :func:`sar_pipeline.diffusion.data.tokenize`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class SdxlTextEncoders(torch.nn.Module):
    """SDXL's ``text_encoder`` (CLIPTextModel) and ``text_encoder_2`` (CLIPTextModelWithProjection) as one
    module: ``forward(input_ids N×2×L)`` → (hidden states N×L×(d1+d2), pooled embedding N×p)."""

    def __init__(self, text_encoder, text_encoder_2):
        super().__init__()
        self.text_encoder = text_encoder
        self.text_encoder_2 = text_encoder_2

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # as diffusers' StableDiffusionXLPipeline.encode_prompt: the penultimate layer of each
        # encoder, the pooled embedding of the second
        first = self.text_encoder(input_ids[:, 0], output_hidden_states=True)
        second = self.text_encoder_2(input_ids[:, 1], output_hidden_states=True)
        hidden = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
        return hidden, second.text_embeds

    def get_input_embeddings(self) -> torch.nn.Embedding:
        """The first encoder's token embedding (each encoder's: :func:`text_encoders`)."""
        return self.text_encoder.get_input_embeddings()

    def gradient_checkpointing_enable(self) -> None:
        """Recompute both encoders' activations in the backward pass."""
        for encoder in (self.text_encoder, self.text_encoder_2):
            getattr(encoder, "activation_checkpointing_enable", encoder.gradient_checkpointing_enable)()


def text_encoders(text_encoder) -> list[torch.nn.Module]:
    """The model's text encoders, each with its own tokenizer and token embedding: SDXL's two
    (CLIP ViT-L, OpenCLIP bigG) of an :class:`SdxlTextEncoders`, else ``text_encoder`` alone."""
    if isinstance(text_encoder, SdxlTextEncoders):
        return [text_encoder.text_encoder, text_encoder.text_encoder_2]
    return [text_encoder]


def tokenizers(tokenizer) -> list:
    """The tokenizers of :func:`text_encoders`, in the same order: SDXL's pair (a tuple) or one."""
    return list(tokenizer) if isinstance(tokenizer, tuple) else [tokenizer]


def sdxl_time_ids(
    original_size: Sequence[int], crop_top_left: Sequence[int], target_size: Sequence[int]
) -> torch.Tensor:
    """SDXL's six micro-conditioning numbers of one image, as a float tensor:
    ``(original height, original width, crop top, crop left, target height, target width)``, pixels.

    ``original_size`` is the image's size before any resize or crop, ``crop_top_left`` the corner
    (row, column) of the crop taken from it (0, 0 when the whole image is used), ``target_size``
    the size the model draws. diffusers' SDXL pipelines build the same row (``_get_add_time_ids``).
    """
    values = [*original_size, *crop_top_left, *target_size]
    if len(values) != 6:
        raise ValueError(
            f"expected (height, width) pairs, got {original_size}, {crop_top_left}, {target_size}"
        )
    return torch.tensor([float(v) for v in values])


def text_conditioning(
    text_encoder, input_ids: torch.Tensor, time_ids: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, Any] | None]:
    """(``encoder_hidden_states``, ``added_cond_kwargs``) for the UNet from token ids.

    ``time_ids`` None: SD 1.5 (``text_encoder`` a CLIPTextModel, ids N×L; no added conditioning).
    Else SDXL: ``text_encoder`` an :class:`SdxlTextEncoders` (possibly wrapped by DDP or an
    adapter), ids N×2×L, ``time_ids`` one row of :func:`sdxl_time_ids` (shared by the batch) or N×6.
    """
    if time_ids is None:
        return text_encoder(input_ids, return_dict=False)[0], None
    hidden, pooled = text_encoder(input_ids)
    # float32 whatever the weights' dtype: bf16 cannot hold every pixel size (1023 rounds to 1024);
    # the UNet embeds them sinusoidally in float32 and casts the embedding itself
    time_ids = time_ids.to(device=hidden.device, dtype=torch.float32)
    if time_ids.dim() == 1:
        time_ids = time_ids.expand(len(input_ids), -1)
    return hidden, {"text_embeds": pooled, "time_ids": time_ids}
