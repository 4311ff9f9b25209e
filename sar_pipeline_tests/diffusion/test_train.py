import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sar_pipeline.diffusion.checkpoint import CheckpointError, list_checkpoints
from sar_pipeline.diffusion.latent_cache import LatentCacheError
from sar_pipeline.diffusion.launch import TrainerLaunchSettings, launch_command
from sar_pipeline.diffusion.models import load_base_model
from sar_pipeline.diffusion.train import train
from sar_pipeline.errors import ConfigError
from sar_pipeline_tests.diffusion.conftest import CHILD_ENV, run_child, tiny_config
from sar_pipeline_tests.diffusion.synthetic import write_synthetic_dataset


def _weights(folder, component):
    name = "model.safetensors" if component == "text_encoder" else "diffusion_pytorch_model.safetensors"
    return load_file(str(folder / component / name))


def _changed(a, b):
    return any(not torch.equal(a[k], b[k]) for k in a)


def _sample(folder, seed=7):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator().manual_seed(seed)
    out = pipe(
        "An aerial view of a river",
        num_inference_steps=3,
        height=64,
        width=64,
        generator=gen,
        output_type="np",
    )
    return out.images[0]


def test_full_finetune_checkpoints_reload_and_reproduce(tiny_world, tmp_path):
    summary = train(tiny_config(tiny_world, tmp_path / "run"))
    checkpoints = list_checkpoints(tmp_path / "run")
    assert [c.name for c in checkpoints] == ["checkpoint-00000002", "checkpoint-00000004"]
    info = json.loads((checkpoints[-1] / "checkpoint.json").read_text())
    assert info["step"] == 4 and info["learning_rates"] == {"unet": 1e-3, "text_encoder": 1e-4}
    pipeline = checkpoints[-1] / "pipeline"
    assert summary["pipeline"] == str(pipeline)
    assert (tmp_path / "run" / "samples" / "step-00000004.png").is_file()
    assert list((tmp_path / "run" / "logs").rglob("events.out.tfevents*"))
    # both trained parts moved away from the base weights
    for part in ("unet", "text_encoder"):
        assert _changed(_weights(pipeline, part), _weights(tiny_world["base"], part)), part
    # from_pretrained reloads it, and the same seed gives the same image
    first, second = _sample(pipeline), _sample(pipeline)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, _sample(tiny_world["base"]))


