"""A training run's checkpoints and its base model scored on the held-out tiles; the promotion rule.

For each of the first ``max_tiles`` held-out tiles (test split, else validation; a dataset holding
no tile out, like the CPU demo's, is scored on its train tiles and the report says so) its caption is
the prompt of ``images_per_caption`` images with fixed seeds (tile i: ``seed + i × n`` …), the same
for every model, so two checkpoints differ only by their weights. Each model's generated set is
compared with the real tiles (``metrics``): amplitude distances in dB, overall and per land-cover
class (tiles grouped by their main class, each generated image with the tile whose caption it
drew), speckle (CV and ENL, and how many e-folds they are from the real tiles'), GLCM texture
distance, and prompt adherence under the SAR-CLIP (``clip.adherence``). The real tiles' own
adherence is the ceiling, the base model's (before fine-tuning) the floor.

The best checkpoint has the lowest mean rank over amplitude Wasserstein-1, GLCM distance and CLIP
score (higher is better); it may be promoted only when it beats the base model on both amplitude
distance (lower Wasserstein-1) and adherence (higher CLIP score): :func:`beats_base`.

FID and KID (``inception``) join the measures only when ``inception_path`` names the local
weights of the FID Inception-v3; they are then columns of the table and plots like the others, but
neither ranks checkpoints nor decides promotion (a setting that is off by default must not change
which checkpoint is best).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from sar_pipeline import radiometry
from sar_pipeline.errors import ConfigError, ModelError
from sar_pipeline.evaluation import metrics
from sar_pipeline.evaluation.clip import SarClip, adherence
from sar_pipeline.evaluation.tiles import (
    SplitTiles,
    dataset_params,
    evaluation_split,
    read_split_tiles,
    to_db,
)
from sar_pipeline.generation.settings import SchedulerName
from sar_pipeline.settings import Settings

# inception imports torch (its network is a torch module): imported when FID/KID are computed, not
# when the code location loads this module (every run does, and torch takes seconds to import)
if TYPE_CHECKING:
    from sar_pipeline.evaluation.inception import InceptionDistances


class FidelitySettings(Settings):
    """How sar_fidelity generates from each checkpoint and the base model, and compares with real tiles."""

    max_tiles: int = Field(
        default=32,
        ge=1,
        description="Held-out tiles compared (the first of the test split, else of validation); their "
        "captions are the prompts.",
    )
    images_per_caption: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Images generated per held-out caption (tile i: seeds seed + i × n …), the same "
        "seeds for every model.",
    )
    seed: int = Field(default=0, description="Seed of the first held-out caption's first image.")
    steps: int = Field(default=20, ge=1, le=1000, description="Denoising steps of each generated image.")
    scheduler: SchedulerName = Field(default="ddim", description="Sampler of the generated images.")
    guidance_scale: float = Field(
        default=7.5, ge=0.0, description="Classifier-free guidance scale (1 = no guidance)."
    )
    histogram_bin_width_db: float = Field(
        default=0.5,
        gt=0.0,
        description="Width (dB) of the fixed bins of the Jensen–Shannon divergence, over the dataset's "
        "db_min…db_max.",
    )
    max_pixels: int = Field(
        default=2_000_000,
        ge=0,
        description="Pixels per set the amplitude distances use at most (a fixed-seed random subset; 0 = all).",
    )
    speckle_window_px: int = Field(
        default=16,
        ge=4,
        description="Side (pixels) of the windows ENL is measured on (the most homogeneous).",
    )
    glcm_levels: int = Field(
        default=32, ge=2, le=256, description="Grey levels GLCM quantises db_min…db_max into."
    )
    glcm_distances_px: list[int] = Field(
        default=[1, 2, 4], min_length=1, description="GLCM pixel offsets (distances)."
    )
    glcm_angles_deg: list[float] = Field(
        default=[0.0, 45.0, 90.0, 135.0],
        min_length=1,
        description="GLCM directions, degrees in the native SAR frame (0 = along range, 90 = along azimuth).",
    )
    device: str = Field(default="auto", description="'auto' (a GPU when present), 'cpu', 'cuda', 'cuda:1', …")
    inception_path: str = Field(
        default="",
        description="Local weights of the FID Inception-v3 for FID and KID: pytorch-fid's "
        "pt_inception-2015-12-05-6726825d.pth (a state dict, read with torch.load(weights_only=True)) or a "
        ".safetensors conversion of it, copied beforehand; nothing is downloaded, and a file of other "
        "parameter names or shapes is refused. Each grey tile's 8-bit levels are resized to 299 × 299 "
        "(bicubic, antialiased), replicated over R, G, B and scaled to [0, 1], pytorch-fid's input; the "
        "2048-D pool3 features are compared. Empty = no FID/KID (their columns are absent).",
    )


#: the metrics of a generated set, in table order: key → (heading, unit, lower is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "wasserstein_db": ("amplitude Wasserstein-1", "dB", True),
    "jensen_shannon_bits": ("amplitude Jensen–Shannon", "bits", True),
    "ks_statistic": ("amplitude KS statistic", "", True),
    "mean_difference_db": ("mean difference (generated − real)", "dB", False),
    "glcm_distance": ("GLCM descriptor distance", "real spreads", True),
    "speckle_cv": ("speckle CV of intensity", "", False),
    "speckle_enl": ("speckle ENL", "looks", False),
    "speckle_enl_log_ratio": ("|ln ENL ratio| to real", "e-folds", True),
    "clip_score": ("SAR-CLIP score", "", False),
    "retrieval_r1": ("SAR-CLIP retrieval R@1", "", False),
}
#: the metrics computed only with a local Inception network (``inception_path``), same layout
INCEPTION_METRICS: dict[str, tuple[str, str, bool]] = {
    "fid": ("FID (Inception-v3 features)", "", True),
    "kid": ("KID (Inception-v3, mean over subsets)", "", True),
}
#: metrics the best checkpoint is ranked on: key → sign (+1 lower is better, -1 higher is better)
RANKED = {"wasserstein_db": 1, "glcm_distance": 1, "clip_score": -1}


@dataclass
class Reference:
    """The real held-out tiles, measured once: what every model's generated set is compared with."""

    tiles: SplitTiles
    db: list[np.ndarray]
    params: radiometry.RadiometryParams
    bins: np.ndarray
    glcm: np.ndarray
    scores: dict[str, float]
    held_out: bool  # False: the train split, the dataset holding no tile out
    inception: InceptionDistances | None = None  # FID/KID against these tiles (inception_path set)


