"""Fit SMPL pose and shape to a 3D joint sequence, batched over all frames at once.

Pipeline (``fit_smpl``):

1. **Correspondence** (``engine.body.smpl.joints``): every keypoint of the input joint set is a weighted
   sum of points on the SMPL body; joints without a counterpart drop out.
2. **Shape from limb lengths**: the betas that best explain the median length of every bone of the
   input joint set, at rest pose (a 10-parameter least-squares problem).
3. **Global rotation and translation** per frame by weighted Procrustes (Kabsch) of the torso
   keypoints (hips, shoulders, neck, pelvis) against the rest-pose model.
4. **Limb initialisation** by analytic inverse kinematics: each hip / shoulder is turned so that
   the thigh / upper arm points at the knee / elbow and the knee / elbow bending plane matches the
   data; knees and elbows then swing onto the ankle / wrist.
5. **Joint optimisation** of pose, shape, translation (and the learnable hip offsets) with
   Levenberg-Marquardt over the whole sequence (``_solve_lm``): analytic Jacobians, per-frame
   normal equations plus the shared unknowns solved by a Schur complement, per-frame damping and
   step acceptance. Terms: a Geman-McClure data term weighted by confidence and per-joint weight,
   joint-angle limits, knee/elbow bending priors, a pose L2 (and a GMM prior if given), shape
   regularisation, and temporal smoothness of the keypoints (acceleration, from the second half of
   the iterations on), the root (translation acceleration) and the joint angles (velocity).
   ``optimizer="lbfgs"`` uses autograd + L-BFGS instead; extra terms (silhouettes) are added by an
   Adam refinement of the same objective.
6. **Failure handling**: frames with too few joints take no part in the data and temporal terms
   and are marked failed; frames left above the error threshold are restarted from a good
   neighbour and re-fitted, and marked diverged if they stay there or turn non-finite. Failed
   frames take the previous good frame's solution (the next one at the start). A non-finite
   iteration is undone.

In code, ``_fit_smpl`` runs the stages ``_check_fit_input``, ``_drop_sparse_frames``,
``_initial_guess`` (steps 2-4), ``_lm_passes`` (step 5 and the re-fit of step 6), the scalar
refinement, and ``_finish_fit`` (step 6); one LM iteration (``_solve_lm``, objective
``_LMObjective``) is ``_lm_normal_equations``, ``_lm_damped_step``, ``_lm_candidate`` and
``_lm_accept``.

Units in the objective: residuals in centimetres (so 1 cm error costs 1), angles in radians.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from engine import MarionetteError
from engine.body.joint_sets import JointSet
from engine.body.smpl.joints import POINTS, Correspondence, PointEvaluator, correspondence
from engine.body.smpl.model import NUM_JOINTS, SMPLModelData
from engine.body.smpl.skinning import SMPLTorch
from engine.geometry.rotations import (axis_angle_to_matrix, axis_angle_to_matrix_torch, matrix_to_axis_angle,
                                       matrix_to_axis_angle_torch, skew_torch)

TORSO = ("left_hip", "right_hip", "left_shoulder", "right_shoulder", "neck", "pelvis", "upper_neck", "thorax")


@dataclass
class FitOptions:
    num_betas: int = 10
    iters: int = 12                  # iterations of the joint stage (LM; or L-BFGS with optimizer="lbfgs")
    optimizer: str = "lm"            # "lm": Levenberg-Marquardt, analytic Jacobians; "lbfgs": autograd + L-BFGS
    refine_iters: int = 30           # Adam iterations after LM when extra terms (silhouettes) are given
    refine_lr: float = 0.003         # Adam step (radians / metres / betas)
    device: str = "cpu"
    robust_sigma: float = 0.05       # metres: Geman-McClure scale (residuals beyond this saturate)
    w_data: float = 1.0
    w_limits: float = 100.0
    w_bend: float = 10.0
    w_pose: float = 1.0              # L2 on body pose (rad^2): keeps unobserved twists near rest
    w_gmm: float = 0.05              # used only when ``gmm`` is given
    w_shape: float = 1.0             # |betas|^2
    w_smooth: float = 0.05           # keypoint acceleration, (cm / frame^2)^2
    w_smooth_root: float = 0.01      # translation acceleration, (cm / frame^2)^2
    w_pose_vel: float = 0.01         # pose-parameter velocity, (rad / frame)^2
    w_offset: float = 0.05           # learnable hip offsets: |delta in cm|^2 towards the prior
    learn_offsets: bool = True
    min_joint_fraction: float = 0.4  # a frame needs this fraction of the usable joints (and >= 4)
    divergence_threshold: float = 0.10  # metres of mean joint error beyond which a frame is diverged
    cpu_threads: int = 1             # torch threads during the fit on CPU (0: leave torch's setting); the
                                     # many small batched ops lose badly to threading on a busy machine
    gmm: object = None               # engine.body.smpl.prior.GMMPosePrior
    extra_terms: list = field(default_factory=list)  # callables(state dict) -> scalar loss (e.g. silhouettes)


@dataclass
class FitResult:
    poses: np.ndarray        # [T, 72] axis-angle, global orientation first
    trans: np.ndarray        # [T, 3]
    betas: np.ndarray        # [num_betas]
    joints: np.ndarray       # [T, 24, 3] fitted SMPL joints (world)
    keypoints: np.ndarray    # [T, J, 3] fitted keypoints of the input joint set
    fit_error: np.ndarray    # [T] mean distance (m) of fitted to observed keypoints; NaN if none observed
    failed: np.ndarray       # [T] bool
    failure_reason: list     # [T] "" / "too few joints" / "diverged"
    offsets: np.ndarray      # [G, 3] learned hip-offset corrections (m)
    messages: list
    loss_history: list


def _dtype_for(device):
    import torch

    return torch.float32


def _normalize(v, eps=1e-9):
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, eps), n[..., 0]


def _swing(a, b):
    """Minimal rotations [N,3,3] taking unit vectors a [N,3] onto b [N,3]."""
    axis = np.cross(a, b)
    s = np.linalg.norm(axis, axis=-1)
    c = (a * b).sum(-1)
    ang = np.arctan2(s, c)
    rv = axis / np.maximum(s, 1e-12)[:, None] * ang[:, None]
    return axis_angle_to_matrix(rv)


def _frame_from(d, n):
    """Orthonormal basis [N,3,3] (columns) from a direction and an approximate normal."""
    e1, _ = _normalize(d)
    e2, _ = _normalize(n - (n * e1).sum(-1, keepdims=True) * e1)
    e3 = np.cross(e1, e2)
    return np.stack([e1, e2, e3], axis=-1)


def weighted_kabsch(src, dst, w):
    """Per batch: R, t minimising sum w |R src + t - dst|^2. src, dst [T,N,3], w [T,N] -> R [T,3,3], t [T,3], ok [T]."""
    wsum = w.sum(1)
    ok = (w > 0).sum(1) >= 3
    ws = np.where(wsum > 0, wsum, 1.0)[:, None]
    cs = (w[..., None] * src).sum(1) / ws
    cd = (w[..., None] * dst).sum(1) / ws
    H = np.einsum("tn,tni,tnj->tij", w, src - cs[:, None], dst - cd[:, None])
    U, S, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(np.einsum("tji,tkj->tik", Vt, U)))
    d[d == 0] = 1.0
    D = np.zeros_like(H)
    D[:, 0, 0] = 1
    D[:, 1, 1] = 1
    D[:, 2, 2] = d
    R = np.einsum("tji,tjk,tlk->til", Vt, D, U)  # V D U^T
    # a degenerate (collinear) torso gives no rotation: mark it not ok
    ok &= S[:, 1] > 1e-6 * np.maximum(S[:, 0], 1e-12)
    t = cd - np.einsum("tij,tj->ti", R, cs)
    return R, t, ok


def _fill_from_neighbours(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Replace rows where ``ok`` is False by the previous ok row (the next one at the start)."""
    out = values.copy()
    idx = np.nonzero(ok)[0]
    if len(idx) == 0:
        return out
    T = len(ok)
    prev = np.maximum.accumulate(np.where(ok, np.arange(T), -1))
    src = np.where(prev >= 0, prev, idx[0])
    out[~ok] = values[src[~ok]]
    return out


