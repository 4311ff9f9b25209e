"""Model quality assets: the SAR-CLIP that judges prompt adherence, and the SAR fidelity of sd_model.

``sar_clip`` trains a CLIP on the dataset's own tile / caption pairs (``evaluation.clip``);
``sar_fidelity`` scores every checkpoint of the latest ``sd_model`` run and its base model on the
held-out tiles (``evaluation.fidelity``), as a table, per-metric plots against the training step
and one observation per checkpoint; its check ``sar_fidelity_beats_base`` promotes the best
checkpoint to generation's default only when it beats the base model.
"""

import hashlib
import json
import math
from pathlib import Path

import dagster as dg

from sar_pipeline import pictures
from sar_pipeline.defs.pictures import picture
from sar_pipeline.defs.pools import GPU_POOL, GPU_STEP_TAGS
from sar_pipeline.defs.resources import StorageRoot
from sar_pipeline.defs.training.assets import pull_dataset_version, sd_model, upstream_dataset_version
from sar_pipeline.evaluation import clip as sar_clip_model
from sar_pipeline.evaluation import fidelity
from sar_pipeline.evaluation.clip import SarClipSettings
from sar_pipeline.evaluation.fidelity import FidelitySettings
from sar_pipeline.generation.model import latest_model_folder, write_latest
from sar_pipeline.lineage import latest_model_from_instance
from sar_pipeline.storage import atomic_local_dir, atomic_write_bytes, validate_id


class SarClipConfig(dg.Config, SarClipSettings):
    """How the SAR-CLIP that scores prompt adherence is trained (small config on the CPU, or local weights)."""


