"""Synthetic SMPL fixtures for tests and benchmarks: a stand-in SMPL model of the real model's *form*
(no licensed data needed) and smooth plausible SMPL motions with their keypoint observations."""

from __future__ import annotations

import numpy as np

from engine import MarionetteError
from engine.body.joint_sets import JointSet
from engine.body.smpl.joints import PointEvaluator, correspondence
from engine.body.smpl.model import NUM_JOINTS, NUM_POSE_BASIS, SMPL_NUM_VERTICES, SMPL_PARENTS, SMPLModelData
from engine.body.smpl.skinning import SMPLTorch
from engine.body.smpl.prior import JOINT_LIMITS


# ------------------------------------------------------------------------------------------
# synthetic model

# Rest joints of a plausible adult in SMPL's frame (metres; Y up, facing +Z, subject's left at +X).
_SYNTH_JOINTS = np.array([
    [0.00, -0.22, 0.02],   # pelvis
    [0.06, -0.31, 0.01],   # left_hip
    [-0.06, -0.31, 0.01],  # right_hip
    [0.00, -0.11, -0.01],  # spine1
    [0.10, -0.69, 0.01],   # left_knee
    [-0.10, -0.69, 0.01],  # right_knee
    [0.00, 0.03, 0.00],    # spine2
    [0.09, -1.09, -0.03],  # left_ankle
    [-0.09, -1.09, -0.03],  # right_ankle
    [0.00, 0.09, 0.02],    # spine3
    [0.12, -1.15, 0.09],   # left_foot
    [-0.12, -1.15, 0.09],  # right_foot
    [0.00, 0.29, -0.01],   # neck
    [0.08, 0.20, 0.00],    # left_collar
    [-0.08, 0.20, 0.00],   # right_collar
    [0.00, 0.37, 0.04],    # head
    [0.19, 0.23, -0.01],   # left_shoulder
    [-0.19, 0.23, -0.01],  # right_shoulder
    [0.45, 0.21, -0.03],   # left_elbow
    [-0.45, 0.21, -0.03],  # right_elbow
    [0.71, 0.22, -0.03],   # left_wrist
    [-0.71, 0.22, -0.03],  # right_wrist
    [0.80, 0.21, -0.04],   # left_hand
    [-0.80, 0.21, -0.04],  # right_hand
])

# Landmarks relative to a joint: name -> (joint, offset in the rest frame).
_SYNTH_LANDMARKS = {
    "nose": (15, (0.0, 0.02, 0.11)),
    "left_eye": (15, (0.035, 0.055, 0.085)),
    "right_eye": (15, (-0.035, 0.055, 0.085)),
    "left_ear": (15, (0.075, 0.03, 0.0)),
    "right_ear": (15, (-0.075, 0.03, 0.0)),
    "head_top": (15, (0.0, 0.175, 0.0)),
    "left_big_toe": (10, (-0.015, -0.03, 0.08)),
    "left_small_toe": (10, (0.04, -0.03, 0.05)),
    "left_heel": (7, (0.0, -0.07, -0.07)),
    "right_big_toe": (11, (0.015, -0.03, 0.08)),
    "right_small_toe": (11, (-0.04, -0.03, 0.05)),
    "right_heel": (8, (0.0, -0.07, -0.07)),
}


def _synthetic_segments():
    """(driving joint, start, end, radius) capsules that make up the synthetic body."""
    J = _SYNTH_JOINTS
    segs = []
    radius = {0: 0.12, 1: 0.075, 2: 0.075, 3: 0.12, 4: 0.055, 5: 0.055, 6: 0.13, 7: 0.04, 8: 0.04, 9: 0.13,
              12: 0.05, 13: 0.05, 14: 0.05, 16: 0.045, 17: 0.045, 18: 0.038, 19: 0.038, 20: 0.03, 21: 0.03}
    for child in range(1, NUM_JOINTS):
        parent = int(SMPL_PARENTS[child])
        if parent in radius:
            segs.append((parent, J[parent], J[child], radius[parent]))
    segs.append((15, J[15] + [0, -0.02, 0], J[15] + [0, 0.12, 0], 0.09))  # head
    segs.append((22, J[22], J[22] + [0.09, 0, 0], 0.025))  # left hand
    segs.append((23, J[23], J[23] + [-0.09, 0, 0], 0.025))  # right hand
    segs.append((10, J[10] - [0, 0, 0.06], J[10] + [0, 0, 0.06], 0.03))  # left foot
    segs.append((11, J[11] - [0, 0, 0.06], J[11] + [0, 0, 0.06], 0.03))  # right foot
    return segs


