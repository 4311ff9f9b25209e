"""Base models for fine-tuning: load from local files only (never a hub), or build the ``tiny`` preset.

A base model is a folder in diffusers layout, the layout of the Stable Diffusion 1.5 release::

    model_index.json  unet/  text_encoder/  tokenizer/  vae/  scheduler/

or a single-file ``.safetensors`` checkpoint (original LDM key names). A single file holds weights
but no component configs, so loading it offline needs a local diffusers-layout folder with the
configs (``single_file_config``, e.g. the SD 1.5 release folder or ``write_tiny_base``'s output);
without one we raise ModelError rather than let diffusers try the hub.

SDXL folders (``StableDiffusionXLPipeline``: ``text_encoder_2/`` and ``tokenizer_2/`` besides) load
the same way, their second text encoder and tokenizer in :attr:`BaseModel.text_encoder_2` /
:attr:`BaseModel.tokenizer_2`.

The ``tiny`` preset: a small UNet2DConditionModel, CLIPTextModel and AutoencoderKL built from configs
(random init; ``tiny_sdxl``: SDXL's layout, see :func:`tiny_components`) with the REAL CLIP BPE tokenizer (49 408 tokens, built from the vocabulary file that
ships in the open-clip-torch wheel), for tests and the 2-core CPU demo. No pretrained VAE exists on
the CPU demo, so ``write_tiny_base(folder, images=...)`` first trains the tiny VAE for a few hundred
steps on the dataset tiles (reconstruction + a small KL term) and sets its latent scaling factor to
1/std of the latents, as SD's 0.18215 was chosen.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sar_pipeline.errors import ModelError

# torch (and what subclasses it) is imported inside the functions that use it: the code location
# imports this module (text_token_counts, ensure_tiny_base) in every run, per-flight ones included,
# and torch alone takes seconds to import.
if TYPE_CHECKING:
    import torch

SD_COMPONENTS = ("unet", "text_encoder", "tokenizer", "vae", "scheduler")
SDXL_COMPONENTS = ("unet", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae", "scheduler")
# model_index.json's _class_name → (family, required components)
PIPELINE_FAMILIES = {
    "StableDiffusionPipeline": ("sd15", SD_COMPONENTS),
    "StableDiffusionXLPipeline": ("sdxl", SDXL_COMPONENTS),
}
_WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)


@dataclass
class BaseModel:
    """The components a training run fine-tunes (fp32, CPU) and where they came from."""

    unet: Any
    text_encoder: Any
    tokenizer: Any
    vae: Any
    scheduler: Any
    family: str
    source: str
    #: SDXL's second text encoder (CLIPTextModelWithProjection) and its tokenizer; None for SD 1.5
    text_encoder_2: Any = None
    tokenizer_2: Any = None


# ----------------------------------------------------------------------------------------------
# CLIP tokenizer from open_clip's vocabulary file


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte → printable unicode character table (the same table open_clip builds)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def open_clip_bpe_path() -> Path:
    """Path of ``bpe_simple_vocab_16e6.txt.gz`` inside the installed open-clip-torch (not imported)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("open_clip", "open-clip-torch is not installed: it ships the CLIP BPE vocabulary")
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise ModelError(path, "CLIP BPE vocabulary file missing from the open-clip-torch install")
    return path


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """CLIP's 49 408-token vocabulary and 48 894 merges, built as open_clip's SimpleTokenizer does."""
    lines = gzip.open(open_clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    byte_chars = list(_bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(vocab)}, merges


def build_clip_tokenizer(model_max_length: int = 77):
    """A transformers CLIPTokenizer with the real CLIP vocabulary (identical ids to SD 1.5's)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(
        vocab=vocab, merges=[tuple(m.split()) for m in merges], model_max_length=model_max_length
    )


#: Stable Diffusion 1.5's text encoder (CLIP ViT-L/14) reads 77 tokens, start and end included;
#: the rest of a longer text is cut off before training sees it.
TEXT_ENCODER_MAX_TOKENS = 77


@lru_cache(maxsize=1)
def _counting_tokenizer():
    return build_clip_tokenizer(model_max_length=10**6)  # counts, never truncates


def text_token_counts(texts: Sequence[str]) -> list[int]:
    """CLIP BPE tokens of each text, start and end tokens included: what the text encoder counts
    (words are no measure: "multi-storey" or "10.5 m" are several tokens each)."""
    if not texts:
        return []
    return [len(ids) for ids in _counting_tokenizer()(list(texts))["input_ids"]]


# ----------------------------------------------------------------------------------------------
# tiny preset


#: hidden size (and projection size) of the tiny text encoders
TINY_TEXT_HIDDEN = 32
#: SDXL's addition time embedding: each of the six time ids becomes this many sinusoidal features
TINY_SDXL_TIME_EMBED_DIM = 8


def tiny_components(seed: int = 0, family: str = "sd15") -> BaseModel:
    """Small random-init components (latent 4×16×16 at 64 px) with the real CLIP tokenizer.

    ``family="sdxl"``: SDXL's layout as diffusers' own SDXL tests build it — a UNet with the
    ``text_time`` addition embedding (pooled text + six size/crop time ids) whose cross-attention
    reads both text encoders' features side by side, a CLIPTextModel and a
    CLIPTextModelWithProjection, two tokenizers (the same real CLIP vocabulary).
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    sdxl = family == "sdxl"
    text_config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=TINY_TEXT_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=TINY_TEXT_HIDDEN,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    sdxl_unet_options = {
        "cross_attention_dim": 2 * TINY_TEXT_HIDDEN,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": TINY_SDXL_TIME_EMBED_DIM,
        # the six time ids' embeddings and the pooled text embedding, concatenated
        "projection_class_embeddings_input_dim": 6 * TINY_SDXL_TIME_EMBED_DIM + TINY_TEXT_HIDDEN,
        "use_linear_projection": True,
    }
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        attention_head_dim=8,
        norm_num_groups=16,
        **(sdxl_unet_options if sdxl else {"cross_attention_dim": TINY_TEXT_HIDDEN}),
    )
    text_encoder = CLIPTextModel(text_config)
    text_encoder_2 = CLIPTextModelWithProjection(text_config) if sdxl else None
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    # SD 1.5's release scheduler settings (scaled-linear betas), as DDIM for quick deterministic sampling.
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return BaseModel(
        unet,
        text_encoder,
        build_clip_tokenizer(),
        vae,
        scheduler,
        family,
        "tiny",
        text_encoder_2=text_encoder_2,
        tokenizer_2=build_clip_tokenizer() if sdxl else None,
    )


