"""The Marionette extension, installed from its zip into a sandboxed Blender user folder,
driven as a user would: File > Import operators, round trips, bad input, the F-curve shim."""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

pytest.importorskip("bpy")

from blender_sandbox import data_counts  # noqa: E402
from engine.synthetic.skeleton_motion import synthetic_skeleton_motion  # noqa: E402
from engine.geometry import axes  # noqa: E402
from engine.body.smpl import motion as S  # noqa: E402
from engine.io.skeleton_file import SkeletonSequence, save_skeleton  # noqa: E402
from engine.body.joint_sets import BODY_25, BODY_25B, SMPL_24  # noqa: E402

pytestmark = pytest.mark.blender


def _mod(sandbox, name):
    return importlib.import_module(f"{sandbox.module}.{name}")


def _skeleton_file(path, joint_set=BODY_25, T=60, fps=30.0, up_axis="Z", seed=1, X=None):
    if X is None:
        X = synthetic_skeleton_motion(joint_set, T, fps=fps, seed=seed, amplitude=0.3)
    save_skeleton(path, SkeletonSequence(joints=X, joint_set=joint_set, fps=fps, up_axis=up_axis))
    return path, X


def _joints_at(bpy, pose_read, obj, frame):
    bpy.context.scene.frame_set(frame)
    return pose_read.evaluated_joints(obj, bpy.context.evaluated_depsgraph_get())


# ----------------------------------------------------------------------------- the package


def test_zip_carries_addon_and_engine_only(blender_sandbox):
    names = zipfile.ZipFile(blender_sandbox.zip_path).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names and "ops_import.py" in names
    assert "_vendor/engine/body/kinematics.py" in names and "_vendor/engine/__init__.py" in names
    assert not [n for n in names if n.startswith(("tests/", "scripts/", "docs/", "dist/")) or "__pycache__" in n
                or n.endswith(".pyc")]
    # the installed add-on resolves its own copy of engine when nothing else provided one
    assert (blender_sandbox.installed_path / "_vendor" / "engine" / "body" / "kinematics.py").is_file()


