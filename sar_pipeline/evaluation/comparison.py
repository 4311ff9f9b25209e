"""Training recipes compared on one dataset: each trained with the same data, seed and step budget,
then scored by ``sar_fidelity``'s measures against the same real tiles, as ONERA's follow-up study
reports it (Debuysère et al., arXiv 2506.13307: one row per method, a column per measure, the best
marked).

For each recipe (:data:`RECIPES` by default: the paper's full fine-tune, the study's hybrid, LoRA)
and each training seed, one run of ``diffusion.train`` on the same dataset version, base model and
latent cache, ``max_train_steps`` optimizer steps, checkpoint at the end only. Each run's final
pipeline, and the untrained base model once, generate the images of the held-out captions with the
same fixed seeds (``evaluation.fidelity``: same code path as the ``sar_fidelity`` asset, same
settings model); the real tiles' own speckle and adherence are the ceiling. Several training seeds
give each recipe's mean and spread, the yardstick a difference between recipes has to clear.

Runs live under ``<output>/runs/<recipe>-seed<seed>-<hash of its training settings>/`` and are
reused when the comparison is run again with the same settings (a changed scoring setting only
re-scores); ``report.json`` and ``table.md`` are rewritten whole each time.

    sar-pipeline compare-recipes                         # the demo's storage root, 3 recipes
    sar-pipeline compare-recipes --storage /data/storage --config comparison.yaml --steps 2000
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from sar_pipeline import paths
from sar_pipeline.diffusion.config import BaseModelSettings, TrainRecipe
from sar_pipeline.errors import ConfigError
from sar_pipeline.evaluation.clip import SarClipSettings
from sar_pipeline.evaluation.fidelity import FidelitySettings
from sar_pipeline.settings import Settings, read_mapping_file

#: the recipes compared by default: name → TrainRecipe options (the rest: the preset's values)
RECIPES: dict[str, dict[str, Any]] = {
    # the paper (§4.1): full UNet and full text encoder, each with its learning rate
    "paper": {},
    # the follow-up study's best: full UNet, LoRA on the text encoder, a learned token embedding
    "hybrid": {"text_encoder_lora": True, "learned_token": "<sar>"},
    # adapters on every trained part (UNet and text encoder), the base weights frozen
    "lora": {"use_lora": True},
}

#: options the comparison sets itself (the same for every run), refused in ``train`` and ``recipes``
FIXED_OPTIONS = (
    "max_train_steps",
    "seed",
    "checkpoint_every_steps",
    "checkpoint_at_end",
    "resume_from_checkpoint",
)

#: table columns: score key → (heading, which value is best: "low", "high", "zero" (closest to 0),
#: "real" (closest to the real tiles'))
COLUMNS: dict[str, tuple[str, str]] = {
    "wasserstein_db": ("amplitude W1 (dB) ↓", "low"),
    "jensen_shannon_bits": ("JS (bits) ↓", "low"),
    "ks_statistic": ("KS ↓", "low"),
    "mean_difference_db": ("mean diff. (dB) →0", "zero"),
    "glcm_distance": ("GLCM distance ↓", "low"),
    "speckle_enl": ("speckle ENL →real", "real"),
    "clip_score": ("SAR-CLIP score ↑", "high"),
    "retrieval_r1": ("R@1 ↑", "high"),
}
#: columns added when FID/KID were computed (the fidelity settings' ``inception_path``)
INCEPTION_COLUMNS: dict[str, tuple[str, str]] = {"fid": ("FID ↓", "low"), "kid": ("KID ↓", "low")}


def columns(base_scores: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The table's columns: :data:`COLUMNS`, then :data:`INCEPTION_COLUMNS` where they were computed."""
    return {**COLUMNS, **{k: v for k, v in INCEPTION_COLUMNS.items() if k in base_scores}}