def train_tiny_vae(
    vae, images: torch.Tensor, steps: int = 300, batch_size: int = 8, seed: int = 0
) -> list[float]:
    """Train ``vae`` in place on ``images`` (N×3×H×W in [-1, 1]); returns the loss per step.

    Loss: pixel MSE + 1e-4 × KL to N(0, I). Afterwards the config's scaling_factor is set to
    1/std of the latent means so diffusion sees unit-variance latents.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    vae.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (min(batch_size, images.shape[0]),), generator=gen)
        x = images[idx]
        dist = vae.encode(x).latent_dist
        z = dist.sample(generator=gen)
        recon = vae.decode(z).sample
        kl = dist.kl().mean() / z[0].numel()
        loss = torch.nn.functional.mse_loss(recon, x) + 1e-4 * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    vae.eval()
    with torch.no_grad():
        means = torch.cat(
            [vae.encode(images[i : i + 16]).latent_dist.mean for i in range(0, len(images), 16)]
        )
    vae.register_to_config(scaling_factor=float(1.0 / means.std().clamp_min(1e-3)))
    return losses


def write_tiny_base(
    folder: str | Path,
    images: torch.Tensor | None = None,
    vae_steps: int = 300,
    seed: int = 0,
    family: str = "sd15",
) -> Path:
    """Write a complete diffusers-layout tiny base model (``family`` "sd15" or "sdxl") to ``folder``
    (atomically).

    ``images`` (N×3×64×64 in [-1, 1]), when given, train the tiny VAE first; without them the VAE
    stays random (fine for tests of the training mechanics, useless for looking at samples).
    """
    from sar_pipeline.diffusion.text_conditioning import SdxlTextEncoders
    from sar_pipeline.storage import atomic_local_dir

    parts = tiny_components(seed, family)
    if images is not None and vae_steps > 0:
        train_tiny_vae(parts.vae, images, steps=vae_steps, seed=seed)
    text_encoder, tokenizer = parts.text_encoder, parts.tokenizer
    if family == "sdxl":
        text_encoder = SdxlTextEncoders(text_encoder, parts.text_encoder_2)
        tokenizer = (tokenizer, parts.tokenizer_2)
    pipe = assemble_pipeline(parts.unet, text_encoder, parts.vae, tokenizer, parts.scheduler)
    folder = Path(folder)
    with atomic_local_dir(folder) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    return folder


def assemble_pipeline(unet, text_encoder, vae, tokenizer, scheduler):
    """A diffusers pipeline from components (no safety checker: SAR tiles are not photos).

    A :class:`~sar_pipeline.diffusion.text_conditioning.SdxlTextEncoders` with its pair of
    tokenizers makes a StableDiffusionXLPipeline (whose empty negative prompt is encoded, as caption
    dropout trained it, not replaced by zeros); a CLIPTextModel a StableDiffusionPipeline.
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from sar_pipeline.diffusion.text_conditioning import SdxlTextEncoders

    if isinstance(text_encoder, SdxlTextEncoders):
        return StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder.text_encoder,
            text_encoder_2=text_encoder.text_encoder_2,
            tokenizer=tokenizer[0],
            tokenizer_2=tokenizer[1],
            unet=unet,
            scheduler=scheduler,
            force_zeros_for_empty_prompt=False,
            add_watermarker=False,
        )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


