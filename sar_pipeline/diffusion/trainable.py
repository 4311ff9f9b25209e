"""What is trained: which parts learn (full weights or peft adapters), and the optimizer that moves
them, one parameter group per part with its own learning rate (paper: UNet 5e-5, text encoder 5e-6)."""

from __future__ import annotations

import copy
from typing import Any

import torch

from sar_pipeline.diffusion.config import TrainRecipe
from sar_pipeline.diffusion.text_conditioning import text_encoders, tokenizers
from sar_pipeline.errors import ModelError


def add_adapter(model, adapter_type: str, rank: int, alpha: int, targets: list[str]):
    """Wrap ``model`` in a peft adapter (LoRA, LoHa or LoKr) whose weights alone are trained."""
    import peft

    kind = {"lora": peft.LoraConfig, "loha": peft.LoHaConfig, "lokr": peft.LoKrConfig}[adapter_type]
    kwargs = {"r": rank, "target_modules": targets}
    kwargs["lora_alpha" if adapter_type == "lora" else "alpha"] = alpha
    return peft.get_peft_model(model, kind(**kwargs))


def merged(model):
    """A plain (un-adapted) copy of ``model`` with any peft adapter merged into its weights."""
    import peft

    if isinstance(model, peft.PeftModel):
        return copy.deepcopy(model).merge_and_unload()
    return model


def add_learned_token(tokenizer, text_encoder, token: str, init_words: str) -> list[int]:
    """Add ``token`` to each tokenizer and a row to each text encoder's embedding (SD 1.5: one;
    SDXL: CLIP ViT-L and OpenCLIP bigG, :func:`~sar_pipeline.diffusion.text_conditioning.text_encoders`),
    each row initialised to the mean of that encoder's embeddings of ``init_words``' tokens; return
    the token's id in each tokenizer (the row each encoder learns). Deterministic (no random draw),
    so a resumed run rebuilds the same rows before loading the checkpoint's."""
    pairs = list(zip(tokenizers(tokenizer), text_encoders(text_encoder), strict=True))
    init_ids = []
    for which, (tok, _) in enumerate(pairs, start=1):  # every check before any tokenizer changes
        name = f"tokenizer {which} of {len(pairs)}" if len(pairs) > 1 else "the tokenizer"
        if token in tok.get_vocab():
            raise ModelError(f"learned_token {token!r}", f"already a token of {name}: choose a new word")
        init_ids.append(tok(init_words, add_special_tokens=False).input_ids)
        if not init_ids[-1]:
            raise ModelError(f"learned_token_init {init_words!r}", f"gives no tokens in {name}")
    token_ids = []
    for (tok, encoder), init in zip(pairs, init_ids, strict=True):
        tok.add_tokens([token])
        token_ids.append(tok.convert_tokens_to_ids(token))
        encoder.resize_token_embeddings(len(tok), mean_resizing=False)
        weight = encoder.get_input_embeddings().weight
        with torch.no_grad():
            weight[token_ids[-1]] = weight[init].mean(dim=0)
    return token_ids


def learn_only_row(embedding: torch.nn.Embedding, row: int) -> torch.nn.Parameter:
    """Make ``embedding``'s weight trainable with the gradient of every row but ``row`` zeroed: with
    no weight decay, AdamW then leaves every other row bit-identical (zero moments, zero update)."""
    weight = embedding.weight
    weight.requires_grad_(True)
    mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
    mask[row] = 1.0
    weight.register_hook(lambda grad: grad * mask.to(grad.device, grad.dtype))
    return weight