def _retrieval_table(retrieval: dict[str, float]) -> str:
    lines = ["| direction | R@1 | chance R@1 | R@5 | chance R@5 |", "|---|---|---|---|---|"]
    for direction, name in (("text_to_image", "text → image"), ("image_to_text", "image → text")):
        cells = [
            f"{retrieval[f'{prefix}{direction}_r{k}']:.3f}" for k in (1, 5) for prefix in ("", "chance_")
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dg.asset(
    group_name="evaluation",
    deps=[dg.AssetKey("training_dataset")],
    kinds={"pytorch", "safetensors"},
    pool=GPU_POOL,
    op_tags=GPU_STEP_TAGS,
    description="A CLIP trained contrastively on the train split's SAR tile / caption pairs (a small config from "
    "scratch, or local pretrained weights), the judge of prompt adherence in sar_fidelity; text → image and "
    "image → text retrieval R@1/R@5 on the held-out split against chance. Saved (safetensors) under "
    "`models/sar_clip/<dataset_version>-<settings hash>/`.",
)
def sar_clip(
    context: dg.AssetExecutionContext, config: SarClipConfig, storage: StorageRoot
) -> dg.MaterializeResult:
    version = upstream_dataset_version(context, "training_dataset", storage.root())
    pull_dataset_version(storage, version)
    root = storage.local_path()
    settings = SarClipSettings.model_validate(config.model_dump())
    clip, losses, info = sar_clip_model.train_on_dataset(root, version, settings)
    settings_hash = hashlib.sha256(settings.model_dump_json().encode()).hexdigest()[:8]
    name = validate_id(f"{version}-{settings_hash}", "SAR-CLIP folder name")
    folder = storage.local_path("models", "sar_clip", name)
    with atomic_local_dir(folder) as staging:
        sar_clip_model.save_sar_clip(clip, staging, info)
        atomic_write_bytes(
            staging / "loss.png",
            pictures.line_plot_png(
                {"training": (range(1, len(losses) + 1), losses)}, "SAR-CLIP loss", "step", "loss"
            ),
        )
    storage.push("models", "sar_clip", name)
    write_latest(storage.mirror(), "sar_clip", {"sar_clip": str(folder), "dataset_version": version})
    retrieval = info["retrieval"]
    context.log.info(f"SAR-CLIP at {storage.uri_of(folder)}: retrieval {retrieval}")
    if not info["evaluation_held_out"]:
        context.log.warning(
            f"dataset {version} holds no tile out (test and validation empty): retrieval measured on the train split"
        )
    return dg.MaterializeResult(
        metadata={
            "sar_clip": dg.MetadataValue.path(storage.uri_of(folder)),
            "dataset_version": version,
            "train_pairs": info["train_pairs"],
            "train_distinct_captions": info["train_distinct_captions"],
            "evaluation_split": info["evaluation_split"],
            "evaluation_held_out": info["evaluation_held_out"],
            "evaluation_tiles": int(retrieval["tiles"]),
            "evaluation_distinct_captions": int(retrieval["distinct_captions"]),
            **{
                key: round(float(retrieval[key]), 4)
                for direction in ("text_to_image", "image_to_text")
                for k in (1, 5)
                for key in (f"{direction}_r{k}", f"chance_{direction}_r{k}")
            },
            "retrieval": dg.MetadataValue.md(_retrieval_table(retrieval)),
            "final_loss": round(float(losses[-1]), 5),
            "loss_curve": picture(
                storage, (folder / "loss.png").read_bytes(), "SAR-CLIP loss", path=str(folder / "loss.png")
            ),
        }
    )


class FidelityConfig(dg.Config, FidelitySettings):
    """How the checkpoints of the latest sd_model run and its base model are scored on held-out tiles."""


def _latest_run_dir(context: dg.AssetExecutionContext, storage: StorageRoot) -> Path:
    """The folder of the run of sd_model's latest materialisation (its ``run`` metadata, pulled from a
    remote root), else of the storage root's ``models/sd/latest.json`` (pulled likewise)."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey("sd_model"))
    run = event.asset_materialization.metadata.get("run") if event and event.asset_materialization else None
    if run is not None:
        name = str(run.value)
    else:
        run_dir = fidelity.run_dir_of(latest_model_folder(storage.mirror(), "sd_model"))
        if run_dir.parent != storage.local_path("models", "sd"):
            return run_dir  # an older pointer's absolute path outside this machine's copy
        name = run_dir.name
    storage.pull("models", "sd", name)  # the whole run: every checkpoint is scored
    return storage.local_path("models", "sd", name)


def _pull_run_inputs(storage: StorageRoot, run_dir: Path) -> None:
    """On a remote root, copy into this machine's local copy what scoring the run reads besides
    its folder: the dataset version it trained on and, when the run kept its base model in the
    storage root (the tiny base), that model. A base model outside it (local sd15 weights) must be
    at the recorded path here (``fidelity.base_model_path_here`` says so if not)."""
    train_config = fidelity.read_train_config(run_dir)
    pull_dataset_version(storage, train_config["dataset_version"])
    parts = fidelity.stored_parts(train_config["base_model_path"], train_config["storage_root"])
    if parts:
        storage.pull(*parts)


def _rounded(value: float) -> float | None:
    """A figure for display: 5 decimals, None (an empty cell) where it is not finite."""
    return round(value, 5) if math.isfinite(value) else None


def _table(report: dict) -> dg.MetadataValue:
    rows = fidelity.table_rows(report)
    columns = [dg.TableColumn("model", "string"), dg.TableColumn("step", "int")] + [
        dg.TableColumn(key, "float", description=f"{heading}{f' ({unit})' if unit else ''}")
        for key, (heading, unit, _) in fidelity.report_metrics(report["base"]["scores"]).items()
    ]
    records = [
        dg.TableRecord({k: (_rounded(v) if isinstance(v, float) else v) for k, v in row.items()})
        for row in rows
    ]
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))


@dg.asset(
    group_name="evaluation",
    deps=[sd_model, sar_clip],
    kinds={"pytorch"},
    pool=GPU_POOL,
    op_tags=GPU_STEP_TAGS,
    description="SAR fidelity of each checkpoint of the latest sd_model run and of its base model: for the held-out "
    "captions, images with fixed seeds compared with the real tiles — amplitude distances in dB (Wasserstein-1, "
    "Jensen–Shannon, KS; overall and per land-cover class), speckle (CV, ENL), GLCM texture distance, and "
    "adherence under sar_clip (real tiles the ceiling, the base model the floor); FID/KID too when inception_path "
    "names the FID Inception-v3's local weights. A table, plots of each metric "
    "against the training step, the best checkpoint; report under `evaluation/sar_fidelity/<run>/`.",
)
def sar_fidelity(
    context: dg.AssetExecutionContext, config: FidelityConfig, storage: StorageRoot
) -> dg.MaterializeResult:
    root = storage.local_path()
    run_dir = _latest_run_dir(context, storage)
    clip_folder = latest_model_folder(
        storage.mirror(), "sar_clip", latest_model_from_instance("sar_clip", context.instance)
    )
    clip = sar_clip_model.load_sar_clip(clip_folder, config.device)
    settings = FidelitySettings.model_validate(config.model_dump())

    def observe(entry: dict) -> None:
        scores = entry["scores"]
        context.log_event(
            dg.AssetObservation(
                asset_key="sar_fidelity",
                metadata={
                    "step": entry["step"],
                    "checkpoint": dg.MetadataValue.path(storage.uri_of(entry["pipeline"])),
                    **{key: round(float(scores[key]), 5) for key in fidelity.report_metrics(scores)},
                },
            )
        )

    _pull_run_inputs(storage, run_dir)
    report = fidelity.evaluate_run(run_dir, clip, settings, on_checkpoint=observe, storage_root=root)
    if not report["held_out"]:
        context.log.warning(
            f"dataset {report['dataset_version']} holds no tile out: the models are scored on train tiles"
        )
    plots = fidelity.metric_plots(report)
    folder = storage.local_path("evaluation", "sar_fidelity", validate_id(report["run"], "run name"))
    with atomic_local_dir(folder) as staging:
        (staging / "plots").mkdir()
        for key, png in plots.items():
            (staging / "plots" / f"{key}.png").write_bytes(png)
        (staging / "table.md").write_text(fidelity.markdown_table(report) + "\n")
        (staging / "report.json").write_text(json.dumps(report, indent=1, default=str))
    storage.push("evaluation", "sar_fidelity", folder.name)
    best = report["checkpoints"][report["best"]]
    base, real = report["base"]["scores"], report["real"]
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.path(storage.uri_of(folder / "report.json")),
            "run": report["run"],
            "dataset_version": report["dataset_version"],
            "evaluation_split": report["split"],
            "evaluation_held_out": report["held_out"],
            "tiles": report["tiles"],
            "images_per_caption": report["images_per_caption"],
            "best_checkpoint": dg.MetadataValue.path(storage.uri_of(best["pipeline"])),
            "best_step": best["step"],
            **{f"best_{key}": round(float(best["scores"][key]), 5) for key in fidelity.RANKED},
            **{f"base_{key}": round(float(base[key]), 5) for key in fidelity.RANKED},
            "real_clip_score": round(float(real["clip_score"]), 5),
            "beats_base": report["promotable"],
            "table": _table(report),
            "table_markdown": dg.MetadataValue.md(fidelity.markdown_table(report)),
            **{
                f"plot_{key}": picture(
                    storage,
                    png,
                    fidelity.report_metrics(base)[key][0],
                    path=storage.uri_of(folder / "plots" / f"{key}.png"),
                )
                for key, png in plots.items()
            },
        }
    )