def _point_segment_distance(points, a, b):
    ab = b - a
    t = np.clip(((points - a) @ ab) / max(ab @ ab, 1e-12), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


def make_synthetic_smpl_model(seed: int = 0, num_vertices: int = SMPL_NUM_VERTICES, num_betas: int = 10,
                              gender: str = "neutral") -> SMPLModelData:
    """A synthetic SMPL-format model (not SMPL's data) for tests and benchmarks.

    Capsules around the bones of a plausible 1.7 m adult, smooth skinning weights, a J_regressor
    that averages a small ring of vertices around each joint (so rest joints are exact), shape
    blend shapes that change height, width and limb lengths, and small smooth pose blend shapes.
    Landmarks (nose, eyes, ears, head top, toes, heels) are vertices placed on purpose.
    """
    rng = np.random.default_rng(seed)
    J = _SYNTH_JOINTS
    ring = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64) * 0.02
    n_ring = NUM_JOINTS * len(ring)
    n_land = len(_SYNTH_LANDMARKS)
    n_surface = num_vertices - n_ring - n_land
    if n_surface < 200:
        raise MarionetteError(f"synthetic model needs at least {n_ring + n_land + 200} vertices, got {num_vertices}")

    # surface: a grid (rings x around) on every capsule, with faces; leftovers scattered on capsules
    segs = _synthetic_segments()
    areas = np.array([(np.linalg.norm(b - a) + r) * r for _, a, b, r in segs])
    around = 10
    budget = int(n_surface * 0.9)
    rings_per = np.maximum(2, np.floor(areas / areas.sum() * budget / around)).astype(int)
    while rings_per.sum() * around > n_surface:
        rings_per[np.argmax(rings_per)] -= 1
    verts, faces, drivers = [], [], []
    base = n_ring + n_land
    for (jnt, a, b, r), nr in zip(segs, rings_per):
        axis = b - a
        length = np.linalg.norm(axis)
        u = axis / length
        helper = np.array([0, 0, 1.0]) if abs(u[2]) < 0.9 else np.array([1.0, 0, 0])
        e1 = np.cross(u, helper); e1 /= np.linalg.norm(e1)
        e2 = np.cross(u, e1)
        start = base + len(verts)
        for i in range(nr):
            s = i / (nr - 1)
            taper = 1.0 - 0.15 * s
            for k in range(around):
                ang = 2 * np.pi * k / around
                verts.append(a + s * axis + r * taper * (np.cos(ang) * e1 + np.sin(ang) * e2))
                drivers.append(jnt)
        for i in range(nr - 1):
            for k in range(around):
                v00 = start + i * around + k
                v01 = start + i * around + (k + 1) % around
                v10 = v00 + around
                v11 = v01 + around
                faces.append((v00, v10, v11))
                faces.append((v00, v11, v01))
    while len(verts) < n_surface:
        jnt, a, b, r = segs[rng.integers(len(segs))]
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        verts.append(a + rng.uniform() * (b - a) + r * d)
        drivers.append(jnt)

    ring_verts = (J[:, None, :] + ring[None]).reshape(-1, 3)
    land_verts = np.array([J[j] + np.asarray(off) for j, off in _SYNTH_LANDMARKS.values()])
    v_template = np.concatenate([ring_verts, land_verts, np.asarray(verts)], axis=0)
    V = v_template.shape[0]
    assert V == num_vertices

    # skinning: Gaussian falloff with distance to each joint's capsules, normalised
    dist = np.full((V, NUM_JOINTS), np.inf)
    for jnt, a, b, r in segs:
        dist[:, jnt] = np.minimum(dist[:, jnt], _point_segment_distance(v_template, a, b))
    for j in range(NUM_JOINTS):  # joints without capsules (collars drive short ones; all covered) still get a blob
        if not np.isfinite(dist[:, j]).any():
            dist[:, j] = np.linalg.norm(v_template - J[j], axis=1)
    logits = -(np.where(np.isfinite(dist), dist, 10.0) / 0.035) ** 2
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    weights[weights < 1e-4] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)

    J_regressor = np.zeros((NUM_JOINTS, V))
    for j in range(NUM_JOINTS):
        J_regressor[j, j * len(ring):(j + 1) * len(ring)] = 1.0 / len(ring)

    # shape space: height, girth, then smooth per-joint displacements (limb lengths, proportions)
    shapedirs = np.zeros((V, 3, num_betas))
    centre = J[0]
    rel = v_template - centre
    shapedirs[:, :, 0] = 0.05 * rel
    if num_betas > 1:
        shapedirs[:, 0, 1] = 0.04 * rel[:, 0]
        shapedirs[:, 2, 1] = 0.04 * rel[:, 2]
    for k in range(2, num_betas):
        # displacement of each joint along its bone direction and a little sideways, blended
        disp = rng.normal(scale=0.012 / np.sqrt(k - 1), size=(NUM_JOINTS, 3))
        disp[0] = 0.0
        # move each joint's whole subtree with it so limb lengths change, not just one spot
        acc = np.zeros_like(disp)
        for j in range(1, NUM_JOINTS):
            acc[j] = acc[SMPL_PARENTS[j]] + disp[j]
        shapedirs[:, :, k] = weights @ acc
    posedirs = np.einsum("vj,jck->vck", weights, rng.normal(scale=0.002, size=(NUM_JOINTS, 3, NUM_POSE_BASIS)))

    kintree = np.stack([SMPL_PARENTS.copy(), np.arange(NUM_JOINTS)])
    kintree[0, 0] = -1
    landmarks = {name: n_ring + i for i, name in enumerate(_SYNTH_LANDMARKS)}
    data = SMPLModelData(v_template=v_template, shapedirs=shapedirs, posedirs=posedirs, J_regressor=J_regressor,
                         weights=weights, kintree_table=kintree.astype(np.int64), f=np.asarray(faces, dtype=np.int64),
                         gender=gender, landmarks=landmarks, source=f"synthetic(seed={seed})")
    return data.validate("synthetic SMPL model")



