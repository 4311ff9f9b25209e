"""What is trained: which parts learn (full weights or peft adapters), and the optimizer that moves
them, one parameter group per part with its own learning rate (paper: UNet 5e-5, text encoder 5e-6)."""

from __future__ import annotations

import copy

import torch

from sar_pipeline.diffusion.config import TrainRecipe
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


def add_learned_token(tokenizer, text_encoder, token: str, init_words: str) -> int:
    """Add ``token`` to ``tokenizer`` and a row to ``text_encoder``'s embedding, initialised to the mean
    embedding of ``init_words``' tokens; return the token's id. Deterministic (no random draw), so a
    resumed run rebuilds the same row before loading the checkpoint's."""
    if token in tokenizer.get_vocab():
        raise ModelError(f"learned_token {token!r}", "already a token of the tokenizer: choose a new word")
    init_ids = tokenizer(init_words, add_special_tokens=False).input_ids
    if not init_ids:
        raise ModelError(f"learned_token_init {init_words!r}", "gives no tokens")
    tokenizer.add_tokens([token])
    token_id = tokenizer.convert_tokens_to_ids(token)
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[token_id] = weight[init_ids].mean(dim=0)
    return token_id


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
    recipe: TrainRecipe, unet, text_encoder, device: torch.device, learned_token_id: int | None = None
):
    """Freeze or unfreeze each part, add adapters, set train/eval mode and memory switches.

    Returns (unet, text_encoder), adapter-wrapped where ``use_lora`` (both) or ``text_encoder_lora``
    (the text encoder). A frozen part moves to ``device`` now (accelerate moves the trained ones)
    and stays fp32: autocast computes in bf16/fp16, so checkpoints keep full-precision weights.
    ``learned_token_id``: with the text encoder under adapters, its embedding row alone trains.
    """
    te_adapter = recipe.use_lora or recipe.text_encoder_lora
    unet.requires_grad_(recipe.train_unet and not recipe.use_lora)
    text_encoder.requires_grad_(recipe.train_text_encoder and not te_adapter)
    embedding = text_encoder.get_input_embeddings()
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
    if learned_token_id is not None and te_adapter:
        learn_only_row(embedding, learned_token_id)
    if recipe.channels_last:
        unet.to(memory_format=torch.channels_last)
    if not recipe.train_unet:
        unet.to(device)
    if not recipe.train_text_encoder:
        text_encoder.to(device)
    return unet, text_encoder


def build_optimizer(
    recipe: TrainRecipe, unet, text_encoder, learned_embedding: torch.nn.Parameter | None = None
) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, one named group per trained part with its learning rate;
    ``learned_embedding`` (the embedding matrix of which only the learned token's row moves) in a
    group of its own, without weight decay (decay would move the other rows)."""
    param_groups = []
    learned = [learned_embedding] if learned_embedding is not None and learned_embedding.requires_grad else []
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
