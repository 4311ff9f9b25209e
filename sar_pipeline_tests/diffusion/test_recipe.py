"""Review defects of the training recipe (issue 11, item 6), each pinned by its behaviour."""

import pytest
import torch

from sar_pipeline.diffusion.config import CAPTION_DROPOUT_TRAINED_TEXT_ENCODER, TrainRecipe, TrainSettings
from sar_pipeline.errors import ConfigError


@pytest.mark.parametrize(
    ("options", "dropout"),
    [
        ({}, CAPTION_DROPOUT_TRAINED_TEXT_ENCODER),  # the paper trains its text encoder
        ({"train_text_encoder": False}, 0.0),
        ({"preset": "tiny", "train_text_encoder": False}, CAPTION_DROPOUT_TRAINED_TEXT_ENCODER),
        ({"caption_dropout": 0.0}, 0.0),  # the user's value wins
    ],
)
def test_caption_dropout_defaults_to_a_small_value_when_the_text_encoder_is_trained(options, dropout):
    """CFG samples with the unconditional branch: a trained text encoder must see empty captions."""
    assert 0.05 <= CAPTION_DROPOUT_TRAINED_TEXT_ENCODER <= 0.1
    assert TrainSettings.from_dict({"base_model_path": "/m", **options}).caption_dropout == dropout
    assert "when the text encoder is trained" in TrainRecipe.model_fields["caption_dropout"].description


@pytest.mark.parametrize(
    ("options", "processes", "plan"),
    [
        ({}, 1, (16, 1)),  # the paper's global batch 16
        ({}, 2, (8, 1)),
        ({}, 8, (2, 1)),
        ({"train_batch_size": 4}, 1, (4, 4)),  # a memory bound: accumulate instead
        ({"train_batch_size": 4}, 2, (4, 2)),
        ({"train_batch_size": 5}, 1, (4, 4)),  # micro-batches split the share evenly
        ({"gradient_accumulation_steps": 2}, 2, (4, 2)),
        ({"global_batch_size": 0, "train_batch_size": 4}, 2, (4, 1)),  # per process, as before
    ],
)
def test_global_batch_gives_per_process_batch_and_accumulation(options, processes, plan):
    cfg = TrainSettings.from_dict({"base_model_path": "/m", **options})
    batch, accumulation = cfg.batch_plan(processes)
    assert (batch, accumulation) == plan
    if cfg.global_batch_size:
        assert batch * accumulation * processes == cfg.global_batch_size == 16


def test_a_global_batch_that_does_not_split_is_refused():
    cfg = TrainSettings.from_dict({"base_model_path": "/m"})
    with pytest.raises(
        ConfigError, match="global_batch_size.*16 tiles per step cannot be shared evenly by 3"
    ):
        cfg.batch_plan(3)
    with pytest.raises(ConfigError, match="gradient_accumulation_steps"):
        TrainSettings.from_dict({"base_model_path": "/m", "gradient_accumulation_steps": 9}).batch_plan(2)


def test_data_and_noise_streams_are_independent():
    from sar_pipeline.diffusion.data import step_generators

    cpu = torch.device("cpu")
    for step in range(3):
        data, noise = step_generators(0, step, 0, 0, cpu, cpu)
        a, b = torch.rand(64, generator=data), torch.rand(64, generator=noise)
        assert not torch.equal(a, b)
        assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1]) < 0.5
        again, _ = step_generators(0, step, 0, 0, cpu, cpu)
        assert torch.equal(torch.rand(64, generator=again), a)  # still a function of the step: resumable
    # neighbouring steps, micro-batches and ranks draw different numbers too
    firsts = {
        float(torch.rand(1, generator=step_generators(0, s, m, r, cpu, cpu)[1]))
        for s in range(3)
        for m in range(2)
        for r in range(2)
    }
    assert len(firsts) == 12


def test_schedulers_never_clip_latents():
    """A base scheduler config that clips (diffusers' default when unset) must not reach training,
    validation or the saved pipeline."""
    from diffusers import DDPMScheduler

    from sar_pipeline.diffusion.objective import sampling_scheduler, training_noise_scheduler

    base = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    assert base.config.clip_sample  # the default clips
    train = training_noise_scheduler(base, "", zero_terminal_snr=False)
    assert train.config.clip_sample is False
    sample = sampling_scheduler(DDPMScheduler.from_config({**base.config, "clip_sample": True}))
    assert sample.config.clip_sample is False


def test_training_texts_validation_prompts_and_generation_share_one_text_form():
    from sar_pipeline.captioning.base import prompt_text
    from sar_pipeline.diffusion.data import with_activation_token

    token = "An aerial view"
    # a caption without the token, one that starts with it (kept as is, never doubled)
    captions = ["a river", "An aerial view of a river", "an aerial view, fields"]
    assert with_activation_token(captions, token) == [
        "An aerial view, a river",
        "An aerial view of a river",
        "an aerial view, fields",
    ]
    # validation grids and generation call the same function (sampling.py, generation/sample.py)
    assert [prompt_text(c, token) for c in captions] == with_activation_token(captions, token)


def test_learned_token_leads_every_text_once():
    from sar_pipeline.captioning.base import prompt_text

    assert prompt_text("a river", "An aerial view", "<sar>") == "<sar> An aerial view, a river"
    assert prompt_text("<sar> An aerial view, a river", "An aerial view", "<sar>") == (
        "<sar> An aerial view, a river"
    )
    assert (
        prompt_text("An aerial view of fields", "An aerial view", "<sar>") == "<sar> An aerial view of fields"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"text_encoder_lora": True, "train_text_encoder": False}, "text_encoder_lora.*train_text_encoder"),
        ({"learned_token": "<a> <b>"}, "one new word"),
        ({"use_ema": True, "text_encoder_lora": True}, "use_ema"),
    ],
)
def test_impossible_hybrid_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        TrainSettings.from_dict({"base_model_path": "/m", **options})
