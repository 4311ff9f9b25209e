"""The settings of diffusion training: one pydantic model per concern, defaults = the paper (§2.6, §4.1).

Paper recipe: Stable Diffusion 1.5, full fine-tune of the UNet (lr 5e-5) AND the text encoder
(lr 5e-6), batch 16, up to 12 epochs, no prior preservation, activation token "An aerial view",
512 px. Everything else is an option a user turns on.

- :class:`BaseModelSettings`: which base model (``preset``), where its files are, the tile size it
  sees. Shared by the latent cache and training (they must agree): the ``diffusion_base`` resource.
- :class:`TrainRecipe`: how it is fine-tuned; every field is set in the ``sd_model`` Launchpad.
- :class:`TrainSettings`: the two bound to a dataset and a run folder, written to
  ``<output_dir>/train_config.json`` and read by the training process.

Presets: ``preset="sd15"`` is the paper's recipe, ``preset="tiny"`` the 2-core CPU demo's (trained
from random init); ``"sdxl"`` and ``"tiny_sdxl"`` the same two for the SDXL family (the follow-up
study: two text encoders, pooled embedding, size/crop time ids, 1024 px tiles). The few options whose right value depends on the preset (:data:`PRESET_RECIPES`)
default to empty (``None``; ``""`` for ``prediction_type``), meaning "the preset's value", which
each such field's description states; a value the user gives always wins. :class:`TrainSettings`
fills them in, so ``train_config.json`` holds every value the run used.

Orientation-aware augmentation: our tiles keep the native SAR geometry with rows = azimuth
(along-track) and columns = range (across-track, near range at column 0). A flip along azimuth
(a VERTICAL flip of the array) gives another physically plausible acquisition (the platform flying
the other way with the same look side). A flip along range would put near range on the far side:
shadows would be cast towards the sensor and layover would lean away from it, which no real
acquisition produces, so a range (horizontal) flip is never offered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import Field, field_validator, model_validator

from sar_pipeline.errors import ConfigError
from sar_pipeline.settings import Settings
from sar_pipeline.storage import atomic_write_bytes

# Captions as the captioner writes them; the activation token is added as training adds it
# (captioning.base.prompt_text: "An aerial view, a river").
VALIDATION_PROMPTS = ("a river", "an urban area", "fields", "a forest")

# The tiny preset trains from random init on 2 CPU cores in minutes: small tiles, larger learning
# rates (a random UNet needs them; the paper's 5e-5/5e-6 fine-tune a pretrained one), fewer steps.
# v-prediction + zero terminal SNR: from random init the objective is ours to choose. With SD 1.5's
# schedule the noisiest training step still shows the tile's mean level (averaged over the latent
# it is a clear signal), so the model reads "dark or bright" from the noise and at sampling the
# seed, not the prompt, picks it. Measured on the synthetic water/urban set (4 seeds, mean
# amplitude of "water" vs "urban" prompts): epsilon, v-prediction and v + noise offset 0.1 all
# followed the seed at 100-500 steps; v + zero terminal SNR gave 0.10 vs 0.66 at every checkpoint
# from step 200 on.
PRESET_RECIPES: dict[str, dict[str, Any]] = {
    "sd15": {
        "prediction_type": "",  # keep the base model's (epsilon for SD 1.5)
        "zero_terminal_snr": False,
        "global_batch_size": 16,
        "train_batch_size": 16,
        "unet_learning_rate": 5e-5,
        "text_encoder_learning_rate": 5e-6,
        "max_train_steps": 0,
        "checkpoint_every_steps": 500,
        "validation_steps": 20,
        "validation_guidance_scale": 7.5,
        "log_every_steps": 10,
    },
    "tiny": {
        "prediction_type": "v_prediction",
        "zero_terminal_snr": True,
        "global_batch_size": 0,
        "train_batch_size": 8,
        "unet_learning_rate": 1e-3,
        "text_encoder_learning_rate": 1e-4,
        "max_train_steps": 300,
        "checkpoint_every_steps": 100,
        "validation_steps": 10,
        "validation_guidance_scale": 3.0,
        "log_every_steps": 5,
    },
}
# SDXL (the follow-up study, Debuysère et al. 2025): the same recipe as its SD 1.5 counterpart
PRESET_RECIPES["sdxl"] = dict(PRESET_RECIPES["sd15"])
PRESET_RECIPES["tiny_sdxl"] = dict(PRESET_RECIPES["tiny"])
#: presets whose base model is written from configs (random init), not read from local weights
TINY_PRESETS = ("tiny", "tiny_sdxl")
#: preset → model family (what the base model folder holds, how the text conditions the UNet)
PRESET_FAMILY = {"sd15": "sd15", "tiny": "sd15", "sdxl": "sdxl", "tiny_sdxl": "sdxl"}
# caption_dropout left empty: classifier-free guidance at sampling needs the unconditional branch,
# which a trained text encoder (or a model trained from random init) only keeps if empty captions
# are trained too. A frozen pretrained text encoder keeps SD's own unconditional embedding.
CAPTION_DROPOUT_TRAINED_TEXT_ENCODER = 0.1
# Tile side fed to the VAE when ``resolution`` is 0: SD 1.5's and SDXL's native sizes, the tiny models'.
PRESET_RESOLUTION = {"sd15": 512, "tiny": 64, "sdxl": 1024, "tiny_sdxl": 64}


def _by_preset(name: str) -> str:
    values = ", ".join(f"{preset} {recipe[name]!r}" for preset, recipe in PRESET_RECIPES.items())
    empty = "''" if name == "prediction_type" else "empty"
    return f" {empty} = the preset's: {values}."


def settings_error(exc: pydantic.ValidationError, source: object) -> ConfigError:
    """A ConfigError naming ``source`` and each offending option (an unknown one as such)."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown option {where!r}")
        else:
            problems.append(f"{where}: {error['msg']}")
    return ConfigError(source, "; ".join(problems))