class _Problem:
    """Tensors shared by the stages of one fit."""

    def __init__(self, joints, conf, joint_set: JointSet, model: SMPLModelData, opts: FitOptions):
        import torch

        self.opts = opts
        self.device = torch.device(opts.device)
        self.dtype = _dtype_for(opts.device)
        self.corr: Correspondence = correspondence(joint_set)
        self.joint_set = joint_set
        self.model = model
        self.smpl = SMPLTorch(model, self.device, self.dtype, num_betas=opts.num_betas)
        self.ev = PointEvaluator(self.corr, model.landmarks, self.device, self.dtype)
        self.T = joints.shape[0]
        valid = np.isfinite(joints).all(-1) & (conf > 0) & self.corr.used[None]
        self.valid = valid
        self.target_np = np.where(valid[..., None], joints, 0.0)
        t = lambda a: torch.as_tensor(a, dtype=self.dtype, device=self.device)  # noqa: E731
        self.target = t(self.target_np)
        self.wc_np = np.where(valid, np.clip(conf, 0, 1) * self.corr.weights[None], 0.0)
        self.t = t

    # model keypoints at rest (zero pose, no translation) for given betas: [J, 3]
    def rest_keypoints(self, betas):
        import torch

        b = betas.reshape(1, -1)
        pose = torch.zeros(1, NUM_JOINTS, 3, dtype=self.dtype, device=self.device)
        out = self.smpl(b, pose, vertex_ids=self.ev.vertex_ids)
        return self.ev.keypoints(out["joints"], out["rot"], out["vertices"])[0]


def _shape_from_limbs(pb: _Problem, messages) -> np.ndarray:
    """Betas matching the median bone lengths of the input (rest pose)."""
    import torch

    js, opts = pb.joint_set, pb.opts
    pairs, lengths, weights = [], [], []
    for a, b in js.bones:
        both = pb.valid[:, a] & pb.valid[:, b]
        if both.sum() < max(1, 0.1 * pb.T):
            continue
        d = np.linalg.norm(pb.target_np[both, a] - pb.target_np[both, b], axis=-1)
        pairs.append((a, b))
        lengths.append(np.median(d))
        weights.append(min(pb.corr.weights[a], pb.corr.weights[b]))
    nb = pb.smpl.num_betas
    if len(pairs) < 3:
        messages.append("shape: fewer than 3 measurable bones; starting from the mean shape")
        return np.zeros(nb)
    ia = np.array([p[0] for p in pairs])
    ib = np.array([p[1] for p in pairs])
    L = np.array(lengths)
    W = np.array(weights)
    # rest keypoints are affine in betas: evaluate at 0 and at the unit vectors, then Gauss-Newton
    with torch.no_grad():
        k0 = pb.rest_keypoints(pb.t(np.zeros(nb))).cpu().numpy()
        kb = np.stack([pb.rest_keypoints(pb.t(np.eye(nb)[i])).cpu().numpy() - k0 for i in range(nb)], -1)
    d0 = k0[ia] - k0[ib]
    db = kb[ia] - kb[ib]  # [nbones, 3, nb]
    out = np.zeros(nb)
    lam = opts.w_shape * 1e-4  # betas prior in the same m^2 units as the lengths (1 cm ~ 1e-4)
    for _ in range(20):
        d = d0 + db @ out
        length = np.linalg.norm(d, axis=-1)
        u = d / np.maximum(length, 1e-9)[:, None]
        Jl = np.einsum("bc,bck->bk", u, db)
        H = (Jl * W[:, None]).T @ Jl + lam * np.eye(nb)
        g = (Jl * W[:, None]).T @ (length - L) + lam * out
        step = -np.linalg.solve(H, g)
        out = out + step
        if np.abs(step).max() < 1e-6:
            break
    if not np.isfinite(out).all():
        messages.append("shape: limb-length fit diverged; starting from the mean shape")
        return np.zeros(nb)
    return out


def _initial_pose(pb: _Problem, betas: np.ndarray, messages):
    """Global orientation/translation by torso Procrustes; limbs by analytic IK. -> pose [T,24,3], trans [T,3]"""
    import torch

    js, T = pb.joint_set, pb.T
    with torch.no_grad():
        rest_kp = pb.rest_keypoints(pb.t(betas)).cpu().numpy()
        rest_J = pb.smpl.rest_joints(pb.t(betas)).cpu().numpy()
    torso = [j for j, c in enumerate(js.canonical) if c in TORSO and pb.corr.used[j]]
    if len(torso) < 3:
        torso = [j for j in range(js.num_joints) if pb.corr.used[j]]
    w = pb.wc_np[:, torso]
    src = np.broadcast_to(rest_kp[torso], (T, len(torso), 3))
    R, t, ok = weighted_kabsch(src, pb.target_np[:, torso], w)
    if not ok.any():
        raise MarionetteError("no frame has 3 or more usable torso joints; cannot place the body")
    if (~ok).any():
        messages.append(f"init: {int((~ok).sum())} frame(s) without a usable torso took a neighbour's placement")
    R = _fill_from_neighbours(R, ok)
    t = _fill_from_neighbours(t, ok)
    J0 = rest_J[0]
    trans = t + np.einsum("tij,j->ti", R, J0) - J0
    local = np.tile(np.eye(3), (T, NUM_JOINTS, 1, 1))
    local[:, 0] = R

    def kp(canon):
        if canon not in js.canonical:
            return None, np.zeros(T, bool)
        j = js.canonical.index(canon)
        return pb.target_np[:, j], pb.valid[:, j]

    # (root-side joint, hinge joint, end joint, SMPL indices, rest hinge normal, detector-hip point)
    limbs = [
        ("left_hip", "left_knee", "left_ankle", (1, 4, 7), np.array([1.0, 0, 0]), "det_left_hip"),
        ("right_hip", "right_knee", "right_ankle", (2, 5, 8), np.array([1.0, 0, 0]), "det_right_hip"),
        ("left_shoulder", "left_elbow", "left_wrist", (16, 18, 20), np.array([0, -1.0, 0]), None),
        ("right_shoulder", "right_elbow", "right_wrist", (17, 19, 21), np.array([0, 1.0, 0]), None),
    ]
    for root_name, mid_name, end_name, (jr, jm, je), n0, det in limbs:
        pr, vr = kp(root_name)
        pm, vm = kp(mid_name)
        pe, ve = kp(end_name)
        if pr is None or pm is None:
            continue
        if det is not None:  # detector hip -> SMPL hip: remove the prior offset (pelvis frame)
            pr = pr - np.einsum("tij,j->ti", R, np.asarray(POINTS[det].offset))
        parent_global = R  # pelvis (legs) or collar (= spine = pelvis at init) for arms
        d0, _ = _normalize(rest_J[jm] - rest_J[jr])
        d_upper, _ = _normalize(pm - pr)
        ok_upper = vr & vm
        if pe is not None:
            d_lower, _ = _normalize(pe - pm)
            ok_lower = ok_upper & ve
            n1 = np.cross(d_upper, d_lower)
            bend = np.linalg.norm(n1, axis=-1)
        else:
            d_lower, ok_lower, n1, bend = None, np.zeros(T, bool), None, np.zeros(T)
        # upper segment: two-vector alignment when the limb is clearly bent, else minimal swing
        swing_g = np.einsum("tij,tjk->tik", _swing(np.einsum("tij,j->ti", parent_global, d0), d_upper), parent_global)
        G = swing_g
        if n1 is not None:
            bent = ok_lower & (bend > 0.25)
            if bent.any():
                B0 = _frame_from(d0[None], n0[None])[0]
                B1 = _frame_from(d_upper[bent], n1[bent])
                G = G.copy()
                G[bent] = np.einsum("tij,kj->tik", B1, B0)
        G = np.where(ok_upper[:, None, None], G, parent_global)
        local[:, jr] = np.einsum("tji,tjk->tik", parent_global, G)
        if d_lower is not None:
            dl0, _ = _normalize(rest_J[je] - rest_J[jm])
            S = _swing(np.einsum("tij,j->ti", G, dl0), d_lower)
            Gm = np.einsum("tij,tjk->tik", S, G)
            Gm = np.where(ok_lower[:, None, None], Gm, G)
            local[:, jm] = np.einsum("tji,tjk->tik", G, Gm)
    pose = matrix_to_axis_angle(local)
    return pose, trans