# ----------------------------------------------------------------------------------------------
# loading


def _check_component(folder: Path, name: str) -> None:
    sub = folder / name
    if not sub.is_dir():
        raise ModelError(folder, f"incomplete base model: component folder '{name}/' is missing")
    if name.startswith("tokenizer"):
        if not ((sub / "tokenizer.json").is_file() or (sub / "vocab.json").is_file()):
            raise ModelError(sub, "incomplete tokenizer: neither tokenizer.json nor vocab.json+merges.txt")
        return
    if name == "scheduler":
        if not (sub / "scheduler_config.json").is_file():
            raise ModelError(sub, "incomplete scheduler: scheduler_config.json is missing")
        return
    if not (sub / "config.json").is_file():
        raise ModelError(sub, f"incomplete component '{name}': config.json is missing")
    if not any((sub / w).is_file() for w in _WEIGHT_FILES) and not list(sub.glob("*.safetensors")):
        raise ModelError(sub, f"incomplete component '{name}': no weight file ({', '.join(_WEIGHT_FILES)})")


def inspect_base_model(path: str | Path) -> tuple[str, tuple[str, ...]]:
    """Check a diffusers-layout folder is complete; return (family, components). Raises ModelError."""
    folder = Path(path)
    if not folder.exists():
        raise ModelError(folder, "base model path does not exist")
    if not folder.is_dir():
        raise ModelError(folder, "expected a diffusers-layout folder or a .safetensors file")
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise ModelError(
            folder, "incomplete base model: model_index.json is missing (not a diffusers folder)"
        )
    try:
        class_name = json.loads(index_file.read_text()).get("_class_name", "")
    except json.JSONDecodeError as exc:
        raise ModelError(index_file, f"not valid JSON: {exc}") from exc
    if class_name not in PIPELINE_FAMILIES:
        raise ModelError(
            index_file,
            f"unsupported pipeline class {class_name!r}: expected one of {sorted(PIPELINE_FAMILIES)}",
        )
    family, components = PIPELINE_FAMILIES[class_name]
    for name in components:
        _check_component(folder, name)
    return family, components