class BaseModelSettings(Settings):
    """The base model that is fine-tuned, and the tile size it is trained at."""

    preset: Literal["sd15", "tiny", "sdxl", "tiny_sdxl"] = Field(
        default="sd15",
        description="'sd15': fine-tune the local Stable Diffusion 1.5 weights at base_model_path (the "
        "paper). 'tiny': a small random-init model whose VAE is first trained on the dataset's "
        "tiles, for tests and the 2-core CPU demo (no weights needed); it also changes the recipe "
        "defaults marked 'Tiny preset'. 'sdxl': fine-tune local SDXL weights (diffusers folder) at "
        "1024 px, two text encoders, pooled embedding and size/crop time ids (the follow-up study; "
        "tile the scenes at tile_size 1024). 'tiny_sdxl': the tiny model in SDXL's layout, for "
        "tests on the CPU.",
    )
    base_model_path: str = Field(
        default="",
        description="sd15/sdxl: local diffusers-layout folder (sd15 also a single-file .safetensors) of "
        "the base model (never a hub id; required). tiny/tiny_sdxl: the folder the tiny base model is "
        "written to once and "
        "then reused; empty = models/tiny-base/<dataset version> under the storage root (sd_model "
        "asset) or <output_dir>/tiny-base (standalone trainer).",
    )
    single_file_config: str = Field(
        default="",
        description="sd15 single-file only: local diffusers-layout folder holding the component "
        "configs (a .safetensors file carries none, and the hub is never used).",
    )
    resolution: int = Field(
        default=0,
        ge=0,
        description="Tile side in pixels fed to the VAE (tiles are resized to it); 0 = the preset's: "
        "sd15 512, sdxl 1024, tiny and tiny_sdxl 64.",
    )
    tiny_vae_steps: int = Field(
        default=300,
        ge=0,
        description="tiny/tiny_sdxl only: steps of VAE training on the train tiles before diffusion (no "
        "pretrained VAE exists for the tiny model).",
    )

    @model_validator(mode="after")
    def _base_model_given(self) -> BaseModelSettings:
        if not self.is_tiny and not self.base_model_path:
            raise ConfigError(
                "base_model_path",
                f"required with preset={self.preset!r} (a local diffusers folder of the base model); "
                "or set preset='tiny' (or 'tiny_sdxl') for the CPU demo model",
            )
        return self

    @property
    def family(self) -> str:
        """The model family: 'sd15' (one text encoder) or 'sdxl' (two, pooled embedding, time ids)."""
        return PRESET_FAMILY[self.preset]

    @property
    def is_tiny(self) -> bool:
        """Whether the base model is written from configs (random init) instead of read."""
        return self.preset in TINY_PRESETS

    def tile_resolution(self) -> int:
        """Tile side in pixels fed to the VAE: ``resolution``, or the preset's when it is 0."""
        return self.resolution or PRESET_RESOLUTION[self.preset]


