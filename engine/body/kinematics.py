"""Armature kinematics without Blender: rigs, analytic bone rotations, forward kinematics.

A *rig* is what an armature holds, as plain arrays (armature space, Blender's
conventions: a bone's local Y axis runs from head to tail, matrices act on column
vectors, quaternions are ``(w, x, y, z)``):

* ``heads``/``tails`` [B, 3] rest positions, ``rest_rotations`` [B, 3, 3] rest bone
  frames (columns x, y, z; y along the bone), ``parents`` [B] parent bone (-1 root);
* ``joint_bone`` [J] and ``joint_at_tail`` [J]: joint j sits at the tail (or head) of
  bone ``joint_bone[j]`` — this is how a pose is read back into joint positions;
* ``mapping``/``tail_mapping``: the same by canonical joint name (``"left_knee"`` -> the bone
  whose head/tail sits there), which is how retargeting (``engine.motion.retarget``) reads a rig.

:class:`Rig` is the engine's one armature type: kinematics, the SMPL importer, retargeting
and the add-on all build and read it.

Blender poses a bone as ``P_b = P_a @ inv(M_a) @ M_b @ basis_b`` (``M`` the 4x4 rest
matrix, ``a`` the parent, ``basis`` the keyed location/rotation). If ``W_b`` is the
world rotation we want to apply to bone b's rest frame, the keyed rotation is
``Q_b = Rrest_b^T W_a^T W_b Rrest_b`` and the root location is
``Rrest_root^T (x_root - head_root)``; :func:`forward_kinematics` is that formula.

Skeleton sequences (joint positions) become rigs with :func:`build_skeleton_rig`:
one bone per joint (named after the joint at its tail, running from the parent
joint), a root bone at the root joint carrying translation, rest lengths the median
observed lengths. Rotations (:func:`skeleton_bone_rotations`) are analytic: each bone
has a *primary* edge (its own parent->child vector) and a *reference* edge (a
neighbouring bone chosen from the data as the one least often parallel to it);
the rotation maps the rest frame spanned by (primary, reference) onto the observed
one. That is the swing from the rest direction to the observed one with the twist
fixed by the neighbour, so bones do not spin. Where the reference is missing or
nearly parallel, the twist fades to the parent's (the parent's rotation followed by
the minimal swing), so a degenerate reference never flips a bone. With consistent bone lengths, FK reproduces every observed
joint exactly (twist never moves a joint: children hang off bone tails, on the axis).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine import MarionetteError
from engine.body.joint_sets import JointSet
from engine.geometry.axes import up_vector
from engine.geometry.rotations import (axis_angle_to_matrix, make_quats_continuous, matrix_to_quat, quat_between,
                                       quat_conj, quat_exp, quat_mul, quat_to_matrix, swing_matrix)

_EPS = 1e-12
# Twist comes from the reference edge when the sine of its angle to the bone is above
# TWIST_BLEND[1], from the parent (minimal swing) below TWIST_BLEND[0], blended between.
TWIST_BLEND = (0.05, 0.25)
# Blender drops zero-length bones; bones are never shorter than this (metres after scaling).
MIN_BONE_LENGTH = 1e-3

def _frames(primary: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal frames [..., 3, 3] (columns e1 along primary, e2 in the primary-reference plane,
    e3 = e1 x e2) and the sine of the angle between primary and reference [...]."""
    e1 = primary / np.maximum(np.linalg.norm(primary, axis=-1, keepdims=True), _EPS)
    r = reference / np.maximum(np.linalg.norm(reference, axis=-1, keepdims=True), _EPS)
    e2 = r - np.sum(r * e1, axis=-1, keepdims=True) * e1
    sin = np.linalg.norm(e2, axis=-1)
    e2 = e2 / np.maximum(sin[..., None], _EPS)
    e3 = np.cross(e1, e2)
    return np.stack([e1, e2, e3], axis=-1), sin