def _glcm(
    db: list[np.ndarray], params: radiometry.RadiometryParams, settings: FidelitySettings
) -> np.ndarray:
    return np.stack(
        [
            metrics.glcm_descriptors(
                d,
                params.db_min,
                params.db_max,
                settings.glcm_levels,
                settings.glcm_distances_px,
                settings.glcm_angles_deg,
            )
            for d in db
        ]
    )


def reference_set(
    storage_root: str | Path,
    version: str,
    side_px: int,
    text_column: str,
    settings: FidelitySettings,
    clip: SarClip,
    inception: InceptionDistances | None = None,
) -> Reference:
    """Read and measure the held-out tiles of dataset ``version`` at ``side_px`` (the model's tile
    side); with ``inception``, their Inception features too (what FID/KID compare with)."""
    params = dataset_params(storage_root, version)
    split, held_out = evaluation_split(storage_root, version)
    tiles = read_split_tiles(storage_root, version, split, side_px, text_column, settings.max_tiles)
    db = to_db(tiles.greys, params)
    speckle = metrics.speckle_summary(db, settings.speckle_window_px)
    scores = {
        "speckle_cv": speckle.coefficient_of_variation,
        "speckle_enl": speckle.equivalent_number_of_looks,
        **adherence(clip, tiles.greys, tiles.texts),
    }
    bins = metrics.fixed_bins_db(params.db_min, params.db_max, settings.histogram_bin_width_db)
    if inception is not None:
        inception.set_real(tiles.greys)
    return Reference(tiles, db, params, bins, _glcm(db, params, settings), scores, held_out, inception)


def generate_set(model, reference: Reference, settings: FidelitySettings) -> list[np.ndarray]:
    """``images_per_caption`` grey images ([0, 1]) per held-out caption, in tile order, fixed seeds."""
    from sar_pipeline.generation.sample import generate
    from sar_pipeline.generation.settings import GenerationSettings

    n = settings.images_per_caption
    images = []
    for i, text in enumerate(reference.tiles.texts):
        options = GenerationSettings(
            seed=settings.seed + i * n,
            num_images=n,
            steps=settings.steps,
            scheduler=settings.scheduler,
            guidance_scale=settings.guidance_scale,
        )
        images += [g.image for g in generate(model, text, options, progress=False)]
    return images


def score_model(model, reference: Reference, settings: FidelitySettings, clip: SarClip) -> dict[str, Any]:
    """:func:`score_set` of ``model``'s images for the held-out captions (:func:`generate_set`)."""
    return score_set(reference, generate_set(model, reference, settings), settings, clip)