class RecipeComparisonSettings(Settings):
    """What ``sar-pipeline compare-recipes`` trains and how it scores (a YAML file of these keys)."""

    dataset_version: str = Field(
        default="",
        description="Dataset version every recipe trains on; '' = the one dataset/current.json names.",
    )
    recipes: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {name: dict(options) for name, options in RECIPES.items()},
        description="Recipe name → its TrainRecipe options (beside `train`'s); default: paper (full UNet and "
        "text encoder), hybrid (full UNet, LoRA on the text encoder, learned token '<sar>'), lora "
        "(adapters on UNet and text encoder).",
    )
    max_train_steps: int = Field(
        default=150, ge=1, description="Optimizer steps of every run: the step budget."
    )
    seeds: list[int] = Field(
        default=[0],
        min_length=1,
        description="Training seeds; each recipe is trained once per seed (mean and spread in the table).",
    )
    base: BaseModelSettings = Field(
        default_factory=lambda: BaseModelSettings(preset="tiny"),
        description="The base model every recipe starts from (BaseModelSettings: preset, base_model_path, "
        "resolution, …); tiny with an empty path: the one the diffusion_base resource writes under "
        "models/tiny-base/<version>, reused.",
    )
    train: dict[str, Any] = Field(
        default_factory=dict,
        description="TrainRecipe options shared by every recipe (e.g. train_batch_size); the budget, seed and "
        "checkpointing are the comparison's own.",
    )
    fidelity: FidelitySettings = Field(
        default_factory=FidelitySettings,
        description="How each model is scored (the sar_fidelity asset's settings).",
    )
    sar_clip: str = Field(
        default="",
        description="SAR-CLIP folder judging adherence; '' = the storage root's latest sar_clip when it was "
        "trained on this dataset version, else one trained now with `sar_clip_settings` (kept under the output).",
    )
    sar_clip_settings: SarClipSettings = Field(
        default_factory=SarClipSettings, description="Settings of the SAR-CLIP trained when none is found."
    )

    @field_validator("recipes", "train")
    @classmethod
    def _valid_options(cls, value: dict[str, Any], info) -> dict[str, Any]:
        entries = value.items() if info.field_name == "recipes" else [("train", value)]
        if info.field_name == "recipes" and not value:
            raise ConfigError("recipes", "no recipe to compare")
        for name, options in entries:
            fixed = sorted(set(options or {}) & set(FIXED_OPTIONS))
            if fixed:
                raise ConfigError(
                    f"{info.field_name}.{name}" if info.field_name == "recipes" else "train",
                    f"{fixed} are set by the comparison itself (max_train_steps, seeds), the same for every run",
                )
            unknown = sorted(set(options or {}) - set(TrainRecipe.model_fields))
            if unknown:
                raise ConfigError(name, f"unknown training option(s) {unknown}")
        return value


def read_settings(path: str | Path | None, overrides: dict[str, Any]) -> RecipeComparisonSettings:
    """The settings of a YAML file (or the defaults) with ``overrides`` (command-line values) applied;
    ConfigError naming the file and each bad key."""
    import pydantic

    from sar_pipeline.diffusion.config import settings_error

    values = read_mapping_file(path, "compare-recipes settings file") if path else {}
    source: object = path or "compare-recipes settings"
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return RecipeComparisonSettings.model_validate(values)
    except pydantic.ValidationError as exc:
        raise settings_error(exc, source) from exc
    except ConfigError as exc:
        raise ConfigError(source, f"{exc.source}: {exc.reason}") from exc


def _hash(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:8]


def base_model_folder(storage_root: Path, version: str, base: BaseModelSettings) -> Path:
    """The base model every recipe starts from: ``base_model_path``, else (tiny) where the
    ``diffusion_base`` resource writes the tiny base of this dataset version, so the demo's is reused."""
    return Path(base.base_model_path or storage_root / "models" / "tiny-base" / version)


def prepare_base(storage_root: Path, version: str, base: BaseModelSettings, folder: Path) -> None:
    """Write the tiny base once (its VAE trained on the train tiles) and the train split's latents
    under the base's VAE (built once, as the latent_cache asset does)."""
    from sar_pipeline.diffusion.latent_cache import build_latent_cache
    from sar_pipeline.diffusion.models import ensure_tiny_base, load_vae

    if base.is_tiny:
        ensure_tiny_base(
            folder, storage_root, version, base.tile_resolution(), base.tiny_vae_steps, family=base.family
        )
    build_latent_cache(
        storage_root, version, load_vae(folder, base.single_file_config), base.tile_resolution()
    )


