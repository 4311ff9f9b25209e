"""Promotion behind a check: the best checkpoint becomes generation's default only when it beats the base model."""

import json

import dagster as dg

from sar_pipeline.defs.evaluation.assets import sar_fidelity
from sar_pipeline.defs.resources import StorageRoot
from sar_pipeline.errors import SarPipelineError
from sar_pipeline.evaluation.fidelity import beats_base
from sar_pipeline.generation.model import write_promoted


def _latest_report(context: dg.AssetCheckExecutionContext, storage: StorageRoot) -> dict:
    """The report of sar_fidelity's latest materialisation (its ``report`` metadata)."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey("sar_fidelity"))
    entry = (
        event.asset_materialization.metadata.get("report") if event and event.asset_materialization else None
    )
    if entry is None:
        raise SarPipelineError(
            "sar_fidelity", "no materialisation with a report yet: materialise sar_fidelity first"
        )
    return json.loads(storage.pull_recorded(str(entry.value)).read_text())


@dg.asset_check(
    asset=sar_fidelity,
    blocking=True,
    description="Promotes sar_fidelity's best checkpoint to generation's default model (`models/sd/promoted.json`, "
    "which `sar-pipeline generate` prefers over the latest sd_model) only when it beats the base model on amplitude "
    "distance (lower Wasserstein-1 in dB) and prompt adherence (higher SAR-CLIP score); otherwise it fails with "
    "WARN severity, promoting nothing: the model trained well enough to be kept, the run stays green, and "
    "generation keeps its previous default.",
)
def sar_fidelity_beats_base(
    context: dg.AssetCheckExecutionContext, storage: StorageRoot
) -> dg.AssetCheckResult:
    report = _latest_report(context, storage)
    best = report["checkpoints"][report["best"]]
    base = report["base"]["scores"]
    promotable, reasons = beats_base(best["scores"], base)
    metadata = {
        "run": report["run"],
        "best_step": best["step"],
        "best_checkpoint": dg.MetadataValue.path(storage.uri_of(best["pipeline"])),
        "wasserstein_db": round(float(best["scores"]["wasserstein_db"]), 5),
        "base_wasserstein_db": round(float(base["wasserstein_db"]), 5),
        "clip_score": round(float(best["scores"]["clip_score"]), 5),
        "base_clip_score": round(float(base["clip_score"]), 5),
        "real_clip_score": round(float(report["real"]["clip_score"]), 5),
    }
    if not promotable:
        # WARN: a model that merely fails to beat its base is not a failed run (ERROR would fail it)
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description="not promoted: " + "; ".join(reasons),
            metadata={**metadata, "reasons": dg.MetadataValue.json(reasons)},
        )
    from sar_pipeline.generation.output import now_utc  # imports torch: not at code-location load

    pointer = write_promoted(
        storage.mirror(),  # the checkpoint stored relative to the storage root; uploaded to a remote one
        {
            "checkpoint": best["pipeline"],
            "run": report["run"],
            "step": best["step"],
            "dataset_version": report["dataset_version"],
            "scores": {k: best["scores"][k] for k in ("wasserstein_db", "clip_score", "glcm_distance")},
            "base_scores": {k: base[k] for k in ("wasserstein_db", "clip_score", "glcm_distance")},
            "promoted_at": now_utc(),
        },
    )
    return dg.AssetCheckResult(
        passed=True,
        description=f"promoted checkpoint {best['step']} of run {report['run']}",
        metadata={**metadata, "promoted": dg.MetadataValue.path(storage.uri_of(pointer))},
    )
