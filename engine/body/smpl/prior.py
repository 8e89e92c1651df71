"""Pose priors for SMPL fitting: joint-angle limits, knee/elbow bending priors, an optional GMM.

Angles are SMPL axis-angle components in each joint's local frame, which at rest is aligned with
the model frame: +X the subject's left, +Y up, +Z forward. Knees bend by positive X rotation,
the left elbow by negative Y and the right elbow by positive Y (same convention as SMPLify's
bending prior). The box limits below are generous ranges of motion written for axis-angle
components (a good approximation for the moderate rotations they constrain); they exist to
rule out impossible poses that joint positions alone cannot (twisted knees, backwards elbows),
not to model everyday posture — the GMM prior does that when the user supplies one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine import MarionetteError

# per joint: (lo, hi) per axis (x, y, z), radians
_WIDE = ((-2.6, 2.6),) * 3
JOINT_LIMITS = np.array([
    [(-np.pi, np.pi)] * 3,                        # 0 pelvis (global orientation: unconstrained)
    [(-2.3, 0.7), (-0.9, 0.9), (-0.5, 1.3)],      # 1 left hip  (x<0 flexes the thigh forward)
    [(-2.3, 0.7), (-0.9, 0.9), (-1.3, 0.5)],      # 2 right hip
    [(-0.5, 0.9), (-0.6, 0.6), (-0.5, 0.5)],      # 3 spine1 (x>0 bends forward)
    [(0.0, 2.7), (-0.3, 0.3), (-0.25, 0.25)],     # 4 left knee  (hinge about x)
    [(0.0, 2.7), (-0.3, 0.3), (-0.25, 0.25)],     # 5 right knee
    [(-0.5, 0.9), (-0.6, 0.6), (-0.5, 0.5)],      # 6 spine2
    [(-0.9, 0.9), (-0.6, 0.6), (-0.6, 0.6)],      # 7 left ankle
    [(-0.9, 0.9), (-0.6, 0.6), (-0.6, 0.6)],      # 8 right ankle
    [(-0.5, 0.9), (-0.6, 0.6), (-0.5, 0.5)],      # 9 spine3
    [(-0.7, 0.7), (-0.3, 0.3), (-0.3, 0.3)],      # 10 left foot
    [(-0.7, 0.7), (-0.3, 0.3), (-0.3, 0.3)],      # 11 right foot
    [(-0.8, 1.0), (-1.1, 1.1), (-0.7, 0.7)],      # 12 neck
    [(-0.5, 0.5), (-0.5, 0.5), (-0.4, 0.6)],      # 13 left collar
    [(-0.5, 0.5), (-0.5, 0.5), (-0.6, 0.4)],      # 14 right collar
    [(-0.8, 1.0), (-1.1, 1.1), (-0.7, 0.7)],      # 15 head
    list(_WIDE),                                  # 16 left shoulder
    list(_WIDE),                                  # 17 right shoulder
    [(-1.2, 1.2), (-2.8, 0.05), (-0.35, 0.35)],   # 18 left elbow (hinge about y, negative bends)
    [(-1.2, 1.2), (-0.05, 2.8), (-0.35, 0.35)],   # 19 right elbow (positive bends)
    [(-1.3, 1.3), (-1.3, 1.3), (-1.3, 1.3)],      # 20 left wrist
    [(-1.3, 1.3), (-1.3, 1.3), (-1.3, 1.3)],      # 21 right wrist
    [(-0.6, 0.6), (-0.6, 0.6), (-0.6, 0.6)],      # 22 left hand
    [(-0.6, 0.6), (-0.6, 0.6), (-0.6, 0.6)],      # 23 right hand
], dtype=np.float64)  # [24, 3, 2]

# hinge joints: (joint, hinge axis, sign of bending)
HINGES = ((4, 0, 1.0), (5, 0, 1.0), (18, 1, -1.0), (19, 1, 1.0))


def limit_penalty(pose, limits=None):
    """Squared excess beyond the box limits, summed per frame. pose [B, 24, 3] -> [B]."""
    import torch

    lim = torch.as_tensor(JOINT_LIMITS if limits is None else limits, dtype=pose.dtype, device=pose.device)
    lo, hi = lim[..., 0], lim[..., 1]
    return (torch.relu(lo - pose) ** 2 + torch.relu(pose - hi) ** 2).sum((-1, -2))


def bending_penalty(pose):
    """Knees and elbows: bending the wrong way grows exponentially (SMPLify-style), and rotation
    off the hinge axis is penalised quadratically. pose [B, 24, 3] -> [B]."""
    import torch

    total = pose.new_zeros(pose.shape[0])
    for joint, axis, sign in HINGES:
        bend = pose[:, joint, axis] * sign
        total = total + (torch.exp(-bend * 4.0) - 1.0).clamp_min(0) ** 2
        off = [a for a in range(3) if a != axis]
        total = total + 0.5 * (pose[:, joint, off] ** 2).sum(-1)
    return total


class GMMPosePrior:
    """Max-mixture Gaussian prior over the 69 body-pose values (SMPLify's form).

    File (``.npz``, or a ``.pkl`` read through the restricted unpickler): ``means`` [K, 69],
    ``covars`` [K, 69, 69] (or ``precisions``), ``weights`` [K]. Returns, per frame, the
    smallest over components of ``0.5 (x-mu)^T P (x-mu) - log(w) + 0.5 log det(cov)``
    minus its minimum possible value (so 0 at the best mode).
    """

    def __init__(self, means, covars, weights, device="cpu", dtype=None):
        import torch

        dtype = dtype or torch.float32
        means = np.asarray(means, dtype=np.float64)
        covars = np.asarray(covars, dtype=np.float64)
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        K = means.shape[0]
        if means.ndim != 2 or means.shape[1] != 69 or covars.shape != (K, 69, 69) or weights.shape != (K,):
            raise MarionetteError(f"GMM prior: expected means [K, 69], covars [K, 69, 69], weights [K]; got "
                                  f"{list(means.shape)}, {list(covars.shape)}, {list(weights.shape)}")
        if not (np.isfinite(means).all() and np.isfinite(covars).all() and (weights > 0).all()):
            raise MarionetteError("GMM prior: means/covars must be finite and weights positive")
        try:
            prec = np.linalg.inv(covars)
            _, logdet = np.linalg.slogdet(covars)
        except np.linalg.LinAlgError as exc:
            raise MarionetteError(f"GMM prior: covariances not invertible ({exc})") from None
        const = -np.log(weights / weights.sum()) + 0.5 * logdet
        const -= const.min()
        t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
        self.means, self.prec, self.const = t(means), t(prec), t(const)
        # upper factor U with U^T U = P, for least-squares residuals U (x - mu)
        prec_sym = 0.5 * (prec + np.transpose(prec, (0, 2, 1)))
        self.chol_t = t(np.transpose(np.linalg.cholesky(prec_sym), (0, 2, 1)))

    @classmethod
    def load(cls, path, device="cpu", dtype=None) -> "GMMPosePrior":
        path = Path(path)
        if not path.is_file():
            raise MarionetteError(f"{path}: GMM prior file not found")
        raw = path.read_bytes()
        if raw[:4] == b"PK\x03\x04":
            import io

            try:
                with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                    d = {k: z[k] for k in z.files}
            except Exception as exc:  # noqa: BLE001
                raise MarionetteError(f"{path}: not a readable .npz ({exc})") from None
        else:
            from engine.body.smpl.unpickle import restricted_pickle_load

            d = restricted_pickle_load(raw, str(path))
            if not isinstance(d, dict):
                raise MarionetteError(f"{path}: expected a dict with means, covars, weights")
        if "covars" not in d and "precisions" in d:
            d["covars"] = np.linalg.inv(np.asarray(d["precisions"], dtype=np.float64))
        for key in ("means", "covars", "weights"):
            if key not in d:
                raise MarionetteError(f"{path}: missing field {key!r} (expected means [K,69], covars [K,69,69], "
                                      "weights [K])")
        try:
            return cls(d["means"], d["covars"], d["weights"], device, dtype)
        except MarionetteError as exc:
            raise MarionetteError(f"{path}: {exc}") from None

    def __call__(self, body_pose):
        """body_pose [B, 69] -> [B]"""
        import torch

        diff = body_pose[:, None, :] - self.means[None]  # [B, K, 69]
        maha = torch.einsum("bki,kij,bkj->bk", diff, self.prec, diff)
        return (0.5 * maha + self.const).min(dim=1).values