def test_held_out_loss_at_each_checkpoint_is_deterministic(tiny_world, tmp_path):
    """Fixed timesteps and noise: the same weights give the same number; training moves it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sar_pipeline.diffusion.objective import held_out_loss, training_noise_scheduler
    from sar_pipeline.diffusion.train import Reporter, load_held_out

    run = tmp_path / "run"
    summary = train(tiny_config(tiny_world, run, max_train_steps=2, checkpoint_every_steps=1))
    infos = [json.loads((c / "checkpoint.json").read_text()) for c in list_checkpoints(run)]
    losses = [i["validation_loss"] for i in infos]
    assert all(loss > 0 for loss in losses) and losses[0] != losses[1]
    assert sorted(infos[0]["validation_loss_per_timestep"], key=int) == ["100", "300", "500", "700", "900"]
    assert summary["validation_losses"] == [[1, losses[0]], [2, losses[1]]]

    # recomputed from the step-2 checkpoint's weights (the validation tiles encoded from the dataset,
    # the cache holding 'train' only): the same value, twice
    cfg = tiny_config(tiny_world, run)
    base = load_base_model(list_checkpoints(run)[-1] / "pipeline")
    held = load_held_out(
        cfg,
        tiny_world["storage"] / "latents",
        tiny_world["storage"],
        "v1",
        base.vae,
        base.tokenizer,
        Reporter(None),
    )
    assert held is not None and len(held.latents) == 4  # the synthetic set's 4 validation tiles
    scheduler = training_noise_scheduler(base.scheduler, cfg.prediction_type, cfg.zero_terminal_snr)

    def again():
        return held_out_loss(
            base.unet,
            base.text_encoder,
            scheduler,
            held.latents,
            held.input_ids,
            cfg.validation_loss_timesteps,
            seed=cfg.validation_seed,
            batch_size=3,
            device=torch.device("cpu"),
        )[0]

    assert again() == again()
    assert again() == pytest.approx(losses[1], rel=1e-5)

    # TensorBoard has the losses and the sample grids
    tb = EventAccumulator(str(run / "logs" / "sd_model"), size_guidance={"images": 0, "scalars": 0})
    tb.Reload()
    assert [e.step for e in tb.Scalars("validation_loss")] == [1, 2]
    assert [e.step for e in tb.Images("validation_grid")] == [1, 2]
    assert "loss" in tb.Tags()["scalars"]


@pytest.mark.parametrize(
    ("options", "text_encoder_moves", "groups"),
    [
        ({"train_text_encoder": False}, False, {"unet": 1e-3}),
        ({"text_encoder_learning_rate": 0.0}, False, {"unet": 1e-3, "text_encoder": 0.0}),
        ({"train_unet": False}, True, {"text_encoder": 1e-4}),
    ],
)
def test_text_encoder_changes_only_when_trained_with_its_own_rate(
    tiny_world, tmp_path, options, text_encoder_moves, groups
):
    train(tiny_config(tiny_world, tmp_path / "run", max_train_steps=2, **options))
    ckpt = list_checkpoints(tmp_path / "run")[-1]
    assert json.loads((ckpt / "checkpoint.json").read_text())["learning_rates"] == groups
    pipeline = ckpt / "pipeline"
    te_moved = _changed(_weights(pipeline, "text_encoder"), _weights(tiny_world["base"], "text_encoder"))
    unet_moved = _changed(_weights(pipeline, "unet"), _weights(tiny_world["base"], "unet"))
    assert te_moved == text_encoder_moves
    assert unet_moved == ("unet" in groups)


@pytest.mark.parametrize(
    ("options", "unet_trains", "text_encoder_trains"),
    [
        ({"train_text_encoder": False}, True, False),
        ({"train_unet": False}, False, True),
    ],
)
def test_trained_parts_in_train_mode_frozen_in_eval_mode(
    tiny_world, tmp_path, options, unet_trains, text_encoder_trains
):
    base = load_base_model(tiny_world["base"])  # from_pretrained: both parts in eval mode
    cfg = tiny_config(
        tiny_world,
        tmp_path / "run",
        max_train_steps=1,
        checkpoint_every_steps=0,
        checkpoint_at_end=False,
        **options,
    )
    train(cfg, base_model=base)
    assert (base.unet.training, base.text_encoder.training) == (unet_trains, text_encoder_trains)


def test_throughput_without_warm_up_steps(tiny_world, tmp_path):
    cfg = tiny_config(
        tiny_world,
        tmp_path / "run",
        max_train_steps=1,
        checkpoint_every_steps=0,
        checkpoint_at_end=False,
        throughput_warmup_steps=0,
    )
    summary = train(cfg)
    assert summary["images_per_second"] > 0 and summary["seconds_per_step"] > 0


def test_more_accumulation_steps_than_batches_per_epoch_is_refused(tiny_world, tmp_path):
    cfg = tiny_config(
        tiny_world, tmp_path / "run", global_batch_size=0, train_batch_size=8, gradient_accumulation_steps=5
    )
    with pytest.raises(ConfigError, match="an epoch holds only 4"):
        train(cfg)


@pytest.mark.parametrize("adapter", ["lora", "loha", "lokr"])
def test_adapter_finetune_runs_and_merges(tiny_world, tmp_path, adapter):
    cfg = tiny_config(
        tiny_world,
        tmp_path / "run",
        max_train_steps=2,
        use_lora=True,
        adapter_type=adapter,
        unet_lora_rank=4,
        unet_lora_alpha=4,
        text_encoder_lora_rank=4,
        text_encoder_lora_alpha=4,
    )
    train(cfg)
    ckpt = list_checkpoints(tmp_path / "run")[-1]
    state = load_file(str(ckpt / "state" / "unet.safetensors"))
    assert any(
        ("lora_" in k) or ("hada_" in k) or ("lokr_" in k) for k in state
    )  # only adapters are trainable
    pipeline = ckpt / "pipeline"
    unet = _weights(pipeline, "unet")
    assert not any(
        ("lora" in k) or ("hada" in k) or ("lokr" in k) for k in unet
    )  # a plain diffusers UNet, adapter merged
    assert _changed(unet, _weights(tiny_world["base"], "unet"))
    # only the targeted modules moved: every other weight is the base model's
    for part, targets in (("unet", cfg.unet_lora_targets), ("text_encoder", cfg.text_encoder_lora_targets)):
        trained, base = _weights(pipeline, part), _weights(tiny_world["base"], part)
        moved = {k for k in trained if not torch.equal(trained[k], base[k])}
        assert moved, part
        assert all(any(f".{t}." in k for t in targets) for k in moved), (part, sorted(moved)[:5])
    _sample(pipeline)


def test_hybrid_recipe_full_unet_text_encoder_lora_and_a_learned_token(tiny_world, tmp_path):
    """The follow-up study's best recipe: every UNet weight may move, in the text encoder only the
    adapted projections and the new token's embedding row; every other row is bit-identical."""
    from sar_pipeline.generation.model import load_generation_model
    from sar_pipeline.generation.sample import conditioning_texts

    cfg = tiny_config(
        tiny_world,
        tmp_path / "run",
        max_train_steps=2,
        text_encoder_lora=True,
        text_encoder_lora_rank=4,
        text_encoder_lora_alpha=4,
        learned_token="<sar>",
        learned_token_learning_rate=1e-2,
    )
    train(cfg)
    ckpt = list_checkpoints(tmp_path / "run")[-1]
    info = json.loads((ckpt / "checkpoint.json").read_text())
    assert info["learning_rates"] == {"unet": 1e-3, "text_encoder": 1e-4, "learned_token": 1e-2}
    pipeline = ckpt / "pipeline"
    trained, base = _weights(pipeline, "text_encoder"), _weights(tiny_world["base"], "text_encoder")
    (key,) = [k for k in base if k.endswith("token_embedding.weight")]
    assert trained[key].shape[0] == base[key].shape[0] + 1 == 49409
    assert torch.equal(trained[key][:-1], base[key])  # every existing token's row, bit for bit
    tokenizer = load_base_model(tiny_world["base"]).tokenizer
    radar = base[key][tokenizer("radar", add_special_tokens=False).input_ids].mean(0)
    assert (trained[key][-1] - radar).abs().max() > 1e-3  # the new row learned from its initial value
    moved = {k for k in base if k != key and not torch.equal(trained[k], base[k])}
    assert moved and all(any(f".{t}." in k for t in cfg.text_encoder_lora_targets) for k in moved)
    unet, base_unet = _weights(pipeline, "unet"), _weights(tiny_world["base"], "unet")
    assert not torch.equal(unet["conv_in.weight"], base_unet["conv_in.weight"])  # the UNet in full
    # generation conditions on the texts training saw, through the saved tokenizer's new token
    model = load_generation_model(pipeline, device="cpu")
    text, _ = conditioning_texts(model, "a river", "")
    assert text == "<sar> An aerial view, a river"
    assert model.pipe.tokenizer(text).input_ids[1] == 49408