def _scalar_problem(pb: _Problem, pose0, trans0, betas0, offsets0, opts: FitOptions):
    """The whole objective as one differentiable scalar (L-BFGS / refinement with extra terms)."""
    import torch

    T = pb.T
    dev, dt = pb.device, pb.dtype
    pose = torch.tensor(np.asarray(pose0).reshape(T, NUM_JOINTS, 3), dtype=dt, device=dev, requires_grad=True)
    trans = torch.tensor(trans0, dtype=dt, device=dev, requires_grad=True)
    betas = torch.tensor(betas0, dtype=dt, device=dev, requires_grad=True)
    n_off = pb.ev.num_learnable if opts.learn_offsets else 0
    offsets = torch.zeros(max(n_off, 1), 3, dtype=dt, device=dev)
    if offsets0 is not None and n_off:
        offsets[:n_off] = torch.as_tensor(offsets0, dtype=dt, device=dev)
    offsets.requires_grad_(bool(n_off))
    wc = pb.t(pb.wc_np)
    target = pb.target
    s2 = (opts.robust_sigma * 100) ** 2
    pose_mask = torch.ones(NUM_JOINTS, 3, dtype=dt, device=dev)
    pose_mask[0] = 0  # no L2 pull on the global orientation

    def objective():
        out = pb.smpl(betas, pose, trans, vertex_ids=pb.ev.vertex_ids)
        kp = pb.ev.keypoints(out["joints"], out["rot"], out["vertices"], offsets if n_off else None)
        r2 = ((kp - target) ** 2).sum(-1) * 1e4
        terms = {"data": opts.w_data * (wc * (r2 * s2 / (r2 + s2))).sum() / T}
        from engine.body.smpl.prior import bending_penalty, limit_penalty

        terms["limits"] = opts.w_limits * limit_penalty(pose).sum() / T
        terms["bend"] = opts.w_bend * bending_penalty(pose).sum() / T
        terms["pose"] = opts.w_pose * ((pose * pose_mask) ** 2).sum() / T
        if opts.gmm is not None:
            terms["gmm"] = opts.w_gmm * opts.gmm(pose[:, 1:].reshape(T, -1)).sum() / T
        terms["shape"] = opts.w_shape * (betas ** 2).sum() / T
        if n_off:
            terms["offset"] = opts.w_offset * ((offsets * 100) ** 2).sum() / T
        if T >= 3:
            j = kp * 100
            terms["smooth"] = opts.w_smooth * ((j[2:] - 2 * j[1:-1] + j[:-2]) ** 2).sum() / T
            tr = trans * 100
            terms["smooth_root"] = opts.w_smooth_root * ((tr[2:] - 2 * tr[1:-1] + tr[:-2]) ** 2).sum() / T
        if T >= 2:
            terms["pose_vel"] = opts.w_pose_vel * ((pose[1:, 1:] - pose[:-1, 1:]) ** 2).sum() / T
        state = {"pose": pose, "trans": trans, "betas": betas, "smpl": pb.smpl, "out": out, "T": T}
        for term in opts.extra_terms:
            terms[getattr(term, "name", "extra")] = term(state)
        return sum(terms.values()), terms, kp, out

    return objective, pose, trans, betas, offsets, n_off


def _run_adam(objective, params, total, progress, messages, lr=0.003) -> list:
    """Plain Adam (a refinement from the LM solution; written out to keep torch.optim's import cost away)."""
    import torch

    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    b1, b2, history = 0.9, 0.999, []
    best = None
    for it in range(1, total + 1):
        for p in params:
            p.grad = None
        loss, _, _, _ = objective()
        if not torch.isfinite(loss):
            messages.append(f"refinement diverged at iteration {it}; kept the best solution")
            break
        value = float(loss.detach())
        if best is None or value < best[0]:
            best = (value, [p.detach().clone() for p in params])
        loss.backward()
        with torch.no_grad():
            for p, mi, vi in zip(params, m, v):
                g = torch.nan_to_num(p.grad)
                mi.mul_(b1).add_(g, alpha=1 - b1)
                vi.mul_(b2).addcmul_(g, g, value=1 - b2)
                p -= lr * (mi / (1 - b1 ** it)) / ((vi / (1 - b2 ** it)).sqrt() + 1e-8)
        history.append(float(loss.detach()))
        if progress is not None:
            progress(it, total)
    if best is not None:
        with torch.no_grad():
            for p, b in zip(params, best[1]):
                p.copy_(b)
    return history


def _run_lbfgs(objective, params, total, progress, messages) -> list:
    import torch

    history: list[float] = []
    chunk = 10
    if total > 0:
        optim = torch.optim.LBFGS(params, lr=1.0, max_iter=chunk, history_size=30, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-9, tolerance_change=1e-12)

        def closure():
            optim.zero_grad()
            loss, _, _, _ = objective()
            if torch.isfinite(loss):
                loss.backward()
            return loss

        done = 0
        while done < total:
            optim.param_groups[0]["max_iter"] = min(chunk, total - done)
            snapshot = [p.detach().clone() for p in params]
            loss = optim.step(closure)
            done += min(chunk, total - done)
            bad = not torch.isfinite(loss) or any(not torch.isfinite(p).all() for p in params)
            if bad:
                with torch.no_grad():
                    for p, s in zip(params, snapshot):
                        p.copy_(s)
                messages.append(f"optimisation diverged after {done} iterations; kept the last finite solution")
                break
            history.append(float(loss.detach()))
            if progress is not None:
                progress(done, total)
            if len(history) >= 2 and abs(history[-2] - history[-1]) <= 1e-7 * max(1.0, abs(history[-1])):
                if progress is not None:
                    progress(total, total)
                break

    return history


def fit_smpl(joints, joint_set: JointSet, model: SMPLModelData, confidence=None,
             options: FitOptions | None = None, progress=None) -> FitResult:
    """Fit SMPL to ``joints`` [T, J, 3] (metres, NaN = missing) of ``joint_set``.

    progress: optional callable(done, total) called during optimisation.
    """
    import torch

    opts = options or FitOptions()
    before = torch.get_num_threads()
    if opts.cpu_threads > 0 and str(opts.device).startswith("cpu"):
        torch.set_num_threads(opts.cpu_threads)
    try:
        return _fit_smpl(joints, joint_set, model, confidence, opts, progress)
    finally:
        torch.set_num_threads(before)


def _fit_smpl(joints, joint_set, model, confidence, opts: FitOptions, progress) -> FitResult:
    """The stages of :func:`fit_smpl`, in order (each is a function of its own)."""
    joints, conf = _check_fit_input(joints, joint_set, confidence, opts)
    messages: list[str] = []
    pb = _Problem(joints, conf, joint_set, model, opts)
    too_few = _drop_sparse_frames(pb, opts, messages)
    betas0, pose0, trans0 = _initial_guess(pb, too_few, messages)
    history: list[float] = []
    offsets0 = None
    if opts.optimizer == "lm":
        pose0, trans0, betas0, offsets0, history = _lm_passes(pb, pose0, trans0, betas0, too_few, opts, progress,
                                                              messages)
        refine = opts.refine_iters if opts.extra_terms else 0
    elif opts.optimizer == "lbfgs":
        refine = opts.iters
    else:
        raise MarionetteError(f"optimizer {opts.optimizer!r}: expected 'lm' or 'lbfgs'")
    objective, pose, trans, betas, offsets, n_off = _scalar_problem(pb, pose0, trans0, betas0, offsets0, opts)
    if refine > 0:
        params = [pose, trans, betas] + ([offsets] if n_off else [])
        if opts.optimizer == "lm":
            history += _run_adam(objective, params, refine, progress, messages, lr=opts.refine_lr)
        else:
            history += _run_lbfgs(objective, params, refine, progress, messages)
    return _finish_fit(pb, objective, pose, trans, betas, offsets, n_off, too_few, opts, messages, history)


def _check_fit_input(joints, joint_set, confidence, opts: FitOptions) -> tuple[np.ndarray, np.ndarray]:
    """Stage 0: joints [T, J, 3] float64 and confidence [T, J] (NaN -> 0), validated."""
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (joint_set.num_joints, 3):
        raise MarionetteError(f"joints: expected shape [T, {joint_set.num_joints}, 3] for {joint_set.name}, "
                              f"got {list(joints.shape)}")
    T = joints.shape[0]
    if T == 0:
        raise MarionetteError("joints: the sequence has no frames")
    conf = np.ones(joints.shape[:2]) if confidence is None else np.asarray(confidence, dtype=np.float64)
    if conf.shape != joints.shape[:2]:
        raise MarionetteError(f"confidence: expected shape {list(joints.shape[:2])}, got {list(conf.shape)}")
    conf = np.nan_to_num(conf, nan=0.0, posinf=0.0, neginf=0.0)
    if opts.iters < 0:
        raise MarionetteError(f"iters must be >= 0, got {opts.iters}")
    return joints, conf