class TrainRecipe(Settings):
    """How the base model is fine-tuned: what is trained, the objective, speed switches, checkpoints."""

    # --- what is trained, and how fast ---
    train_unet: bool = Field(default=True, description="Train the UNet (the paper does).")
    train_text_encoder: bool = Field(
        default=True,
        description="Train the CLIP text encoder (the paper does, with its own smaller learning rate).",
    )
    unet_learning_rate: float | None = Field(
        default=None,
        ge=0.0,
        description="AdamW learning rate of the UNet parameter group;" + _by_preset("unet_learning_rate"),
    )
    text_encoder_learning_rate: float | None = Field(
        default=None,
        ge=0.0,
        description="AdamW learning rate of the text-encoder parameter group;"
        + _by_preset("text_encoder_learning_rate"),
    )
    adam_beta1: float = Field(default=0.9, ge=0.0, lt=1.0, description="AdamW beta1 (diffusers' default).")
    adam_beta2: float = Field(default=0.999, ge=0.0, lt=1.0, description="AdamW beta2 (diffusers' default).")
    adam_weight_decay: float = Field(
        default=1e-2, ge=0.0, description="AdamW weight decay (diffusers' default)."
    )
    adam_epsilon: float = Field(default=1e-8, gt=0.0, description="AdamW epsilon (diffusers' default).")
    max_grad_norm: float = Field(
        default=1.0, ge=0.0, description="Gradient-norm clipping threshold (0 disables)."
    )
    lr_scheduler: Literal[
        "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"
    ] = Field(
        default="constant", description="Learning-rate schedule (diffusers.optimization.get_scheduler)."
    )
    lr_warmup_steps: int = Field(default=0, ge=0, description="Learning-rate warm-up, optimizer steps.")
    global_batch_size: int | None = Field(
        default=None,
        ge=0,
        description="Tiles per optimizer step over ALL processes (the paper's batch 16): each process "
        "takes global_batch_size / processes tiles per step, in micro-batches of at most "
        "train_batch_size, so the number of micro-batches accumulated follows (at least "
        "gradient_accumulation_steps); the same recipe then trains the same way on 1 or 8 GPUs. 0 = "
        "no global batch: train_batch_size per process × processes × gradient_accumulation_steps;"
        + _by_preset("global_batch_size"),
    )
    train_batch_size: int | None = Field(
        default=None,
        ge=1,
        description="Tiles per process per optimizer micro-step (with global_batch_size: the largest "
        "micro-batch, a memory bound);" + _by_preset("train_batch_size"),
    )
    num_train_epochs: int = Field(
        default=12, ge=1, description="Epochs over the train split (the paper stops at 12 at most)."
    )
    max_train_steps: int | None = Field(
        default=None,
        ge=0,
        description="If > 0, stop after this many optimizer steps (overrides num_train_epochs); 0 runs "
        "num_train_epochs;" + _by_preset("max_train_steps"),
    )
    gradient_accumulation_steps: int = Field(
        default=1,
        ge=1,
        description="Micro-batches accumulated per optimizer step (with global_batch_size: the least; "
        "more are taken when a process's share exceeds train_batch_size).",
    )

    # --- LoRA / LoHa / LoKr through peft (the paper found even high-rank LoRA short of full fine-tune) ---
    use_lora: bool = Field(
        default=False, description="Train peft adapters instead of the full weights of the trained parts."
    )
    adapter_type: Literal["lora", "loha", "lokr"] = Field(default="lora", description="peft adapter type.")
    unet_lora_rank: int = Field(default=64, ge=1, description="Adapter rank of the UNet.")
    unet_lora_alpha: int = Field(default=64, ge=1, description="Adapter alpha of the UNet.")
    unet_lora_targets: list[str] = Field(
        default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"],
        description="Module names the UNet adapter wraps.",
    )
    text_encoder_lora: bool = Field(
        default=False,
        description="Adapters on the text encoder only, the UNet trained in full: with learned_token, "
        "the follow-up study's best recipe (Debuysère et al. 2025: full UNet, LoRA on the text "
        "encoder, a learned token embedding). use_lora puts adapters on every trained part.",
    )
    learned_token: str = Field(
        default="",
        description="A new token (e.g. '<sar>') added to the tokenizer (SDXL: to both, and a row to "
        "each text encoder's embedding), whose embedding row is learned (textual inversion) and "
        "which leads every training text, validation prompt and generation prompt ('<sar> An aerial "
        "view, a river'). With the text encoder(s) under adapters (text_encoder_lora / use_lora) it "
        "is the only embedding row that changes in each; with the whole text encoder trained the "
        "embedding matrix trains anyway. Empty: none.",
    )
    learned_token_init: str = Field(
        default="radar",
        description="Word(s) whose mean token embedding initialises learned_token's row (SDXL: in "
        "each text encoder, from its own embeddings).",
    )
    learned_token_learning_rate: float = Field(
        default=5e-4,
        ge=0.0,
        description="AdamW learning rate of learned_token's embedding row (no weight decay).",
    )
    text_encoder_lora_rank: int = Field(default=16, ge=1, description="Adapter rank of the text encoder.")
    text_encoder_lora_alpha: int = Field(default=16, ge=1, description="Adapter alpha of the text encoder.")
    text_encoder_lora_targets: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj"],
        description="Module names the text-encoder adapter wraps.",
    )

    # --- DreamBooth prior preservation (tried in the paper, not in its final model) ---
    with_prior_preservation: bool = Field(
        default=False, description="Add a prior-preservation loss on class images (DreamBooth)."
    )
    class_data_dir: str = Field(
        default="",
        description="Folder of class images (PNG/JPEG) the base model generated for class_prompt; "
        "required with with_prior_preservation.",
    )
    class_prompt: str = Field(default="An aerial view", description="Prompt of the class images.")
    prior_loss_weight: float = Field(
        default=1.0, ge=0.0, description="Weight of the prior-preservation loss."
    )

    # --- diffusion objective ---
    prediction_type: Literal["", "epsilon", "v_prediction"] = Field(
        default="",
        description="What the UNet predicts: 'epsilon' (SD 1.5) or 'v_prediction'; sd15 keeps the base "
        "model's scheduler setting;" + _by_preset("prediction_type"),
    )
    zero_terminal_snr: bool | None = Field(
        default=None,
        description="Rescale the noise schedule to zero terminal SNR and sample with trailing timesteps "
        "(Lin et al. 2024): the last step then holds no image, so the prompt, not the seed, sets the "
        "mean brightness. Needs prediction_type='v_prediction';" + _by_preset("zero_terminal_snr"),
    )
    snr_gamma: float = Field(
        default=0.0,
        ge=0.0,
        description="Min-SNR loss weighting gamma (Hang et al. 2023): each sample's loss is weighted "
        "min(SNR, gamma)/SNR (epsilon) or min(SNR, gamma)/(SNR+1) (v-prediction); 0 = plain MSE.",
    )
    noise_offset: float = Field(
        default=0.0,
        ge=0.0,
        description="Offset-noise strength (lets the model learn very dark or bright mean levels); 0 disables.",
    )
    caption_dropout: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Probability of replacing a caption by '' (trains the unconditional branch that "
        "classifier-free guidance uses at sampling); empty = "
        f"{CAPTION_DROPOUT_TRAINED_TEXT_ENCODER} when the text encoder is trained or with preset "
        "tiny (random init), else 0 (a frozen pretrained text encoder keeps SD's own unconditional "
        "embedding). The paper trained its text encoder with no dropout; its CFG sampling then "
        "relies on an unconditional branch fine-tuning erodes.",
    )
    activation_token: str = Field(
        default="An aerial view", description="Activation token prefixed to captions that lack it."
    )
    augmentation: Literal["none", "flip_azimuth"] = Field(
        default="flip_azimuth",
        description="'flip_azimuth': flip tiles along azimuth (rows) with p = 0.5, another physically "
        "plausible pass; 'none'. A range flip is never offered (it would mirror shadow and layover).",
    )
    use_ema: bool = Field(
        default=False,
        description="Keep an exponential moving average of the UNet weights (full UNet fine-tune "
        "only), saved as the checkpoints' UNet.",
    )
    ema_decay: float = Field(
        default=0.9999,
        ge=0.0,
        le=1.0,
        description="Largest EMA decay. diffusers' EMAModel warms it up: after optimizer step t it is "
        "min(ema_decay, (1 + t) / (10 + t)), and 0 at the first step (the EMA starts as the weights).",
    )

    # --- speed and memory switches (each off by default, each measured in benchmarks/) ---
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        default="no", description="Autocast precision (accelerate); trained weights stay fp32."
    )
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute activations in the backward pass (less memory, ~30% more compute).",
    )
    use_8bit_adam: bool = Field(
        default=False, description="bitsandbytes 8-bit AdamW (install the 'bnb' extra)."
    )
    fused_adam: bool = Field(
        default=False, description="torch.optim.AdamW(fused=True) (CUDA): one kernel for the whole update."
    )
    torch_compile: bool = Field(default=False, description="torch.compile the UNet.")
    channels_last: bool = Field(
        default=False,
        description="channels_last memory format for the UNet (faster convolutions on tensor cores).",
    )
    allow_tf32: bool = Field(default=False, description="Allow TF32 matmuls on Ampere and newer GPUs.")
    device_cache_gib: float = Field(
        default=4.0,
        ge=0.0,
        description="Keep the latent cache on the training device when it is at most this size (GiB), "
        "else in host memory.",
    )

    # --- checkpoints, logging, reproducibility ---
    checkpoint_every_steps: int | None = Field(
        default=None,
        ge=0,
        description="Write a resumable state, a diffusers pipeline and a validation grid every N "
        "optimizer steps (0 = only at the end);" + _by_preset("checkpoint_every_steps"),
    )
    checkpoint_at_end: bool = Field(default=True, description="Write a checkpoint when training ends.")
    checkpoints_total_limit: int = Field(
        default=3,
        ge=0,
        description="Retention: keep the last this many checkpoints of the run, plus the one with the best "
        "held-out validation loss and any a model pointer (models/<kind>/latest.json, models/sd/promoted.json) "
        "references; the others are deleted as new ones are written (0 keeps all).",
    )
    resume_from_checkpoint: str = Field(
        default="latest",
        description="'latest': resume from the newest complete checkpoint of the run folder, if any; "
        "'': start afresh; or a checkpoint folder.",
    )
    log_every_steps: int | None = Field(
        default=None, ge=1, description="Log scalars every N optimizer steps;" + _by_preset("log_every_steps")
    )
    validation_prompts: list[str] = Field(
        default_factory=lambda: list(VALIDATION_PROMPTS),
        description="Prompts of the validation grid drawn at each checkpoint (none: no grid); the "
        "activation token is added where missing, in the training texts' form ('An aerial view, a river').",
    )
    validation_steps: int | None = Field(
        default=None,
        ge=1,
        description="Inference steps of the validation grid;" + _by_preset("validation_steps"),
    )
    validation_seed: int = Field(
        default=0, description="Seed of the validation grid (prompt i uses seed + i)."
    )
    validation_guidance_scale: float | None = Field(
        default=None,
        ge=0.0,
        description="Classifier-free guidance scale of the validation grid;"
        + _by_preset("validation_guidance_scale"),
    )
    validation_loss_timesteps: list[int] = Field(
        default_factory=lambda: [100, 300, 500, 700, 900],
        description="Held-out loss at each checkpoint: the plain MSE on the validation split's tiles "
        "at these fixed timesteps with fixed noise (validation_seed), so checkpoints compare on the "
        "same draws and only the weights differ; plotted with the training loss. Empty: none.",
    )
    validation_loss_tiles: int = Field(
        default=256,
        ge=1,
        description="At most this many validation tiles (in dataset order) enter the held-out loss.",
    )
    seed: int = Field(default=0, description="Global seed: tiny-model init, noise, data order.")
    deterministic: bool = Field(
        default=False,
        description="torch.use_deterministic_algorithms(True): bit-exact resume on CPU, slower on GPU.",
    )
    throughput_warmup_steps: int = Field(
        default=2,
        ge=0,
        description="Optimizer steps left out of the reported throughput (compilation, allocator warm-up).",
    )

    @field_validator("augmentation", mode="before")
    @classmethod
    def _no_range_flip(cls, value: Any) -> Any:
        if value not in ("none", "flip_azimuth"):
            raise ConfigError(
                "augmentation",
                f"{value!r}: only 'none' or 'flip_azimuth' (a range flip would mirror shadow and layover)",
            )
        return value

    @field_validator("validation_loss_timesteps")
    @classmethod
    def _timesteps_in_range(cls, timesteps: list[int]) -> list[int]:
        if any(not 0 <= t < 1000 for t in timesteps):
            raise ConfigError("validation_loss_timesteps", f"timesteps are in [0, 999] (got {timesteps})")
        return timesteps

    @model_validator(mode="after")
    def _consistent(self) -> TrainRecipe:
        if not (self.train_unet or self.train_text_encoder):
            raise ConfigError("train_unet/train_text_encoder", "nothing to train: enable at least one")
        if self.with_prior_preservation and not self.class_data_dir:
            raise ConfigError("class_data_dir", "required with with_prior_preservation=true")
        if self.use_ema and (self.use_lora or self.text_encoder_lora or not self.train_unet):
            raise ConfigError(
                "use_ema", "EMA is kept for full fine-tunes only (not with LoRA on the UNet or text encoder)"
            )
        if (self.text_encoder_lora or self.learned_token) and not self.train_text_encoder:
            option = "text_encoder_lora" if self.text_encoder_lora else "learned_token"
            raise ConfigError(option, "trains part of the text encoder: needs train_text_encoder=true")
        if self.learned_token and (
            len(self.learned_token.split()) != 1 or self.learned_token in self.activation_token
        ):
            raise ConfigError(
                "learned_token",
                f"{self.learned_token!r}: one new word (no spaces), not part of the activation token",
            )
        return self


