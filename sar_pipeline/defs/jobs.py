import dagster as dg

from sar_pipeline.defs.flights.partitions import flight_partitions

# Everything computed per flight (archive query → tiles → optical → captions): one run per flight.
flight_job = dg.define_asset_job(
    "flight_job",
    selection=dg.AssetSelection.groups("flights"),
    partitions_def=flight_partitions,
    description="The per-flight stages for one flight partition.",
)

# Latent cache, Stable Diffusion fine-tuning on the current training dataset, and its evaluation
# (SAR-CLIP, SAR fidelity per checkpoint, promotion behind a check) (pool "gpu").
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.groups("training", "evaluation"),
    description="Cache VAE latents of the current dataset version, fine-tune the diffusion model, then score its "
    "checkpoints against the base model (sar_clip, sar_fidelity) and promote the best one if it beats the base.",
)