def _drop_sparse_frames(pb: _Problem, opts: FitOptions, messages) -> np.ndarray:
    """Stage 1: frames [T] with too few usable joints; they leave the data terms (``pb`` is updated)."""
    joint_set = pb.joint_set
    n_used = int(pb.corr.used.sum())
    if n_used < 6:
        raise MarionetteError(f"joint set {joint_set.name}: only {n_used} joints correspond to SMPL; need 6")
    count = pb.valid.sum(1)
    need = max(4, int(math.ceil(opts.min_joint_fraction * n_used)))
    too_few = count < need
    if too_few.all():
        raise MarionetteError(f"every frame has fewer than {need} of the {n_used} usable {joint_set.name} joints; "
                              "nothing to fit")
    if too_few.any():
        messages.append(f"{int(too_few.sum())} frame(s) have fewer than {need} usable joints: fitted from "
                        "their neighbours and marked failed")
    pb.wc_np[too_few] = 0.0
    pb.valid[too_few] = False
    return too_few


def _initial_guess(pb: _Problem, too_few: np.ndarray, messages) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stage 2: (betas, pose, trans) from limb lengths, Procrustes and analytic limb IK; frames
    without data start from a neighbour's pose."""
    betas0 = _shape_from_limbs(pb, messages)
    pose0, trans0 = _initial_pose(pb, betas0, messages)
    if too_few.any():
        pose0 = _fill_from_neighbours(pose0, ~too_few)
        trans0 = _fill_from_neighbours(trans0, ~too_few)
    return betas0, pose0, trans0


