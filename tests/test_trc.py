"""TRC marker files (OpenSim / Pose2Sim) in and out: round trips, unit handling, bad files."""

from __future__ import annotations

import numpy as np
import pytest

from engine import MarionetteError
from engine.body.joint_sets import BODY_25, COCO_17
from engine.geometry.axes import up_axis_matrix
from engine.io.skeleton_file import SkeletonSequence, load_skeleton, save_skeleton
from engine.io.trc import read_trc, write_trc
from engine.synthetic.skeleton_motion import synthetic_skeleton_motion


def _seq(js=BODY_25, T=20, fps=30.0, up="Z"):
    X = synthetic_skeleton_motion(js, T, fps=fps, seed=3, amplitude=0.3)
    X[min(4, T - 1), 2] = np.nan  # one missing joint
    return SkeletonSequence(joints=X, joint_set=js, fps=fps, up_axis=up)


def _blender(seq):
    return seq.joints.astype(np.float64) @ up_axis_matrix(seq.up_axis).T


@pytest.mark.parametrize("units", ["m", "mm"])
def test_npz_trc_round_trip(tmp_path, units):
    seq = _seq()
    save_skeleton(tmp_path / "a.npz", seq)
    src = load_skeleton(tmp_path / "a.npz")
    write_trc(tmp_path / "a.trc", src, units=units)
    text = (tmp_path / "a.trc").read_text().splitlines()
    assert text[0].startswith("PathFileType\t4\t(X/Y/Z)") and text[1].startswith("DataRate\tCameraRate\tNumFrames")
    assert text[2].split("\t")[4] == units and text[3].startswith("Frame#\tTime\tNose")
    back = load_skeleton(tmp_path / "a.trc")
    assert back.joint_set == BODY_25 and back.fps == 30.0 and back.up_axis == "Y" and back.num_frames == 20
    np.testing.assert_array_equal(back.missing, src.missing)
    ok = ~src.missing
    assert np.abs(_blender(back)[ok] - _blender(src)[ok]).max() < 1e-6
    np.testing.assert_array_equal(back.extras["frame_indices"], np.arange(20))
    # and back to .npz through save_skeleton's extension dispatch
    save_skeleton(tmp_path / "b.trc", back)
    assert np.abs(_blender(load_skeleton(tmp_path / "b.trc"))[ok] - _blender(src)[ok]).max() < 1e-6


def test_reordered_and_unknown_markers(tmp_path):
    seq = _seq(COCO_17, T=5, up="Y")
    write_trc(tmp_path / "a.trc", seq)
    lines = (tmp_path / "a.trc").read_text().splitlines()
    # swap the first two markers' names and columns
    names = lines[3].split("\t")
    names[2], names[5] = names[5], names[2]
    lines[3] = "\t".join(names)
    for i in range(6, len(lines)):
        c = lines[i].split("\t")
        c[2:5], c[5:8] = c[5:8], c[2:5]
        lines[i] = "\t".join(c)
    (tmp_path / "b.trc").write_text("\n".join(lines) + "\n")
    back = read_trc(tmp_path / "b.trc")
    assert back.joint_set == COCO_17
    np.testing.assert_allclose(back.joints, seq.joints, atol=1e-6)
    # names of no known set: an error, or a generic skeleton when allowed
    names = lines[3].split("\t")
    names[2] = "marker_a"
    lines[3] = "\t".join(names)
    (tmp_path / "c.trc").write_text("\n".join(lines) + "\n")
    with pytest.raises(MarionetteError, match="c.trc: marker names"):
        read_trc(tmp_path / "c.trc")
    generic = load_skeleton(tmp_path / "c.trc", allow_generic=True)
    assert generic.joint_set.names[0] == "marker_a" and generic.joint_set.parents[1:] == (0,) * 16


@pytest.mark.parametrize("edit, field", [
    (lambda L: L.__setitem__(2, L[2].replace("\tm\t", "\tfurlongs\t")), "Units"),
    (lambda L: L.__setitem__(2, "abc" + L[2][2:]), "DataRate"),
    (lambda L: L.__setitem__(2, L[2].replace("\t5\t", "\t9\t", 1)), "NumFrames"),
    (lambda L: L.__setitem__(7, L[7].replace(L[7].split("\t")[3], "x1y", 1)), "line 8"),
    (lambda L: L.__setitem__(0, "hello"), "line 1"),
    (lambda L: L.__setitem__(3, "Time\tFrame#"), "line 4"),
    (lambda L: L.__setitem__(1, "DataRate\tCameraRate"), "NumFrames"),
])
def test_bad_trc_names_file_and_field(tmp_path, edit, field):
    write_trc(tmp_path / "a.trc", _seq(COCO_17, T=5))
    lines = (tmp_path / "a.trc").read_text().splitlines()
    edit(lines)
    (tmp_path / "bad.trc").write_text("\n".join(lines) + "\n")
    with pytest.raises(MarionetteError, match="bad.trc") as err:
        load_skeleton(tmp_path / "bad.trc")
    assert field in str(err.value)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "e.trc").write_text("")
    with pytest.raises(MarionetteError, match="e.trc"):
        read_trc(tmp_path / "e.trc")
    with pytest.raises(MarionetteError, match="nope.trc"):
        load_skeleton(tmp_path / "nope.trc")
    with pytest.raises(MarionetteError, match="units"):
        write_trc(tmp_path / "x.trc", _seq(T=2), units="ft")


def test_cli_reads_trc(tmp_path):
    from engine.cli import main as cli_main

    seq = _seq(BODY_25, T=10, up="Y")
    write_trc(tmp_path / "pose2sim.trc", seq, units="mm")
    assert cli_main(["resample", str(tmp_path / "pose2sim.trc"), "--fps", "60", "-o", str(tmp_path / "r.npz")]) == 0
    out = load_skeleton(tmp_path / "r.npz")
    assert out.fps == 60.0 and out.joint_set == BODY_25 and out.up_axis == "Y"
    np.testing.assert_allclose(out.joints[0], seq.joints[0], atol=1e-6)
