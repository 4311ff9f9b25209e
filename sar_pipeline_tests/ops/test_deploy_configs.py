"""Docker and Kubernetes deployment files, checked with the tools that run here (no Docker engine,
no cluster): the compose schema, Dagster's own config schemas, and the Kubernetes client's models."""

import json
import os
import re
import subprocess
import sys
import tomllib

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.definitions.definition_config_schema import convert_user_facing_definition_config_schema
from dagster._core.instance.config import dagster_instance_config
from dagster._core.workspace.config_schema import process_workspace_config
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job
from dagster_k8s.pipes import build_pod_body

from sar_pipeline import paths
from sar_pipeline_tests.services import venv_tool

DOCKER = paths.PROJECT_ROOT / "docker"
POSTGRES_ENV = {
    "DAGSTER_POSTGRES_HOST": "postgres",
    "DAGSTER_POSTGRES_PORT": "5432",
    "DAGSTER_POSTGRES_USER": "dagster",
    "DAGSTER_POSTGRES_PASSWORD": "from-a-secret",
    "DAGSTER_POSTGRES_DB": "dagster",
    "DAGSTER_K8S_NAMESPACE": "sar",
}


def _schema_check(*files) -> subprocess.CompletedProcess:
    return subprocess.run(
        [venv_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *map(str, files)],
        capture_output=True,
        text=True,
    )


def test_compose_files_follow_the_compose_specification(tmp_path):
    ok = _schema_check(DOCKER / "compose.yaml", DOCKER / "compose.gpu.yaml")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # the check can fail: a misspelt key is refused
    broken = tmp_path / "compose.yaml"
    broken.write_text((DOCKER / "compose.yaml").read_text().replace("healthcheck:", "healthchek:"))
    assert _schema_check(broken).returncode != 0


def test_compose_wires_postgres_webserver_daemon_and_the_grpc_code_location():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "code", "webserver", "daemon"}
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    (server,) = [entry["grpc_server"] for entry in workspace["load_from"]]
    assert server["host"] == "code" and str(server["port"]) in " ".join(
        yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]["code"].get("command", [])
        or _dockerfile_stage_cmd("code")
    )
    for name in ("webserver", "daemon"):
        mounts = " ".join(services[name]["volumes"])
        assert "./dagster.yaml:" in mounts and "./workspace.yaml:" in mounts
    # credentials: the password is required from the environment, written nowhere
    text = (DOCKER / "compose.yaml").read_text()
    assert "${DAGSTER_POSTGRES_PASSWORD:?" in text
    assert services["webserver"]["ports"] == ["127.0.0.1:3000:3000"]
    # every build target named exists in the Dockerfile
    targets = {s["build"]["target"] for s in services.values() if "build" in s}
    assert targets <= set(_dockerfile_stages())