def _lm_passes(pb: _Problem, pose0, trans0, betas0, too_few: np.ndarray, opts: FitOptions, progress, messages):
    """Stage 3: Levenberg-Marquardt, in two passes when smoothing (converge without it, then
    smooth), then frames stuck in a wrong minimum re-fitted from a good neighbour.
    Returns (pose, trans, betas, offsets, loss history) as numpy arrays (and a list)."""
    if opts.w_smooth > 0 and opts.iters >= 4:
        # keypoint smoothing reaches each frame through a conservative majoriser that slows
        # convergence: converge without it first, then smooth from there
        first = dataclasses.replace(opts, w_smooth=0.0, iters=opts.iters // 2)
        half = lambda done, total: progress(done, opts.iters) if progress else None  # noqa: E731
        pose_t, trans_t, betas_t, offsets_t, history = _solve_lm(pb, pose0, trans0, betas0, first, half,
                                                                 messages)
        # frames the first pass could not fit are left out of the smoothing (they are replaced later)
        err = _frame_errors(pb, pose_t, trans_t, betas_t, offsets_t)
        outliers = ~(err <= opts.divergence_threshold)
        second = dataclasses.replace(opts, iters=opts.iters - first.iters)
        shift = lambda done, total: progress(first.iters + done, opts.iters) if progress else None  # noqa: E731
        pose_t, trans_t, betas_t, offsets_t, h2 = _solve_lm(pb, pose_t.cpu().numpy(), trans_t.cpu().numpy(),
                                                            betas_t.cpu().numpy(), second, shift, messages,
                                                            offsets0=offsets_t, exclude=outliers)
        history += h2
    else:
        pose_t, trans_t, betas_t, offsets_t, history = _solve_lm(pb, pose0, trans0, betas0, opts, progress,
                                                                 messages)
    pose0, trans0, betas0 = (x.cpu().numpy() for x in (pose_t, trans_t, betas_t))
    offsets0 = offsets_t.cpu().numpy()
    # frames stuck in a wrong minimum (a limb flipped): restart them from a good neighbour's solution
    err = _frame_errors(pb, pose0, trans0, betas0, offsets0)
    stuck = ~too_few & ~(err <= opts.divergence_threshold)
    if stuck.any() and (~stuck & ~too_few).any() and opts.iters > 0:
        good = ~stuck & ~too_few
        pose0 = _fill_from_neighbours(pose0, good)
        trans0 = _fill_from_neighbours(trans0, good)
        again = dataclasses.replace(opts, iters=max(4, opts.iters // 3))
        pose_t, trans_t, betas_t, offsets_t, h3 = _solve_lm(pb, pose0, trans0, betas0, again, None, messages,
                                                            offsets0=offsets0, exclude=stuck)
        pose0, trans0, betas0 = (x.cpu().numpy() for x in (pose_t, trans_t, betas_t))
        offsets0 = offsets_t.cpu().numpy()
        history += h3
        messages.append(f"re-fitted {int(stuck.sum())} frame(s) from a neighbour's solution after a poor first fit")
    return pose0, trans0, betas0, offsets0, history


def _mean_joint_error(pb: _Problem, kp_np: np.ndarray) -> np.ndarray:
    """Mean distance (m) of keypoints [T, J, 3] to the observed ones per frame (NaN without any)."""
    err = np.linalg.norm(kp_np - pb.target_np, axis=-1)
    n_obs = pb.valid.sum(1)
    return np.where(n_obs > 0, (err * pb.valid).sum(1) / np.maximum(n_obs, 1), np.nan)


def _finish_fit(pb: _Problem, objective, pose, trans, betas, offsets, n_off: int, too_few: np.ndarray,
                opts: FitOptions, messages, history) -> FitResult:
    """Stage 4: flag failed frames (too few joints, diverged), give them a good neighbour's
    solution, and assemble the result with the final joints and keypoints."""
    import torch

    T = pb.T
    with torch.no_grad():
        loss, terms, kp, out = objective()
    kp_np = kp.cpu().numpy()
    pose_np = pose.detach().cpu().numpy().reshape(T, NUM_JOINTS * 3)
    trans_np = trans.detach().cpu().numpy()
    fit_error = _mean_joint_error(pb, kp_np)

    reason = ["" for _ in range(T)]
    for i in np.nonzero(too_few)[0]:
        reason[i] = "too few joints"
    finite = np.isfinite(pose_np).all(1) & np.isfinite(trans_np).all(1) & np.isfinite(kp_np).all((1, 2))
    diverged = ~too_few & (~finite | (np.nan_to_num(fit_error, nan=np.inf) > opts.divergence_threshold))
    for i in np.nonzero(diverged)[0]:
        reason[i] = "diverged"
    failed = too_few | diverged
    if diverged.any():
        messages.append(f"{int(diverged.sum())} frame(s) diverged (mean joint error above "
                        f"{opts.divergence_threshold * 100:.0f} cm or non-finite): replaced by the previous good frame")
    if failed.all():
        raise MarionetteError("the fit failed on every frame (see the joint errors); check the input's units "
                              "(metres) and joint set")
    if failed.any():
        pose_np = _fill_from_neighbours(pose_np, ~failed)
        trans_np = _fill_from_neighbours(trans_np, ~failed)
    # final joints of the (possibly replaced) solution
    with torch.no_grad():
        final = pb.smpl(betas, pb.t(pose_np), pb.t(trans_np), vertex_ids=pb.ev.vertex_ids)
        kp_final = pb.ev.keypoints(final["joints"], final["rot"], final["vertices"], offsets if n_off else None)
    if failed.any():
        fit_error = _mean_joint_error(pb, kp_final.cpu().numpy())
    return FitResult(
        poses=pose_np.astype(np.float32), trans=trans_np.astype(np.float32),
        betas=betas.detach().cpu().numpy().astype(np.float32),
        joints=final["joints"].cpu().numpy().astype(np.float32),
        keypoints=kp_final.cpu().numpy().astype(np.float32),
        fit_error=fit_error.astype(np.float32), failed=failed, failure_reason=reason,
        offsets=(offsets.detach().cpu().numpy() if n_off else np.zeros((0, 3))).astype(np.float32),
        messages=messages, loss_history=history,
    )


FIT_FORMAT = "marionette.smpl_fit"


def save_fit(path, result: FitResult, model: SMPLModelData, seq, extras: dict | None = None) -> None:
    """Write an AMASS-style fit ``.npz`` atomically (poses, trans, betas, gender, mocap_framerate, up_axis,
    plus fit_error, failed, failure_reason, joints, keypoints, joint_set)."""
    import os
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = dict(
        format=np.array(FIT_FORMAT), version=np.array(1),
        poses=result.poses.astype(np.float32), trans=result.trans.astype(np.float32),
        betas=result.betas.astype(np.float32), gender=np.array(model.gender),
        mocap_framerate=np.array(float(seq.fps)), up_axis=np.array(seq.up_axis),
        fit_error=result.fit_error.astype(np.float32), failed=result.failed.astype(bool),
        failure_reason=np.array(result.failure_reason, dtype=str),
        joints=result.joints.astype(np.float32), keypoints=result.keypoints.astype(np.float32),
        joint_set=np.array(seq.joint_set.name), hip_offset_correction=result.offsets.astype(np.float32),
        messages=np.array(result.messages, dtype=str),
    )
    arrays.update(extras or {})
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------
# Levenberg-Marquardt over the whole sequence with analytic per-frame Jacobians
#
# Per frame the unknowns are 24 rotation increments (applied on the right, in each joint's local
# frame: R <- R exp([d]x)) and the translation; shared unknowns are the betas and the learnable
# offsets. The normal equations are block-diagonal over frames plus a dense border for the shared
# unknowns, solved by a Schur complement (as in bundle adjustment), batched over frames.
# Temporal terms couple neighbouring frames; each frame sees them through a separable majoriser
# (a quadratic with the exact gradient and a curvature bound), so every frame keeps its own
# small system and its own damping, and a frame's step is accepted only if its cost drops.


def _inv_right_jacobian(aa):
    """J_r^{-1}(aa): d aa = J_r^{-1} d, for aa(R exp(d)) ~ aa + J_r^{-1}(aa) d. [..., 3] -> [..., 3, 3]"""
    import torch

    th2 = (aa * aa).sum(-1)
    th = th2.clamp_min(1e-16).sqrt()
    small = th2 < 1e-6
    th_safe = torch.where(small, torch.ones_like(th), th).clamp(max=math.pi - 1e-3)
    coef = 1 / th_safe ** 2 - (1 + torch.cos(th_safe)) / (2 * th_safe * torch.sin(th_safe))
    coef = torch.where(small, torch.full_like(th, 1 / 12), coef)
    K = skew_torch(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device)
    return eye + 0.5 * K + coef[..., None, None] * (K @ K)


class _LMModel:
    """Forward model with attachments, for values and analytic Jacobians."""

    def __init__(self, pb: "_Problem"):
        import torch

        self.pb = pb
        ev, smpl = pb.ev, pb.smpl
        dev, dt = pb.device, pb.dtype
        parents = smpl.parents
        anc = np.zeros((NUM_JOINTS, NUM_JOINTS))
        for j in range(NUM_JOINTS):
            k = j
            while k >= 0:
                anc[j, k] = 1
                k = parents[k] if k > 0 else -1
        pts = pb.corr.points
        att_point, att_joint, att_w, att_kind, att_ref = [], [], [], [], []
        lm_row = {slot: r for r, slot in enumerate(ev.lm_slots)}
        weights = pb.model.weights
        for i, p in enumerate(pts):
            if i in lm_row:  # a landmark: one attachment per skinning joint
                vid = ev.vertex_ids[lm_row[i]]
                for j in np.nonzero(weights[vid] > 1e-4)[0]:
                    att_point.append(i); att_joint.append(int(j)); att_w.append(float(weights[vid, j]))
                    att_kind.append(1); att_ref.append(lm_row[i])
            else:  # joint + offset: rigid with the offset's frame joint
                if not (p.frame == p.anchor or p.frame == parents[p.anchor]):
                    raise MarionetteError(f"correspondence point anchored at joint {p.anchor} but carried by joint "
                                          f"{p.frame}: the frame must be the anchor or its parent")
                att_point.append(i); att_joint.append(p.frame); att_w.append(1.0)
                att_kind.append(0); att_ref.append(ev.jt_slots.index(i))
        lt = lambda a: torch.as_tensor(np.asarray(a, dtype=np.int64), device=dev)  # noqa: E731
        self.att_point, self.att_joint = lt(att_point), lt(att_joint)
        self.att_w = torch.as_tensor(att_w, dtype=dt, device=dev)
        kind = np.array(att_kind)
        ref = np.array(att_ref)
        self.idx0, self.ref0 = lt(np.nonzero(kind == 0)[0]), lt(ref[kind == 0])
        self.idx1, self.ref1 = lt(np.nonzero(kind == 1)[0]), lt(ref[kind == 1])
        self.joint1 = self.att_joint[self.idx1]
        self.num_points = len(pts)
        self.lm_ids = ev.vertex_ids
        if self.lm_ids:
            ids = lt(self.lm_ids)
            self.lm_vt, self.lm_sd, self.lm_pd = smpl.v_template[ids], smpl.shapedirs[ids], smpl.posedirs[ids]
        # kinematic chains (joint and its ancestors), padded: rotations that move each attachment
        chains = [[k for k in range(NUM_JOINTS) if anc[j, k]] for j in range(NUM_JOINTS)]
        D = max(len(c) for c in chains)
        chain_idx = np.zeros((NUM_JOINTS, D), dtype=np.int64)
        chain_msk = np.zeros((NUM_JOINTS, D))
        for j, c in enumerate(chains):
            chain_idx[j, :len(c)] = c
            chain_msk[j, :len(c)] = 1
        aj = np.asarray(att_joint, dtype=np.int64)
        self.att_chain = lt(chain_idx[aj])  # [A, D]
        self.att_cmask = torch.as_tensor(chain_msk[aj] * np.asarray(att_w)[:, None], dtype=dt, device=dev)
        self.att_scatter = lt((np.asarray(att_point)[:, None] * NUM_JOINTS + chain_idx[aj]).reshape(-1))
        # learnable offsets
        nl = ev.num_learnable
        self.num_learnable = nl
        if nl:
            jt = np.asarray(ev.jt_slots)
            self.off_point = lt(jt[ev.learn_slots.cpu().numpy()])
            self.off_frame = ev.frame[ev.learn_slots]
            self.off_group = ev.learn_group
            self.off_sign = ev.learn_sign

    @staticmethod
    def _chain_jac(q, Pj, G, chain, cmask, scatter, num_out):
        """[T, num_out, 3, 72] Jacobian of the points q [T, A, 3] (summed into outputs by ``scatter``)."""
        import torch

        T, A = q.shape[:2]
        D = chain.shape[1]
        v = q[:, :, None, :] - Pj[:, chain]  # [T, A, D, 3]
        a0, a1, a2 = G[:, chain].unbind(-2)  # rows of G_k: a_i[..., col]
        b0, b1, b2 = (x[..., None] for x in v.unbind(-1))
        # column c of -[v]x G_k is G_k[:, c] x v
        blk = torch.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], -1)  # [T, A, D, col, xyz]
        blk = blk * cmask[None, :, :, None, None]
        out = blk.new_zeros(T, num_out * NUM_JOINTS, 3, 3).index_add(1, scatter, blk.reshape(T, A * D, 3, 3))
        # out[t, o*24+k, col, xyz] -> [t, o, xyz, k*3+col]
        return out.reshape(T, num_out, NUM_JOINTS, 3, 3).permute(0, 1, 4, 2, 3).reshape(T, num_out, 3, NUM_JOINTS * 3)

    def forward(self, aa, trans, betas, offsets, jac=False):
        """Posed body points and joints; with ``jac`` their Jacobians w.r.t. the per-frame unknowns
        (rotation increments, translation) and the shared ones (betas, offsets).
        -> dict(points [T,P,3], joints [T,24,3], ...; with jac J_pts [T,P,3,75] (72 rotation increments,
        3 translation), B_pts [T,P,3,nb] (betas), O_pts [T,P,3,3*nl] (learnable offsets))"""
        import torch

        smpl, ev = self.pb.smpl, self.pb.ev
        T = aa.shape[0]
        rot = axis_angle_to_matrix_torch(aa)
        rest = smpl.rest_joints(betas).expand(T, -1, -1)
        G, Pj = smpl._transforms(rot, rest)
        Pj = Pj + trans[:, None]
        off = ev.offset
        if offsets is not None and ev.num_learnable:
            off = off + torch.zeros_like(off).index_add(0, ev.learn_slots, offsets[ev.learn_group] * ev.learn_sign)
        jp = Pj[:, ev.anchor] + (G[:, ev.frame] @ off[None, :, :, None])[..., 0]
        q = jp.new_zeros(T, len(self.att_joint), 3)
        q[:, self.idx0] = jp[:, self.ref0]
        if self.lm_ids:
            eye = torch.eye(3, dtype=aa.dtype, device=aa.device)
            feat = (rot[:, 1:] - eye).reshape(T, -1)
            v = self.lm_vt + torch.einsum("vck,k->vc", self.lm_sd, betas) + torch.einsum("vcp,tp->tvc", self.lm_pd, feat)
            jj = self.joint1
            vloc = v[:, self.ref1] - rest[:, jj]
            q[:, self.idx1] = (G[:, jj] @ vloc[..., None])[..., 0] + Pj[:, jj]
        points = q.new_zeros(T, self.num_points, 3).index_add(1, self.att_point, q * self.att_w[:, None])
        out = {"points": points, "joints": Pj, "aa": aa, "trans": trans}
        if not jac:
            return out
        eye3 = torch.eye(3, dtype=aa.dtype, device=aa.device)
        # rotation increments: d q / d delta_k = -[q - P_k]x G_k (column c: G_k[:, c] x (q - P_k)) for k in chain
        Jr = self._chain_jac(q, Pj, G, self.att_chain, self.att_cmask, self.att_scatter, self.num_points)
        if self.lm_ids:
            # pose blend shapes of the landmarks: d feat_k / d delta_(k,a) = vec(R_k [e_a]x)
            Ea = skew_torch(eye3)  # [3(a), 3, 3]
            M = (rot[:, 1:, None] @ Ea).reshape(T, NUM_JOINTS - 1, 3, 9)
            pd = self.lm_pd.reshape(len(self.lm_ids), 3, NUM_JOINTS - 1, 9)
            dv = torch.einsum("lcki,tkai->tlcka", pd, M).reshape(T, len(self.lm_ids), 3, -1)
            Wl = self.pb.smpl.weights[torch.as_tensor(self.lm_ids, device=aa.device)]  # [L, 24]
            Gw = torch.einsum("lj,tjcd->tlcd", Wl, G)
            slots = torch.as_tensor(ev.lm_slots, device=aa.device)
            Jr = Jr.clone()
            Jr[:, slots, :, 3:] += Gw @ dv
        out["J_pts"] = torch.cat([Jr, eye3.expand(T, self.num_points, 3, 3)], -1)
        # betas: joints follow d P_i = d P_parent + G_parent (dJ_i - dJ_parent)
        Jsd = smpl.J_shapedirs  # [24, 3, nb]
        nb = Jsd.shape[-1]
        dP = Pj.new_zeros(T, NUM_JOINTS, 3, nb)
        dP[:, 0] = Jsd[0]
        for idx, pidx in zip(smpl.level_idx, smpl.level_par):
            dP[:, idx] = dP[:, pidx] + G[:, pidx] @ (Jsd[idx] - Jsd[pidx])
        dq = Pj.new_zeros(T, len(self.att_joint), 3, nb)
        dq[:, self.idx0] = dP[:, ev.anchor[self.ref0]]
        if self.lm_ids:
            jj = self.joint1
            dv = self.lm_sd[self.ref1] - Jsd[jj]  # [A1, 3, nb]
            dq[:, self.idx1] = G[:, jj] @ dv + dP[:, jj]
        out["B_pts"] = dq.new_zeros(T, self.num_points, 3, nb).index_add(1, self.att_point, dq * self.att_w[:, None, None])
        if self.num_learnable:
            Jo = q.new_zeros(T, self.num_points, 3, self.num_learnable, 3)
            for k in range(len(self.off_point)):
                Jo[:, self.off_point[k], :, self.off_group[k], :] += G[:, self.off_frame[k]] * self.off_sign[k]
            out["O_pts"] = Jo.reshape(T, self.num_points, 3, 3 * self.num_learnable)
        return out


def _pose_prior(aa, opts: "FitOptions", gmm):
    """Pose priors on axis-angle aa [T,72] as cost [T], gradient g [T,72] and Gauss-Newton Hessian
    (diagonal part h [T,72], plus a dense GMM part [T,69,69] or None), in the cost convention sum r^2
    with g = J^T r and H = J^T J."""
    import torch

    from engine.body.smpl.prior import HINGES, JOINT_LIMITS

    T = aa.shape[0]
    lim = torch.as_tensor(JOINT_LIMITS.reshape(-1, 2), dtype=aa.dtype, device=aa.device)
    lo, hi = lim[:, 0], lim[:, 1]
    # limits (squared excess) and L2 on the body pose
    exc = torch.clamp(aa - hi, min=0) + torch.clamp(aa - lo, max=0)
    active = (exc != 0).to(aa.dtype)
    mask = torch.ones(72, dtype=aa.dtype, device=aa.device)
    mask[:3] = 0
    cost = opts.w_limits * (exc ** 2).sum(1) + opts.w_pose * ((aa * mask) ** 2).sum(1)
    g = opts.w_limits * exc + opts.w_pose * aa * mask
    h = opts.w_limits * active + opts.w_pose * mask.expand(T, 72)
    h = h.clone()
    g = g.clone()
    # bending: exp(-4 s x) - 1 when bending the wrong way; off-hinge rotation quadratic
    for joint, axis, sign in HINGES:
        c = joint * 3 + axis
        e = torch.exp(-4.0 * sign * aa[:, c])
        r = torch.clamp(e - 1, min=0)
        d = torch.where(e > 1, -4.0 * sign * e, 0 * e)
        cost = cost + opts.w_bend * r ** 2
        g[:, c] += opts.w_bend * d * r
        h[:, c] += opts.w_bend * d * d
        for a in range(3):
            if a != axis:
                c2 = joint * 3 + a
                cost = cost + 0.5 * opts.w_bend * aa[:, c2] ** 2
                g[:, c2] += 0.5 * opts.w_bend * aa[:, c2]
                h[:, c2] += 0.5 * opts.w_bend
    dense = None
    if gmm is not None:
        body = aa[:, 3:]
        diff = body[:, None, :] - gmm.means[None]
        maha = torch.einsum("bki,kij,bkj->bk", diff, gmm.prec, diff)
        val, k = (0.5 * maha + gmm.const).min(1)
        cost = cost + opts.w_gmm * val
        P = gmm.prec[k]
        g[:, 3:] += 0.5 * opts.w_gmm * (P @ diff[torch.arange(T), k][..., None])[..., 0]
        dense = 0.5 * opts.w_gmm * P
    return cost, g, h, dense


def _block_jinv(aa):
    """Inverse right Jacobians per joint: aa [T,72] -> [T,24,3,3]."""
    return _inv_right_jacobian(aa.reshape(aa.shape[0], NUM_JOINTS, 3))


def _d2(y, m=None):
    """D2^T W D2 y for second differences along frames (same shape as y); W masks out the
    differences that touch a frame with ``m`` false (frames without data)."""
    import torch

    a = y[2:] - 2 * y[1:-1] + y[:-2]
    if m is not None:
        a = a * (m[2:] & m[1:-1] & m[:-2]).to(y.dtype)[:, None]
    out = torch.zeros_like(y)
    out[2:] += a
    out[1:-1] -= 2 * a
    out[:-2] += a
    return out


def _d1(y, m=None):
    """D1^T W D1 y for first differences along frames (masked like ``_d2``)."""
    import torch

    a = y[1:] - y[:-1]
    if m is not None:
        a = a * (m[1:] & m[:-1]).to(y.dtype)[:, None]
    out = torch.zeros_like(y)
    out[1:] += a
    out[:-1] -= a
    return out


def _frame_errors(pb: "_Problem", pose, trans, betas, offsets) -> np.ndarray:
    """Mean distance (m) of fitted to observed keypoints per frame (NaN without observations)."""
    import torch

    T = pb.T
    with torch.no_grad():
        t = lambda x: torch.as_tensor(x, dtype=pb.dtype, device=pb.device)  # noqa: E731
        out = pb.smpl(t(betas), t(pose).reshape(T, NUM_JOINTS, 3), t(trans), vertex_ids=pb.ev.vertex_ids)
        kp = pb.ev.keypoints(out["joints"], out["rot"], out["vertices"],
                             t(offsets) if len(offsets) else None).cpu().numpy()
    err = np.linalg.norm(kp - pb.target_np, axis=-1)
    n = pb.valid.sum(1)
    return np.where(n > 0, (err * pb.valid).sum(1) / np.maximum(n, 1), np.nan)


class _LMObjective:
    """The objective of one Levenberg-Marquardt pass (``_solve_lm``): a Geman-McClure data term
    (centimetres), the pose priors, temporal smoothness (as per-frame majorisers) and the
    shared-unknown priors, with the weights and masks they share."""

    def __init__(self, pb: "_Problem", opts: "FitOptions", exclude=None):
        import torch

        T = pb.T
        self.T, self.opts = T, opts
        self.model = _LMModel(pb)
        self.A = pb.ev.A  # [J, P]
        self.target = pb.target * 100
        self.wc = pb.t(pb.wc_np)
        self.s2 = (opts.robust_sigma * 100) ** 2
        self.nb = pb.smpl.num_betas
        self.nl = self.model.num_learnable if opts.learn_offsets else 0
        self.ng = self.nb + 3 * self.nl
        self.gmm = opts.gmm
        self.temporal = T >= 3
        # temporal terms: (weight, curvature bound of D^T D, which quantity)
        self.w_j, self.w_r, self.w_v = ((opts.w_smooth, opts.w_smooth_root, opts.w_pose_vel) if self.temporal
                                        else (0.0, 0.0, 0.0))
        self.c_j, self.c_r, self.c_v = 32 * self.w_j, 32 * self.w_r, 8 * self.w_v
        # frames without data take no part in the temporal terms (they are replaced afterwards)
        keep = pb.valid.any(1) if exclude is None else pb.valid.any(1) & ~np.asarray(exclude, bool)
        self.fm = torch.as_tensor(keep, device=pb.device)

    def d2(self, y):
        return _d2(y, self.fm)

    def d1(self, y):
        return _d1(y, self.fm)

    def evaluate(self, aa, trans, betas, offsets, jac=True) -> dict:
        """Model points (and Jacobians), residuals, per-frame data and prior costs at a solution."""
        import torch

        T = self.T
        out = self.model.forward(aa.reshape(T, NUM_JOINTS, 3), trans, betas, offsets if self.nl else None, jac=jac)
        out["aa"] = aa.reshape(T, -1)
        kp = torch.einsum("jp,tpc->tjc", self.A, out["points"]) * 100
        res = kp - self.target
        r2 = (res ** 2).sum(-1)
        out["res"], out["r2"], out["kp"] = res, r2, kp
        out["data_cost"] = (self.wc * self.s2 * r2 / (r2 + self.s2)).sum(1)
        pc, pg, ph, pdense = _pose_prior(out["aa"], self.opts, self.gmm)
        out["prior_cost"], out["prior_g"], out["prior_h"] = pc, pg, ph
        out["prior_dense"] = pdense
        return out

    def global_cost(self, betas, offsets) -> float:
        c = self.opts.w_shape * float((betas ** 2).sum())
        if self.nl:
            c += self.opts.w_offset * float(((offsets[:self.nl] * 100) ** 2).sum())
        return c

    def temporal_cost(self, out) -> float:
        if not self.temporal:
            return 0.0
        T = self.T
        j, tr, p = out["kp"].reshape(T, -1), out["trans"] * 100, out["aa"][:, 3:]
        # y^T D^T W D y = sum of squared (masked) differences
        return float(self.w_j * (j * self.d2(j)).sum() + self.w_r * (tr * self.d2(tr)).sum()
                     + self.w_v * (p * self.d1(p)).sum())

    def total(self, out, betas, offsets) -> float:
        return (float(out["data_cost"].sum() + out["prior_cost"].sum()) + self.temporal_cost(out)
                + self.global_cost(betas, offsets)) / self.T

    def surrogate(self, out, ref):
        """Per-frame temporal majorisers around ``ref``: (c/2)|y-y0|^2 + g.(y-y0) + const."""
        c = out["data_cost"] + out["prior_cost"]
        if not self.temporal:
            return c
        T = self.T
        for w, cc, y, y0, op in ((self.w_j, self.c_j, out["kp"].reshape(T, -1), ref["kp"].reshape(T, -1), self.d2),
                                 (self.w_r, self.c_r, out["trans"] * 100, ref["trans"] * 100, self.d2),
                                 (self.w_v, self.c_v, out["aa"][:, 3:], ref["aa"][:, 3:], self.d1)):
            if w > 0:
                g = 2 * w * op(y0)
                dy = y - y0
                c = c + 0.5 * cc * (dy ** 2).sum(1) + (g * dy).sum(1)
        return c


def _lm_normal_equations(obj: _LMObjective, cur: dict, betas, offsets):
    """The normal equations at ``cur``, block by block (g = J^T r, H = J^T J): per-frame blocks
    Hff [T, 75, 75], bf [T, 75], their coupling to the shared unknowns Hfg [T, 75, G], and the
    shared block Hgg [G, G], bg [G]."""
    import torch

    T, A, nb, nl, ng = obj.T, obj.A, obj.nb, obj.nl, obj.ng
    dt, dev = obj.target.dtype, obj.target.device
    w_j, w_r, w_v, c_j, c_r, c_v = obj.w_j, obj.w_r, obj.w_v, obj.c_j, obj.c_r, obj.c_v
    idx24 = torch.arange(NUM_JOINTS, device=dev)
    omega = (obj.wc * obj.s2 * obj.s2 / (cur["r2"] + obj.s2) ** 2).sqrt()  # IRLS weights of Geman-McClure
    Jk = (torch.einsum("jp,tpcn->tjcn", A, cur["J_pts"]) * 100).reshape(T, -1, 75)
    Bk = torch.einsum("jp,tpcn->tjcn", A, cur["B_pts"]) * 100
    if nl:
        Bk = torch.cat([Bk, torch.einsum("jp,tpcn->tjcn", A, cur["O_pts"]) * 100], -1)
    Bk = Bk.reshape(T, -1, ng)
    # data (IRLS-weighted) and the keypoint-acceleration majoriser share the keypoint Jacobian:
    # H = J^T diag(omega^2 + c/2) J, g = J^T (omega^2 res + w D^T D kp)
    # (the smoothing does not reach the shared unknowns: shrinking the body must not become a
    # way to lower accelerations)
    diag_d = (omega ** 2)[..., None].expand(T, -1, 3).reshape(T, -1)
    g_d = ((omega ** 2)[..., None] * cur["res"]).reshape(T, -1)
    gk = g_d + w_j * obj.d2(cur["kp"].reshape(T, -1)) if w_j > 0 else g_d
    Jkt = Jk.transpose(1, 2)
    Hff = (Jkt * (diag_d + 0.5 * c_j)[:, None, :]) @ Jk
    Hfg = (Jkt * diag_d[:, None, :]) @ Bk
    bf = (Jkt @ gk[..., None])[..., 0]
    Hgg = (Bk.transpose(1, 2) @ (diag_d[..., None] * Bk)).sum(0)
    bg = (Bk.transpose(1, 2) @ g_d[..., None]).sum(0)[:, 0]
    # pose terms live on axis-angle: map to rotation increments with the inverse right Jacobian
    Ji = _block_jinv(cur["aa"])  # [T,24,3,3]
    g_aa = cur["prior_g"].clone()
    h_aa = cur["prior_h"].clone()
    if w_v > 0:
        g_aa[:, 3:] += 0.5 * 2 * w_v * obj.d1(cur["aa"][:, 3:])
        h_aa[:, 3:] += 0.5 * c_v
    hj = h_aa.reshape(T, NUM_JOINTS, 3)
    Hblk = Ji.transpose(-1, -2) @ (hj[..., None] * Ji)  # [T,24,3,3]
    Hp = torch.zeros(T, NUM_JOINTS, 3, NUM_JOINTS, 3, dtype=dt, device=dev)
    Hp[:, idx24, :, idx24, :] = Hblk.permute(1, 0, 2, 3)
    Hff[:, :72, :72] += Hp.reshape(T, 72, 72)
    bf[:, :72] += (Ji.transpose(-1, -2) @ g_aa.reshape(T, NUM_JOINTS, 3, 1)).reshape(T, 72)
    if cur["prior_dense"] is not None:
        Jb = torch.zeros(T, 72, 72, dtype=dt, device=dev)
        Jb.reshape(T, NUM_JOINTS, 3, NUM_JOINTS, 3)[:, idx24, :, idx24, :] = Ji.permute(1, 0, 2, 3)
        Jb = Jb[:, 3:]
        Hff[:, :72, :72] += Jb.transpose(1, 2) @ cur["prior_dense"] @ Jb
    if w_r > 0:
        Hff[:, 72:, 72:] += 0.5 * c_r * 1e4 * torch.eye(3, dtype=dt, device=dev)
        bf[:, 72:] += 100 * w_r * obj.d2(cur["trans"] * 100)
    # shared-unknown priors
    gdiag = torch.cat([torch.full((nb,), obj.opts.w_shape, dtype=dt, device=dev),
                       torch.full((3 * nl,), obj.opts.w_offset * 1e4, dtype=dt, device=dev)])
    Hgg = Hgg + torch.diag(gdiag)
    bg = bg + gdiag * torch.cat([betas, offsets[:nl].reshape(-1)])
    return Hff, Hfg, bf, Hgg, bg


def _lm_damped_step(Hff, Hfg, bf, Hgg, bg, lam, lam_g: float):
    """The damped Gauss-Newton step (frame steps [T, 75], shared step [G]) by a Schur complement
    on the shared unknowns."""
    import torch

    T = Hff.shape[0]
    eye75 = torch.eye(75, dtype=Hff.dtype, device=Hff.device)
    # Marquardt damping with a floor: directions the data does not see (limb twists of a
    # missing joint) must still be damped, or the linear model sends them far off
    dgn = Hff.diagonal(dim1=1, dim2=2)
    floor = torch.cat([dgn[:, :72].amax(1, keepdim=True).expand(T, 72) * 1e-3, dgn[:, 72:]], 1)
    Hd = Hff + (lam[:, None] * torch.maximum(dgn, floor).clamp_min(1e-6))[..., None] * eye75
    L, info = torch.linalg.cholesky_ex(Hd)
    if (info > 0).any():
        bad = info > 0
        Hd[bad] = Hd[bad] + 1e-2 * eye75
        L, info = torch.linalg.cholesky_ex(Hd)
    X = torch.cholesky_solve(torch.cat([bf[..., None], Hfg], -1), L)
    Xb, Xg = X[..., :1], X[..., 1:]
    S = Hgg + lam_g * torch.diag(Hgg.diagonal() + 1e-6) - (Hfg.transpose(1, 2) @ Xg).sum(0)
    rhs = bg - (Hfg.transpose(1, 2) @ Xb).sum(0)[:, 0]
    step_g = -torch.linalg.solve(S, rhs)
    if not torch.isfinite(step_g).all():
        step_g = torch.zeros_like(step_g)
    step_f = -(Xb[..., 0] + (Xg @ step_g[:, None])[..., 0])
    step_f = torch.nan_to_num(step_f, nan=0.0, posinf=0.0, neginf=0.0)
    return step_f, step_g


def _lm_candidate(obj: _LMObjective, cur: dict, betas, offsets, step_f, step_g, Hff, bf) -> dict:
    """The step applied within the trust region (no joint turns by more than 0.5 rad, no root
    moves more than 0.3 m): new aa, trans, betas, offsets, and the linear model's predicted
    decrease of each frame's cost ``pred`` [T] (for the gain ratio)."""
    import torch

    T, nb, nl = obj.T, obj.nb, obj.nl
    d = step_f[:, :72].reshape(T, NUM_JOINTS, 3)
    d = d * torch.clamp(0.5 / d.norm(dim=-1, keepdim=True).clamp_min(1e-12), max=1.0)
    dtr = step_f[:, 72:]
    dtr = dtr * torch.clamp(0.3 / dtr.norm(dim=-1, keepdim=True).clamp_min(1e-12), max=1.0)
    rot_new = axis_angle_to_matrix_torch(cur["aa"].reshape(T, NUM_JOINTS, 3)) @ axis_angle_to_matrix_torch(d)
    aa_new = matrix_to_axis_angle_torch(rot_new).reshape(T, -1)
    betas_new = betas + step_g[:nb]
    offsets_new = offsets.clone()
    if nl:
        offsets_new[:nl] = offsets[:nl] + step_g[nb:].reshape(nl, 3)
    trans_new = cur["trans"] + dtr
    sf = torch.cat([d.reshape(T, 72), dtr], 1)
    pred = -(2 * (bf * sf).sum(1) + (sf[:, None, :] @ Hff @ sf[:, :, None])[:, 0, 0])
    return dict(aa=aa_new, trans=trans_new, betas=betas_new, offsets=offsets_new, pred=pred)


def _lm_accept_frames(obj: _LMObjective, ref: dict, new: dict, betas_x, offsets_x):
    """Per-frame acceptance of the frame steps at the given shared unknowns: (accepted [T],
    merged aa, merged trans, gain ratio [T])."""
    import torch

    cand = obj.evaluate(new["aa"], new["trans"], betas_x, offsets_x, jac=False)
    old_c, new_c = obj.surrogate(ref, ref), obj.surrogate(cand, ref)
    ok = torch.isfinite(new_c) & (new_c <= old_c)
    rho = torch.where(ok, (old_c - new_c) / new["pred"].clamp_min(1e-12), torch.full_like(old_c, -1.0))
    aa_m = torch.where(ok[:, None], new["aa"], ref["aa"])
    tr_m = torch.where(ok[:, None], new["trans"], ref["trans"])
    return ok, aa_m, tr_m, rho


def _lm_accept(obj: _LMObjective, cur: dict, betas, offsets, new: dict, step_g, lam_g: float, last: float):
    """Take the step where it helps: first with the new shared unknowns (each frame judged
    against its old pose at those), else frame steps only with the shared step damped harder.
    Returns (cur, betas, offsets, total cost, accepted [T], gain ratio [T], lam_g)."""
    import torch

    nb, nl = obj.nb, obj.nl
    # (points are affine in the shared unknowns at a fixed pose: shift the current evaluation exactly)
    ref = dict(cur)
    dpts = cur["B_pts"] @ step_g[:nb, None]
    if nl:
        dpts = dpts + cur["O_pts"] @ step_g[nb:, None]
    ref["kp"] = cur["kp"] + torch.einsum("jp,tpc->tjc", obj.A, dpts[..., 0]) * 100
    ref["res"] = ref["kp"] - obj.target
    ref["r2"] = (ref["res"] ** 2).sum(-1)
    ref["data_cost"] = (obj.wc * obj.s2 * ref["r2"] / (ref["r2"] + obj.s2)).sum(1)
    accept, aa_m, tr_m, rho = _lm_accept_frames(obj, ref, new, new["betas"], new["offsets"])
    cur_new = obj.evaluate(aa_m, tr_m, new["betas"], new["offsets"])
    tot = obj.total(cur_new, new["betas"], new["offsets"])
    if math.isfinite(tot) and tot <= last * (1 + 1e-12):
        cur, betas, offsets = cur_new, new["betas"], new["offsets"]
        lam_g = max(lam_g / 3, 1e-8)
    else:  # the shared step made things worse: frame steps only, damp the shared step harder
        lam_g = min(lam_g * 10, 1e8)
        accept, aa_m, tr_m, rho = _lm_accept_frames(obj, cur, new, betas, offsets)
        cur = obj.evaluate(aa_m, tr_m, betas, offsets)
        tot = obj.total(cur, betas, offsets)
    return cur, betas, offsets, tot, accept, rho, lam_g


def _solve_lm(pb: "_Problem", aa0, trans0, betas0, opts: "FitOptions", progress, messages, offsets0=None,
              exclude=None):
    """Levenberg-Marquardt over the whole sequence: per iteration the normal equations
    (:func:`_lm_normal_equations`), a damped step (:func:`_lm_damped_step`) within a trust
    region (:func:`_lm_candidate`), per-frame acceptance (:func:`_lm_accept`) and Nielsen's
    damping update. Returns (aa [T, 72], trans [T, 3], betas, offsets, cost history)."""
    import torch

    dev, dt = pb.device, pb.dtype
    T = pb.T
    obj = _LMObjective(pb, opts, exclude)
    nl = obj.nl
    aa = torch.as_tensor(np.asarray(aa0).reshape(T, -1), dtype=dt, device=dev).clone()
    trans = torch.as_tensor(trans0, dtype=dt, device=dev).clone()
    betas = torch.as_tensor(betas0, dtype=dt, device=dev).clone()
    offsets = torch.zeros(max(nl, 1), 3, dtype=dt, device=dev)
    if offsets0 is not None and nl:
        offsets[:nl] = torch.as_tensor(offsets0, dtype=dt, device=dev)
    lam = torch.full((T,), 1e-3, dtype=dt, device=dev)
    nu = torch.full((T,), 2.0, dtype=dt, device=dev)
    lam_g = 1e-3
    cur = obj.evaluate(aa, trans, betas, offsets)
    history = [obj.total(cur, betas, offsets)]
    for it in range(opts.iters):
        Hff, Hfg, bf, Hgg, bg = _lm_normal_equations(obj, cur, betas, offsets)
        step_f, step_g = _lm_damped_step(Hff, Hfg, bf, Hgg, bg, lam, lam_g)
        new = _lm_candidate(obj, cur, betas, offsets, step_f, step_g, Hff, bf)
        cur, betas, offsets, tot, accept, rho, lam_g = _lm_accept(obj, cur, betas, offsets, new, step_g, lam_g,
                                                                  history[-1])
        # Nielsen's damping update from the gain ratio
        shrink = torch.clamp(1 - (2 * rho.clamp(max=1.0) - 1) ** 3, min=1 / 3)
        lam = torch.where(accept, (lam * shrink).clamp_min(1e-8), (lam * nu).clamp_max(1e8))
        nu = torch.where(accept, torch.full_like(nu, 2.0), (nu * 2).clamp_max(64.0))
        history.append(tot)
        if progress is not None:
            progress(it + 1, opts.iters)
        if not math.isfinite(tot):
            messages.append(f"optimisation became non-finite at iteration {it + 1}")
            break
        if it >= 3 and history[-4] - history[-1] < 1e-6 * max(1.0, abs(history[-1])):
            if progress is not None:
                progress(opts.iters, opts.iters)
            break
    return cur["aa"], cur["trans"], betas, offsets[:nl], history
