import numpy as np
import pytest

from engine import MarionetteError
from engine.body.joint_sets import (BLAZEPOSE_33, BODY_25, BODY_25B, COCO_17, DERIVED, ESTIMATED, H36M_17, JOINT_SETS,
                                   PANOPTIC_19, SMPL_24, InFrame, Mean, generic_joint_set, get_joint_set,
                                   infer_joint_set, joint_map, map_joints, mapped_fraction, mapping_matrix)


@pytest.mark.parametrize("js", list(JOINT_SETS.values()), ids=list(JOINT_SETS))
def test_joint_set_tables_are_consistent(js):
    assert len(js.names) == len(set(js.names)) == js.num_joints
    assert len(set(js.canonical)) == js.num_joints
    order = js.topological_order()
    assert sorted(order) == list(range(js.num_joints))
    pos = {j: i for i, j in enumerate(order)}
    for parent, child in js.tree_bones:
        assert pos[parent] < pos[child]
    widths = js.default_widths
    assert widths.shape == (len(js.bones),) and np.all(widths > 0) and np.all(widths < 0.1)
    # left/right symmetry: every left joint has its right partner
    for c in js.canonical:
        if c.startswith("left_"):
            assert "right_" + c[5:] in js.canonical


def test_known_indices_of_openpose_sets():
    assert BODY_25.names[8] == "MidHip" and BODY_25.names[1] == "Neck"
    assert BODY_25B.names[17] == "Neck" and BODY_25B.names[18] == "HeadTop"
    assert BODY_25B.index("left_knee") == 13 and BODY_25B.index("RAnkle") == 16
    assert COCO_17.names[0] == "nose" and COCO_17.num_joints == 17
    assert PANOPTIC_19.num_joints == 19 and H36M_17.num_joints == 17 and SMPL_24.num_joints == 24


def test_lookup_aliases_and_errors():
    assert get_joint_set("body25b") is BODY_25B
    assert get_joint_set("coco") is COCO_17
    with pytest.raises(MarionetteError, match="unknown joint set"):
        get_joint_set("BODY_99")


def test_mapping_copies_and_derives():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(5, BODY_25B.num_joints, 3))
    out = map_joints(src, BODY_25B, COCO_17)
    assert out.shape == (5, 17, 3)
    np.testing.assert_allclose(out[:, COCO_17.index("left_knee")], src[:, BODY_25B.index("left_knee")])
    # H36M pelvis derived as the hip midpoint
    h = map_joints(src, BODY_25B, H36M_17)
    mid = 0.5 * (src[:, BODY_25B.index("left_hip")] + src[:, BODY_25B.index("right_hip")])
    np.testing.assert_allclose(h[:, H36M_17.index("pelvis")], mid)
    assert mapped_fraction(COCO_17, COCO_17) == 1.0


def test_missing_source_propagates_nan():
    src = np.zeros((BODY_25B.num_joints, 3))
    src[BODY_25B.index("left_hip")] = np.nan
    out = map_joints(src, BODY_25B, H36M_17)
    assert np.isnan(out[H36M_17.index("pelvis")]).all()
    assert np.isfinite(out[H36M_17.index("right_knee")]).all()
    # COCO has no head top: it is estimated, unless approximations are refused
    assert mapping_matrix(COCO_17, BODY_25B)[BODY_25B.index("HeadTop")].any()
    assert not mapping_matrix(COCO_17, BODY_25B, allow_approximate=False)[BODY_25B.index("HeadTop")].any()
    assert not mapping_matrix(COCO_17, BLAZEPOSE_33)[BLAZEPOSE_33.index("mouth_left")].any()  # nothing to build it from
    with pytest.raises(MarionetteError):
        map_joints(np.zeros((3, 3)), BODY_25B, COCO_17)


# ----------------------------------------------------------------------------- joints a set lacks


def _reference():
    """The synthetic actor's BODY_25B joints (15 frames of a walk of a clean MakeHuman body): every
    joint, human proportions, no detector noise — what the estimation rules are judged on."""
    from engine.data import synthetic_actor_path

    return np.load(synthetic_actor_path() / "reference_skeleton.npz")["joints"].astype(np.float64)


def _points(rule):
    if isinstance(rule, Mean):
        return [p for p, _ in rule.terms]
    return [rule.origin, *rule.up, *(rule.left or rule.forward)]