# Options a resumed run may change: how long it trains, how often it checkpoints, logs and draws its
# grid, where things lie, and the speed switches (same maths, other kernels). Any other option is
# the recipe itself: resuming under a changed one would silently train a mixture of two recipes.
RESUMABLE_CHANGES = frozenset(
    {
        "max_train_steps",
        "num_train_epochs",
        "checkpoint_every_steps",
        "checkpoint_at_end",
        "checkpoints_total_limit",
        "resume_from_checkpoint",
        "log_every_steps",
        "validation_prompts",
        "validation_steps",
        "validation_seed",
        "validation_guidance_scale",
        "validation_loss_timesteps",
        "validation_loss_tiles",
        "throughput_warmup_steps",
        "device_cache_gib",
        "gradient_checkpointing",
        "torch_compile",
        "channels_last",
        "allow_tf32",
        "fused_adam",
        "deterministic",
        "base_model_path",
        "single_file_config",
        "storage_root",
        "latent_cache_dir",
        "output_dir",
        "run_name",
    }
)


def recipe_of(settings: Settings) -> dict[str, Any]:
    """The options that define a run's recipe (JSON form): all but :data:`RESUMABLE_CHANGES`."""
    return {k: v for k, v in settings.model_dump(mode="json").items() if k not in RESUMABLE_CHANGES}


