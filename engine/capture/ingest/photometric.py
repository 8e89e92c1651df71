"""Photometric calibration of the cameras from the subject they all see.

Real cameras in one rig disagree on exposure and white balance: on the vendored clip the
same shin is twice as bright in one camera as in another. An actor renders one colour per
body part whatever the viewpoint, so uncalibrated cameras make it average them (dull from
every view) and make a held-out camera look off by a colour cast no model could predict.
This is the photometric counterpart of geometric calibration: like the intrinsics, it is a
property of each camera, estimated once for the whole rig before any train/test split.

Model: camera ``c`` records linear RGB ``g_c * a_b`` for body part ``b`` of albedo ``a_b``
(per channel). Samples: points 30-70 % along every bone of the triangulated skeleton,
projected into each view and read where the person mask holds, medianed per (camera, bone)
over the frames. Then per channel, in log space, least squares for ``log g_c + log a_b``
with the gains' geometric mean fixed to 1 (the rig's average look is kept), one
refit after dropping outlying (camera, bone) pairs (a bone whose two sides differ, such as
chest and back, seen from opposite cameras). Images are corrected in linear light
(``engine.io.colour``) and stay 8-bit sRGB.
"""

from __future__ import annotations

import numpy as np

from engine.geometry.camera import Camera
from engine.io.colour import linear_to_srgb, srgb_to_linear

DARK = 0.01  # linear values below this carry no usable ratio (crushed blacks, e.g. black shorts)
MAX_GAIN = 4.0


def subject_colours(images: np.ndarray, masks: list[np.ndarray], joints: np.ndarray, bones, cam: Camera,
                    stride: int = 2) -> np.ndarray:
    """[N bones, 3] median linear RGB of one view's subject along each bone (NaN where never seen).

    images [T, H, W, 3] uint8 BGR, masks T x [H, W] uint8 (person > 127), joints [T, J, 3] world.
    """
    H, W = images.shape[1:3]
    samples: list[list[np.ndarray]] = [[] for _ in bones]
    along = np.linspace(0.3, 0.7, 5)
    for r in range(0, len(images), stride):
        J = joints[r]
        Xc = J @ cam.R.T + cam.t
        for i, (a, b) in enumerate(bones):
            if not (np.isfinite(J[a]).all() and np.isfinite(J[b]).all()) or Xc[a, 2] <= 0.05 or Xc[b, 2] <= 0.05:
                continue
            pa, pb = cam.project(J[[a, b]], distort=False)
            pts = np.rint(pa[None] + along[:, None] * (pb - pa)[None]).astype(int)
            ok = (pts[:, 0] >= 0) & (pts[:, 0] < W) & (pts[:, 1] >= 0) & (pts[:, 1] < H)
            pts = pts[ok]
            pts = pts[masks[r][pts[:, 1], pts[:, 0]] > 127]
            if len(pts):
                samples[i].append(images[r][pts[:, 1], pts[:, 0], ::-1])  # BGR -> RGB
    out = np.full((len(bones), 3), np.nan, np.float32)
    for i, s in enumerate(samples):
        if s:
            out[i] = np.median(srgb_to_linear(np.concatenate(s).astype(np.float32) / 255.0), axis=0)
    return out


def camera_gains(colours: np.ndarray, outlier: float = 2.5) -> tuple[np.ndarray, dict]:
    """Per-camera, per-channel linear gains [C, 3] from subject colours [C, N, 3] (NaN = unseen).

    Returns (gains, info): gains multiply a camera's linear RGB to bring it to the rig's common
    response (geometric mean of the gains 1 per channel); info has the fit's residual (log units)
    and the number of (camera, bone) pairs used. Cameras without enough shared bones get gain 1.
    """
    C, N, _ = colours.shape
    gains = np.ones((C, 3), np.float64)
    used_total = 0
    resid_all = []
    for ch in range(3):
        x = colours[..., ch].astype(np.float64)
        ok = np.isfinite(x) & (x > DARK)
        # a bone must be seen by at least two cameras to relate them
        ok &= ok.sum(0, keepdims=True) >= 2
        fit = None
        for it in range(3):
            cams, parts = np.nonzero(ok)
            if len(cams) < C + 1:
                break  # keep the previous pass's fit, if any
            seen = np.bincount(cams, minlength=C) >= 2
            # unknowns: log g_c (C) and log a_b (N); one row per observation, plus sum(log g) = 0 over
            # the cameras that are seen (an unseen camera's free gain must not absorb the constraint)
            A = np.zeros((len(cams) + 1, C + N))
            A[np.arange(len(cams)), cams] = 1.0
            A[np.arange(len(cams)), C + parts] = 1.0
            A[-1, :C] = seen
            y = np.concatenate([np.log(x[cams, parts]), [0.0]])
            sol, *_ = np.linalg.lstsq(A, y, rcond=None)
            resid = y[:-1] - A[:-1] @ sol
            fit = (sol, resid, seen, len(cams))
            mad = 1.4826 * np.median(np.abs(resid))
            bad = np.abs(resid) > outlier * max(mad, 0.05)
            if not bad.any() or it == 2:
                break
            ok[cams[bad], parts[bad]] = False
        if fit is None:
            continue
        sol, resid, seen, n_used = fit
        g = np.exp(-sol[:C])  # the camera's response is g_c = exp(sol); the correction is its inverse
        g[~seen] = 1.0
        gains[:, ch] = np.clip(g, 1.0 / MAX_GAIN, MAX_GAIN)
        used_total += n_used
        resid_all.append(resid)
    res = np.concatenate(resid_all) if resid_all else np.zeros(0)
    info = {"pairs_used": int(used_total), "residual_log_rms": float(np.sqrt(np.mean(res ** 2))) if len(res) else None}
    return gains.astype(np.float32), info


def apply_gain(images: np.ndarray, gain_rgb: np.ndarray) -> np.ndarray:
    """uint8 BGR images [..., 3] with linear-light gains [3] (RGB) applied; values clip at white."""
    lut = np.empty((3, 256), np.uint8)
    levels = srgb_to_linear(np.arange(256, dtype=np.float32) / 255.0)
    for ch in range(3):
        lut[ch] = np.clip(np.rint(linear_to_srgb(levels * float(gain_rgb[ch])) * 255.0), 0, 255).astype(np.uint8)
    out = np.empty_like(images)
    for bgr_ch, rgb_ch in ((0, 2), (1, 1), (2, 0)):
        out[..., bgr_ch] = lut[rgb_ch][images[..., bgr_ch]]
    return out