def load_or_train_sar_clip(
    storage_root: Path, version: str, settings: RecipeComparisonSettings, output: Path
):
    """The SAR-CLIP judging adherence (see :attr:`RecipeComparisonSettings.sar_clip`) and its folder."""
    from sar_pipeline.evaluation import clip as sar_clip
    from sar_pipeline.generation.model import read_latest
    from sar_pipeline.storage import atomic_local_dir

    device = settings.fidelity.device
    if settings.sar_clip:
        return sar_clip.load_sar_clip(settings.sar_clip, device), Path(settings.sar_clip)
    latest = read_latest(storage_root, "sar_clip") or {}
    if latest.get("dataset_version") == version and Path(latest.get("sar_clip", "")).is_dir():
        return sar_clip.load_sar_clip(latest["sar_clip"], device), Path(latest["sar_clip"])
    folder = output / f"sar_clip-{_hash(settings.sar_clip_settings.model_dump())}"
    if not (folder / sar_clip.SAR_CLIP_INFO).is_file():
        print(
            f"no SAR-CLIP of dataset {version}: training one ({settings.sar_clip_settings.max_steps} steps)"
        )
        clip, _, info = sar_clip.train_on_dataset(storage_root, version, settings.sar_clip_settings)
        with atomic_local_dir(folder) as staging:
            sar_clip.save_sar_clip(clip, staging, info)
    return sar_clip.load_sar_clip(folder, device), folder


def run_settings(
    storage_root: Path,
    version: str,
    base_path: Path,
    recipe: str,
    seed: int,
    settings: RecipeComparisonSettings,
    output: Path,
):
    """The TrainSettings of one recipe at one seed, its run folder named after its recipe's hash."""
    from sar_pipeline.diffusion.config import TrainSettings, recipe_of

    values = {
        **settings.base.model_dump(),
        **settings.train,
        **settings.recipes[recipe],
        "base_model_path": str(base_path),
        "storage_root": str(storage_root),
        "dataset_version": version,
        "max_train_steps": settings.max_train_steps,
        "seed": seed,
        "checkpoint_every_steps": 0,
        "checkpoint_at_end": True,
        "resume_from_checkpoint": "latest",
    }
    cfg = TrainSettings.from_dict(values, source=f"recipe {recipe!r}")
    run_dir = output / "runs" / f"{recipe}-seed{seed}-{_hash(recipe_of(cfg))}"
    return cfg.model_copy(update={"output_dir": str(run_dir)})


def train_run(cfg, recipe: str) -> dict[str, Any]:
    """Train one run (or reuse it when its folder holds a finished one); its recipe, seed, run folder,
    final pipeline, training time (s) and final loss."""
    from sar_pipeline.diffusion.train import train
    from sar_pipeline.storage import atomic_write_bytes

    run_dir = Path(cfg.output_dir)
    record_path = run_dir / "comparison_run.json"
    final = run_dir / "final.json"
    if record_path.is_file() and final.is_file():
        summary = json.loads(final.read_text())
        if summary.get("steps") == cfg.max_train_steps and summary.get("pipeline"):
            print(f"{recipe} seed {cfg.seed}: reusing {run_dir}")
            return {**json.loads(record_path.read_text()), "final_loss": summary["final_loss"]}
    print(f"{recipe} seed {cfg.seed}: training {cfg.max_train_steps} steps in {run_dir}", flush=True)
    started = time.perf_counter()
    summary = train(cfg)
    if summary["steps"] != cfg.max_train_steps:  # resumed from a longer run of the same recipe
        raise ConfigError(
            run_dir,
            f"holds a run of {summary['steps']} steps, not the budget of {cfg.max_train_steps}: remove it "
            "or choose another --output",
        )
    record = {
        "recipe": recipe,
        "seed": cfg.seed,
        "run_dir": str(run_dir),
        "pipeline": summary["pipeline"],
        "train_seconds": time.perf_counter() - started,
    }
    atomic_write_bytes(record_path, json.dumps(record, indent=1).encode())
    return {**record, "final_loss": summary["final_loss"]}