def test_estimation_rules_are_well_formed_data():
    known = {c for js in JOINT_SETS.values() for c in js.canonical} | set(DERIVED) | set(ESTIMATED)
    for name, rules in ESTIMATED.items():
        assert name in known and rules
        for rule in rules:
            assert isinstance(rule, (Mean, InFrame))
            for p in _points(rule):
                assert all(c in known for c in (p if isinstance(p, tuple) else (p,))), (name, p)
            if isinstance(rule, Mean):  # an affine combination: a point that moves with the body
                assert abs(sum(w for _, w in rule.terms) - 1.0) < 1e-9, name
            else:
                assert len(rule.offset) == 3 and np.all(np.abs(rule.offset) < 1.0)
    # every left rule has its mirror image
    for name, rules in ESTIMATED.items():
        if name.startswith("left_"):
            mirror = ESTIMATED["right_" + name[5:]]
            for a, b in zip(rules, mirror):
                assert type(a) is type(b)
                if isinstance(a, InFrame):
                    assert np.allclose(a.offset, (-b.offset[0], b.offset[1], b.offset[2]))
    with pytest.raises(ValueError):
        InFrame("nose", up=("neck", "nose"), offset=(0, 0, 0))  # neither left nor forward


@pytest.mark.parametrize("js", list(JOINT_SETS.values()), ids=list(JOINT_SETS))
def test_every_joint_set_can_drive_a_body_25b_actor(js):
    jm = joint_map(js, BODY_25B)
    assert jm.missing() == []
    est = jm.estimated()
    copied = [BODY_25B.names[j] for j in range(25) if jm.is_copy(j)]
    assert sorted(copied + list(est)) == sorted(BODY_25B.names)
    assert "HeadTop" in est or "head_top" in js.canonical
    for name, sources in est.items():
        assert sources and all(s in js.names for s in sources)


def test_estimated_joints_by_set():
    assert set(joint_map(BODY_25, BODY_25B).estimated()) == {"Neck", "HeadTop"}
    assert joint_map(BODY_25, BODY_25B).estimated()["HeadTop"] == ["Neck", "REar", "LEar"]
    feet = {"LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel"}
    assert set(joint_map(COCO_17, BODY_25B).estimated()) == {"Neck", "HeadTop"} | feet
    assert set(joint_map(BLAZEPOSE_33, BODY_25B).estimated()) == {"Neck", "HeadTop", "LBigToe", "LSmallToe",
                                                                   "RBigToe", "RSmallToe"}
    assert {"Nose", "LEye", "REar", "HeadTop", "LHip"} <= set(joint_map(SMPL_24, BODY_25B).estimated())
    assert joint_map(SMPL_24, BODY_25B).estimated()["LHip"] == ["left_hip"]  # SMPL's hip stands in
    assert joint_map(BODY_25B, BODY_25B).estimated() == {}


def test_head_top_is_beyond_the_ears_from_the_neck():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(4, BODY_25.num_joints, 3))
    out = map_joints(X, BODY_25, BODY_25B)
    ears = 0.5 * (X[:, BODY_25.index("LEar")] + X[:, BODY_25.index("REar")])
    expected = ears + 0.7 * (ears - X[:, BODY_25.index("Neck")])
    np.testing.assert_allclose(out[:, BODY_25B.index("HeadTop")], expected, atol=1e-12)
    row = mapping_matrix(BODY_25, BODY_25B)[BODY_25B.index("HeadTop")]
    assert np.isclose(row.sum(), 1.0) and row[BODY_25.index("Neck")] == pytest.approx(-0.7)


# limits (metres; worst frame, mean over frames) of a joint estimated on the demo actor's walking body;
# everything else is copied exactly. Toes are the weakest: the foot's pitch is not in the ankle and knee.
_TOLERANCE = {"HeadTop": (0.04, 0.03), "Neck": (0.03, 0.02), "Nose": (0.03, 0.02), "LEye": (0.03, 0.02),
              "REye": (0.03, 0.02), "LEar": (0.04, 0.03), "REar": (0.04, 0.03), "LHeel": (0.04, 0.02),
              "RHeel": (0.04, 0.02), "LBigToe": (0.13, 0.06), "RBigToe": (0.13, 0.06), "LSmallToe": (0.1, 0.05),
              "RSmallToe": (0.1, 0.05), "LHip": (1e-6, 1e-6), "RHip": (1e-6, 1e-6)}  # SMPL's hips stand in


@pytest.mark.parametrize("js", list(JOINT_SETS.values()), ids=list(JOINT_SETS))
def test_round_trip_through_each_set_keeps_the_body(js):
    X = _reference()
    back = map_joints(map_joints(X, BODY_25B, js), js, BODY_25B)
    assert np.isfinite(back).all()
    jm = joint_map(js, BODY_25B)
    errs = np.linalg.norm(back - X, axis=-1)
    err, mean = errs.max(0), errs.mean(0)
    for j, name in enumerate(BODY_25B.names):
        if name in jm.estimated():
            assert err[j] < _TOLERANCE[name][0] and mean[j] < _TOLERANCE[name][1], (name, err[j], mean[j])
        else:
            assert err[j] < 1e-6, (name, err[j])