def test_options_run_together(tiny_world, tmp_path):
    from diffusers import DDPMScheduler

    # a base scheduler that clips samples (diffusers' default when a config does not say)
    base = load_base_model(tiny_world["base"])
    base.scheduler = DDPMScheduler.from_config(base.scheduler.config, clip_sample=True)
    cfg = tiny_config(
        tiny_world,
        tmp_path / "run",
        max_train_steps=2,
        checkpoint_every_steps=0,
        use_ema=True,
        ema_decay=0.9,
        snr_gamma=5.0,
        noise_offset=0.05,
        prediction_type="v_prediction",
        caption_dropout=0.5,
        gradient_accumulation_steps=2,
        gradient_checkpointing=True,
        channels_last=True,
        augmentation="none",
    )
    summary = train(cfg, base_model=base)
    assert summary["steps"] == 2
    sched = json.loads(
        (
            tmp_path / "run/checkpoints/checkpoint-00000002/pipeline/scheduler/scheduler_config.json"
        ).read_text()
    )
    assert sched["prediction_type"] == "v_prediction"
    assert sched["clip_sample"] is False  # the saved pipeline (and the validation grid) never clip


def test_ema_weights_follow_the_decay(tiny_world, tmp_path):
    """The pipeline's UNet is the EMA: after step 1 it equals the weights (diffusers' EMAModel
    starts with decay 0), after step 2 it is decay·EMA₁ + (1 − decay)·weights₂."""
    decay = 0.1  # below diffusers' warm-up (1 + t) / (10 + t) = 0.18 at t = 2, so decay itself applies
    cfg = tiny_config(
        tiny_world,
        tmp_path / "run",
        max_train_steps=2,
        checkpoint_every_steps=1,
        use_ema=True,
        ema_decay=decay,
        text_encoder_learning_rate=1e-3,
        validation_prompts=[],
    )
    train(cfg)
    first, second = list_checkpoints(tmp_path / "run")
    # the text encoder is averaged too: the pipeline never pairs the EMA UNet with the live text encoder
    for part in ("unet", "text_encoder"):
        live1 = load_file(str(first / "state" / f"{part}.safetensors"))
        live2 = load_file(str(second / "state" / f"{part}.safetensors"))
        ema1, ema2 = _weights(first / "pipeline", part), _weights(second / "pipeline", part)
        moved = max((live2[k] - live1[k]).abs().max().item() for k in live1)
        assert moved > 1e-4, part
        for k in live1:
            torch.testing.assert_close(ema1[k], live1[k], rtol=0, atol=1e-6)
            torch.testing.assert_close(ema2[k], decay * ema1[k] + (1 - decay) * live2[k], rtol=0, atol=1e-6)
        assert max((ema2[k] - live2[k]).abs().max().item() for k in live2) > 0.05 * moved, part
    assert {p.name for p in (second / "state").glob("ema*.json")} == {"ema.json", "ema_text_encoder.json"}