def set_up_trained_parts(
    recipe: TrainRecipe, unet, text_encoder, device: torch.device, learned_token_ids: list[int] | None = None
) -> tuple[Any, Any, list[torch.nn.Parameter]]:
    """Freeze or unfreeze each part, add adapters, set train/eval mode and memory switches.

    Returns (unet, text_encoder, learned embeddings), the first two adapter-wrapped where
    ``use_lora`` (both) or ``text_encoder_lora`` (the text encoder). A frozen part moves to
    ``device`` now (accelerate moves the trained ones) and stays fp32: autocast computes in
    bf16/fp16, so checkpoints keep full-precision weights. ``learned_token_ids`` (one per text
    encoder, :func:`add_learned_token`): with the text encoder(s) under adapters, in each encoder's
    embedding that row alone trains, and the embedding matrices are returned (for their own
    optimizer group, :func:`build_optimizer`); else the list is empty.
    """
    te_adapter = recipe.use_lora or recipe.text_encoder_lora
    unet.requires_grad_(recipe.train_unet and not recipe.use_lora)
    text_encoder.requires_grad_(recipe.train_text_encoder and not te_adapter)
    embeddings = [encoder.get_input_embeddings() for encoder in text_encoders(text_encoder)]
    # from_pretrained returns eval-mode modules: a trained part must be in train mode (transformers
    # checkpoints activations only in train mode), a frozen one in eval mode
    unet.train(recipe.train_unet)
    text_encoder.train(recipe.train_text_encoder)
    if recipe.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if recipe.train_text_encoder:
            # transformers 5 renamed it; 4.x (which pyproject allows) only has the old name
            getattr(
                text_encoder, "activation_checkpointing_enable", text_encoder.gradient_checkpointing_enable
            )()
    if recipe.use_lora and recipe.train_unet:
        unet = add_adapter(
            unet, recipe.adapter_type, recipe.unet_lora_rank, recipe.unet_lora_alpha, recipe.unet_lora_targets
        )
    if te_adapter and recipe.train_text_encoder:
        text_encoder = add_adapter(
            text_encoder,
            recipe.adapter_type,
            recipe.text_encoder_lora_rank,
            recipe.text_encoder_lora_alpha,
            recipe.text_encoder_lora_targets,
        )
    learned = []
    if learned_token_ids and te_adapter:
        learned = [learn_only_row(e, row) for e, row in zip(embeddings, learned_token_ids, strict=True)]
    if recipe.channels_last:
        unet.to(memory_format=torch.channels_last)
    if not recipe.train_unet:
        unet.to(device)
    if not recipe.train_text_encoder:
        text_encoder.to(device)
    return unet, text_encoder, learned


def build_optimizer(
    recipe: TrainRecipe, unet, text_encoder, learned_embeddings: list[torch.nn.Parameter] = ()
) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, one named group per trained part with its learning rate;
    ``learned_embeddings`` (each text encoder's embedding matrix, of which only the learned token's
    row moves) in a group of their own, without weight decay (decay would move the other rows)."""
    param_groups = []
    learned = [p for p in learned_embeddings if p.requires_grad]
    if recipe.train_unet:
        param_groups.append(
            {
                "name": "unet",
                "params": [p for p in unet.parameters() if p.requires_grad],
                "lr": recipe.unet_learning_rate,
            }
        )
    if recipe.train_text_encoder:
        param_groups.append(
            {
                "name": "text_encoder",
                "params": [
                    p
                    for p in text_encoder.parameters()
                    if p.requires_grad and all(p is not q for q in learned)
                ],
                "lr": recipe.text_encoder_learning_rate,
            }
        )
    if learned:
        param_groups.append(
            {
                "name": "learned_token",
                "params": learned,
                "lr": recipe.learned_token_learning_rate,
                "weight_decay": 0.0,
            }
        )
    adam_kwargs = {
        "betas": (recipe.adam_beta1, recipe.adam_beta2),
        "weight_decay": recipe.adam_weight_decay,
        "eps": recipe.adam_epsilon,
    }
    if recipe.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise ModelError(
                "use_8bit_adam", "bitsandbytes is not installed: pip install 'sar-pipeline[bnb]'"
            ) from exc
        return bnb.optim.AdamW8bit(param_groups, **adam_kwargs)
    return torch.optim.AdamW(param_groups, fused=recipe.fused_adam or None, **adam_kwargs)
