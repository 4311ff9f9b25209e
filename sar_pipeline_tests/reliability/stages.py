"""The pipeline stages the kill -9 trials run in a child process (``killpoints.KillServer``), each
through the same entry point a deployment uses: the Dagster assets (materialised in process on an
ephemeral instance) for a flight and for the dataset, the trainer's ``train`` for a training run."""

from __future__ import annotations

from typing import Any

#: the per-flight stages of ``flight_job``, in order
FLIGHT_ASSETS = ("sar_scenes", "sar_tiles", "optical_tiles", "captions")
#: tiling of the small demo: 9 tiles per scene (two scenes), each with land cover, idealised and optical tiles
DEMO_TILING = {"tile_size": 32, "ground_sample_distance_m": 2.0}


def flight_arguments(archive, storage, flight_id: str, dagster_home=None) -> dict[str, Any]:
    """:func:`materialise_flight`'s arguments for a flight of a demo ``archive`` (``DemoArchive``),
    written under ``storage`` with :data:`DEMO_TILING`."""
    return {
        "storage": str(storage),
        "catalog": str(archive.catalog_path),
        "optical": str(archive.optical_path),
        "flight_id": flight_id,
        "tiling": DEMO_TILING,
        "dagster_home": None if dagster_home is None else str(dagster_home),
    }


def _flight_assets():
    from sar_pipeline.defs.captions.assets import captions
    from sar_pipeline.defs.flights.assets import sar_scenes
    from sar_pipeline.defs.geo.assets import optical_tiles, sar_tiles

    return [sar_scenes, sar_tiles, optical_tiles, captions]


def materialise_flight(
    storage: str,
    catalog: str,
    optical: str,
    flight_id: str,
    tiling: dict[str, Any],
    dagster_home: str | None = None,
) -> None:
    """Materialise one flight's per-flight assets (sar_scenes → captions) into ``storage``, recording
    the run in the SQLite instance under ``dagster_home`` (None: an ephemeral one)."""
    import dagster as dg

    from sar_pipeline.defs.captions.resources import CaptionerResource
    from sar_pipeline.defs.geo.resources import LandCoverResource, OpticalResource
    from sar_pipeline.defs.resources import SarArchiveResource, StorageRoot

    if dagster_home:
        instance = dg.DagsterInstance.local_temp(tempdir=dagster_home)
    else:
        instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("flight", [flight_id])
    result = dg.materialize(
        _flight_assets(),
        partition_key=flight_id,
        instance=instance,
        resources={
            "storage": StorageRoot(uri=storage),
            "archive": SarArchiveResource(uri=catalog),
            "landcover": LandCoverResource(),
            "optical": OpticalResource(kind="mosaic", uri=optical),
            "captioner": CaptionerResource(),
        },
        run_config={"ops": {"sar_tiles": {"config": tiling}}},
    )
    assert result.success


def materialise_dataset(storage: str, flight_ids: list[str], settings: dict[str, Any]) -> None:
    """Materialise ``training_dataset`` over ``flight_ids`` (their tiles and captions already in ``storage``)."""
    import dagster as dg

    from sar_pipeline.defs.dataset.assets import training_dataset
    from sar_pipeline.defs.resources import StorageRoot

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("flight", list(flight_ids))
    result = dg.materialize(
        [training_dataset],
        instance=instance,
        resources={"storage": StorageRoot(uri=storage)},
        run_config={"ops": {"training_dataset": {"config": settings}}},
    )
    assert result.success


def import_training() -> None:
    """Import what a training run imports lazily (diffusers' and transformers' models and pipeline,
    accelerate, TensorBoard): ~2 s of CPU a forked trainer would otherwise spend on each start."""
    import accelerate  # noqa: F401
    import diffusers
    import transformers
    from diffusers.optimization import get_scheduler  # noqa: F401
    from diffusers.training_utils import EMAModel  # noqa: F401
    from torch.utils.tensorboard import SummaryWriter  # noqa: F401

    for name in ("StableDiffusionPipeline", "UNet2DConditionModel", "AutoencoderKL", "DDPMScheduler"):
        getattr(diffusers, name)
    for name in ("CLIPTextModel", "CLIPTokenizer", "CLIPTextConfig"):
        getattr(transformers, name)


def train_run(config: str) -> None:
    """Run (or resume) one training run from a ``TrainSettings`` file (``train_config.json``'s form)."""
    from sar_pipeline.diffusion.config import TrainSettings
    from sar_pipeline.diffusion.train import train

    train(TrainSettings.from_file(config))