def test_prior_preservation_term_changes_training(tiny_world, tmp_path):
    from PIL import Image

    class_dir = tmp_path / "class_images"
    class_dir.mkdir()
    for i in range(3):
        Image.fromarray(np.full((64, 64), 60 * i, np.uint8)).save(class_dir / f"{i}.png")

    def run(name, weight):
        cfg = tiny_config(
            tiny_world,
            tmp_path / name,
            max_train_steps=1,
            with_prior_preservation=True,
            class_data_dir=str(class_dir),
            prior_loss_weight=weight,
        )
        summary = train(cfg)
        return summary["final_loss"], _weights(list_checkpoints(tmp_path / name)[-1] / "pipeline", "unet")

    loss_without, unet_without = run("weight0", 0.0)
    loss_with, unet_with = run("weight1", 1.0)
    assert loss_with > loss_without  # the same instance term plus a positive prior term
    assert _changed(unet_with, unet_without)  # the prior term changed the gradient, so the step


def test_an_explicit_latent_cache_of_another_vae_is_refused(tiny_world, tmp_path):
    from sar_pipeline.diffusion.latent_cache import write_latent_cache

    other = write_latent_cache(
        tmp_path / "other-cache",
        torch.randn(8, 4, 16, 16),
        ["An aerial view, water"] * 8,
        1.0,
        64,
        vae_id="0123456789abcdef",
    )
    with pytest.raises(LatentCacheError) as err:
        train(tiny_config(tiny_world, tmp_path / "run", latent_cache_dir=str(other), augmentation="none"))
    assert str(other) in str(err.value) and "'0123456789abcdef'" in str(err.value)


def test_resuming_under_a_changed_recipe_is_refused_naming_the_options(tiny_world, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_world, run, max_train_steps=1, validation_prompts=[]))
    with pytest.raises(ConfigError) as err:
        train(tiny_config(tiny_world, run, max_train_steps=2, unet_learning_rate=5e-4, snr_gamma=5.0))
    message = str(err.value)
    assert "checkpoint-00000001" in message
    assert "unet_learning_rate: 0.001 → 0.0005" in message and "snr_gamma: 0.0 → 5.0" in message
    assert "max_train_steps" not in message  # training longer is a resume, not a new recipe
    assert len(list_checkpoints(run)) == 1
    # how long, how often and where may change
    summary = train(tiny_config(tiny_world, run, max_train_steps=2, validation_prompts=[], log_every_steps=2))
    assert summary["steps"] == 2


def test_dataset_version_without_latent_cache(tiny_world, tmp_path):
    storage = tmp_path / "storage"
    write_synthetic_dataset(storage, "v9", n_per_class=2, size=64)
    with pytest.raises(LatentCacheError) as err:
        train(tiny_config(tiny_world, tmp_path / "run", storage_root=str(storage)))
    assert "'v9'" in str(err.value) and str(storage / "latents" / "v9") in str(err.value)


