"""Model quality assets: the SAR-CLIP that judges prompt adherence.

``sar_clip`` trains a CLIP on the dataset's own tile / caption pairs (``evaluation.clip``).
"""

import hashlib

import dagster as dg

from sar_pipeline import pictures
from sar_pipeline.defs.pictures import picture
from sar_pipeline.defs.pools import GPU_POOL, GPU_STEP_TAGS
from sar_pipeline.defs.resources import StorageRoot
from sar_pipeline.defs.training.assets import upstream_dataset_version
from sar_pipeline.evaluation import clip as sar_clip_model
from sar_pipeline.evaluation.clip import SarClipSettings
from sar_pipeline.generation.model import write_latest
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
    storage.pull("dataset", "current.json")
    storage.pull("dataset", version)
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
    write_latest(root, "sar_clip", {"sar_clip": str(folder), "dataset_version": version})
    storage.push("models", "sar_clip", "latest.json")
    retrieval = info["retrieval"]
    context.log.info(f"SAR-CLIP at {storage.uri_of(folder)}: retrieval {retrieval}")
    return dg.MaterializeResult(
        metadata={
            "sar_clip": dg.MetadataValue.path(storage.uri_of(folder)),
            "dataset_version": version,
            "train_pairs": info["train_pairs"],
            "train_distinct_captions": info["train_distinct_captions"],
            "evaluation_split": info["evaluation_split"],
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