def test_manifest_passes_blenders_validator(blender_sandbox):
    build = importlib.import_module("blender_sandbox").ROOT / "scripts" / "build_extension.py"
    sys.path.insert(0, str(build.parent))
    try:
        from build_extension import blender_validator
    finally:
        sys.path.remove(str(build.parent))
    cli = blender_validator()
    assert cli is not None and cli.is_file()
    res = subprocess.run([sys.executable, str(cli), "validate", str(blender_sandbox.zip_path)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "error" not in (res.stdout + res.stderr).lower()


def test_operators_registered_with_undo_and_in_file_import_menu(blender):
    bpy = blender
    for name in ("import_skeleton", "import_smpl"):
        cls = getattr(bpy.types, f"MARIONETTE_OT_{name}")
        assert {"REGISTER", "UNDO"} <= set(cls.bl_options)
        assert hasattr(bpy.ops.marionette, name)
    drawn = [getattr(f, "__module__", "") for f in bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize()]
    assert any(m.endswith("marionette.ops_import") for m in drawn)


# ----------------------------------------------------------------------------- skeletons


def test_skeleton_import_round_trip_gaps_and_properties(blender, blender_sandbox, tmp_path):
    bpy = blender
    X = synthetic_skeleton_motion(BODY_25B, 60, seed=2, amplitude=0.3)
    wrist = BODY_25B.index("RWrist")
    X[20:25, wrist] = np.nan
    path, _ = _skeleton_file(tmp_path / "walk.npz", BODY_25B, X=X)
    assert bpy.ops.marionette.import_skeleton(filepath=str(path), target_fps=30, start_frame=11) == {"FINISHED"}
    obj = bpy.data.objects["walk"]
    assert obj.type == "ARMATURE" and obj["marionette_joint_set"] == "BODY_25B"
    assert list(obj["marionette_joint_bones"]) == list(BODY_25B.names)
    assert (bpy.context.scene.frame_start, bpy.context.scene.frame_end) == (11, 70)  # the clip's frames

    pose_read = _mod(blender_sandbox, "pose_read")
    for f in (0, 13, 37, 59):
        Y = _joints_at(bpy, pose_read, obj, 11 + f)
        ok = np.isfinite(X[f]).all(-1)
        assert np.abs(Y[ok] - X[f][ok]).max() < 1e-3  # within 1 mm (it is ~1e-6: float32)

    # the missing wrist leaves a gap in its bone's keys (no zeros): frames 31..35 have no key
    fcurves = _mod(blender_sandbox, "fcurves")
    action = obj.animation_data.action
    fc = fcurves.find_fcurve(action, obj, 'pose.bones["RWrist"].rotation_quaternion', 0)
    frames, values = fcurves.read_keys(fc)
    assert len(frames) == 55 and not set(range(31, 36)) & set(frames.astype(int))
    assert np.all(np.isfinite(values))
    # other bones are keyed on every frame
    fc = fcurves.find_fcurve(action, obj, 'pose.bones["LWrist"].rotation_quaternion', 0)
    assert len(fcurves.read_keys(fc)[0]) == 60
    # root translation is keyed
    assert fcurves.find_fcurve(action, obj, 'pose.bones["Neck"].location', 2) is not None


def test_skeleton_import_options_scale_up_axis_name_and_frame_rate(blender, blender_sandbox, tmp_path):
    bpy = blender
    path, X = _skeleton_file(tmp_path / "yup.npz", BODY_25, T=31, up_axis="Y", seed=3)
    pose_read = _mod(blender_sandbox, "pose_read")
    C = axes.up_axis_matrix("Y")
    assert bpy.ops.marionette.import_skeleton(filepath=str(path), object_name="Actor", scale=2.0, target_fps=30,
                                              start_frame=1) == {"FINISHED"}
    obj = bpy.data.objects["Actor"]
    Y = _joints_at(bpy, pose_read, obj, 8)
    assert np.abs(Y - 2.0 * X[7] @ C.T).max() < 1e-3

    # without 'Set Scene Frame Rate', the scene's frame rate (24 fps here), resampled by time: 1 s -> 25 keys
    bpy.context.scene.render.fps = 24
    assert bpy.ops.marionette.import_skeleton(filepath=str(path), up_axis="Y", object_name="At24",
                                              set_scene_fps=False) == {"FINISHED"}
    assert bpy.context.scene.render.fps == 24
    obj24 = bpy.data.objects["At24"]
    fcurves = _mod(blender_sandbox, "fcurves")
    fc = fcurves.find_fcurve(obj24.animation_data.action, obj24, 'pose.bones["Nose"].rotation_quaternion', 0)
    frames, _ = fcurves.read_keys(fc)
    assert len(frames) == 25 and frames[0] == 1 and frames[-1] == 25
    # instants shared by both rates (every 1/6 s) land exactly on the source frames
    for k in (0, 4, 12, 24):
        Yk = _joints_at(bpy, pose_read, obj24, 1 + k)
        assert np.abs(Yk - X[k * 30 // 24] @ C.T).max() < 1e-3
    # the override "Z" treats the same file as Z-up
    assert bpy.ops.marionette.import_skeleton(filepath=str(path), up_axis="Z", target_fps=30,
                                              object_name="AsZ") == {"FINISHED"}
    assert np.abs(_joints_at(bpy, pose_read, bpy.data.objects["AsZ"], 1) - X[0]).max() < 1e-3


# ----------------------------------------------------------------------------- SMPL


@pytest.fixture(scope="module")
def synthetic_model(tmp_path_factory):
    from engine.body.smpl.model import save_smpl_npz
    from engine.synthetic.smpl import make_synthetic_smpl_model

    model = make_synthetic_smpl_model(seed=0, num_vertices=2000)
    path = tmp_path_factory.mktemp("smpl") / "SMPL_NEUTRAL.npz"
    save_smpl_npz(path, model)
    return model, path


def _smpl_motion_file(path, T=12, J=24, seed=4, fps_key="mocap_framerate", fps=30.0, betas=None):
    rng = np.random.default_rng(seed)
    poses = rng.normal(0, 0.35, (T, 3 * J))
    trans = np.cumsum(rng.normal(0, 0.02, (T, 3)), axis=0) + [0, 0, 0.9]
    arrays = dict(poses=poses, trans=trans, gender=np.array("neutral"), **{fps_key: np.array(fps)})
    arrays["betas"] = rng.normal(0, 1.0, 10) if betas is None else betas
    np.savez(path, **arrays)
    return path, arrays


def test_smpl_import_matches_smplx_joints_and_mesh(blender, blender_sandbox, synthetic_model, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("smplx")

    from engine.body.smpl.smplx_adapter import to_smplx

    bpy = blender
    model, model_path = synthetic_model
    path, a = _smpl_motion_file(tmp_path / "amass.npz", T=12, J=52)  # SMPL-H layout: body joints used
    assert bpy.ops.marionette.import_smpl(filepath=str(path), model_path=str(model_path), target_fps=30) == {"FINISHED"}
    obj = bpy.data.objects["amass"]
    body = bpy.data.objects["amass_body"]
    assert obj["marionette_joint_set"] == "SMPL_24" and body.parent == obj
    # the rest pose stands upright in Blender although AMASS motion is Z-up (SMPL's body is Y-up)
    bones = obj.data.bones
    assert bones["head"].head_local.z - bones["left_ankle"].head_local.z > 1.0
    assert [g.name for g in body.vertex_groups] == list(SMPL_24.names)
    keys = body.data.shape_keys.key_blocks
    assert len(keys) == 11 and np.allclose([k.value for k in keys[1:]], a["betas"], atol=1e-6)

    poses = np.zeros((12, 24, 3))
    poses[:, :22] = a["poses"].reshape(12, 52, 3)[:, :22]
    tt = lambda x: torch.tensor(np.asarray(x), dtype=torch.float64)  # noqa: E731
    # compare without pose blend shapes for the mesh (Blender's armature modifier is pure LBS)
    from dataclasses import replace

    flat = replace(model, posedirs=np.zeros_like(model.posedirs))
    smpl = to_smplx(flat, batch_size=12, dtype=torch.float64)
    with torch.no_grad():
        out = smpl(betas=tt(np.tile(a["betas"], (12, 1))), global_orient=tt(poses[:, 0]),
                   body_pose=tt(poses[:, 1:].reshape(12, -1)), transl=tt(a["trans"]))
    joints = out.joints[:, :24].numpy()
    verts = out.vertices.numpy()

    pose_read = _mod(blender_sandbox, "pose_read")
    for f in (0, 5, 11):
        Y = _joints_at(bpy, pose_read, obj, 1 + f)
        assert np.abs(Y - joints[f]).max() < 1e-3  # AMASS files are Z-up: no axis change
        dg = bpy.context.evaluated_depsgraph_get()
        ev = body.evaluated_get(dg)
        me = ev.to_mesh()
        co = np.empty(3 * len(me.vertices), dtype=np.float32)
        me.vertices.foreach_get("co", co)
        ev.to_mesh_clear()
        world = np.array(body.matrix_world)
        co = co.reshape(-1, 3) @ world[:3, :3].T + world[:3, 3]
        assert np.abs(co - verts[f]).max() < 1e-3


def test_smpl_import_without_model_uses_generic_rest(blender, blender_sandbox, tmp_path):
    bpy = blender
    path, a = _smpl_motion_file(tmp_path / "gen.npz", T=6, fps_key="fps", fps=60.0)
    assert bpy.ops.marionette.import_smpl(filepath=str(path), target_fps=60, up_axis="Y") == {"FINISHED"}
    obj = bpy.data.objects["gen"]
    assert "gen_body" not in bpy.data.objects
    bones = obj.data.bones
    assert bones["head"].head_local.z - bones["left_ankle"].head_local.z > 1.0
    C = axes.up_axis_matrix("Y")
    expected = S.smpl_joints(S.GENERIC_SMPL_REST_JOINTS, a["poses"].reshape(6, 24, 3), a["trans"]) @ C.T
    pose_read = _mod(blender_sandbox, "pose_read")
    for f in range(6):
        assert np.abs(_joints_at(bpy, pose_read, obj, 1 + f) - expected[f]).max() < 1e-3


def test_smpl_model_from_preferences_by_gender(blender, blender_sandbox, synthetic_model, tmp_path):
    bpy = blender
    _, model_path = synthetic_model
    blender_sandbox.preferences().smpl_model_neutral = str(model_path)
    path, _ = _smpl_motion_file(tmp_path / "pref.npz", T=3)
    assert bpy.ops.marionette.import_smpl(filepath=str(path), create_mesh=False) == {"FINISHED"}
    obj = bpy.data.objects["pref"]
    assert obj["marionette_smpl_model"] == str(model_path) and "pref_body" not in bpy.data.objects


# ----------------------------------------------------------------------------- bad input


def _bad_skeleton_files(tmp):
    good, X = _skeleton_file(tmp / "good.npz", BODY_25, T=10)
    files = {}
    arrays = dict(np.load(good))

    def write(name, **changes):
        d = {k: v for k, v in arrays.items() if k not in changes or changes[k] is not None}
        d.update({k: v for k, v in changes.items() if v is not None})
        for k in [k for k, v in changes.items() if v is None]:
            d.pop(k, None)
        np.savez(tmp / name, **d)
        files[name] = tmp / name

    write("misspelled_joints.npz", joints=None, jionts=arrays["joints"])
    write("no_joint_set.npz", joint_set=None, joint_names=None)
    write("wrong_shape.npz", joints=arrays["joints"][:, :20])
    write("unknown_joint_set.npz", joint_set=np.array("BODY_99"), joint_names=None)
    write("zero_frames.npz", joints=arrays["joints"][:0], confidence=arrays["confidence"][:0])
    write("all_nan.npz", joints=np.full_like(arrays["joints"], np.nan))
    write("bad_fps.npz", fps=np.array(-5.0))
    data = good.read_bytes()
    (tmp / "truncated.npz").write_bytes(data[: len(data) // 3])
    files["truncated.npz"] = tmp / "truncated.npz"
    files["missing.npz"] = tmp / "does_not_exist.npz"
    return files


def _assert_cancelled_without_trace(bpy, call, match):
    before = data_counts(bpy)
    scene = bpy.context.scene
    frames = (scene.frame_start, scene.frame_end, scene.frame_current)
    objs = set(bpy.data.objects.keys())
    rate = (scene.render.fps, scene.render.fps_base)
    with pytest.raises(RuntimeError, match=match):
        call()
    assert data_counts(bpy) == before
    assert set(bpy.data.objects.keys()) == objs
    assert (scene.frame_start, scene.frame_end, scene.frame_current) == frames
    assert (scene.render.fps, scene.render.fps_base) == rate


def test_bad_skeleton_files_leave_the_scene_untouched(blender, tmp_path):
    bpy = blender
    # something already in the scene must survive untouched too
    good, _ = _skeleton_file(tmp_path / "existing.npz", BODY_25, T=5)
    bpy.ops.marionette.import_skeleton(filepath=str(good), target_fps=30)
    expected = {
        "misspelled_joints.npz": "missing field 'joints'",
        "no_joint_set.npz": "missing field 'joint_set'.*no field 'joint_names'",
        "wrong_shape.npz": "shape",
        "unknown_joint_set.npz": "unknown joint set 'BODY_99'",
        "zero_frames.npz": "zero frames",
        "all_nan.npz": "missing",
        "bad_fps.npz": "fps",
        "truncated.npz": "not a readable .npz",
        "missing.npz": "not found",
    }
    files = _bad_skeleton_files(tmp_path)
    for name, match in expected.items():
        _assert_cancelled_without_trace(
            bpy, lambda: bpy.ops.marionette.import_skeleton(filepath=str(files[name])), match)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_bad_smpl_files_and_malicious_pickle_leave_the_scene_untouched(blender, synthetic_model, tmp_path):
    bpy = blender
    _, model_path = synthetic_model
    good, a = _smpl_motion_file(tmp_path / "good.npz", T=5)
    cases = {}

    def write(name, **arrays):
        np.savez(tmp_path / name, **arrays)
        cases[name] = tmp_path / name

    base = {k: v for k, v in a.items()}
    write("misspelled.npz", **{("trnas" if k == "trans" else k): v for k, v in base.items()})
    write("shape.npz", **{**base, "poses": base["poses"][:, :69]})
    nan = base["poses"].copy()
    nan[2, 4] = np.nan
    write("nan.npz", **{**base, "poses": nan})
    write("zero.npz", **{**base, "poses": base["poses"][:0], "trans": base["trans"][:0]})
    write("nofps.npz", **{k: v for k, v in base.items() if k != "mocap_framerate"})
    data = good.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[:200])
    marker = tmp_path / "pwned"
    (tmp_path / "evil_motion.pkl").write_bytes(pickle.dumps({"poses": _Evil(marker)}))
    (tmp_path / "evil_model.pkl").write_bytes(pickle.dumps({"v_template": _Evil(marker)}))
    expected = {
        cases["misspelled.npz"]: "missing field 'trans'.*trnas",
        cases["shape.npz"]: "field 'poses' has shape",
        cases["nan.npz"]: "NaN",
        cases["zero.npz"]: "zero frames",
        cases["nofps.npz"]: "frame rate",
        tmp_path / "trunc.npz": "not a readable",
        tmp_path / "evil_motion.pkl": "not a readable",
    }
    for path, match in expected.items():
        _assert_cancelled_without_trace(
            bpy, lambda: bpy.ops.marionette.import_smpl(filepath=str(path), model_path=str(model_path)), match)
    _assert_cancelled_without_trace(
        bpy, lambda: bpy.ops.marionette.import_smpl(filepath=str(good), model_path=str(tmp_path / "evil_model.pkl")),
        "evil_model.pkl")
    assert not marker.exists()


def test_failure_after_datablocks_exist_rolls_everything_back(blender, blender_sandbox, synthetic_model, tmp_path,
                                                              monkeypatch):
    bpy = blender
    _, model_path = synthetic_model
    good, _ = _smpl_motion_file(tmp_path / "late.npz", T=4)
    armature = _mod(blender_sandbox, "armature")

    def boom(*args, **kwargs):
        raise ValueError("simulated failure while building the mesh")

    monkeypatch.setattr(armature, "create_skinned_mesh", boom)
    _assert_cancelled_without_trace(
        bpy, lambda: bpy.ops.marionette.import_smpl(filepath=str(good), model_path=str(model_path)),
        "simulated failure.*nothing was imported")
    monkeypatch.undo()
    # and the operator still works afterwards
    assert bpy.ops.marionette.import_smpl(filepath=str(good), model_path=str(model_path)) == {"FINISHED"}


# ----------------------------------------------------------------------------- the F-curve shim


def test_fcurve_shim_bulk_write_read_and_gaps(blender, blender_sandbox):
    bpy = blender
    fcurves = _mod(blender_sandbox, "fcurves")
    obj = bpy.data.objects.new("Empty", None)
    bpy.context.collection.objects.link(obj)
    action = fcurves.new_action("Act")
    fcurves.assign_action(obj, action)
    fc = fcurves.ensure_fcurve(action, obj, "location", 2, group="Object Transforms")
    assert fcurves.ensure_fcurve(action, obj, "location", 2) == fc
    values = np.sin(np.arange(100) / 10.0)
    values[40:50] = np.nan
    assert fcurves.write_keys(fc, np.arange(1, 101), values) == 90
    frames, got = fcurves.read_keys(fc)
    assert len(frames) == 90 and np.allclose(got, values[np.isfinite(values)], atol=1e-6)
    assert [f.data_path for f in fcurves.action_fcurves(action, obj)] == ["location"]
    assert fcurves.action_fcurves(action)[0] == fc
    # the gap (frames 41..50) is interpolated linearly by Blender between keys at frames 40 and 51
    bpy.context.scene.frame_set(45)
    assert np.isclose(obj.location.z, values[39] + (values[50] - values[39]) * (45 - 40) / 11, atol=1e-5)


# ----------------------------------------------------------------------------- frame rate, frame range, bounds


def _scene_rate(bpy):
    r = bpy.context.scene.render
    return r.fps / r.fps_base


def test_import_sets_scene_frame_rate_and_range_to_the_clip(blender, blender_sandbox, tmp_path, capfd):
    bpy = blender
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    scene.frame_start, scene.frame_end = 1, 250
    path, X = _skeleton_file(tmp_path / "run60.npz", BODY_25, T=200, fps=60.0)  # 3.32 s at 60 fps
    capfd.readouterr()
    assert bpy.ops.marionette.import_skeleton(filepath=str(path)) == {"FINISHED"}
    out = capfd.readouterr()
    assert "scene frame rate changed from 24 to 60 fps" in out.out + out.err
    # one key per source frame, the scene plays them at the motion's speed for exactly the clip
    assert _scene_rate(bpy) == 60 and (scene.frame_start, scene.frame_end) == (1, 200)
    obj = bpy.data.objects["run60"]
    assert obj["marionette_fps"] == 60
    pose_read = _mod(blender_sandbox, "pose_read")
    assert np.abs(_joints_at(bpy, pose_read, obj, 1 + 150) - X[150]).max() < 1e-3

    # a chosen rate: keys at 30 fps, the scene at 30 fps, the same 3.32 s
    assert bpy.ops.marionette.import_skeleton(filepath=str(path), target_fps=30, start_frame=5,
                                              object_name="at30") == {"FINISHED"}
    assert _scene_rate(bpy) == 30 and (scene.frame_start, scene.frame_end) == (5, 5 + 99)
    assert (scene.frame_end - scene.frame_start) / _scene_rate(bpy) == pytest.approx(199 / 60, abs=1 / 30)
    # a fractional rate is stored as Blender does (fps / fps_base)
    assert bpy.ops.marionette.import_skeleton(filepath=str(path), target_fps=29.97, object_name="ntsc") == {"FINISHED"}
    assert scene.render.fps == 30 and _scene_rate(bpy) == pytest.approx(29.97, rel=1e-6)

    # options off: the scene's rate is kept and the mismatch is reported; the range is only extended
    scene.render.fps, scene.render.fps_base = 24, 1.0
    scene.frame_start, scene.frame_end = 1, 250
    capfd.readouterr()
    assert bpy.ops.marionette.import_skeleton(filepath=str(path), target_fps=30, set_scene_fps=False,
                                              set_frame_range=False, object_name="keep") == {"FINISHED"}
    out = capfd.readouterr()
    assert "plays 24 fps" in out.out + out.err and "0.8x speed" in out.out + out.err
    assert _scene_rate(bpy) == 24 and (scene.frame_start, scene.frame_end) == (1, 250)


def test_smpl_import_sets_scene_frame_rate(blender, tmp_path):
    bpy = blender
    bpy.context.scene.render.fps = 24
    path, _ = _smpl_motion_file(tmp_path / "smpl60.npz", T=12, fps=60.0)
    assert bpy.ops.marionette.import_smpl(filepath=str(path), start_frame=3) == {"FINISHED"}
    scene = bpy.context.scene
    assert _scene_rate(bpy) == 60 and (scene.frame_start, scene.frame_end) == (3, 14)


def test_import_option_bounds_give_clear_errors_and_change_nothing(blender, tmp_path):
    bpy = blender
    path, _ = _skeleton_file(tmp_path / "b.npz", BODY_25, T=60, fps=30.0)
    smpl, _ = _smpl_motion_file(tmp_path / "s.npz", T=5)
    cases = [
        (dict(start_frame=2_000_000), "Start Frame must be a whole frame number from -1048574 to 1048574"),
        (dict(start_frame=1_048_570), "would end at frame 1048629, past Blender's last frame 1048574"),
        (dict(start_frame=-10), "Start Frame -10 is negative"),
        (dict(target_fps=-5.0), "Frame Rate must be 0 .* got -5"),
        (dict(target_fps=5000.0), "Frame Rate must be .* from 0.1 to 1000"),
        (dict(target_fps=float("nan")), "Frame Rate must be"),
        (dict(scale=0.0), "Scale must be a number from 0.0001 to 10000"),
        (dict(scale=-2.0), "Scale must be"),
        (dict(scale=float("inf")), "Scale must be"),
    ]
    for options, match in cases:
        for kind, file in (("skeleton", path), ("smpl", smpl)):
            if "would end" in match and kind == "smpl":
                continue
            op = getattr(bpy.ops.marionette, f"import_{kind}")
            _assert_cancelled_without_trace(bpy, lambda: op(filepath=str(file), **options), match)
    # a negative start frame is fine when the scene's range is left alone
    assert bpy.ops.marionette.import_skeleton(filepath=str(path), start_frame=-10, set_frame_range=False) == {"FINISHED"}


# ----------------------------------------------------------------------------- joint set inference, generic skeletons


def test_skeleton_without_joint_set_is_inferred_from_its_names(blender, tmp_path):
    bpy = blender
    X = synthetic_skeleton_motion(BODY_25, 10, seed=5, amplitude=0.3)
    np.savez(tmp_path / "other_tool.npz", joints=X.astype(np.float32), joint_names=np.array(BODY_25.names),
             parents=np.array(BODY_25.parents), fps=np.array(30.0))
    assert bpy.ops.marionette.import_skeleton(filepath=str(tmp_path / "other_tool.npz")) == {"FINISHED"}
    assert bpy.data.objects["other_tool"]["marionette_joint_set"] == "BODY_25"


def test_unknown_skeleton_imports_as_a_generic_armature(blender, blender_sandbox, tmp_path, capfd):
    bpy = blender
    names = ["hips", "spine", "head", "arm.L", "hand.L", "arm.R", "hand.R", "leg.L", "leg.R"]
    parents = [-1, 0, 1, 1, 3, 1, 5, 0, 0]
    rest = np.array([[0, 0, 1], [0, 0, 1.4], [0, 0, 1.7], [0.2, 0, 1.4], [0.5, 0, 1.4], [-0.2, 0, 1.4],
                     [-0.5, 0, 1.4], [0.1, 0, 0.1], [-0.1, 0, 0.1]], float)
    T = 20
    X = np.repeat(rest[None], T, axis=0)
    a = 0.6 * np.sin(np.arange(T) / 3)  # the left hand waves (the forearm keeps its length)
    X[:, 4] = X[:, 3] + 0.3 * np.stack([np.cos(a), np.zeros(T), np.sin(a)], -1)
    X[:, :, 1] += 0.01 * np.arange(T)[:, None]
    np.savez(tmp_path / "mocap.npz", joints=X, joint_names=np.array(names), parents=np.array(parents), fps=25.0)
    capfd.readouterr()
    assert bpy.ops.marionette.import_skeleton(filepath=str(tmp_path / "mocap.npz")) == {"FINISHED"}
    out = capfd.readouterr()
    assert "match no known joint set" in out.out + out.err and "generic armature" in out.out + out.err
    obj = bpy.data.objects["mocap"]
    assert "marionette_joint_set" not in obj and list(obj["marionette_joint_bones"]) == names
    assert [b.name for b in obj.data.bones] == names
    assert obj.data.bones["hand.L"].parent.name == "arm.L"
    pose_read = _mod(blender_sandbox, "pose_read")
    for f in (0, 7, 19):
        assert np.abs(_joints_at(bpy, pose_read, obj, 1 + f) - X[f]).max() < 1e-3
    assert _scene_rate(bpy) == 25
    # it drives no actor, and binding says why
    from engine.data import demo_actor_path

    with pytest.raises(RuntimeError, match="generic skeleton"):
        bpy.ops.marionette.bind_actor(filepath=str(demo_actor_path()))
    # a broken generic file is refused with the field named
    np.savez(tmp_path / "cyc.npz", joints=X, joint_names=np.array(names), parents=np.array([1, 0] + parents[2:]),
             fps=25.0)
    _assert_cancelled_without_trace(bpy, lambda: bpy.ops.marionette.import_skeleton(filepath=str(tmp_path / "cyc.npz")),
                                    "field 'parents'")