class _CreatesFileWhenUnpickled:
    """A pickle payload: unpickling it calls open(marker, "w"), i.e. runs code from the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_never_unpickles_what_a_checkpoint_holds(tiny_world, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_world, run, max_train_steps=2))
    good = list_checkpoints(run)[-1]
    state_files = sorted(p.name for p in (good / "state").iterdir())
    assert all(name.endswith((".safetensors", ".json")) for name in state_files), state_files

    marker = tmp_path / "pwned"
    planted = tmp_path / "planted.pt"
    torch.save(_CreatesFileWhenUnpickled(marker), planted)
    torch.load(planted, weights_only=False)  # control: loading it the way accelerate's load_state did runs it
    assert marker.exists()
    marker.unlink()

    # where accelerate's load_state read pickles (custom_checkpoint_0.pkl held our progress object,
    # unpickled with weights_only=False), and pickles disguised as the files we do read
    for name in (
        "custom_checkpoint_0.pkl",
        "random_states_0.pkl",
        "optimizer.bin",
        "progress.json",
        "optimizer.safetensors",
    ):
        resumed = tmp_path / f"resume-{name}"
        shutil.copytree(run, resumed)
        target = list_checkpoints(resumed)[-1] / "state" / name
        shutil.copyfile(planted, target)
        with pytest.raises(CheckpointError) as err:
            train(tiny_config(tiny_world, resumed, max_train_steps=4))
        assert str(target) in str(err.value), name
        assert not marker.exists(), name


def test_half_written_checkpoints_are_never_taken(tiny_world, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_world, run, max_train_steps=2))
    good = list_checkpoints(run)[-1]
    partial = run / "checkpoints" / "checkpoint-00000008.partial"
    shutil.copytree(good, partial)
    no_marker = run / "checkpoints" / "checkpoint-00000006"
    shutil.copytree(good, no_marker)
    (no_marker / "checkpoint.json").unlink()
    assert list_checkpoints(run) == [good]
    for folder, reason in (
        (partial, "half-written checkpoint (.partial)"),
        (no_marker, "checkpoint.json is missing"),
    ):
        with pytest.raises(CheckpointError) as err:
            train(tiny_config(tiny_world, run, max_train_steps=4, resume_from_checkpoint=str(folder)))
        assert str(folder) in str(err.value) and reason in str(err.value)


def test_resume_after_kill_matches_an_uninterrupted_run(tiny_world, tmp_path):
    def write_config(name):
        cfg = tiny_config(
            tiny_world, tmp_path / name, max_train_steps=8, checkpoint_every_steps=2, deterministic=True
        )
        path = tmp_path / f"{name}.json"
        cfg.write(path)
        return path

    module = ["-m", "sar_pipeline.diffusion.train", "--config"]
    straight = run_child([*module, str(write_config("straight"))])
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed_cfg = write_config("killed")
    child = subprocess.Popen(
        [sys.executable, *module, str(killed_cfg)],
        env=CHILD_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not list_checkpoints(tmp_path / "killed") and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    done_before_kill = [c.name for c in list_checkpoints(tmp_path / "killed")]
    assert done_before_kill and "checkpoint-00000008" not in done_before_kill

    resumed = run_child([*module, str(killed_cfg)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    a = tmp_path / "straight/checkpoints/checkpoint-00000008"
    b = tmp_path / "killed/checkpoints/checkpoint-00000008"
    for part in ("unet", "text_encoder"):
        wa, wb = _weights(a / "pipeline", part), _weights(b / "pipeline", part)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), part
    ha = json.loads((tmp_path / "straight/losses.json").read_text())
    hb = json.loads((tmp_path / "killed/losses.json").read_text())
    assert ha == hb  # same data order, noise and optimizer trajectory, step by step
    ia, ib = json.loads((a / "checkpoint.json").read_text()), json.loads((b / "checkpoint.json").read_text())
    assert (ia["epoch"], ia["batch_in_epoch"], ia["learning_rates"]) == (
        ib["epoch"],
        ib["batch_in_epoch"],
        ib["learning_rates"],
    )


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tiny_world, tmp_path):
    cfg = tiny_config(
        tiny_world, tmp_path / "ddp", max_train_steps=2, checkpoint_every_steps=1, train_batch_size=2
    )
    path = tmp_path / "ddp.json"
    cfg.write(path)
    command, env = launch_command(
        str(path),
        TrainerLaunchSettings(num_processes=2, cpu=True, accelerate_args=["--master_port", "29517"]),
    )
    result = subprocess.run(command, env={**CHILD_ENV, **env}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "2 process(es)" in result.stdout
    assert [c.name for c in list_checkpoints(tmp_path / "ddp")] == [
        "checkpoint-00000001",
        "checkpoint-00000002",
    ]
    final = json.loads((tmp_path / "ddp" / "final.json").read_text())
    assert final["processes"] == 2 and final["steps"] == 2
