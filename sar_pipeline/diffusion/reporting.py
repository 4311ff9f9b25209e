"""What a training run tells the world: console lines, Dagster Pipes messages, the loss history, throughput.

Standalone the trainer logs to the console; launched by Dagster Pipes (the ``sd_model`` asset) it
also reports one custom message per checkpoint and the final materialisation to the parent.
Under ``accelerate launch`` only the main process reports.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Any

import torch

from sar_pipeline.errors import SarPipelineError


class Reporter:
    """Sends progress to the console and, under Dagster Pipes, to the orchestrating process."""

    def __init__(self, pipes=None):
        self.pipes = pipes

    def log(self, message: str) -> None:
        print(message, flush=True)
        if self.pipes is not None:
            self.pipes.log.info(message)

    def checkpoint(self, payload: dict[str, Any]) -> None:
        if self.pipes is not None:
            self.pipes.report_custom_message({"kind": "checkpoint", **payload})

    def materialization(self, metadata: dict[str, Any]) -> None:
        if self.pipes is not None:
            self.pipes.report_asset_materialization(metadata=metadata)


@contextlib.contextmanager
def open_reporter():
    """A Reporter bound to Dagster Pipes if this process was launched by Pipes and is rank 0."""
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main and PipesEnvVarParamsLoader().is_dagster_pipes_process():
        with open_dagster_pipes() as pipes:
            yield Reporter(pipes)
    else:
        yield Reporter(None)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (only for timing; the loop itself never waits on the GPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class LossLog:
    """Step losses kept on the device and copied to the host in one sync when they are read."""

    def __init__(self, history: list[list[float]], on_flush=None):
        self.history = history  # [step, mean loss of that step], extended in place
        self.pending: list[tuple[int, torch.Tensor]] = []
        self.on_flush = on_flush

    def add(self, step: int, loss: torch.Tensor) -> None:
        self.pending.append((step, loss))

    def flush(self) -> float:
        """Copy pending losses to the host, extend the history; return the last loss (nan if none)."""
        if self.pending:
            values = torch.stack([v for _, v in self.pending]).tolist()
            for (step, _), value in zip(self.pending, values, strict=True):
                if not math.isfinite(value):
                    # weights are now NaN/inf: every later step and checkpoint would be garbage that
                    # still "succeeds"; the checkpoints before this step stay as they are
                    raise SarPipelineError(
                        f"training loss at step {step}",
                        f"is {value}: training diverged. Lower unet_learning_rate/text_encoder_learning_rate "
                        "or enable max_grad_norm; the run resumes from its last good checkpoint",
                    )
            self.history.extend([step, value] for (step, _), value in zip(self.pending, values, strict=True))
            self.pending = []
            if self.on_flush is not None:
                self.on_flush(self.history[-1][1])
        return self.history[-1][1] if self.history else float("nan")


class Throughput:
    """Images per second of the optimizer steps after a warm-up, checkpoint writing left out."""

    def __init__(self, device: torch.device, start_step: int, warmup_steps: int):
        self.device = device
        self.warm_at = start_step + warmup_steps
        self.images = 0
        self.seconds = 0.0
        self.started: float | None = None
        if warmup_steps == 0:  # no warm-up: time from the first step
            self.started = time.perf_counter()

    def count(self, images: int) -> None:
        """Count the images of one micro-batch (all processes) once timing has started."""
        if self.started is not None:
            self.images += images

    def step_done(self, step: int) -> None:
        """Start timing after the warm-up steps (and reset the peak-memory counter then)."""
        if step == self.warm_at:
            synchronize(self.device)
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            self.started = time.perf_counter()

    @contextlib.contextmanager
    def paused(self):
        """Leave what runs inside (checkpoint writing, sampling) out of the timing."""
        self.stop()
        try:
            yield
        finally:
            if self.started is not None:
                self.started = time.perf_counter()

    def stop(self) -> None:
        if self.started is not None:
            synchronize(self.device)
            self.seconds += time.perf_counter() - self.started
            self.started = time.perf_counter()

    def images_per_second(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 else None