# ------------------------------------------------------------------------------------------
# synthetic ground truth (tests, benchmark)

# sampling ranges (centre, amplitude) per joint and axis for plausible motion: arms mostly down,
# knees and elbows bending the right way, small twists; hands still.
def _motion_ranges():
    lo, hi = JOINT_LIMITS[..., 0].copy(), JOINT_LIMITS[..., 1].copy()
    centre = np.clip(0.5 * (lo + hi), -0.3, 0.3)
    amp = 0.25 * (hi - lo)
    centre[[16, 17], 2] = (-1.0, 1.0)       # arms down from the T-pose
    amp[[16, 17]] = ((0.5, 0.3, 0.4),) * 2
    centre[[4, 5], 0] = 0.7                  # knees bent
    amp[[4, 5], 0] = 0.6
    centre[18, 1], centre[19, 1] = -0.9, 0.9  # elbows bent
    amp[[18, 19], 1] = 0.7
    amp[[1, 2], 0] = 0.6                     # hip swing
    amp[:, :] = np.minimum(amp, 0.6)
    twist = [(1, 1), (2, 1), (16, 0), (17, 0), (18, 0), (19, 0), (4, 1), (5, 1), (4, 2), (5, 2), (18, 2), (19, 2)]
    for j, a in twist:
        centre[j, a], amp[j, a] = 0.0, 0.1
    amp[[20, 21]] = 0.2
    centre[[22, 23]], amp[[22, 23]] = 0.0, 0.0
    amp[0] = 0.0
    return centre, amp


def make_synthetic_motion(T: int, fps: float = 30.0, seed: int = 0, num_betas: int = 10, up_axis: str = "Z"):
    """Smooth random plausible SMPL motion: (poses [T,72], trans [T,3], betas [num_betas])."""
    rng = np.random.default_rng(seed)
    centre, amp = _motion_ranges()
    t = np.arange(T)[:, None, None] / fps
    freq = rng.uniform(0.2, 1.0, size=(1, NUM_JOINTS, 3))
    phase = rng.uniform(0, 2 * np.pi, size=(1, NUM_JOINTS, 3))
    local = centre[None] + amp[None] * np.sin(2 * np.pi * freq * t + phase)
    # root: SMPL is Y-up; turn it to the world up axis, with a slowly changing heading and a little tilt
    heading = rng.uniform(0, 2 * np.pi) + 0.6 * np.sin(2 * np.pi * 0.1 * t[:, 0, 0])
    tilt = 0.1 * np.sin(2 * np.pi * 0.3 * t[:, 0, 0] + rng.uniform(0, 6))
    from scipy.spatial.transform import Rotation

    yup_to_world = np.eye(3) if up_axis == "Y" else np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    R = Rotation.from_matrix(yup_to_world) * Rotation.from_euler("yx", np.stack([heading, tilt], 1))
    local[:, 0] = R.as_rotvec()
    trans = np.zeros((T, 3))
    walk = np.cumsum(rng.normal(scale=0.01, size=(T, 2)), axis=0)
    trans[:, 0], trans[:, 1] = walk[:, 0], walk[:, 1]
    trans[:, 2] = 1.0 if up_axis == "Z" else 0.0
    if up_axis == "Y":
        trans[:, 1], trans[:, 2] = 1.0, walk[:, 1]
    betas = np.clip(rng.normal(size=num_betas), -2, 2)
    return local.reshape(T, -1), trans, betas


def synthetic_observations(model: SMPLModelData, joint_set: JointSet, poses, trans, betas, noise: float = 0.0,
                           drop: float = 0.0, seed: int = 0):
    """Keypoints of ``joint_set`` for the given SMPL motion, through the correspondence (prior offsets),
    plus Gaussian noise (metres) and randomly dropped joints (NaN). -> (keypoints [T,J,3], smpl joints [T,24,3])"""
    import torch

    dt = torch.float64
    smpl = SMPLTorch(model, "cpu", dt, num_betas=len(betas))
    corr = correspondence(joint_set)
    ev = PointEvaluator(corr, model.landmarks, "cpu", dt)
    T = poses.shape[0]
    with torch.no_grad():
        out = smpl(torch.tensor(betas, dtype=dt), torch.tensor(poses, dtype=dt).reshape(T, NUM_JOINTS, 3),
                   torch.tensor(trans, dtype=dt), vertex_ids=ev.vertex_ids)
        kp = ev.keypoints(out["joints"], out["rot"], out["vertices"]).numpy()
    rng = np.random.default_rng(seed)
    kp = kp + rng.normal(scale=noise, size=kp.shape) if noise > 0 else kp.copy()
    kp[:, ~corr.used] = np.nan
    if drop > 0:
        kp[rng.uniform(size=kp.shape[:2]) < drop] = np.nan
    return kp, out["joints"].numpy()
