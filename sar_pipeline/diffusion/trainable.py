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


def set_up_trained_parts(recipe: TrainRecipe, unet, text_encoder, device: torch.device):
    """Freeze or unfreeze each part, add adapters, set train/eval mode and memory switches.

    Returns (unet, text_encoder), adapter-wrapped where ``use_lora``. A frozen part moves to
    ``device`` now (accelerate moves the trained ones) and stays fp32: autocast computes in
    bf16/fp16, so checkpoints keep full-precision weights.
    """
    unet.requires_grad_(recipe.train_unet and not recipe.use_lora)
    text_encoder.requires_grad_(recipe.train_text_encoder and not recipe.use_lora)
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
    if recipe.use_lora and recipe.train_text_encoder:
        text_encoder = add_adapter(
            text_encoder,
            recipe.adapter_type,
            recipe.text_encoder_lora_rank,
            recipe.text_encoder_lora_alpha,
            recipe.text_encoder_lora_targets,
        )
    if recipe.channels_last:
        unet.to(memory_format=torch.channels_last)
    if not recipe.train_unet:
        unet.to(device)
    if not recipe.train_text_encoder:
        text_encoder.to(device)
    return unet, text_encoder


def build_optimizer(recipe: TrainRecipe, unet, text_encoder) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, one named group per trained part with its learning rate."""
    param_groups = []
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
                "params": [p for p in text_encoder.parameters() if p.requires_grad],
                "lr": recipe.text_encoder_learning_rate,
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