def inception_distances(settings: FidelitySettings) -> InceptionDistances | None:
    """FID/KID's Inception network when ``inception_path`` is set (a bad file fails here, before any
    image is generated), else None."""
    from sar_pipeline.devices import resolve_device

    if not settings.inception_path:
        return None
    from sar_pipeline.evaluation.inception import InceptionDistances, load_inception

    return InceptionDistances(
        load_inception(settings.inception_path, resolve_device(settings.device)), settings.seed
    )


def score_set(
    reference: Reference, greys: list[np.ndarray], settings: FidelitySettings, clip: SarClip
) -> dict[str, Any]:
    """:data:`METRICS` of a generated set (``images_per_caption`` per held-out tile, in tile order)
    against the real tiles, :data:`INCEPTION_METRICS` (and ``kid_std``) when the reference has an
    Inception network, and ``by_landcover``: class → amplitude distances of that class's tiles."""
    n = settings.images_per_caption
    if len(greys) != n * len(reference.tiles):
        raise ValueError(f"{len(greys)} generated images for {len(reference.tiles)} tiles × {n}")
    db = to_db(greys, reference.params)
    amplitude = metrics.amplitude_distances(
        reference.db, db, reference.bins, settings.max_pixels, settings.seed
    )
    speckle = metrics.speckle_summary(db, settings.speckle_window_px)
    texts = [t for t in reference.tiles.texts for _ in range(n)]
    by_landcover = {}
    for name in sorted({c for c in reference.tiles.landcover if c}):
        rows = [i for i, c in enumerate(reference.tiles.landcover) if c == name]
        by_landcover[name] = {
            "tiles": len(rows),
            **metrics.amplitude_distances(
                [reference.db[i] for i in rows],
                [db[i * n + j] for i in rows for j in range(n)],
                reference.bins,
                settings.max_pixels,
                settings.seed,
            ).to_dict(),
        }
    return {
        "wasserstein_db": amplitude.wasserstein_db,
        "jensen_shannon_bits": amplitude.jensen_shannon_bits,
        "ks_statistic": amplitude.ks_statistic,
        "mean_difference_db": amplitude.mean_difference_db,
        "glcm_distance": metrics.descriptor_distance(reference.glcm, _glcm(db, reference.params, settings)),
        "speckle_cv": speckle.coefficient_of_variation,
        "speckle_enl": speckle.equivalent_number_of_looks,
        "speckle_cv_log_ratio": metrics.log_ratio(
            speckle.coefficient_of_variation, reference.scores["speckle_cv"]
        ),
        "speckle_enl_log_ratio": metrics.log_ratio(
            speckle.equivalent_number_of_looks, reference.scores["speckle_enl"]
        ),
        **adherence(clip, greys, texts),
        **(reference.inception.score(greys) if reference.inception is not None else {}),
        "by_landcover": by_landcover,
    }


def load_base_for_generation(path: str | Path, single_file_config: str = "", device: str = "auto"):
    """The base model a run was fine-tuned from, as a ``GenerationModel`` (a diffusers folder, or a
    single-file checkpoint with ``single_file_config``)."""
    from sar_pipeline.devices import resolve_device
    from sar_pipeline.diffusion.models import assemble_pipeline, load_base_model
    from sar_pipeline.generation.model import GenerationModel, load_generation_model

    path = Path(path)
    if path.is_dir():
        return load_generation_model(path, device)
    parts = load_base_model(path, single_file_config)
    pipe = assemble_pipeline(parts.unet, parts.text_encoder, parts.vae, parts.tokenizer, parts.scheduler)
    pipe = pipe.to(resolve_device(device))
    pipe.set_progress_bar_config(disable=True)
    return GenerationModel(pipe=pipe, path=path)


def read_train_config(run_dir: str | Path) -> dict[str, Any]:
    """The ``train_config.json`` an sd_model run recorded (its dataset, storage root and base model
    as the training machine saw them); ConfigError naming the file when it cannot be read."""
    path = Path(run_dir) / "train_config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(path, f"cannot read the run's training config ({exc})") from exc


def stored_parts(path: str | Path, run_storage_root: str | Path) -> tuple[str, ...] | None:
    """``path``'s parts under the storage root a run trained in (``train_config.json``'s
    ``storage_root``: the local copy on the training machine), None when it lies outside it."""
    try:
        parts = Path(path).relative_to(Path(run_storage_root)).parts
    except ValueError:
        return None
    return parts or None