def _mirror(X, js):
    """The same skeleton reflected left-right: x negated and left/right joints swapped."""
    swap = []
    for c in js.canonical:
        other = c.replace("left", "#").replace("right", "left").replace("#", "right")
        swap.append(js.canonical.index(other))
    Y = X[..., swap, :].copy()
    Y[..., 0] *= -1
    return Y


@pytest.mark.parametrize("js", list(JOINT_SETS.values()), ids=list(JOINT_SETS))
def test_estimates_follow_the_body_rigidly_in_scale_and_mirror(js):
    X = map_joints(_reference(), BODY_25B, js)
    X = np.where(np.isfinite(X), X, 0.0)  # joints BODY_25B cannot give (SMPL's spine...) are not used
    out = map_joints(X, js, BODY_25B)
    from engine.geometry.rotations import axis_angle_to_matrix

    R = axis_angle_to_matrix(np.array([0.3, -1.1, 0.7]))
    t, s = np.array([0.4, -2.0, 1.5]), 1.7
    moved = map_joints(s * X @ R.T + t, js, BODY_25B)
    np.testing.assert_allclose(moved, s * out @ R.T + t, atol=1e-9)
    np.testing.assert_allclose(map_joints(_mirror(X, js), js, BODY_25B), _mirror(out, BODY_25B), atol=1e-9)


def test_missing_inputs_fall_back_per_frame_or_give_nan():
    X = map_joints(_reference()[:3], BODY_25B, BODY_25)
    ht = BODY_25B.index("HeadTop")
    full = map_joints(X, BODY_25, BODY_25B)
    X[1, BODY_25.index("LEar")] = np.nan  # frame 1: no ear -> the eyes' rule
    X[2, [BODY_25.index(n) for n in ("LEar", "REye", "Nose")]] = np.nan  # frame 2: nothing left to use
    out = map_joints(X, BODY_25, BODY_25B)
    np.testing.assert_allclose(out[0, ht], full[0, ht])
    assert np.isfinite(out[1, ht]).all() and 0 < np.linalg.norm(out[1, ht] - full[1, ht]) < 0.05
    assert np.isnan(out[2, ht]).all()
    # a knee missing on a frame leaves that leg's estimated foot missing, not the other's
    C = map_joints(_reference()[:2], BODY_25B, COCO_17)
    C[0, COCO_17.index("left_knee")] = np.nan
    feet = map_joints(C, COCO_17, BODY_25B)
    assert np.isnan(feet[0, BODY_25B.index("LHeel")]).all() and np.isfinite(feet[0, BODY_25B.index("RHeel")]).all()
    assert np.isfinite(feet[1]).all()


# ----------------------------------------------------------------------------- sets from names


def test_infer_joint_set_from_names_and_parents():
    for js in JOINT_SETS.values():
        assert infer_joint_set(js.names, js.parents) == (js, "")
        assert infer_joint_set(js.names) == (js, "")
    # the same tree rooted elsewhere is the same set (BODY_25 rooted at the neck)
    p = list(BODY_25.parents)
    neck, mid = BODY_25.index("Neck"), BODY_25.index("MidHip")
    p[neck], p[mid] = -1, neck
    assert infer_joint_set(BODY_25.names, p)[0] is BODY_25
    # another tree over the same names is not guessed at
    q = list(BODY_25.parents)
    q[BODY_25.index("LWrist")] = BODY_25.index("LShoulder")
    js, why = infer_joint_set(BODY_25.names, q)
    assert js is None and "another tree" in why and "joint_set='BODY_25'" in why
    js, why = infer_joint_set(list(reversed(COCO_17.names)))
    assert js is None and "another order" in why
    js, why = infer_joint_set(["root", "spine", "head"], [-1, 0, 1])
    assert js is None and "match no known joint set" in why


def test_generic_joint_set_validates_names_and_parents():
    js = generic_joint_set(["root", "spine", "head", "arm"], [-1, 0, 1, 1], where="x.npz")
    assert js.name == "GENERIC" and js.canonical == js.names and js.root == 0 and len(js.bones) == 3
    assert mapped_fraction(js, BODY_25B) == 0.0
    for names, parents, match in [
        (["a", "a"], [-1, 0], "distinct"),
        (["a", "b"], [-1], "2"),
        (["a", "b"], [-1, 5], "holds 5"),
        (["a", "b"], [1, 0], "root"),
        (["a", "b", "c"], [-1, 2, 1], "cycle"),
        (["a" * 70], [-1], "63 bytes"),
        ([], [], "empty"),
    ]:
        with pytest.raises(MarionetteError, match=match):
            generic_joint_set(names, parents, where="x.npz")


# ----------------------------------------------------------------------------- skeleton files without joint_set