def compare_recipes(
    storage_root: str | Path, settings: RecipeComparisonSettings, output: str | Path | None = None
) -> dict[str, Any]:
    """Train every recipe at every seed and score each, the base model and the real tiles; returns
    the report (JSON-ready) and writes it (``report.json``) and its tables (``table.md``) under
    ``output`` (default ``<storage_root>/evaluation/recipe_comparison/<version>``)."""
    from sar_pipeline.dataset import current_version
    from sar_pipeline.evaluation import fidelity
    from sar_pipeline.generation.model import load_generation_model
    from sar_pipeline.storage import atomic_write_bytes, validate_id

    root = Path(storage_root)
    if str(storage_root).startswith("s3://"):
        raise ConfigError(storage_root, "compare-recipes works on a local storage root (or the local copy)")
    if not (root / "dataset").is_dir():
        raise ConfigError(
            root,
            "holds no dataset: materialise training_dataset first (sar-pipeline demo, or sar-pipeline run)",
        )
    version = validate_id(settings.dataset_version or current_version(root), "dataset version")
    output = Path(output) if output else root / "evaluation" / "recipe_comparison" / version
    started = time.perf_counter()
    base_path = base_model_folder(root, version, settings.base)
    # every run's settings checked before anything is trained
    configs = [
        (recipe, run_settings(root, version, base_path, recipe, seed, settings, output))
        for recipe in settings.recipes
        for seed in settings.seeds
    ]
    prepare_base(root, version, settings.base, base_path)
    runs = [train_run(cfg, recipe) for recipe, cfg in configs]
    training_seconds = time.perf_counter() - started

    clip, clip_folder = load_or_train_sar_clip(root, version, settings, output)
    text_column = ((clip.info or {}).get("settings") or {}).get("text_column", "caption")
    scoring_started = time.perf_counter()
    base_model = fidelity.load_base_for_generation(
        base_path, settings.base.single_file_config, settings.fidelity.device
    )
    reference = fidelity.reference_set(
        root,
        version,
        base_model.resolution,
        text_column,
        settings.fidelity,
        clip,
        fidelity.inception_distances(settings.fidelity),
    )
    print(f"scoring on {len(reference.tiles)} {reference.tiles.split} tiles: the base model", flush=True)
    base_scores = fidelity.score_model(base_model, reference, settings.fidelity, clip)
    del base_model
    for run in runs:
        print(f"scoring {run['recipe']} seed {run['seed']}", flush=True)
        model = load_generation_model(run["pipeline"], settings.fidelity.device)
        run["scores"] = fidelity.score_model(model, reference, settings.fidelity, clip)
        del model
        gc.collect()
    report = {
        "dataset_version": version,
        "storage_root": str(root),
        "split": reference.tiles.split,
        "held_out": reference.held_out,
        "tiles": len(reference.tiles),
        "images_per_caption": settings.fidelity.images_per_caption,
        "settings": settings.model_dump(mode="json"),
        "base_model": str(base_path),
        "sar_clip": str(clip_folder),
        "real": reference.scores,
        "base": base_scores,
        "runs": runs,
        "rows": summary_rows(runs, base_scores, reference.scores, list(settings.recipes)),
        "training_seconds": training_seconds,
        "scoring_seconds": time.perf_counter() - scoring_started,
    }
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output / "report.json", json.dumps(report, indent=1, default=str).encode())
    atomic_write_bytes(output / "table.md", (markdown_report(report) + "\n").encode())
    report["output"] = str(output)
    return report