def base_model_path_here(train_config: dict[str, Any], storage_root: str | Path) -> Path:
    """Where the run's base model is on this machine, whose copy of the storage root is
    ``storage_root``: at the same place under it when the run kept the model in its storage root
    (the tiny base, ``models/tiny-base/<version>``), else at the path the run recorded (local
    weights such as sd15, which must be at that path here too); ModelError when it is not there."""
    recorded = train_config["base_model_path"]
    parts = stored_parts(recorded, train_config["storage_root"])
    path = Path(storage_root).joinpath(*parts) if parts else Path(recorded)
    if not path.exists():
        raise ModelError(
            path,
            "the base model the run was fine-tuned from (base_model_path in its train_config.json) is not "
            "on this machine: sar_fidelity scores it as the floor, so its weights must be at this path "
            "wherever sar_fidelity runs (the same local path or shared volume as on the training machine)",
        )
    return path


def run_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, pipeline folder) of every complete checkpoint of an sd_model run, oldest first."""
    from sar_pipeline.diffusion.checkpoint import list_checkpoints

    found = [
        (int(json.loads((c / "checkpoint.json").read_text())["step"]), c / "pipeline")
        for c in list_checkpoints(Path(run_dir))
        if (c / "pipeline" / "model_index.json").is_file()
    ]
    if not found:
        raise ModelError(run_dir, "the sd_model run has no complete checkpoint with a pipeline/ folder")
    return found


def run_dir_of(checkpoint_pipeline: str | Path) -> Path:
    """The run folder of a checkpoint's pipeline (``<run>/checkpoints/checkpoint-N/pipeline``)."""
    folder = Path(checkpoint_pipeline)
    if folder.name != "pipeline" or folder.parent.parent.name != "checkpoints":
        raise ModelError(
            folder, "not an sd_model checkpoint's pipeline folder (<run>/checkpoints/checkpoint-N/pipeline)"
        )
    return folder.parent.parent.parent


def best_checkpoint(checkpoints: list[dict[str, Any]]) -> int:
    """Index of the checkpoint with the lowest mean rank over :data:`RANKED` (ties: the earliest)."""
    from scipy.stats import rankdata

    ranks = np.mean(
        [
            rankdata([sign * c["scores"][key] for c in checkpoints], nan_policy="omit")
            for key, sign in RANKED.items()
        ],
        axis=0,
    )
    return int(np.argmin(ranks))


def beats_base(scores: dict[str, float], base: dict[str, float]) -> tuple[bool, list[str]]:
    """Whether a model's ``scores`` beat the base model's on amplitude distance (lower
    Wasserstein-1) and adherence (higher SAR-CLIP score); the reasons when not."""
    reasons = []
    if not scores["wasserstein_db"] < base["wasserstein_db"]:
        reasons.append(
            f"amplitude Wasserstein-1 {scores['wasserstein_db']:.4f} dB is not below the base model's "
            f"{base['wasserstein_db']:.4f} dB"
        )
    if not scores["clip_score"] > base["clip_score"]:
        reasons.append(
            f"SAR-CLIP score {scores['clip_score']:.3f} is not above the base model's {base['clip_score']:.3f}"
        )
    return not reasons, reasons


def evaluate_run(
    run_dir: str | Path,
    clip: SarClip,
    settings: FidelitySettings,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    storage_root: str | Path | None = None,
) -> dict[str, Any]:
    """Score every checkpoint of an sd_model run and its base model on the held-out tiles.

    ``storage_root``: this machine's copy of the storage root, holding the run's dataset version
    (default: the one the run recorded, i.e. the training machine's); the base model is looked for
    with :func:`base_model_path_here`.

    Returns the report (JSON-ready): run, dataset version, split, tiles, ``real`` (the ceiling),
    ``base`` (the floor), ``checkpoints`` (step, pipeline, scores), ``best`` (index into them) and
    ``promotable`` with its ``reasons``. ``on_checkpoint`` is called with each checkpoint's entry
    as soon as it is scored.
    """
    from sar_pipeline.generation.model import load_generation_model

    run_dir = Path(run_dir)
    inception = inception_distances(settings)
    train_config = read_train_config(run_dir)
    storage_root = storage_root or train_config["storage_root"]
    base_path = base_model_path_here(train_config, storage_root)
    version = train_config["dataset_version"]
    text_column = ((clip.info or {}).get("settings") or {}).get("text_column", "caption")
    checkpoints = run_checkpoints(run_dir)

    base_model = load_base_for_generation(
        base_path, train_config.get("single_file_config") or "", settings.device
    )
    reference = reference_set(
        storage_root, version, base_model.resolution, text_column, settings, clip, inception
    )
    base = score_model(base_model, reference, settings, clip)
    del base_model
    entries = []
    for step, pipeline in checkpoints:
        model = load_generation_model(pipeline, settings.device)
        entry = {
            "step": step,
            "pipeline": str(pipeline),
            "scores": score_model(model, reference, settings, clip),
        }
        del model
        gc.collect()
        entries.append(entry)
        if on_checkpoint is not None:
            on_checkpoint(entry)
    best = best_checkpoint(entries)
    promotable, reasons = beats_base(entries[best]["scores"], base)
    return {
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "dataset_version": version,
        "split": reference.tiles.split,
        "held_out": reference.held_out,
        "tiles": len(reference.tiles),
        "tile_ids": reference.tiles.tile_ids,
        "images_per_caption": settings.images_per_caption,
        "settings": settings.model_dump(),
        "sar_clip": str(clip.path) if clip.path else None,
        "real": reference.scores,
        "base": {"model": str(base_path), "scores": base},
        "checkpoints": entries,
        "best": best,
        "promotable": promotable,
        "reasons": reasons,
    }


