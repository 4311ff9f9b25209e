"""``sar-pipeline run --config FILE``: the Launchpad's run config from a YAML file, for every run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from types import SimpleNamespace

import pytest
import yaml

from sar_pipeline import paths
from sar_pipeline.cli import job_run_config, load_run_config, validate_run_config
from sar_pipeline.definitions import defs
from sar_pipeline.errors import ConfigError
from sar_pipeline.geo.manifest import read_manifest
from sar_pipeline.run_control import WORKSPACE_FILE
from sar_pipeline_tests.products import make_products
from sar_pipeline_tests.services import dagster_process, free_port, venv_tool


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


@pytest.fixture(scope="module")
def config_run(tmp_path_factory):
    """``sar-pipeline run --config FILE`` as a user runs it (its own process, its own terminal
    output), on a products archive of one flight and a tiny model."""
    tmp_path = tmp_path_factory.mktemp("config_run")
    products = make_products.write_products(tmp_path / "products")
    storage = tmp_path / "storage"
    home = tmp_path / "dagster_home"
    home.mkdir()
    # the project's instance settings, but runs submitted from the UI start at once (the default
    # coordinator) instead of waiting in the queue for a daemon this test does not start
    settings = yaml.safe_load((paths.PROJECT_ROOT / "dagster.yaml").read_text())
    settings["run_coordinator"] = {
        "module": "dagster._core.run_coordinator",
        "class": "DefaultRunCoordinator",
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings))
    env = {k: v for k, v in os.environ.items() if k not in ("SAR_PIPELINE_ARCHIVE", "SAR_PIPELINE_STORAGE")}
    env.update(DAGSTER_HOME=str(home), SAR_PIPELINE_DATA=str(tmp_path / "data"))
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
    process = subprocess.run(
        [venv_tool("sar-pipeline"), "run", "--config", str(config)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return SimpleNamespace(process=process, storage=storage, env=env, root=tmp_path)


@pytest.mark.slow
def test_run_with_a_config_file_sets_gsd_tile_size_and_sources_without_the_ui(config_run):
    assert config_run.process.returncode == 0, config_run.process.stdout + config_run.process.stderr
    storage = config_run.storage
    rows = read_manifest(storage / "flights" / "flight-native" / "sar_tiles" / "manifest.parquet")
    assert rows and all(r["height"] == 64 and r["ground_sample_distance_m"] == 2.0 for r in rows)
    assert all(r["landcover_path"] for r in rows)  # the land-cover source of the config file
    version = json.loads((storage / "dataset" / "current.json").read_text())["version"]
    (run,) = [p for p in (storage / "models" / "sd").iterdir() if p.is_dir()]  # beside latest.json
    # the pointer names the checkpoint relative to the storage root
    latest = json.loads((storage / "models" / "sd" / "latest.json").read_text())["checkpoint"]
    assert latest.startswith(f"models/sd/{run.name}/")
    assert run.name.startswith(version) and json.loads((run / "final.json").read_text())["steps"] == 2


@pytest.mark.slow
def test_the_terminal_shows_one_line_per_run_not_dagsters_event_log(config_run):
    out, err = config_run.process.stdout, config_run.process.stderr
    assert config_run.process.returncode == 0, out + err
    # Dagster's console logger prints each event as '<time> - dagster - DEBUG - <job> - <run id> - …'
    events = [line for line in (out + err).splitlines() if re.search(r" - dagster - (DEBUG|INFO) - ", line)]
    assert not events, events[:5]
    for what in ("flight flight-native", "dataset_job", "training_job"):
        (line,) = [line for line in out.splitlines() if line.startswith(f"  {what}: ")]
        assert re.search(r": ok \(\d+\.\d s, run [0-9a-f-]{36}\)$", line), line


def _graphql(port: int, query: str, **variables) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    assert "errors" not in answer, answer
    return answer["data"]


JOB_RUNS = """
query ($job: String!) {
  pipelineOrError(params: {repositoryLocationName: "sar_pipeline", repositoryName: "__repository__",
                           pipelineName: $job}) {
    __typename
    ... on Pipeline { pipelineSnapshotId runs { runId status pipelineSnapshotId } }
  }
}"""

REEXECUTE = """
mutation ($parent: String!) {
  launchPipelineReexecution(reexecutionParams: {parentRunId: $parent, strategy: ALL_STEPS}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""

RUN = """
query ($run: ID!) { runOrError(runId: $run) { __typename ... on Run { status pipelineName parentRunId } } }"""


@pytest.mark.slow
def test_the_ui_lists_the_runs_under_their_jobs_and_re_executes_them(config_run):
    """What the UI asks its GraphQL API on a job's page (runs of the job in this code location) and
    when the user re-executes one, against ``dagster-webserver`` over the project's workspace.yaml."""
    assert config_run.process.returncode == 0, config_run.process.stdout + config_run.process.stderr
    ran = dict(
        re.findall(r"^  (flight \S+|\w+_job): ok .*run ([0-9a-f-]{36})\)$", config_run.process.stdout, re.M)
    )
    port = free_port()
    args = [venv_tool("dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", str(WORKSPACE_FILE)]
    log = config_run.root / "webserver.log"
    with dagster_process(args, config_run.env, log, paths.PROJECT_ROOT, port=port, timeout_s=300):
        for what, job in (
            ("flight flight-native", "flight_job"),
            ("dataset_job", "dataset_job"),
            ("training_job", "training_job"),
        ):
            page = _graphql(port, JOB_RUNS, job=job)["pipelineOrError"]
            assert page["__typename"] == "Pipeline", page
            (run,) = [r for r in page["runs"] if r["runId"] == ran[what]]
            # the job as it is now: the UI re-executes without warning of another snapshot
            assert run["pipelineSnapshotId"] == page["pipelineSnapshotId"] and run["status"] == "SUCCESS"
        launched = _graphql(port, REEXECUTE, parent=ran["flight flight-native"])["launchPipelineReexecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        child = launched["run"]["runId"]
        deadline = time.monotonic() + 600
        while (run := _graphql(port, RUN, run=child)["runOrError"])["status"] not in (
            "SUCCESS",
            "FAILURE",
            "CANCELED",
        ):
            assert time.monotonic() < deadline, run
            time.sleep(2)
    assert run == {
        "__typename": "Run",
        "status": "SUCCESS",
        "pipelineName": "flight_job",
        "parentRunId": ran["flight flight-native"],
    }, log.read_text()[-3000:]
