"""The training objective and one optimizer step do what their settings promise (tiny models, CPU)."""

import copy

import pytest
import torch

from sar_pipeline.diffusion.models import tiny_components
from sar_pipeline.diffusion.objective import (
    diffusion_loss,
    draw_noise,
    min_snr_weights,
    training_noise_scheduler,
)
from sar_pipeline.diffusion.train import optimizer_micro_step


@pytest.fixture(scope="module")
def tiny():
    return tiny_components(seed=0)


def _batch(tiny, n, prediction_type="epsilon", seed=0):
    """n latents, token ids, noise and timesteps, and the noise schedule, all fixed by ``seed``."""
    scheduler = training_noise_scheduler(tiny.scheduler, prediction_type, zero_terminal_snr=False)
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(n, 4, 16, 16, generator=gen)
    ids = tiny.tokenizer(
        [f"An aerial view of tile {i}" for i in range(n)],
        padding="max_length",
        max_length=tiny.tokenizer.model_max_length,
        return_tensors="pt",
    ).input_ids
    noise, timesteps = draw_noise(latents, gen, 0.0, scheduler.config.num_train_timesteps)
    return scheduler, latents, ids, noise, timesteps


def _per_sample_mse(tiny, scheduler, latents, ids, noise, timesteps):
    noisy = scheduler.add_noise(latents, noise, timesteps)
    pred = tiny.unet(noisy, timesteps, tiny.text_encoder(ids)[0]).sample
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    return ((pred - target) ** 2).mean(dim=(1, 2, 3))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_follow_the_formula(tiny, prediction_type):
    scheduler = training_noise_scheduler(tiny.scheduler, prediction_type, zero_terminal_snr=False)
    timesteps = torch.tensor([0, 10, 100, 300, 600, 999])
    gamma = 5.0
    alpha_bar = scheduler.alphas_cumprod[timesteps].double()
    snr = alpha_bar / (1 - alpha_bar)
    clipped = torch.clamp(snr, max=gamma)
    expected = clipped / (snr + 1) if prediction_type == "v_prediction" else clipped / snr
    weights = min_snr_weights(scheduler, timesteps, gamma)
    torch.testing.assert_close(weights.double(), expected, rtol=1e-4, atol=0)
    assert weights[0] < 0.01  # the nearly clean timestep (SNR ~ 1e3) is down-weighted


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_loss_weights_each_sample(tiny, prediction_type):
    scheduler, latents, ids, noise, timesteps = _batch(tiny, 4, prediction_type)
    with torch.no_grad():
        weighted = diffusion_loss(
            tiny.unet, tiny.text_encoder, scheduler, latents, ids, noise, timesteps, snr_gamma=5.0
        )
        plain = diffusion_loss(tiny.unet, tiny.text_encoder, scheduler, latents, ids, noise, timesteps)
        per_sample = _per_sample_mse(tiny, scheduler, latents, ids, noise, timesteps)
    expected = (per_sample * min_snr_weights(scheduler, timesteps, 5.0)).mean()
    torch.testing.assert_close(weighted, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(plain, per_sample.mean(), rtol=1e-5, atol=1e-7)
    assert not torch.isclose(weighted, plain)


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_prior_preservation_adds_the_weighted_class_loss_and_its_gradient(tiny):
    scheduler, latents, ids, noise, timesteps = _batch(tiny, 4)  # 2 instance + 2 class samples
    unet, te = tiny.unet, tiny.text_encoder

    def loss(part=slice(None), prior_loss_weight=None):
        return diffusion_loss(
            unet,
            te,
            scheduler,
            latents[part],
            ids[part],
            noise[part],
            timesteps[part],
            prior_loss_weight=prior_loss_weight,
        )

    total = loss(prior_loss_weight=0.5)
    with_prior = _grads(unet, total)
    instance = _grads(unet, loss(slice(0, 2)))
    prior = _grads(unet, loss(slice(2, 4)))
    torch.testing.assert_close(total, loss(slice(0, 2)) + 0.5 * loss(slice(2, 4)), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(with_prior, instance + 0.5 * prior, rtol=1e-4, atol=1e-7)
    assert (with_prior - instance).abs().max() > 100 * 1e-7  # the prior term changes the gradient


def test_k_accumulated_micro_batches_equal_one_batch_k_times_larger(tiny):
    """One optimizer step (plain SGD, lr 1: the update IS the gradient, so its scale is checked)."""
    from accelerate import Accelerator

    scheduler, latents, ids, noise, timesteps = _batch(tiny, 4)

    def one_step(accumulation_steps):
        unet, te = copy.deepcopy(tiny.unet).train(), copy.deepcopy(tiny.text_encoder).train()
        before = [p.detach().clone() for p in unet.parameters()]
        accelerator = Accelerator(gradient_accumulation_steps=accumulation_steps, cpu=True)
        optimizer = torch.optim.SGD([*unet.parameters(), *te.parameters()], lr=1.0)
        lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        unet, te, optimizer, lr_scheduler = accelerator.prepare(unet, te, optimizer, lr_scheduler)
        size = len(latents) // accumulation_steps
        for micro in range(accumulation_steps):
            part = slice(micro * size, (micro + 1) * size)
            optimizer_micro_step(
                accelerator,
                [unet, te],
                optimizer,
                lr_scheduler,
                0.0,
                lambda part=part: diffusion_loss(
                    unet, te, scheduler, latents[part], ids[part], noise[part], timesteps[part]
                ),
            )
            assert accelerator.sync_gradients == (micro == accumulation_steps - 1)
        return torch.cat([(p.detach() - b).flatten() for p, b in zip(unet.parameters(), before, strict=True)])

    accumulated, whole = one_step(2), one_step(1)
    assert whole.abs().max() > 1e-4  # the step moved the weights
    torch.testing.assert_close(accumulated, whole, rtol=1e-3, atol=1e-6)
