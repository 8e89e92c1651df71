"""Scoring an actor on the views it never saw (``marionette evaluate``).

Splits (``engine.neural.actor.dataset.split_views``): ``novel_view`` = held-out cameras x
training frames, ``novel_pose`` = training cameras x held-out frames, ``novel_both``
= held-out cameras x held-out frames. Metrics per split and overall (means over views) are
defined in ``DEFINITIONS`` below, which ``marionette evaluate --json`` writes beside the figures.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from engine import MarionetteError
from engine.neural.actor.losses import (VGGPerceptual, _gaussian_window, find_perceptual_weights, mask_iou, psnr,
                                        ssim)

SPLITS = ("novel_view", "novel_pose", "novel_both")
METRICS = ("psnr", "psnr_person", "psnr_box", "ssim", "ssim_box", "mask_iou", "psnr_flat")
BOX_MARGIN = 0.10
DEFINITIONS = {
    "psnr": "dB over the whole image, render (rgb * alpha) and truth (rgb * mask) both composited over black",
    "psnr_person": "dB over the truth mask's pixels only, straight colours: background pixels cannot inflate it",
    "psnr_box": "dB inside the subject's 2D box (the truth mask's bounding box grown by 10 % of its size on every "
                "side, clipped to the image), both composited over black: the sparse-view avatar literature's "
                "protocol (ZJU-MoCap figures)",
    "ssim": "mean SSIM (11x11 Gaussian window, sigma 1.5) of the two composites over black, whole image",
    "ssim_box": "SSIM of the composites over black inside the subject's 2D box (as psnr_box)",
    "mask_iou": "IoU of the render's alpha > 0.5 and the truth mask > 0.5",
    "psnr_flat": "the flat-colour silhouette baseline: the truth mask filled with the person's own mean colour in "
                 "that view (an oracle colour), scored like psnr_person; a model that does not beat it has learned "
                 "a silhouette, not an appearance",
    "person_coverage": "diagnostic: the share of the truth mask's pixels the render covers (alpha > 0.5)",
    "psnr_person_covered": "diagnostic: psnr_person over the covered pixels only; its gap to psnr_person is error "
                           "from silhouette misses rather than colour",
    "lpips": "LPIPS (VGG) of the composites; only when VGG + LPIPS weights are available locally "
             "(MARIONETTE_VGG_WEIGHTS), never downloaded",
}


def subject_box(mask: torch.Tensor, margin: float = BOX_MARGIN) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of the mask's bounding box grown by ``margin`` of its size, clipped; None if empty."""
    m = mask[0] > 0.5
    if not bool(m.any()):
        return None
    ys = torch.nonzero(m.any(1)).flatten()
    xs = torch.nonzero(m.any(0)).flatten()
    y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    gy, gx = int(round(margin * (y1 - y0))), int(round(margin * (x1 - x0)))
    H, W = m.shape
    return max(0, y0 - gy), min(H, y1 + gy), max(0, x0 - gx), min(W, x1 + gx)


