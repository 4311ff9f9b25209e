"""Where a model or a generated image comes from, as the Dagster instance recorded it.

Generation's default model is the promoted ``sd_model`` checkpoint (``models/sd/promoted.json``,
written by ``sar_fidelity``'s check), else the latest ``sd_model`` materialisation the instance
holds; its default ControlNet is the latest ``controlnet_model`` materialisation
(``sar_pipeline.generation.model.default_sd_model``, :func:`latest_model_from_instance`).
``sar-pipeline provenance IMAGE`` joins a PNG's provenance to the ``sd_model`` run that wrote its
checkpoint and to the dataset version's flights and tile counts. Without an instance (no
``$DAGSTER_HOME``, or another machine) the storage root's pointers (``models/<kind>/latest.json``)
and the dataset's own version manifest say the same, less the run.

This module uses Dagster (like ``cli.py``); domain code never imports it.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any


def instance_or_none():
    """The Dagster instance of ``$DAGSTER_HOME`` when it is set and exists, else None."""
    home = os.environ.get("DAGSTER_HOME")
    if not home or not Path(home).is_dir():
        return None
    import dagster as dg

    try:
        return dg.DagsterInstance.get()
    except Exception:  # an instance that cannot be opened is as good as none here
        return None


def latest_model_from_instance(asset: str, instance=None) -> str | None:
    """The model folder of ``asset``'s latest materialisation (metadata ``checkpoint`` /
    ``controlnet``), or None when the instance has none."""
    import dagster as dg

    from sar_pipeline.generation.model import MODEL_KEYS

    instance = instance or instance_or_none()
    if instance is None:
        return None
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get(MODEL_KEYS[asset])
    return str(value.value) if value is not None else None


def _events(instance, asset: str, kind: str) -> list[Any]:
    import dagster as dg

    fetch = instance.fetch_materializations if kind == "materialization" else instance.fetch_observations
    return list(fetch(dg.AssetKey(asset), limit=1000).records)


def model_run(checkpoint: str, instance=None) -> dict[str, Any] | None:
    """The ``sd_model`` run that recorded ``checkpoint`` (a materialisation or a checkpoint
    observation whose ``checkpoint`` metadata is that folder): run id, time, kind; None if unknown."""
    instance = instance or instance_or_none()
    if instance is None:
        return None
    wanted = str(Path(checkpoint))
    for kind in ("materialization", "observation"):
        for record in _events(instance, "sd_model", kind):
            entry = record.asset_materialization if kind == "materialization" else record.asset_observation
            value = entry.metadata.get("checkpoint") if entry is not None else None
            if value is not None and str(Path(str(value.value))) == wanted:
                return {"run_id": record.run_id, "timestamp": record.timestamp, "recorded_as": kind}
    return None


def describe(provenance, storage_root: str | None = None, instance=None) -> list[str]:
    """Lines for ``sar-pipeline provenance``: how the image was made, the checkpoint, the
    ``sd_model`` run, the dataset version, and the flights and tile counts it was trained on."""
    from sar_pipeline.dataset import dataset_info, load_dataset_table
    from sar_pipeline.errors import SarPipelineError

    p = provenance
    lines = [
        f"mode: {p.mode}",
        f"prompt: {p.prompt!r}  (conditioning text {p.text!r})",
        f"negative prompt: {p.negative_prompt!r}",
        f"seed {p.seed}, {p.steps} steps, scheduler {p.scheduler}, guidance {p.guidance_scale} "
        f"(rescale {p.guidance_rescale})"
        + (f", strength {p.strength}" if p.strength is not None else "")
        + (f", conditioning scale {p.conditioning_scale}" if p.conditioning_scale is not None else ""),
    ]
    if p.input:
        lines.append(f"input: {p.input}")
    lines.append(f"checkpoint: {p.checkpoint} (step {p.checkpoint_step})")
    if p.controlnet:
        lines.append(f"controlnet: {p.controlnet} (step {p.controlnet_step})")
    run = model_run(p.checkpoint, instance)
    lines.append(
        f"sd_model run: {run['run_id']} ({run['recorded_as']})"
        if run
        else "sd_model run: not in this Dagster instance ($DAGSTER_HOME)"
    )
    lines.append(f"dataset version: {p.dataset_version}")
    if storage_root and p.dataset_version:
        try:
            info = dataset_info(storage_root, p.dataset_version)
            counts = info.get("row_counts", {})
            table = load_dataset_table(
                storage_root, version=p.dataset_version, split="train", columns=["flight_id"]
            )
            per_flight = Counter(table.column("flight_id").to_pylist())
            lines.append(
                f"trained on {counts.get('train', table.num_rows)} train tiles of {len(per_flight)} flight(s): "
                + ", ".join(f"{f} ({n} tiles)" for f, n in sorted(per_flight.items()))
            )
            lines.append(f"dataset row counts: {counts}")
        except SarPipelineError as exc:
            lines.append(f"dataset: not readable under {storage_root} ({exc.reason})")
    lines.append(f"software: {p.software}, created {p.created_utc}")
    return lines