def bone_frames(heads: np.ndarray, tails: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Rest bone frames [B, 3, 3]: y along the bone, x horizontal (perpendicular to ``up``)."""
    y = np.asarray(tails, np.float64) - np.asarray(heads, np.float64)
    y = y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), _EPS)
    up = np.broadcast_to(np.asarray(up, np.float64), y.shape)
    x = np.cross(y, up)
    # vertical bones: use the other horizontal axis so x stays defined
    alt = np.cross(y, np.broadcast_to(np.array([0.0, -1.0, 0.0]), y.shape))
    small = np.linalg.norm(x, axis=-1) < 1e-3
    x = np.where(small[..., None], alt, x)
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), _EPS)
    z = np.cross(x, y)
    return np.stack([x, y, z], axis=-1)


# ----------------------------------------------------------------------------- rigs

@dataclass
class Rig:
    """An armature in its rest pose, as arrays (see the module docstring): the one rig type of
    the engine, used by kinematics, the SMPL importer, retargeting and the add-on.

    bone_names:     bone names [B]
    parents:        [B] int parent bone (-1 for roots; several roots are allowed)
    heads, tails:   [B, 3] rest head/tail positions (armature space, metres or the armature's
                    units); ``tails`` may be None where only heads matter (retargeting targets)
    rest_rotations: [B, 3, 3] rest bone frames (columns: the bone's local axes, y along the bone),
                    as Blender's ``bone.matrix_local.to_3x3()``; default identity
    Where the joints sit, by joint index (joint-set rigs: reading a pose back into joints):
    joint_bone:     [J] int, joint j sits at the head or tail of bone ``joint_bone[j]``
    joint_at_tail:  [J] bool, ... at its tail
    Where the joints sit, by canonical joint name (retargeting):
    mapping:        canonical joint -> bone whose *head* sits at that joint (``engine.body.bone_maps``)
    tail_mapping:   canonical joint -> bone whose *tail* sits at that joint (armatures imported by
                    Marionette put each joint at the tail of the bone that ends there; needs ``tails``)
    joint_set:      the joint set of a one-bone-per-joint rig, else None
    up:             the up direction in this space
    floor:          height (along ``up``) of the floor the rest pose stands on; default: lowest foot
                    joint (lowest bone head without a mapping)
    primary, reference: skeleton rigs only: (from, to) joint pairs [B, 2] of each bone's primary and
                    reference edge; -1 = none
    rest_joints:    [J, 3] rest joint positions (skeleton and SMPL rigs)
    order:          (computed) bone indices, parents before children
    """

    bone_names: list[str]
    parents: np.ndarray
    heads: np.ndarray
    tails: np.ndarray | None = None
    rest_rotations: np.ndarray | None = None
    joint_bone: np.ndarray | None = None
    joint_at_tail: np.ndarray | None = None
    mapping: dict = field(default_factory=dict)
    tail_mapping: dict = field(default_factory=dict)
    joint_set: JointSet | None = None
    up: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    floor: float | None = None
    primary: np.ndarray | None = None
    reference: np.ndarray | None = None
    rest_joints: np.ndarray | None = None
    extras: dict = field(default_factory=dict)
    order: list[int] = field(init=False, repr=False)

    def __post_init__(self):
        self.bone_names = [str(n) for n in self.bone_names]
        B = len(self.bone_names)
        self.parents = np.asarray([int(p) for p in self.parents], dtype=np.int64).reshape(-1)
        self.heads = np.asarray(self.heads, dtype=np.float64)
        if self.heads.shape != (B, 3) or len(self.parents) != B:
            raise MarionetteError(f"rig: expected {B} parents and heads of shape [{B}, 3], got "
                                  f"{len(self.parents)} and {list(self.heads.shape)}")
        if not np.all(np.isfinite(self.heads)):
            raise MarionetteError("rig: rest head positions must be finite")
        if self.tails is not None:
            self.tails = np.asarray(self.tails, dtype=np.float64)
            if self.tails.shape != (B, 3):
                raise MarionetteError(f"rig: tails must have shape [{B}, 3], got {list(self.tails.shape)}")
        elif self.tail_mapping:
            raise MarionetteError("rig: tail_mapping needs tails")
        if self.rest_rotations is None:
            self.rest_rotations = np.broadcast_to(np.eye(3), (B, 3, 3)).copy()
        self.rest_rotations = np.asarray(self.rest_rotations, dtype=np.float64)
        if self.rest_rotations.shape != (B, 3, 3):
            raise MarionetteError(f"rig: rest_rotations must have shape [{B}, 3, 3], "
                                  f"got {list(self.rest_rotations.shape)}")
        self.up = up_vector(self.up)
        if (not self.mapping and not self.tail_mapping and self.joint_set is not None
                and self.joint_bone is not None and self.joint_at_tail is not None):
            # a joint-set rig placed by index: name its joints too, so it can be a retargeting target
            for c, b, at_tail in zip(self.joint_set.canonical, self.joint_bone, self.joint_at_tail):
                (self.tail_mapping if at_tail and self.tails is not None else self.mapping)[c] = self.bone_names[int(b)]
        self.mapping = {str(c): str(b) for c, b in self.mapping.items()}
        self.tail_mapping = {str(c): str(b) for c, b in self.tail_mapping.items() if c not in self.mapping}
        unknown = [b for b in list(self.mapping.values()) + list(self.tail_mapping.values())
                   if b not in self.bone_names]
        if unknown:
            raise MarionetteError(f"rig mapping names bones the armature does not have: {', '.join(unknown[:5])}")
        # topological order (parents first); rejects cycles
        order, placed = [], set()
        pending = list(range(B))
        while pending:
            rest = [b for b in pending if not (self.parents[b] < 0 or self.parents[b] in placed)]
            ready = [b for b in pending if b not in rest]
            if not ready:
                raise MarionetteError("rig: bone parents form a cycle")
            order += ready
            placed.update(ready)
            pending = rest
        self.order = order
        if self.floor is None:
            rest_pts = self.canonical_rest
            feet = [v for c, v in rest_pts.items()
                    if any(c.endswith(k) for k in ("ankle", "foot", "toe", "heel", "toe_end"))]
            pts = np.array(feet) if feet else self.heads
            self.floor = float((pts @ self.up).min())

    # --- bones

    @property
    def num_bones(self) -> int:
        return len(self.bone_names)

    @property
    def root(self) -> int:
        return int(np.flatnonzero(self.parents < 0)[0])

    @property
    def lengths(self) -> np.ndarray:
        return np.linalg.norm(self.tails - self.heads, axis=-1)

    def bone_index(self, name: str) -> int:
        """Index of the bone called ``name`` (ValueError if none)."""
        return self.bone_names.index(name)

    def rest_matrices(self) -> np.ndarray:
        """[B, 4, 4] armature-space rest matrices (Blender's ``bone.matrix_local``)."""
        M = np.tile(np.eye(4), (self.num_bones, 1, 1))
        M[:, :3, :3] = self.rest_rotations
        M[:, :3, 3] = self.heads
        return M

    # --- canonical joints

    def index_of(self, canonical: str) -> int:
        """Bone whose head sits at ``canonical`` (KeyError if none)."""
        return self.bone_names.index(self.mapping[canonical])

    def joint(self, canonical: str) -> tuple[int, bool] | None:
        """(bone index, at_tail) holding the canonical joint, or None."""
        if canonical in self.mapping:
            return self.bone_names.index(self.mapping[canonical]), False
        if canonical in self.tail_mapping:
            return self.bone_names.index(self.tail_mapping[canonical]), True
        return None

    @property
    def canonical_rest(self) -> dict[str, np.ndarray]:
        out = {c: self.heads[self.bone_names.index(b)] for c, b in self.mapping.items()}
        out.update({c: self.tails[self.bone_names.index(b)] for c, b in self.tail_mapping.items()})
        return out

    def bone_joints(self) -> list[tuple[str | None, str | None]]:
        """Per bone: (canonical joint at its head, canonical joint at its tail), None where unmapped."""
        rest = self.canonical_rest
        out = []
        for b, name in enumerate(self.bone_names):
            head = next((c for c, n in self.mapping.items() if n == name), None)
            tail = next((c for c, n in self.tail_mapping.items() if n == name), None)
            if head is None and tail is not None:
                # a tail-mapped bone starts where another mapped joint is
                d = {c: np.linalg.norm(v - self.heads[b]) for c, v in rest.items() if c != tail}
                if d:
                    c, dist = min(d.items(), key=lambda kv: kv[1])
                    if dist < 1e-5 * max(1.0, float(np.abs(self.heads).max())):
                        head = c
            out.append((head, tail))
        return out

    # --- constructors

    @classmethod
    def from_joint_set(cls, joint_set: JointSet, rest_joints, up="Z", floor=None) -> "Rig":
        """One bone per joint, as Marionette's importer builds armatures: the bone named after a
        joint runs from its parent joint to it (joint at the tail); the root's bone starts at the
        root joint. Every edge is its own bone, so every edge can follow the source's direction.
        Rest orientations are the identity (only positions matter for joint sets)."""
        rest = np.asarray(rest_joints, dtype=np.float64)
        if rest.shape != (joint_set.num_joints, 3) or not np.all(np.isfinite(rest)):
            raise MarionetteError(f"rest joints: expected finite [{joint_set.num_joints}, 3] for {joint_set.name}, "
                                  f"got {list(rest.shape)}")
        parents = list(joint_set.parents)
        up_v = up_vector(up)
        heads = np.array([rest[p] if p >= 0 else rest[j] for j, p in enumerate(parents)])
        tails = np.array([rest[j] if p >= 0 else rest[j] + 0.1 * up_v for j, p in enumerate(parents)])
        root = joint_set.root
        return cls(bone_names=list(joint_set.names), parents=parents, heads=heads, tails=tails,
                   joint_bone=np.arange(joint_set.num_joints), joint_at_tail=np.asarray(parents) >= 0,
                   mapping={joint_set.canonical[root]: joint_set.names[root]},
                   tail_mapping={c: n for j, (c, n) in enumerate(zip(joint_set.canonical, joint_set.names))
                                 if j != root},
                   up=up_v, floor=floor, joint_set=joint_set, rest_joints=rest.copy())

    @classmethod
    def from_rig_map(cls, rig_map) -> "Rig":
        """The default rest skeleton shipped in a joint-set rig map (e.g. ``load_rig("smpl_24")``)."""
        from engine.body.joint_sets import get_joint_set

        if rig_map.kind != "joint_set" or not rig_map.rest_joints:
            raise MarionetteError(f"rig map {rig_map.name!r} has no default rest skeleton ('rest_joints'); "
                                  "build the target Rig from an armature or a skeleton sequence instead")
        js = get_joint_set(rig_map.joint_set)
        missing = [n for n in js.names if n not in rig_map.rest_joints]
        if missing:
            raise MarionetteError(f"{rig_map.path}: 'rest_joints' lacks {', '.join(missing)}")
        return cls.from_joint_set(js, np.array([rig_map.rest_joints[n] for n in js.names], float), up="Z")

    @classmethod
    def from_bones(cls, bone_names, parents, heads, tails, rolls=None, mapping=None, up="Z", floor=None) -> "Rig":
        """An armature from bone heads/tails/rolls (as Blender edit bones; Y axis along the bone).

        Rest orientations follow Blender's convention: the minimal rotation taking +Y onto the
        bone, then the roll about it (Blender differs only for bones pointing almost exactly -Y).
        ``mapping`` defaults to the detected rig map (``engine.body.bone_maps.detect_rig``).
        """
        heads = np.asarray(heads, dtype=np.float64)
        tails = np.asarray(tails, dtype=np.float64)
        rolls = np.zeros(len(heads)) if rolls is None else np.asarray(rolls, dtype=np.float64)
        y = np.broadcast_to(np.array([0.0, 1.0, 0.0]), heads.shape)
        q = quat_between(y, tails - heads)
        axis = (tails - heads) / np.maximum(np.linalg.norm(tails - heads, axis=-1, keepdims=True), 1e-12)
        q = quat_mul(quat_exp(axis * rolls[:, None]), q)
        if mapping is None:
            from engine.body.bone_maps import detect_rig

            det = detect_rig(bone_names)
            if det.rig is None:
                raise MarionetteError("no bone map matches this armature's bone names; pass a mapping")
            mapping = det.mapping
        return cls(bone_names=list(bone_names), parents=list(parents), heads=heads, tails=tails,
                   mapping=dict(mapping), rest_rotations=quat_to_matrix(q), up=up, floor=floor)


def _edge_vectors(joints: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return joints[..., edges[:, 1], :] - joints[..., edges[:, 0], :]


def build_skeleton_rig(joints: np.ndarray, joint_set: JointSet, root_length: float | None = None) -> Rig:
    """A rest armature for a joint-position sequence [T, J, 3] (armature space, NaN missing).

    Rest lengths are the median observed lengths; rest directions come from the frame
    with the most joints observed (median direction for joints missing there), so the
    rest pose is a natural pose of the subject. Raises if the root is never observed.
    """
    X = np.asarray(joints, dtype=np.float64)
    J = joint_set.num_joints
    if X.ndim != 3 or X.shape[1:] != (J, 3):
        raise MarionetteError(f"joints: expected shape [T, {J}, 3] for joint set {joint_set.name}, got {list(X.shape)}")
    if X.shape[0] == 0:
        raise MarionetteError("joints: the sequence has zero frames")
    parents = np.asarray(joint_set.parents)
    root = joint_set.root
    ok = np.isfinite(X).all(-1)  # [T, J]
    if not ok[:, root].any():
        raise MarionetteError(f"joint set {joint_set.name}: root joint {joint_set.names[root]!r} is never observed")

    tree = np.array([(p, c) for c, p in enumerate(parents) if p >= 0], dtype=np.int64).reshape(-1, 2)
    vec = _edge_vectors(X, tree)  # [T, E, 3]
    length = np.linalg.norm(vec, axis=-1)
    with np.errstate(all="ignore"):
        med_len = np.nanmedian(np.where(np.isfinite(length), length, np.nan), axis=0) if len(tree) else np.zeros(0)
    unit = vec / np.maximum(length[..., None], _EPS)
    ref_frame = int(np.argmax(ok.sum(1)))

    rest = np.zeros((J, 3))
    rest[root] = (0.0, 0.0, float(np.nanmedian(X[ok[:, root], root, 2])))
    lengths = np.full(J, np.nan)
    dirs = np.full((J, 3), np.nan)
    for e, (p, c) in enumerate(tree):
        L = med_len[e]
        lengths[c] = L if np.isfinite(L) else np.nan
        if np.isfinite(unit[ref_frame, e]).all() and length[ref_frame, e] > _EPS:
            dirs[c] = unit[ref_frame, e]
        else:
            valid = np.isfinite(unit[:, e]).all(-1) & (length[:, e] > _EPS)
            if valid.any():
                m = unit[valid, e].mean(0)
                if np.linalg.norm(m) > 1e-6:
                    dirs[c] = m / np.linalg.norm(m)
    # joints never observed with their parent: default length, parent's direction (or down)
    finite_lengths = lengths[np.isfinite(lengths)]
    default_len = float(np.median(finite_lengths)) if len(finite_lengths) else 0.1
    lengths = np.where(np.isfinite(lengths), lengths, default_len)
    lengths = np.maximum(lengths, MIN_BONE_LENGTH)
    for j in joint_set.topological_order():
        p = parents[j]
        if p < 0:
            continue
        if not np.isfinite(dirs[j]).all():
            dirs[j] = dirs[p] if (parents[p] >= 0 and np.isfinite(dirs[p]).all()) else np.array([0.0, 0.0, -1.0])
        rest[j] = rest[p] + lengths[j] * dirs[j]

    heads = np.zeros((J, 3))
    tails = np.zeros((J, 3))
    for j in range(J):
        p = parents[j]
        if p < 0:
            heads[j] = rest[j]
            kids = joint_set.children(j)
            rl = root_length if root_length is not None else max(0.05, 0.5 * float(np.median(lengths[kids])) if kids else 0.1)
            tails[j] = rest[j] + np.array([0.0, 0.0, rl])
        else:
            heads[j] = rest[p]
            tails[j] = rest[j]
    rest_rot = bone_frames(heads, tails)

    primary, reference = _choose_edges(X, joint_set, tree, rest)
    return Rig(bone_names=list(joint_set.names), parents=parents.copy(), heads=heads, tails=tails,
               rest_rotations=rest_rot, joint_bone=np.arange(J), joint_at_tail=parents >= 0,
               joint_set=joint_set, primary=primary, reference=reference, rest_joints=rest)


def _choose_edges(X: np.ndarray, joint_set: JointSet, tree: np.ndarray, rest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per bone: the primary edge and the neighbouring edge that best fixes its twist.

    Candidates are the tree edges touching the bone's ends; the score is the median
    sine of the angle to the primary over frames where both are seen, times the
    fraction of frames where they are (a reference that is usually seen and rarely
    parallel wins). A reference nearly parallel to the bone in the rest pose is never
    used: the rest frame it spans would be ill-defined for the whole sequence.
    """
    J = joint_set.num_joints
    parents = joint_set.parents
    root = joint_set.root
    primary = np.full((J, 2), -1, dtype=np.int64)
    reference = np.full((J, 2), -1, dtype=np.int64)
    T = X.shape[0]
    # subsample long sequences: the choice only needs statistics
    Xs = X[:: max(1, T // 2000)]

    def score(e1, e2):
        v1 = Xs[:, e1[1]] - Xs[:, e1[0]]
        v2 = Xs[:, e2[1]] - Xs[:, e2[0]]
        good = np.isfinite(v1).all(-1) & np.isfinite(v2).all(-1)
        if not good.any():
            return 0.0
        n1 = np.linalg.norm(v1[good], axis=-1)
        n2 = np.linalg.norm(v2[good], axis=-1)
        s = np.linalg.norm(np.cross(v1[good], v2[good]), axis=-1) / np.maximum(n1 * n2, _EPS)
        return float(np.median(s)) * good.mean()

    # candidate references: tree edges and the joint set's extra bones (e.g. the hip line),
    # which are often the best-conditioned neighbour of a limb's first bone
    edges_all = [tuple(int(v) for v in e) for e in tree] + [tuple(int(v) for v in e) for e in joint_set.extra_bones]
    incident = {j: [e for e in edges_all if j in e] for j in range(J)}
    for j in range(J):
        p = parents[j]
        if p >= 0:
            e1 = (p, j)
            cands = [e for e in set(incident[p] + incident[j]) if tuple(sorted(e)) != tuple(sorted(e1))]
        else:
            # root bone: its frame comes from two of the root's own edges
            edges = [e for e in incident[j] if e in edges_all[: len(tree)]]
            if not edges:
                continue
            e1 = max(edges, key=lambda e: score(e, e) + np.mean(np.isfinite(Xs[:, e[1]]).all(-1) & np.isfinite(Xs[:, e[0]]).all(-1)))
            cands = [e for e in edges if e != e1] or [e for e in edges_all if e != e1 and (e[0] in e1 or e[1] in e1)]
        primary[j] = e1
        best, best_s = None, 0.0
        for e in sorted(cands):
            _, sin_rest = _frames(rest[e1[1]] - rest[e1[0]], rest[e[1]] - rest[e[0]])
            if sin_rest < TWIST_BLEND[1]:
                continue
            s = score(e1, e)
            if s > best_s:
                best, best_s = e, s
        if best is not None and best_s > TWIST_BLEND[1]:
            reference[j] = best
    _ = root
    return primary, reference


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def skeleton_bone_rotations(rig: Rig, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World rotations [T, B, 3, 3] to apply to each bone's rest frame, and validity [T, B].

    Per bone and frame, two candidates both carry the rest direction exactly onto the
    observed one and differ only by twist about it: ``A``, the parent's rotation followed
    by the minimal swing (twist inherited from the parent; no twist at all for the root),
    and ``B``, the frame spanned by the primary and reference edges. The twist is
    ``B``'s, faded towards ``A``'s as the reference approaches parallel (sine of the angle
    from TWIST_BLEND[1] down to TWIST_BLEND[0]), so nearly degenerate references never
    flip a bone. Everything is per frame, vectorised, and history-free. A bone is invalid
    (a gap) in frames where its primary edge is not observed.
    """
    X = np.asarray(joints, dtype=np.float64)
    T, B = X.shape[0], rig.num_bones
    rest = rig.rest_joints
    R = np.tile(np.eye(3), (T, B, 1, 1))
    valid = np.zeros((T, B), dtype=bool)
    lo, hi = TWIST_BLEND
    for b in rig.order:
        pe, re = rig.primary[b], rig.reference[b]
        if pe[0] < 0:
            # a root with no edges (one-joint set): identity rotation where the root is seen
            valid[:, b] = np.isfinite(X[:, rig.root]).all(-1)
            continue
        d = X[:, pe[1]] - X[:, pe[0]]
        d0 = rest[pe[1]] - rest[pe[0]]
        has_d = np.isfinite(d).all(-1) & (np.linalg.norm(np.nan_to_num(d), axis=-1) > _EPS)
        valid[:, b] = has_d
        dn = np.nan_to_num(d)
        dn = dn / np.maximum(np.linalg.norm(dn, axis=-1, keepdims=True), _EPS)
        a = rig.parents[b]

        def parent_swing(sel):
            """Candidate A on frames ``sel``: the parent's rotation, then the minimal swing."""
            Wa = R[sel, a] if a >= 0 else np.tile(np.eye(3), (int(np.count_nonzero(sel)), 1, 1))
            return swing_matrix(Wa @ d0, dn[sel]) @ Wa

        if re[0] < 0:
            R[:, b] = parent_swing(np.ones(T, dtype=bool))
            continue
        r = X[:, re[1]] - X[:, re[0]]
        r0 = rest[re[1]] - rest[re[0]]
        F0, sin0 = _frames(d0, r0)
        F, sin = _frames(dn, np.nan_to_num(r))
        w = _smoothstep((np.minimum(sin, sin0) - lo) / (hi - lo))
        w = np.where(np.isfinite(r).all(-1), w, 0.0)
        R[:, b] = F @ F0.T
        # only frames where the reference is weak need the parent candidate and the blend
        weak = w < 1.0
        if weak.any():
            A = parent_swing(weak)
            dw = dn[weak]
            # signed twist angle of B relative to A, about the bone's current direction
            qd = matrix_to_quat(R[weak, b] @ np.swapaxes(A, -1, -2))
            delta = 2.0 * np.arctan2(np.sum(qd[:, 1:] * dw, axis=-1), qd[:, 0])
            R[weak, b] = axis_angle_to_matrix(dw * (w[weak] * delta)[:, None]) @ A
    return R, valid


def local_rotations(rig: Rig, world: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Keyed bone rotations [T, B, 4] (w, x, y, z; NaN where invalid) from world rotations
    [T, B, 3, 3]: ``Q_b = Rrest_b^T W_a^T W_b Rrest_b``. A bone whose parent is invalid is
    invalid too. Quaternions are sign-continuous along each track."""
    # in quaternions: one matrix conversion of W, then cheap elementwise products
    qW = matrix_to_quat(np.asarray(world, dtype=np.float64))  # [T, B, 4]
    qR = matrix_to_quat(rig.rest_rotations)  # [B, 4]
    par = rig.parents
    qWa = qW[:, np.maximum(par, 0)]
    qWa[:, par < 0] = (1.0, 0.0, 0.0, 0.0)
    q = quat_mul(quat_mul(quat_conj(qR)[None], quat_mul(quat_conj(qWa), qW)), qR[None])
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    ok = valid & np.where(par >= 0, valid[:, np.maximum(par, 0)], True)
    q[~ok] = np.nan
    return make_quats_continuous(q)


def root_locations(rig: Rig, root_positions: np.ndarray) -> np.ndarray:
    """Keyed root bone location [T, 3] (bone space) that puts its head at ``root_positions``."""
    r = rig.root
    return (np.asarray(root_positions, np.float64) - rig.heads[r]) @ rig.rest_rotations[r]


def forward_kinematics(rig: Rig, quats: np.ndarray, root_location: np.ndarray | None = None,
                       world: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Blender's pose evaluation: keyed quaternions [T, B, 4] (+ root location [T, 3]) ->
    pose matrices [T, B, 4, 4] (armature space; times ``world`` [4, 4] if given) and joint
    positions [T, J, 3]. Missing (NaN) keys count as the rest rotation."""
    q = np.nan_to_num(np.asarray(quats, dtype=np.float64), nan=0.0)
    q[np.all(q == 0, axis=-1)] = (1.0, 0.0, 0.0, 0.0)
    T, B = q.shape[:2]
    basis = np.tile(np.eye(4), (T, B, 1, 1))
    basis[..., :3, :3] = quat_to_matrix(q)
    if root_location is not None:
        basis[:, rig.root, :3, 3] = np.nan_to_num(np.asarray(root_location, np.float64))
    M = rig.rest_matrices()
    Minv = np.linalg.inv(M)
    P = np.empty((T, B, 4, 4))
    for b in rig.order:
        a = rig.parents[b]
        if a < 0:
            P[:, b] = M[b] @ basis[:, b]
        else:
            P[:, b] = P[:, a] @ (Minv[a] @ M[b]) @ basis[:, b]
    if world is not None:
        P = np.asarray(world, np.float64) @ P
    return P, joints_from_pose(rig.lengths, P, rig.joint_bone, rig.joint_at_tail)


def joints_from_pose(lengths: np.ndarray, pose_matrices: np.ndarray, joint_bone, joint_at_tail) -> np.ndarray:
    """Joint positions [..., J, 3] from pose matrices [..., B, 4, 4] (armature or world space):
    joint j is the head, or the tail (``length`` along local y), of bone ``joint_bone[j]``."""
    P = np.asarray(pose_matrices, dtype=np.float64)
    jb = np.asarray(joint_bone, dtype=np.int64)
    along = np.where(np.asarray(joint_at_tail, bool), np.asarray(lengths, np.float64)[jb], 0.0)
    Pj = P[..., jb, :, :]
    return Pj[..., :3, 3] + Pj[..., :3, 1] * along[:, None]


def skeleton_animation(rig: Rig, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keyed rotations [T, B, 4] (NaN gaps) and root locations [T, 3] (NaN where the root is
    missing) that make the rig follow a joint sequence [T, J, 3]."""
    X = np.asarray(joints, dtype=np.float64)
    W, valid = skeleton_bone_rotations(rig, X)
    q = local_rotations(rig, W, valid)
    loc = root_locations(rig, X[:, rig.root])
    return q, loc
