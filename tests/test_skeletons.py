import numpy as np
import pytest

from engine import MarionetteError
from engine.body.joint_sets import (BODY_25, BODY_25B, COCO_17, H36M_17, JOINT_SETS, PANOPTIC_19, SMPL_24,
                              get_joint_set, map_joints, mapped_fraction, mapping_matrix)


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
    M = mapping_matrix(COCO_17, BODY_25B)
    assert not M[BODY_25B.index("HeadTop")].any()  # COCO has no head top
    with pytest.raises(MarionetteError):
        map_joints(np.zeros((3, 3)), BODY_25B, COCO_17)
