import dagster as dg

from sar_pipeline.defs.flights.partitions import flight_partitions

# Everything computed per flight (archive query → tiles → optical → captions): one run per flight.
flight_job = dg.define_asset_job(
    "flight_job",
    selection=dg.AssetSelection.groups("flights"),
    partitions_def=flight_partitions,
    description="The per-flight stages for one flight partition.",
)
