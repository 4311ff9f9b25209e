"""``sar-pipeline run --config FILE``: the Launchpad's run config from a YAML file, for every run."""

from __future__ import annotations

import json

import pytest
import yaml

from sar_pipeline.cli import job_run_config, load_run_config, main, validate_run_config
from sar_pipeline.definitions import defs
from sar_pipeline.errors import ConfigError
from sar_pipeline.geo.manifest import read_manifest
from sar_pipeline_tests.products import make_products


def _write(path, config):
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_typo_or_a_wrong_value_names_the_file_and_the_setting_before_anything_runs(tmp_path):
    definitions = defs()
    typo = _write(tmp_path / "typo.yaml", {"ops": {"sar_tile": {"config": {"tile_size": 256}}}})
    with pytest.raises(ConfigError, match=r"typo.yaml.*\['sar_tile'\] are not part of the main job"):
        load_run_config(typo, definitions)
    wrong = _write(tmp_path / "wrong.yaml", {"ops": {"sar_tiles": {"config": {"tile_size": -3}}}})
    config = load_run_config(wrong, definitions)
    with pytest.raises(ConfigError, match=r"(?s)wrong.yaml: ops.sar_tiles.config: .*tile_size"):
        validate_run_config(definitions, config, wrong)
    unknown_field = _write(tmp_path / "field.yaml", {"ops": {"sar_tiles": {"config": {"tile_sise": 256}}}})
    with pytest.raises(ConfigError, match=r"(?s)field.yaml: invalid for flight_job.*tile_sise"):
        validate_run_config(definitions, load_run_config(unknown_field, definitions), unknown_field)
    (tmp_path / "bad.yaml").write_text("ops: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_config(tmp_path / "bad.yaml", definitions)


def test_each_job_gets_its_own_ops_and_every_resource():
    definitions = defs()
    config = {
        "ops": {
            "sar_tiles": {"config": {"tile_size": 256}},
            "training_dataset": {"config": {"block_size_m": 900}},
        },
        "resources": {"storage": {"config": {"uri": "/tmp/x"}}},
    }
    flight = job_run_config(definitions.resolve_job_def("flight_job"), config)
    dataset = job_run_config(definitions.resolve_job_def("dataset_job"), config)
    assert flight == {"ops": {"sar_tiles": {"config": {"tile_size": 256}}}, "resources": config["resources"]}
    assert dataset["ops"] == {"training_dataset": {"config": {"block_size_m": 900}}}


@pytest.mark.slow
def test_run_with_a_config_file_sets_gsd_tile_size_and_sources_without_the_ui(tmp_path, monkeypatch):
    products = make_products.write_products(tmp_path / "products")
    storage = tmp_path / "storage"
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("SAR_PIPELINE_DATA", str(tmp_path / "data"))
    for variable in ("SAR_PIPELINE_ARCHIVE", "SAR_PIPELINE_STORAGE"):
        monkeypatch.delenv(variable, raising=False)
    config = _write(
        tmp_path / "run.yaml",
        {
            "resources": {
                # a collection.json as the archive root: that one flight; its rasters lie beside it
                "archive": {
                    "config": {
                        "uri": str(products.root / "flight-native" / "collection.json"),
                        "allowed_href_roots": [str(products.root)],
                    }
                },
                "storage": {"config": {"uri": str(storage)}},
                "landcover": {"config": {"uri": str(products.worldcover)}},
                "optical": {"config": {"uri": str(products.root / "no-orthophoto.tif")}},
                "diffusion_base": {"config": {"preset": "tiny", "tiny_vae_steps": 2}},
                "sd_trainer": {"config": {"env": {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}}},
            },
            "ops": {
                "sar_tiles": {"config": {"ground_sample_distance_m": 2.0, "tile_size": 64}},
                # 'balanced': 200 m blocks of 128 m tiles ('hash' would leave train empty here)
                "training_dataset": {"config": {"block_size_m": 200.0, "assignment": "balanced"}},
                "sd_model": {
                    "config": {
                        "max_train_steps": 2,
                        "checkpoint_every_steps": 2,
                        "train_batch_size": 2,
                        "validation_steps": 2,
                        "validation_prompts": ["An aerial view of a river"],
                    }
                },
            },
        },
    )
    assert main(["run", "--config", str(config)]) == 0
    rows = read_manifest(storage / "flights" / "flight-native" / "sar_tiles" / "manifest.parquet")
    assert rows and all(r["height"] == 64 and r["ground_sample_distance_m"] == 2.0 for r in rows)
    assert all(r["landcover_path"] for r in rows)  # the land-cover source of the config file
    version = json.loads((storage / "dataset" / "current.json").read_text())["version"]
    (run,) = [p for p in (storage / "models" / "sd").iterdir() if p.is_dir()]  # beside latest.json
    assert json.loads((storage / "models" / "sd" / "latest.json").read_text())["checkpoint"].startswith(
        str(run)
    )
    assert run.name.startswith(version) and json.loads((run / "final.json").read_text())["steps"] == 2