def load_base_model(path: str | Path, single_file_config: str | Path = "") -> BaseModel:
    """Load UNet, text encoder, tokenizer, VAE and scheduler (fp32, CPU) from local files only.

    ``path``: a diffusers-layout folder, or a single-file ``.safetensors`` (then ``single_file_config``
    must be a local diffusers-layout folder supplying the component configs).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    path = Path(path)
    if path.is_file() or path.suffix in (".safetensors", ".ckpt"):
        return _load_single_file(path, single_file_config)
    family, _ = inspect_base_model(path)
    local = {"local_files_only": True}
    try:
        sdxl = {}
        if family == "sdxl":
            sdxl = {
                "text_encoder_2": CLIPTextModelWithProjection.from_pretrained(
                    path, subfolder="text_encoder_2", **local
                ),
                "tokenizer_2": CLIPTokenizer.from_pretrained(path, subfolder="tokenizer_2", **local),
            }
        return BaseModel(
            unet=UNet2DConditionModel.from_pretrained(path, subfolder="unet", **local),
            text_encoder=CLIPTextModel.from_pretrained(path, subfolder="text_encoder", **local),
            tokenizer=CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **local),
            vae=AutoencoderKL.from_pretrained(path, subfolder="vae", **local),
            scheduler=DDPMScheduler.from_pretrained(path, subfolder="scheduler", **local),
            family=family,
            source=str(path),
            **sdxl,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(path, f"cannot load base model: {exc}") from exc


def load_vae(path: str | Path, single_file_config: str | Path = ""):
    """Only the VAE of a base model (fp32, CPU), from local files: what the latent cache needs.

    ``path`` as for :func:`load_base_model`; the UNet and text encoder (~95 % of SD 1.5's weights)
    are never read. For a single-file checkpoint the VAE's tensors are taken from the file with the
    ``vae`` config of ``single_file_config``.
    """
    from diffusers import AutoencoderKL

    path = Path(path)
    if path.is_file() or path.suffix in (".safetensors", ".ckpt"):
        _check_single_file(path, single_file_config)
        try:
            return AutoencoderKL.from_single_file(
                str(path), config=str(single_file_config), subfolder="vae", local_files_only=True
            )
        except Exception as exc:
            raise ModelError(
                path, f"cannot load the VAE of the single-file checkpoint offline: {exc}"
            ) from exc
    family, _ = inspect_base_model(path)
    try:
        return AutoencoderKL.from_pretrained(path, subfolder="vae", local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(path / "vae", f"cannot load the {family} VAE: {exc}") from exc


def _check_single_file(path: Path, single_file_config: str | Path) -> None:
    """A single-file SD 1.5 checkpoint we can load offline and without unpickling: else ModelError naming it."""
    if not path.is_file():
        raise ModelError(path, "single-file checkpoint does not exist")
    if path.suffix != ".safetensors":
        raise ModelError(path, "only .safetensors single files are accepted (pickled .ckpt can run code)")
    if not single_file_config:
        raise ModelError(
            path,
            "a single-file checkpoint carries no component configs and the hub is never used: set "
            "single_file_config to a local diffusers-layout folder (e.g. the SD 1.5 release folder)",
        )
    family, _ = inspect_base_model(single_file_config)
    if family != "sd15":
        raise ModelError(
            path,
            f"single-file checkpoints are read as SD 1.5 only; give the {family} model as a diffusers folder",
        )


def _load_single_file(path: Path, single_file_config: str | Path) -> BaseModel:
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    _check_single_file(path, single_file_config)
    try:
        pipe = StableDiffusionPipeline.from_single_file(
            str(path), config=str(single_file_config), local_files_only=True, safety_checker=None
        )
    except Exception as exc:
        raise ModelError(path, f"cannot load single-file checkpoint offline: {exc}") from exc
    return BaseModel(
        pipe.unet,
        pipe.text_encoder,
        pipe.tokenizer,
        pipe.vae,
        DDPMScheduler.from_config(pipe.scheduler.config),
        "sd15",
        str(path),
    )


def vae_id(vae) -> str:
    """Identity of a VAE: 16 hex digits of SHA-256 over its config and weights (latent caches key on it)."""
    import torch

    h = hashlib.sha256()
    config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def ensure_tiny_base(
    folder: str | Path,
    storage_root: str | Path,
    dataset_version: str,
    resolution: int,
    vae_steps: int,
    seed: int = 0,
    family: str = "sd15",
) -> Path:
    """The tiny base model (``family`` "sd15" or "sdxl") for a dataset version: written once (VAE
    trained on its train tiles), then reused."""
    from sar_pipeline.dataset import load_dataset_table
    from sar_pipeline.diffusion.data import tiles_from_table

    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        table = load_dataset_table(storage_root, version=dataset_version, split="train")
        images, _, _ = tiles_from_table(table, resolution)
        write_tiny_base(folder, images=images, vae_steps=vae_steps, seed=seed, family=family)
    return folder
