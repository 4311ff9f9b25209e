"""Concurrency pools: which steps may share the machine's GPUs.

Every step that puts a model on a GPU declares pool ``gpu``: ``latent_cache``, ``sd_model``,
``controlnet_model``, ``sar_clip``, ``sar_fidelity``, ``blip_remote_sensing``, ``caption_metrics``, and ``captions`` when the deployment captions with
BLIP (``$SAR_PIPELINE_CAPTIONER_MODEL`` set; the template captioner needs no GPU, so flights then
caption in parallel). Dagster gives a step a slot of its pool before it starts and holds it until
the step ends, across runs; the instance sets how many slots a pool has (``dagster.yaml``:
``concurrency.pools.default_limit``, or ``dagster instance concurrency set gpu N``):

- one GPU: ``gpu`` = 1 (the default): one GPU step at a time, so BLIP on a new flight waits for a
  training run instead of running out of GPU memory beside it;
- several GPUs on one host: keep ``gpu`` = 1 and let each step use them all (``sd_trainer``'s
  ``num_processes`` = number of GPUs: DDP through accelerate); two steps would otherwise both land
  on ``cuda:0``;
- Kubernetes: ``gpu`` = the number of GPUs the cluster gives this pipeline; each GPU step runs in
  its own pod that requests ``nvidia.com/gpu`` (``docker/k8s/``), and the device plugin shows it
  only its own GPU(s).
"""

GPU_POOL = "gpu"

#: tags of a step that puts a model on one GPU: under ``k8s_job_executor`` its pod requests the GPU
#: (ignored by the other executors)
GPU_STEP_TAGS = {
    "dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}
}