def box_metrics(comp_r: torch.Tensor, comp_t: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PSNR and SSIM per view inside each view's subject box ([B] each; NaN for an empty mask)."""
    ps, ss = [], []
    for i in range(comp_r.shape[0]):
        box = subject_box(mask[i])
        if box is None:
            ps.append(torch.tensor(float("nan")))
            ss.append(torch.tensor(float("nan")))
            continue
        y0, y1, x0, x1 = box
        r, t = comp_r[i:i + 1, :, y0:y1, x0:x1], comp_t[i:i + 1, :, y0:y1, x0:x1]
        ps.append(psnr(r, t)[0])
        ss.append(ssim(r, t)[0] if min(y1 - y0, x1 - x0) >= 11 else torch.tensor(float("nan")))
    return torch.stack(ps), torch.stack(ss)


def person_coverage(rgb: torch.Tensor, alpha: torch.Tensor, truth: torch.Tensor,
                    mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the person error comes from: the share of the truth mask's pixels the render covers
    (``alpha > 0.5``) and the person PSNR over those covered pixels only, each [B]."""
    m = (mask > 0.5).float()
    covered = m * (alpha > 0.5).float()
    return covered.flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1.0), psnr(rgb, truth, covered)


def flat_colour_psnr(truth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] PSNR over the person of the silhouette filled with the person's mean colour (per view)."""
    m = (mask > 0.5).float()
    mean = (truth * m).sum((2, 3), keepdim=True) / m.sum((2, 3), keepdim=True).clamp_min(1.0)
    return psnr(mean.expand_as(truth), truth, m)


def blurred_truth_psnr(truth: torch.Tensor, mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """[B] person PSNR of the truth itself blurred by a Gaussian of ``sigma`` pixels *within* the
    person (normalised convolution, so no background enters at the silhouette): the score of a
    render with a perfect silhouette and perfect colours that lacks detail finer than ``sigma``.
    A scale for ``psnr_person``, which at a few dozen pixels of person is dominated by edges."""
    import torch.nn.functional as F

    m = (mask > 0.5).float()
    r = max(1, int(round(3 * sigma)))
    window = _gaussian_window(2 * r + 1, sigma, 1, truth.device, truth.dtype)  # zero padding: outside adds nothing
    blur = lambda img: F.conv2d(F.pad(img, (r, r, r, r)), window.expand(img.shape[1], 1, -1, -1), groups=img.shape[1])
    blurred = blur(truth * m) / blur(m).clamp_min(1e-6)
    return psnr(blurred, truth, m)


def _pick(views: list, n: int | None) -> list:
    """``n`` views spread evenly over the list (deterministic), or all."""
    if not n or len(views) <= n:
        return views
    idx = np.unique(np.linspace(0, len(views) - 1, n).round().astype(int))
    return [views[i] for i in idx]


def refined_poses_apply(actor, cap) -> bool:
    """Whether the actor's learned skeleton corrections (``--refine-pose``) belong to this capture:
    same number of frames and the very ``joints3d.npz`` they were fitted to (its SHA-256)."""
    from engine.neural.actor.model_file import sha256_file

    want = getattr(actor, "pose_skeleton_sha256", None)
    if not actor.config.pose_frames or not want or actor.config.pose_frames != len(cap.frames):
        return False
    if cap.joint_set.name != actor.joint_set.name:
        return False
    return sha256_file(cap.root / "joints3d.npz") == want


@torch.no_grad()
def evaluate_actor(actor, cap, resolution: int | None = None, max_views: int | None = 64, device=None,
                   batch: int = 4, grid_path=None, progress: bool = False, splits=SPLITS,
                   refined_poses: bool = True, grid_views: int = 3) -> dict:
    """Score ``actor`` on the held-out views of ``cap``. ``refined_poses``: drive it with its learned
    skeleton corrections when they belong to this capture (``refined_poses_apply``; the held-out
    camera sees training frames, whose poses training refined from the other cameras)."""
    from engine.neural.actor.dataset import ViewSet, split_views

    device = device or next(actor.parameters()).device
    if cap.joint_set.name != actor.joint_set.name:
        from engine.body.joint_sets import mapping_matrix

        M = mapping_matrix(cap.joint_set, actor.joint_set)
        missing = [actor.joint_set.names[j] for j in actor.needed_joints() if not (M[j] != 0).any()]
        if missing:
            raise MarionetteError(f"{cap.root / 'joints3d.npz'}: the capture's joints are {cap.joint_set.name} but the "
                                  f"actor was trained on {actor.joint_set.name}; joints {missing} cannot be obtained")
    lpips_net = None
    wpath = find_perceptual_weights(None)
    if wpath is not None:
        net = VGGPerceptual(wpath).to(device)
        lpips_net = net if net.is_lpips else None
    if resolution is None:
        res = getattr(actor, "training_resolution", None)  # [W, H] recorded by training
        resolution = max(res) if res else None
    refine = refined_poses and refined_poses_apply(actor, cap)
    result = {"splits": {}, "resolution": None, "lpips": "available" if lpips_net else
              "skipped (no local LPIPS weights; set MARIONETTE_VGG_WEIGHTS)",
              "poses": "refined by training" if refine else "capture", "definitions": DEFINITIONS}
    all_rows: list[dict] = []
    grid_rows = []
    todo = [(s, _pick(split_views(cap, s), max_views)) for s in splits]
    todo = [(s, v) for s, v in todo if v]
    if not todo:
        raise MarionetteError(f"{cap.root / 'capture.json'}: no held-out cameras or frames "
                              "(fields 'heldout_cameras' and 'heldout_frames' are empty); nothing to evaluate on")
    total = sum(len(v) for _, v in todo)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="evaluating", unit="view", dynamic_ncols=True)
    try:
        for split, views in todo:
            ds = ViewSet(cap, views, resolution=resolution, joint_set=actor.joint_set)
            # views shown in the grid: spread over the split (different cameras and frames)
            shown = set(np.linspace(0, len(views) - 1, min(grid_views, len(views))).round().astype(int).tolist())
            rows = []
            for start in range(0, len(ds), batch):
                idx = list(range(start, min(len(ds), start + batch)))
                groups = [idx] if ds.size is not None else [[i] for i in idx]
                for g in groups:
                    b = {k: v.to(device) for k, v in ds.batch(g).items()}
                    H, W = b["rgb"].shape[-2:]
                    joints = actor.refine_joints(b["joints"], b["row"]) if refine else b["joints"]
                    out = actor.forward_supersampled(joints, b["K"], b["R"], b["t"], H, W)
                    rgb, alpha = out["rgb"].clamp(0, 1), out["alpha"].clamp(0, 1)
                    truth, mask = b["rgb"], b["mask"]
                    comp_r, comp_t = rgb * alpha, truth * mask
                    m = (mask > 0.5).float()
                    p_box, s_box = box_metrics(comp_r, comp_t, mask)
                    vals = {"psnr": psnr(comp_r, comp_t), "psnr_person": psnr(rgb, truth, m), "psnr_box": p_box,
                            "ssim": ssim(comp_r, comp_t), "ssim_box": s_box, "mask_iou": mask_iou(alpha, mask),
                            "psnr_flat": flat_colour_psnr(truth, mask)}
                    vals["person_coverage"], vals["psnr_person_covered"] = person_coverage(rgb, alpha, truth, mask)
                    if lpips_net is not None:
                        vals["lpips"] = lpips_net(comp_r, comp_t)
                    for i in range(len(g)):
                        v = ds.views[g[i]]
                        rows.append({"camera": v.camera, "frame": v.frame,
                                     **{k: float(x[i]) for k, x in vals.items()}})
                    grid_rows += [(split, truth[i], mask[i], rgb[i], alpha[i]) for i in range(len(g)) if g[i] in shown]
                    if bar:
                        bar.update(len(g))
            result["splits"][split] = _summary(rows)
            result["resolution"] = list(ds.size) if ds.size else None
            all_rows.extend(rows)
    finally:
        if bar:
            bar.close()
    result["overall"] = _summary(all_rows)
    result["views"] = len(all_rows)
    result["per_view"] = all_rows
    if grid_path is not None:
        write_grid(grid_path, grid_rows)
        result["grid"] = str(grid_path)
    return result


def _mean_of_defined(values) -> float:
    """Mean over the views where a metric is defined (NaN where it is nowhere, e.g. the covered pixels'
    PSNR of a render that covers none), without numpy's empty-slice warning."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return round(float(v.mean()), 4) if v.size else float("nan")


def _summary(rows: list[dict]) -> dict:
    if not rows:
        return {}
    keys = [k for k in rows[0] if k not in ("camera", "frame")]
    s = {k: _mean_of_defined([r[k] for r in rows]) for k in keys}
    s["views"] = len(rows)
    return s


def write_grid(path, rows) -> None:
    """PNG grid, one row per split, one truth | render | |error| x 4 triple per view shown, over mid-grey."""
    from PIL import Image

    if not rows:
        return
    by_split: dict[str, list] = {}
    for split, truth, mask, rgb, alpha in rows:
        t = truth * mask + 0.5 * (1 - mask)
        r = rgb * alpha + 0.5 * (1 - alpha)
        e = ((t - r).abs() * 4).clamp(0, 1)
        by_split.setdefault(split, []).append(torch.cat([t, r, e], dim=2))
    H = max(t.shape[1] for row in by_split.values() for t in row)
    pad_h = lambda t: torch.nn.functional.pad(t, (0, 0, 0, H - t.shape[1]))  # noqa: E731
    tiles = [torch.cat([pad_h(t) for t in row], dim=2) for row in by_split.values()]
    W = max(t.shape[2] for t in tiles)
    tiles = [torch.nn.functional.pad(t, (0, W - t.shape[2])) for t in tiles]
    img = torch.cat(tiles, dim=1).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray((img * 255 + 0.5).astype(np.uint8)).save(tmp)
    os.replace(tmp, path)