# ----------------------------------------------------------------------------------------------
# what a person reads: the table and the plots


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if not np.isfinite(value) else f"{value:.4g}"
    return str(value)


def report_metrics(scores: dict[str, Any]) -> dict[str, tuple[str, str, bool]]:
    """The columns of a report whose base model scored ``scores``: :data:`METRICS`, then
    :data:`INCEPTION_METRICS` where they were computed (``inception_path`` set)."""
    return {**METRICS, **{k: v for k, v in INCEPTION_METRICS.items() if k in scores}}


def table_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per model (base, each checkpoint, the real tiles): name, step, :func:`report_metrics`
    (the real tiles have only their speckle and adherence: the other metrics compare with them)."""
    keys = report_metrics(report["base"]["scores"])

    def values(scores: dict[str, Any]) -> dict[str, float | None]:
        return {key: (float(scores[key]) if key in scores else None) for key in keys}

    rows = [{"model": "base (before fine-tuning)", "step": 0, **values(report["base"]["scores"])}]
    for i, entry in enumerate(report["checkpoints"]):
        name = f"checkpoint {entry['step']}" + (" (best)" if i == report["best"] else "")
        rows.append({"model": name, "step": entry["step"], **values(entry["scores"])})
    rows.append({"model": "real tiles (ceiling)", "step": None, **values(report["real"])})
    return rows


def markdown_table(report: dict[str, Any]) -> str:
    """The per-checkpoint table and, where the tiles have land cover, Wasserstein-1 per class."""
    rows = table_rows(report)
    columns = report_metrics(report["base"]["scores"])
    head = ["model"] + [f"{heading}{f' ({unit})' if unit else ''}" for heading, unit, _ in columns.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append(
            "| "
            + " | ".join([row["model"]] + ["" if row[k] is None else _cell(row[k]) for k in columns])
            + " |"
        )
    classes = sorted(report["base"]["scores"].get("by_landcover") or {})
    if classes:
        lines += ["", "Amplitude Wasserstein-1 (dB) per main land-cover class of the held-out tiles:", ""]
        tiles = report["base"]["scores"]["by_landcover"]
        lines.append("| model | " + " | ".join(f"{c} ({tiles[c]['tiles']} tiles)" for c in classes) + " |")
        lines.append("|" + "---|" * (len(classes) + 1))
        models = [("base", report["base"]["scores"])] + [
            (f"checkpoint {e['step']}", e["scores"]) for e in report["checkpoints"]
        ]
        for name, scores in models:
            cells = [_cell(scores["by_landcover"][c]["wasserstein_db"]) for c in classes]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def metric_plots(report: dict[str, Any]) -> dict[str, bytes]:
    """metric key → PNG of its value at each checkpoint against the training step, with the base
    model's (and, for speckle and adherence, the real tiles') level as flat lines."""
    from sar_pipeline.pictures import line_plot_png

    steps = [e["step"] for e in report["checkpoints"]]
    span = [min(steps), max(steps)] if len(steps) > 1 else [0, steps[0]]
    plots = {}
    for key, (heading, unit, _) in report_metrics(report["base"]["scores"]).items():
        series = {
            "checkpoints": (steps, [float(e["scores"][key]) for e in report["checkpoints"]]),
            "base model": (span, [float(report["base"]["scores"][key])] * 2),
        }
        if key in report["real"]:
            series["real tiles"] = (span, [float(report["real"][key])] * 2)
        plots[key] = line_plot_png(series, heading, "training step", unit or heading, markers=True)
    return plots