def summary_rows(
    runs: list[dict[str, Any]], base: dict[str, Any], real: dict[str, Any], recipes: list[str]
) -> list[dict[str, Any]]:
    """One row per model: the base, each recipe (mean and standard deviation over its seeds of each
    :func:`columns` score, training time and final loss), the real tiles (their speckle and
    adherence only: the distances are measured against them)."""
    keys = columns(base)
    rows = [{"model": "base", "seeds": 0, **{k: base.get(k) for k in keys}}]
    for recipe in recipes:
        mine = [r for r in runs if r["recipe"] == recipe]
        row: dict[str, Any] = {"model": recipe, "seeds": len(mine)}
        for key in [*keys, "train_seconds", "final_loss"]:
            values = np.array([r["scores"][key] if key in keys else r[key] for r in mine], np.float64)
            row[key] = float(values.mean())
            row[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
        rows.append(row)
    rows.append({"model": "real tiles", "seeds": 0, **{k: real.get(k) for k in keys}})
    return rows


def best_recipes(
    rows: list[dict[str, Any]], real: dict[str, Any], keys: dict[str, tuple[str, str]] = COLUMNS
) -> dict[str, list[str]]:
    """Column → the recipe(s) with the best mean, all of them on a tie (the base model and the real
    tiles do not compete)."""
    recipes = [r for r in rows if r["model"] not in ("base", "real tiles")]
    best = {}
    for key, (_, better) in keys.items():
        candidates = [r for r in recipes if r.get(key) is not None and np.isfinite(r[key])]
        if not candidates:
            continue
        if better == "low":
            loss = {r["model"]: r[key] for r in candidates}
        elif better == "high":
            loss = {r["model"]: -r[key] for r in candidates}
        elif better == "zero":
            loss = {r["model"]: abs(r[key]) for r in candidates}
        else:  # closest to the real tiles', on a log scale (ENL is a ratio of moments)
            loss = {r["model"]: abs(np.log(max(r[key], 1e-12) / max(real[key], 1e-12))) for r in candidates}
        least = min(loss.values())
        best[key] = [name for name, value in loss.items() if np.isclose(value, least, rtol=1e-9, atol=1e-12)]
    return best


def _value(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None or not np.isfinite(value):
        return "—"
    text = f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    std = row.get(f"{key}_std")
    return text + (f" ± {std:.2g}" if std is not None else "")


def markdown_report(report: dict[str, Any]) -> str:
    """The comparison as Markdown: what was compared, the table (best recipe per column in bold),
    training cost, and amplitude W1 per main land-cover class where the tiles have land cover."""
    settings = report["settings"]
    rows = report["rows"]
    keys = columns(report["base"])
    best = best_recipes(rows, report["real"], keys)
    split = f"tiles of the {report['split']} split" + (
        "" if report["held_out"] else " (NOT held out: the dataset holds no tile out)"
    )
    seeds = settings["seeds"]
    lines = [
        f"Dataset {report['dataset_version']}, {report['tiles']} {split} × "
        f"{report['images_per_caption']} image(s) per caption ({settings['fidelity']['steps']} "
        f"{settings['fidelity']['scheduler']} steps, guidance {settings['fidelity']['guidance_scale']}); "
        f"base `{settings['base']['preset']}`; {settings['max_train_steps']} optimizer steps per run; "
        f"training seed(s) {', '.join(map(str, seeds))}"
        + (" (mean ± standard deviation over seeds)" if len(seeds) > 1 else "")
        + ". Best recipe per column in bold (all of them on a tie).",
        "",
        "| model | " + " | ".join(heading for heading, _ in keys.values()) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for row in rows:
        name = {"base": "base (before fine-tuning; floor)", "real tiles": "real tiles (ceiling)"}.get(
            row["model"], row["model"]
        )
        cells = []
        for key in keys:
            cell = _value(row, key)
            cells.append(f"**{cell}**" if row["model"] in best.get(key, []) and cell != "—" else cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| recipe | options | training (s) | final loss |", "|---|---|---:|---:|"]
    for row in rows:
        if row["model"] in ("base", "real tiles"):
            continue
        options = settings["recipes"][row["model"]]
        text = ", ".join(f"{k}={v}" for k, v in options.items()) or "preset defaults"
        lines.append(
            f"| {row['model']} | {text} | {_value(row, 'train_seconds')} | {_value(row, 'final_loss')} |"
        )
    classes = sorted(report["base"].get("by_landcover") or {})
    if classes:
        tiles = report["base"]["by_landcover"]
        lines += [
            "",
            "Amplitude W1 (dB) per main land-cover class (mean over seeds):",
            "",
            "| model | " + " | ".join(f"{c} ({tiles[c]['tiles']} tiles)" for c in classes) + " |",
            "|---|" + "---:|" * len(classes),
            "| base | " + " | ".join(f"{tiles[c]['wasserstein_db']:.3f}" for c in classes) + " |",
        ]
        for recipe in settings["recipes"]:
            runs = [r for r in report["runs"] if r["recipe"] == recipe]
            cells = [
                f"{np.mean([r['scores']['by_landcover'][c]['wasserstein_db'] for r in runs]):.3f}"
                for c in classes
            ]
            lines.append(f"| {recipe} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# the command line: sar-pipeline compare-recipes (its arguments: sar_pipeline.cli)


def run_from_arguments(args: argparse.Namespace) -> int:
    """``sar-pipeline compare-recipes``: run the comparison and print its table."""
    import os

    overrides: dict[str, Any] = {
        "dataset_version": args.dataset_version,
        "max_train_steps": args.steps,
        "seeds": args.seeds,
    }
    settings = read_settings(args.config, overrides)
    if args.recipes:
        unknown = sorted(set(args.recipes) - set(settings.recipes))
        if unknown:
            raise ConfigError("--recipes", f"{unknown} not among the recipes {sorted(settings.recipes)}")
        settings = settings.model_copy(update={"recipes": {n: settings.recipes[n] for n in args.recipes}})
    if args.device:
        settings = settings.model_copy(
            update={
                "fidelity": settings.fidelity.model_copy(update={"device": args.device}),
                "sar_clip_settings": settings.sar_clip_settings.model_copy(update={"device": args.device}),
            }
        )
    storage = args.storage or os.environ.get("SAR_PIPELINE_STORAGE") or str(paths.storage_dir())
    report = compare_recipes(storage, settings, args.output)
    print(markdown_report(report))
    print(f"\nreport: {Path(report['output']) / 'report.json'} (table: table.md beside it)")
    return 0