def recipe_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``option: saved → now`` for each option whose value differs between two recipes."""
    return [
        f"{name}: {saved.get(name)!r} → {current.get(name)!r}"
        for name in sorted(set(saved) | set(current))
        if saved.get(name) != current.get(name)
    ]


class SdModelSettings(TrainRecipe):
    """The ``sd_model`` asset's settings: the recipe, and the name of the run folder."""

    run_name: str = Field(
        default="",
        description="Run folder under models/sd/; empty = <dataset version>-<hash of the recipe>, so the "
        "same recipe on the same data resumes/reuses its run and a changed recipe starts a new one.",
    )


class TrainSettings(BaseModelSettings, TrainRecipe):
    """Everything one training run needs; written to and read from ``<output_dir>/train_config.json``."""

    storage_root: str = Field(
        default="", description="Storage root (local folder) holding dataset/ and latents/."
    )
    dataset_version: str = Field(
        default="", description="Dataset version to train on; '' = the one dataset/current.json names."
    )
    latent_cache_dir: str = Field(
        default="",
        description="Folder of latent-cache shards; '' = <storage_root>/latents/<dataset_version>/<vae_id>.",
    )
    output_dir: str = Field(
        default="sd-run", description="Run folder: checkpoints/, logs/, samples/ and the summaries go here."
    )

    @model_validator(mode="before")
    @classmethod
    def _preset_values(cls, values: Any) -> Any:
        """Options left empty take the preset's values (the user's always win)."""
        if not isinstance(values, dict):
            return values
        preset = values.get("preset", cls.model_fields["preset"].default)
        recipe = PRESET_RECIPES.get(preset)
        if recipe is None:
            return values  # an unknown preset: its Literal check reports it
        values = dict(values)
        for name, value in recipe.items():
            if values.get(name) in (None, ""):
                values[name] = value
        if values.get("caption_dropout") in (None, ""):
            trains_text_encoder = values.get("train_text_encoder", True) not in (False, "false", 0)
            values["caption_dropout"] = (
                CAPTION_DROPOUT_TRAINED_TEXT_ENCODER if trains_text_encoder or preset in TINY_PRESETS else 0.0
            )
        return values

    @model_validator(mode="after")
    def _resolved_consistent(self) -> TrainSettings:
        if self.zero_terminal_snr and self.prediction_type != "v_prediction":
            raise ConfigError(
                "zero_terminal_snr", "needs prediction_type='v_prediction' (epsilon is undefined at SNR 0)"
            )
        return self

    def batch_plan(self, processes: int) -> tuple[int, int]:
        """(tiles per process per micro-batch, micro-batches per optimizer step) on ``processes``.

        With ``global_batch_size`` G > 0 each process takes G / processes tiles per step, split into
        the fewest micro-batches (at least ``gradient_accumulation_steps``) of at most
        ``train_batch_size`` tiles that divide it evenly; ConfigError when G does not split.
        """
        if not self.global_batch_size:
            return self.train_batch_size, self.gradient_accumulation_steps
        if self.global_batch_size % processes:
            raise ConfigError(
                "global_batch_size",
                f"{self.global_batch_size} tiles per step cannot be shared evenly by {processes} "
                "processes: choose a multiple of the number of processes",
            )
        share = self.global_batch_size // processes
        for accumulation in range(self.gradient_accumulation_steps, share + 1):
            if share % accumulation == 0 and share // accumulation <= self.train_batch_size:
                return share // accumulation, accumulation
        raise ConfigError(
            "gradient_accumulation_steps",
            f"{self.gradient_accumulation_steps} micro-batches per step but each of the {processes} "
            f"process(es) takes only {share} tiles of global_batch_size {self.global_batch_size}",
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: object = "training settings") -> TrainSettings:
        """Validate a mapping of option → value; ConfigError naming ``source`` and each bad option."""
        try:
            return cls.model_validate(values)
        except pydantic.ValidationError as exc:
            raise settings_error(exc, source) from exc
        except ConfigError as exc:  # raised by a validator: name the file or mapping too
            raise ConfigError(source, f"{exc.source}: {exc.reason}") from exc

    @classmethod
    def from_file(cls, path: str | Path) -> TrainSettings:
        """Read a JSON or YAML settings file (``train_config.json`` or one a user writes)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(path, "settings file not found")
        try:
            if path.suffix in (".yaml", ".yml"):
                values = yaml.safe_load(path.read_text()) or {}
            else:
                values = json.loads(path.read_text())
        except Exception as exc:
            raise ConfigError(path, f"cannot parse: {exc}") from exc
        if not isinstance(values, dict):
            raise ConfigError(path, "expected a mapping of option: value")
        return cls.from_dict(values, source=path)

    def write(self, path: str | Path) -> None:
        """Write as JSON (atomically), the form :meth:`from_file` reads."""
        atomic_write_bytes(Path(path), self.model_dump_json(indent=1).encode())
