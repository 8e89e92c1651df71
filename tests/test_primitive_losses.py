"""Losses on the renderer's own output (before the decoder): the silhouette loss ties the
Gaussians' alpha to the mask, the latent colour loss ties their first three channels to the
person's colours. Both must be exact at their optimum, work at the latent's lower resolution,
and, trained, pull the primitives towards what they ask."""

from __future__ import annotations

import pytest
import torch

from engine import MarionetteError
from engine.neural.actor.losses import latent_colour_loss, silhouette_loss
from engine.neural.actor.model_file import load_actor
from engine.neural.actor.train import TrainConfig, train
from engine.synthetic.toy_capture import make_toy_capture


def _person(h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(2, 3, h, w, generator=g)
    mask = torch.zeros(2, 1, h, w)
    mask[:, :, 4:12, 5:11] = 1.0
    return rgb, mask


def test_latent_colour_loss_is_zero_at_the_premultiplied_colours_and_ignores_other_channels():
    rgb, mask = _person()
    latent = torch.cat([rgb * mask, torch.randn(2, 5, 16, 16)], dim=1)
    assert float(latent_colour_loss(latent, rgb, mask)) == 0.0
    off = latent.clone()
    off[:, 0] += 0.25
    assert float(latent_colour_loss(off, rgb, mask)) == pytest.approx(0.25 / 3, rel=1e-5)


def test_latent_colour_loss_compares_at_the_latent_resolution():
    rgb, mask = _person()
    half = torch.nn.functional.avg_pool2d(rgb * mask, 2)  # what a half-resolution latent should hold
    assert float(latent_colour_loss(half, rgb, mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(latent_colour_loss(torch.zeros_like(half), rgb, mask)) > 0.05


def test_latent_colour_loss_needs_three_channels():
    rgb, mask = _person()
    with pytest.raises(MarionetteError, match="3 latent channels"):
        latent_colour_loss(torch.zeros(2, 2, 16, 16), rgb, mask)


def test_silhouette_loss_is_zero_at_the_mask_and_resamples_a_half_size_alpha():
    _, mask = _person()
    assert float(silhouette_loss(mask, mask)) == 0.0
    assert float(silhouette_loss(torch.nn.functional.avg_pool2d(mask, 2), mask)) < 0.1
    assert float(silhouette_loss(torch.zeros(2, 1, 8, 8), mask)) == pytest.approx(float(mask.mean()))


@pytest.mark.parametrize("bad", [-0.5, float("nan")])
def test_loss_weights_must_be_non_negative_numbers(bad, tmp_path):
    for field in ("silhouette_weight", "latent_colour_weight"):
        with pytest.raises(MarionetteError, match=field.replace("_", "-")):
            TrainConfig(capture=str(tmp_path), out=str(tmp_path / "a"), **{field: bad}).validate()


def test_training_with_the_latent_colour_loss_puts_the_colours_on_the_primitives(tmp_path):
    from engine.neural.actor.dataset import ViewSet, open_capture, split_views

    cap_dir = make_toy_capture(tmp_path / "cap", cameras=3, frames=4, size=32, heldout_every=4)
    cap = open_capture(cap_dir)
    b = ViewSet(cap, split_views(cap, "train")[:4], resolution=32).batch(range(4))
    errors = {}
    for weight in (0.0, 2.0):
        out = tmp_path / f"w{weight}"
        train(TrainConfig(capture=str(cap_dir), out=str(out), steps=60, resolution=32, batch=2, preset="tiny",
                          latent_dim=4, eval_views=0, progress=False, threads=1, seed=0,
                          latent_colour_weight=weight))
        actor, _ = load_actor(out)
        with torch.no_grad():
            res = actor(b["joints"], b["K"], b["R"], b["t"], 32, 32)
        errors[weight] = float(latent_colour_loss(res["latent"], b["rgb"], b["mask"]))
    # without the loss the first channels hold whatever the decoder found useful; with it, the colours
    assert errors[2.0] < 0.8 * errors[0.0], errors

