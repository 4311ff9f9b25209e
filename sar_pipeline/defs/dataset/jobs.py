import dagster as dg

# The cross-flight dataset stage on its own (the CLI's main job runs it after the per-flight job).
dataset_job = dg.define_asset_job(
    "dataset_job",
    selection=dg.AssetSelection.assets("training_dataset"),
    description="Rebuild the training dataset from every captioned flight (with its checks).",
)
