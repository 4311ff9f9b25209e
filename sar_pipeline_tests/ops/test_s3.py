"""Point 2 of running at scale: everything on object storage, against an S3 server on 127.0.0.1.

moto's S3 server (``moto[server]``) stands in for the cloud service; the pipeline reaches it as it
would reach AWS S3 or MinIO: s3fs/boto3 for the catalogue and the storage root, GDAL's /vsis3/ for
the rasters, credentials and endpoint only from the environment. The STAC archive, its scenes, the
optical mosaic and the storage root are all ``s3://``; the per-flight stages, the dataset, the
latent cache and a short training run write there (the model stages through their local copy).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import boto3
import dagster as dg
import numpy as np
import pytest
from PIL import Image

from sar_pipeline.archive.demo import write_demo_archive
from sar_pipeline.archive.landcover import FIELD
from sar_pipeline.archive.simulate import SMALL_DEMO_SETTINGS
from sar_pipeline.cli_generation import run_command
from sar_pipeline.dataset import version_files
from sar_pipeline.defs.captions.assets import captions
from sar_pipeline.defs.captions.checks import captions_not_empty
from sar_pipeline.defs.captions.resources import CaptionerResource
from sar_pipeline.defs.dataset.assets import training_dataset
from sar_pipeline.defs.evaluation.assets import sar_clip, sar_fidelity
from sar_pipeline.defs.evaluation.checks import sar_fidelity_beats_base
from sar_pipeline.defs.flights.assets import sar_scenes
from sar_pipeline.defs.geo.assets import optical_tiles, sar_tiles
from sar_pipeline.defs.geo.resources import LandCoverResource, OpticalResource
from sar_pipeline.defs.resources import SarArchiveResource, StorageRoot
from sar_pipeline.defs.training.assets import controlnet_model, latent_cache, sd_model
from sar_pipeline.defs.training.resources import DiffusionBase, SdTrainerLauncher
from sar_pipeline.generation.conditioning import landcover_to_rgb
from sar_pipeline.generation.output import read_provenance
from sar_pipeline.storage import CACHE_VARIABLE, STORAGE_VARIABLE, resolve_dir
from sar_pipeline_tests.services import S3Server

TRAINING = {
    "max_train_steps": 4,
    "checkpoint_every_steps": 2,
    "train_batch_size": 4,
    "validation_prompts": ["An aerial view of a river"],
    "validation_steps": 2,
}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with S3Server() as server, pytest.MonkeyPatch.context() as patch:
        for key, value in server.env().items():
            patch.setenv(key, value)  # the training child inherits them too
        client = boto3.client("s3")
        for bucket in ("archive", "lake"):
            client.create_bucket(Bucket=bucket)
        demo = write_demo_archive(
            tmp_path_factory.mktemp("demo") / "demo", flights=1, seed=5, settings=SMALL_DEMO_SETTINGS
        )
        for path in demo.catalog_path.parent.rglob("*"):
            if path.is_file():
                key = "sar/" + path.relative_to(demo.catalog_path.parent).as_posix()
                client.upload_file(str(path), "archive", key)
        shutil.rmtree(demo.catalog_path.parent)  # nothing local left to fall back on
        yield server, client, demo.flight_ids[0]


def _keys(client, bucket: str, prefix: str = "") -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def test_archive_storage_and_model_stages_all_on_s3(s3, tmp_path):
    server, client, flight = s3
    storage = StorageRoot(uri="s3://lake/sar-pipeline", cache_dir=str(tmp_path / "cache"))
    resources = {
        "storage": storage,
        "archive": SarArchiveResource(uri="s3://archive/sar/catalog.json"),
        "optical": OpticalResource(kind="mosaic", uri="s3://archive/sar/optical/orthophoto.tif"),
        "landcover": LandCoverResource(),
        "captioner": CaptionerResource(),
        "diffusion_base": DiffusionBase(preset="tiny", tiny_vae_steps=5),
        "sd_trainer": SdTrainerLauncher(env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}),
    }
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("flight", [flight])
    per_flight = dg.materialize(
        [sar_scenes, sar_tiles, optical_tiles, captions, captions_not_empty],
        instance=instance,
        partition_key=flight,
        resources=resources,
        run_config={"ops": {"sar_tiles": {"config": {"tile_size": 64, "ground_sample_distance_m": 1.25}}}},
    )
    assert per_flight.success
    written = _keys(client, "lake", f"sar-pipeline/flights/{flight}/")
    for name in ("sar_scenes.parquet", "captions.parquet"):
        assert f"sar-pipeline/flights/{flight}/{name}" in written, name
    for folder in ("sar_tiles", "optical_tiles"):  # published folders: the version their pointer names
        current = storage.flight_folder(flight, folder).path.removeprefix("lake/")
        assert f"{current}/manifest.parquet" in written, folder
        assert any(k.endswith(".png") and k.startswith(current) for k in written), folder

    cross = dg.materialize(
        [training_dataset, latent_cache, sd_model],
        instance=instance,
        resources=resources,
        run_config={
            "ops": {"training_dataset": {"config": {"block_size_m": 100.0}}, "sd_model": {"config": TRAINING}}
        },
    )
    assert cross.success
    version = json.loads(
        client.get_object(Bucket="lake", Key="sar-pipeline/dataset/current.json")["Body"].read()
    )["version"]
    lake = _keys(client, "lake", "sar-pipeline/")
    dataset = resolve_dir(storage.path("dataset", version)).path.removeprefix("lake/")  # published folder
    assert f"{dataset}/manifest.json" in lake
    # the version's shards, which the model stages pulled into their local copy to read it
    shards = version_files(storage.root(), version)
    assert shards and {f"sar-pipeline/{rel}" for rel in shards} <= lake
    cache_meta = cross.asset_materializations_for_node("latent_cache")[0].metadata
    cache_uri = cache_meta["path"].value
    assert cache_uri.startswith(f"s3://lake/sar-pipeline/latents/{version}/")
    assert cache_uri.removeprefix("s3://lake/") + "/index.json" in lake
    # every checkpoint reached S3 as it was reported, complete (its checkpoint.json last)
    observations = [e.event_specific_data.asset_observation for e in cross.get_asset_observation_events()]
    assert [o.metadata["step"].value for o in observations] == [2, 4]
    for observation in observations:
        pipeline = observation.metadata["checkpoint"].value
        assert pipeline.startswith("s3://lake/sar-pipeline/models/sd/")
        checkpoint = pipeline.removeprefix("s3://lake/").removesuffix("/pipeline")
        assert {
            f"{checkpoint}/checkpoint.json",
            f"{pipeline.removeprefix('s3://lake/')}/model_index.json",
        } <= lake
    meta = cross.asset_materializations_for_node("sd_model")[0].metadata
    run = meta["run"].value
    assert f"sar-pipeline/models/sd/{run}/final.json" in lake
    assert f"sar-pipeline/models/tiny-base/{version}/model_index.json" in lake

    # another machine (an empty local copy) reuses the latent cache from S3 instead of encoding again
    again = dg.materialize(
        [latent_cache],
        instance=instance,
        resources={**resources, "storage": StorageRoot(uri=storage.uri, cache_dir=str(tmp_path / "other"))},
    )
    assert again.success
    assert again.asset_materializations_for_node("latent_cache")[0].metadata["path"].value == cache_uri

    # the evaluation on a third machine: its local copy holds neither the dataset, nor the tiny base
    # the run recorded under the training machine's copy (train_config.json), nor the SAR-CLIP
    evaluation = dg.materialize(
        [sar_clip, sar_fidelity, sar_fidelity_beats_base],
        instance=instance,
        resources={**resources, "storage": StorageRoot(uri=storage.uri, cache_dir=str(tmp_path / "third"))},
        run_config={
            "ops": {
                "sar_clip": {
                    "config": {"image_size_px": 32, "max_steps": 5, "batch_size": 4, "device": "cpu"}
                },
                "sar_fidelity": {
                    "config": {"max_tiles": 2, "steps": 2, "glcm_distances_px": [1], "device": "cpu"}
                },
            }
        },
    )
    assert evaluation.success
    fidelity_meta = evaluation.asset_materializations_for_node("sar_fidelity")[0].metadata
    assert fidelity_meta["run"].value == run
    report_uri = fidelity_meta["report"].value
    assert report_uri == f"s3://lake/sar-pipeline/evaluation/sar_fidelity/{run}/report.json"
    assert report_uri.removeprefix("s3://lake/") in _keys(client, "lake", "sar-pipeline/evaluation/")
    report = json.loads(
        client.get_object(Bucket="lake", Key=report_uri.removeprefix("s3://lake/"))["Body"].read()
    )
    # the base model was read from this machine's copy of the storage root
    assert report["base"]["model"] == str(
        tmp_path / "third" / "s3" / "lake" / "sar-pipeline" / "models" / "tiny-base" / version
    )
    assert [c["step"] for c in report["checkpoints"]] == [2, 4]

    # credentials came from the environment only: none in the event log
    for record in instance.all_logs(cross.run_id) + instance.all_logs(per_flight.run_id):
        assert server.secret_key not in str(record)

    _models_used_from_another_machine(instance, resources, client, tmp_path, run, version)


def _lake_json(client, key: str) -> dict:
    return json.loads(client.get_object(Bucket="lake", Key=f"sar-pipeline/{key}")["Body"].read())


def _models_used_from_another_machine(instance, resources, client, tmp_path, run, version):
    """The model pointers name checkpoints relative to the storage root: the training machine
    promotes one of its checkpoints, and a machine with an empty local copy generates with it,
    trains the ControlNet on it and sketches with that ControlNet."""
    trainer = StorageRoot(uri="s3://lake/sar-pipeline", cache_dir=str(tmp_path / "cache"))
    checkpoint = f"models/sd/{run}/checkpoints/checkpoint-00000002/pipeline"
    assert _lake_json(client, "models/sd/latest.json")["checkpoint"] == (
        f"models/sd/{run}/checkpoints/checkpoint-00000004/pipeline"
    )
    # promotion on the training machine, by the check, of a report naming its local copy's checkpoint
    scores = {"wasserstein_db": 1.0, "clip_score": 30.0, "glcm_distance": 0.5}
    report = {
        "run": run,
        "dataset_version": version,
        "real": {"clip_score": 40.0},
        "base": {"scores": {"wasserstein_db": 4.0, "clip_score": 20.0, "glcm_distance": 2.0}},
        "checkpoints": [
            {"step": 2, "pipeline": str(trainer.local_path(*checkpoint.split("/"))), "scores": scores}
        ],
        "best": 0,
    }
    key = "sar-pipeline/evaluation/hand-made/report.json"
    client.put_object(Bucket="lake", Key=key, Body=json.dumps(report).encode())
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            "sar_fidelity", metadata={"report": dg.MetadataValue.path(f"s3://lake/{key}")}
        )
    )
    promotion = dg.materialize(
        [sar_fidelity_beats_base],
        resources={"storage": trainer},
        instance=instance,
        selection=dg.AssetSelection.checks(sar_fidelity_beats_base),
    )
    assert promotion.get_asset_check_evaluations()[0].passed
    assert _lake_json(client, "models/sd/promoted.json")["checkpoint"] == checkpoint

    # sar-pipeline generate on another machine: no Dagster instance, an empty local copy
    other = tmp_path / "generator"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DAGSTER_HOME", raising=False)
        patch.setenv(STORAGE_VARIABLE, trainer.uri)
        patch.setenv(CACHE_VARIABLE, str(other))
        fast = ["--steps", "2", "--num-images", "1", "--device", "cpu", "--out", str(tmp_path / "out")]
        assert run_command(["generate", "a river", "--geotiff", *fast]) == 0
        here = StorageRoot(uri=trainer.uri, cache_dir=str(other)).local_path(*checkpoint.split("/"))
        (png,) = (tmp_path / "out").glob("text-*.png")
        assert read_provenance(png).checkpoint == str(here)
        assert png.with_suffix(".tif").is_file()  # the dataset's radiometry, read from the root

        # the ControlNet trained on yet another machine, on the promoted model it pulls
        builder = StorageRoot(uri=trainer.uri, cache_dir=str(tmp_path / "controlnet"))
        trained = dg.materialize(
            [controlnet_model],
            instance=instance,
            resources={**resources, "storage": builder},
            run_config={
                "ops": {
                    "controlnet_model": {
                        "config": {
                            "max_train_steps": 1,
                            "checkpoint_every_steps": 1,
                            "validation_tiles": 1,
                            "validation_steps": 1,
                        }
                    }
                }
            },
        )
        assert trained.success
        meta = trained.asset_materializations_for_node("controlnet_model")[0].metadata
        assert meta["sd_model"].value == f"{trainer.uri}/{checkpoint}"
        assert meta["sd_model_source"].value == "promoted"
        pointer = _lake_json(client, "models/controlnet/latest.json")
        assert pointer["sd_model"] == checkpoint and pointer["controlnet"].startswith("models/controlnet/")
        assert f"sar-pipeline/{pointer['controlnet']}/config.json" in _keys(
            client, "lake", "sar-pipeline/models/"
        )
        config = _lake_json(client, str(Path(pointer["controlnet"]).parents[2] / "controlnet_config.json"))
        assert config["sd_model_path"] == checkpoint

        # and the generating machine sketches with it
        sketch = tmp_path / "sketch.png"
        Image.fromarray(landcover_to_rgb(np.full((64, 64), FIELD, np.uint8))).save(sketch)
        assert run_command(["sketch", str(sketch), "fields", *fast]) == 0
        (drawn,) = (tmp_path / "out").glob("sketch-*.png")
        assert read_provenance(drawn).controlnet == str(
            StorageRoot(uri=trainer.uri, cache_dir=str(other)).local_path(*pointer["controlnet"].split("/"))
        )