def test_skeleton_file_without_joint_set_is_inferred_or_generic(tmp_path):
    from engine.io.skeleton_file import load_skeleton, save_skeleton

    X = np.random.default_rng(0).normal(size=(4, BODY_25.num_joints, 3)).astype(np.float32)
    # what other tools write: joints, names, parents, fps (no joint_set, no format)
    np.savez(tmp_path / "other.npz", joints=X, joint_names=np.array(BODY_25.names),
             parents=np.array(BODY_25.parents), fps=np.array(50.0))
    seq = load_skeleton(tmp_path / "other.npz")
    assert seq.joint_set is BODY_25 and seq.fps == 50.0
    np.testing.assert_array_equal(seq.joints, X)
    # names of a known set over another tree are not guessed at
    q = list(BODY_25.parents)
    q[BODY_25.index("LWrist")] = BODY_25.index("LShoulder")
    np.savez(tmp_path / "tree.npz", joints=X, joint_names=np.array(BODY_25.names), parents=np.array(q), fps=50.0)
    with pytest.raises(MarionetteError, match="tree.npz: no field 'joint_set'.*another tree"):
        load_skeleton(tmp_path / "tree.npz")
    assert load_skeleton(tmp_path / "tree.npz", allow_generic=True).joint_set.name == "GENERIC"
    # names of no known set: an error for the CLI, a generic skeleton for the Blender importer
    names, parents = ["hips", "chest", "head", "l_hand", "r_hand"], [-1, 0, 1, 1, 1]
    np.savez(tmp_path / "rig.npz", joints=X[:, :5], joint_names=np.array(names), parents=np.array(parents), fps=30.0)
    with pytest.raises(MarionetteError, match="rig.npz: no field 'joint_set'.*match no known joint set"):
        load_skeleton(tmp_path / "rig.npz")
    seq = load_skeleton(tmp_path / "rig.npz", allow_generic=True)
    assert seq.joint_set.names == tuple(names) and seq.joint_set.parents == tuple(parents)
    # a generic sequence saves without joint_set and reads back the same
    save_skeleton(tmp_path / "again.npz", seq)
    assert "joint_set" not in np.load(tmp_path / "again.npz")
    assert load_skeleton(tmp_path / "again.npz", allow_generic=True).joint_set == seq.joint_set
    # clear errors: no names, no parents for a generic skeleton, bad parents
    np.savez(tmp_path / "bare.npz", joints=X, fps=30.0)
    with pytest.raises(MarionetteError, match="missing field 'joint_set'.*'joint_names'"):
        load_skeleton(tmp_path / "bare.npz", allow_generic=True)
    np.savez(tmp_path / "noparents.npz", joints=X[:, :5], joint_names=np.array(names), fps=30.0)
    with pytest.raises(MarionetteError, match="needs field 'parents'"):
        load_skeleton(tmp_path / "noparents.npz", allow_generic=True)
    np.savez(tmp_path / "cycle.npz", joints=X[:, :5], joint_names=np.array(names), parents=np.array([1, 0, 1, 1, 1]),
             fps=30.0)
    with pytest.raises(MarionetteError, match="cycle.npz: field 'parents'"):
        load_skeleton(tmp_path / "cycle.npz", allow_generic=True)
    np.savez(tmp_path / "strparents.npz", joints=X, joint_names=np.array(BODY_25.names),
             parents=np.array(["x"] * 25), fps=30.0)
    with pytest.raises(MarionetteError, match="parents"):
        load_skeleton(tmp_path / "strparents.npz", allow_generic=True)


def test_blazepose_toes_sit_beside_its_foot_tip():
    X = _reference()
    Y = map_joints(X, BODY_25B, BLAZEPOSE_33)
    for s, S in (("left", "L"), ("right", "R")):  # BlazePose's foot index: the foot's tip, by the big toe
        tip = 0.6 * X[:, BODY_25B.index(S + "BigToe")] + 0.4 * X[:, BODY_25B.index(S + "SmallToe")]
        Y[:, BLAZEPOSE_33.index(s + "_foot_index")] = tip
        Y[:, BLAZEPOSE_33.index(s + "_heel")] = X[:, BODY_25B.index(S + "Heel")]
    Z = map_joints(Y, BLAZEPOSE_33, BODY_25B)
    for name in ("LBigToe", "LSmallToe", "RBigToe", "RSmallToe"):
        j = BODY_25B.index(name)
        assert np.linalg.norm(Z[:, j] - X[:, j], axis=-1).max() < 0.05, name
    # the two toes are apart (the DERIVED fallback put both on the foot index: a zero-length bone)
    assert np.linalg.norm(Z[:, BODY_25B.index("LBigToe")] - Z[:, BODY_25B.index("LSmallToe")], axis=-1).min() > 0.03