def _dockerfile_stages() -> dict[str, str]:
    text = (DOCKER / "Dockerfile").read_text()
    parts = re.split(r"^FROM \S+ AS (\w+)\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _dockerfile_stage_cmd(stage: str) -> list[str]:
    body = _dockerfile_stages()[stage].replace("\\\n", " ")
    (cmd,) = re.findall(r"^CMD (\[.*\])$", body, flags=re.M)
    return json.loads(cmd)


def test_images_install_as_scripts_setup_does_at_the_project_pins():
    stages = _dockerfile_stages()
    # the code-location images (CPU and CUDA: one stage, TORCH_SPEC differs) run scripts/setup itself
    assert re.search(r"^RUN .*SAR_PIPELINE_EXTRAS=deploy scripts/setup", stages["code"], flags=re.M)
    assert "COPY scripts ./scripts" in stages["code"]
    setup = (paths.PROJECT_ROOT / "scripts" / "setup").read_text()
    assert "TORCH_SPEC" in setup and "SAR_PIPELINE_EXTRAS" in setup
    assert _dockerfile_stage_cmd("code")[-1] == "sar_pipeline"  # the one code-location name
    # the webserver/daemon image: Dagster alone, at pyproject's pins
    pyproject = tomllib.loads((paths.PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(
        re.match(r"([\w-]+)==([\w.]+)", d).groups()
        for d in pyproject["dependencies"] + pyproject["optional-dependencies"]["deploy"]
        if "==" in d
    )
    installed = dict(re.findall(r"([\w-]+)==([\w.]+)", stages["dagster"]))
    assert installed and all(pins[name] == version for name, version in installed.items())
    assert {"dagster", "dagster-webserver", "dagster-postgres"} <= set(installed)
    gpu = yaml.safe_load((DOCKER / "compose.gpu.yaml").read_text())["services"]["code"]
    assert "cu128" in gpu["build"]["args"]["TORCH_SPEC"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


@pytest.mark.parametrize("config", ["dagster.yaml", "docker/dagster.yaml", "docker/k8s/dagster.yaml"])
def test_instance_configs_are_valid_dagster_instance_settings(config, tmp_path, monkeypatch):
    for key, value in POSTGRES_ENV.items():
        monkeypatch.setenv(key, value)
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((paths.PROJECT_ROOT / config).read_text())
    settings, _ = dagster_instance_config(str(home))  # raises DagsterInvalidConfigError when invalid
    assert settings["telemetry"] == {"enabled": False}
    launcher = settings.get("run_launcher") or {}
    if launcher.get("class") == "K8sRunLauncher":
        schema = convert_user_facing_definition_config_schema(K8sRunLauncher.config_type()).config_type
        result = process_config(schema, launcher["config"])
        assert result.success, result.errors
        assert result.value["env_secrets"] == ["sar-pipeline-secrets"]


def test_workspaces_are_valid_dagster_workspaces():
    for name in ("workspace.yaml", "docker/workspace.yaml"):
        result = process_workspace_config(yaml.safe_load((paths.PROJECT_ROOT / name).read_text()))
        assert result.success, (name, result.errors)


def test_k8s_executor_config_is_valid_and_builds_step_jobs():
    config = yaml.safe_load((DOCKER / "k8s" / "executor.yaml").read_text())
    result = process_config(k8s_job_executor.config_schema.config_type, config)
    assert result.success, result.errors
    # the step pod as the executor builds it: the Kubernetes client's models accept every field
    step = UserDefinedDagsterK8sConfig.from_dict(config["step_k8s_config"])
    job_config = DagsterK8sJobConfig(
        job_image="sar-pipeline:cuda",
        dagster_home="/opt/dagster/home",
        instance_config_map="sar-pipeline-instance",
        env_config_maps=config["env_config_maps"],
        env_secrets=config["env_secrets"],
    )
    job = construct_dagster_k8s_job(job_config, ["dagster", "api", "execute_step"], "step-job", step)
    pod = job.spec.template.spec
    assert pod.volumes[0].persistent_volume_claim.claim_name == "sar-pipeline-cache"
    assert pod.containers[0].volume_mounts[0].mount_path == "/cache"


PROBE = """
import json
from sar_pipeline.definitions import defs
d = defs()
assets = {k: d.resolve_assets_def(k) for k in ("latent_cache", "sd_model", "captions", "sar_tiles")}
print(json.dumps({
    "executors": {j: d.resolve_job_def(j).executor_def.name for j in ("flight_job", "training_job")},
    "trainer": type(d.resources["sd_trainer"]).__name__,
    "tags": {k: a.op.tags.get("dagster-k8s/config") for k, a in assets.items()},
}))
"""


def test_kubernetes_definitions_run_steps_as_jobs_and_training_in_a_gpu_pod():
    env = {
        **os.environ,
        "SAR_PIPELINE_K8S_EXECUTOR": str(DOCKER / "k8s" / "executor.yaml"),
        "SAR_PIPELINE_TRAINER_IMAGE": "registry.example/sar-pipeline:cuda",
    }
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["executors"] == {"flight_job": "k8s_steps", "training_job": "k8s_steps"}
    assert loaded["trainer"] == "SdTrainerK8s"
    gpu = {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}
    assert json.loads(loaded["tags"]["latent_cache"]) == gpu  # op tags hold JSON strings
    assert loaded["tags"]["sd_model"] is None  # the step only watches the training pod
    assert loaded["tags"]["sar_tiles"] is None and loaded["tags"]["captions"] is None  # CPU work


def test_training_pod_requests_gpus_and_mounts_the_shared_cache():
    from sar_pipeline.defs.training.resources import K8S_ENV_CONFIG_MAP, K8S_SECRET, SdTrainerK8s

    trainer = SdTrainerK8s(gpus=4, num_processes=4)
    command, env = trainer.command("/cache/models/sd/run/train_config.json")
    assert command[1:4] == ["-m", "accelerate.commands.launch", "--multi_gpu"]
    pod = build_pod_body(
        "train",
        "sar-pipeline:cuda",
        command,
        env,
        None,
        trainer.pod_spec([K8S_ENV_CONFIG_MAP], [K8S_SECRET]),
    )
    (container,) = pod.spec.containers
    assert container.resources.limits["nvidia.com/gpu"] == "4"
    assert container.image == "sar-pipeline:cuda" and container.command == command
    assert container.volume_mounts[0].mount_path == "/cache"
    assert pod.spec.volumes[0].persistent_volume_claim.claim_name == "sar-pipeline-cache"
    assert {e.secret_ref.name for e in container.env_from if e.secret_ref} == {K8S_SECRET}
    assert pod.spec.restart_policy == "Never"
    assert isinstance(trainer, dg.ConfigurableResource)
