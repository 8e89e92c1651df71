"""The quality figures of ``marionette evaluate``: subject box, box PSNR/SSIM, flat-colour baseline."""

from __future__ import annotations

import torch

from engine.neural.actor.evaluate import box_metrics, flat_colour_psnr, person_coverage, subject_box
from engine.neural.actor.losses import psnr


def test_subject_box_grows_by_ten_percent_and_clips():
    m = torch.zeros(1, 100, 100)
    m[0, 20:70, 40:60] = 1
    assert subject_box(m) == (15, 75, 38, 62)
    m2 = torch.zeros(1, 50, 50)
    m2[0, 0:50, 0:10] = 1
    assert subject_box(m2) == (0, 50, 0, 11)
    assert subject_box(torch.zeros(1, 8, 8)) is None


def test_box_psnr_ignores_background_outside_the_box():
    truth = torch.rand(1, 3, 64, 64)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 20:40, 20:40] = 1
    render = truth * mask
    comp_t = truth * mask
    noisy = render.clone()
    noisy[..., :5, :5] = 1.0  # far outside the box: the box figure must not see it
    p, s = box_metrics(noisy, comp_t, mask)
    assert float(p[0]) > 90 and float(s[0]) > 0.99
    assert float(psnr(noisy, comp_t)[0]) < 40  # the whole-image figure does


def test_flat_colour_baseline_is_exact_for_a_flat_person_and_finite_otherwise():
    truth = torch.zeros(2, 3, 16, 16)
    truth[0, :, 4:12, 4:12] = torch.tensor([0.2, 0.5, 0.7])[:, None, None]
    truth[1] = torch.rand(3, 16, 16)
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    p = flat_colour_psnr(truth, mask)
    assert float(p[0]) >= 99 and 5 < float(p[1]) < 20


def test_person_coverage_separates_silhouette_misses_from_colour_error():
    truth = torch.full((1, 3, 10, 10), 0.5)
    mask = torch.zeros(1, 1, 10, 10)
    mask[..., :, :4] = 1  # 40 person pixels
    alpha = torch.zeros_like(mask)
    alpha[..., :, :3] = 1  # the render covers 30 of them
    rgb = truth.clone()
    rgb[..., :, 3] = 0.0  # wrong colour only where the render misses the person
    cov, p_cov = person_coverage(rgb, alpha, truth, mask)
    assert abs(float(cov[0]) - 0.75) < 1e-6
    assert float(p_cov[0]) > 90  # exact where it covers
    assert float(psnr(rgb, truth, (mask > 0.5).float())[0]) < 20  # the whole-person figure sees the miss


def test_blurred_truth_psnr_keeps_flat_colours_and_loses_detail_with_sigma():
    from engine.neural.actor.evaluate import blurred_truth_psnr

    mask = torch.zeros(1, 1, 24, 24)
    mask[..., 4:20, 8:16] = 1.0
    # a flat-coloured person on a bright background: blurring inside the person changes nothing,
    # because no background enters at the silhouette
    flat = torch.ones(1, 3, 24, 24)
    flat[..., 4:20, 8:16] = torch.tensor([0.2, 0.5, 0.3])[:, None, None]
    assert float(blurred_truth_psnr(flat, mask, 2.0)) > 90.0
    # a textured person loses more the wider the blur
    textured = flat.clone()
    textured[..., 4:20, 8:16] += 0.3 * torch.rand(1, 3, 16, 8, generator=torch.Generator().manual_seed(0))
    scores = [float(blurred_truth_psnr(textured, mask, s)) for s in (0.5, 1.0, 2.0)]
    assert scores[0] > scores[1] > scores[2] > 10.0, scores
