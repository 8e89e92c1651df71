"""Issue 16, one test per reported case: bad input gives a clear error (exit 1, or 2 for usage) and no
partial output, never a traceback or a silent wrong result. The property-based side is tests/test_fuzz_*.py."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from engine import MarionetteError
from engine.cli import main
from engine.data import demo_capture_paths
from engine.geometry.camera import load_cameras_json
from engine.io.calibration import load_calibration
from engine.io.keypoints import read_keypoints
from engine.io.skeleton_file import load_skeleton
from fuzz_fixtures import actor_dir, files_under, keypoint_capture, skeleton_file, toy_capture

DEMO = demo_capture_paths()


def run_cli(argv, capsys):
    """(exit code, stderr) of ``marionette ARGV`` in-process; usage errors give 2 as the shell sees them."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    return rc, err


@pytest.fixture(scope="module")
def kp_capture(tmp_path_factory):
    return keypoint_capture(tmp_path_factory.mktemp("kp"))


@pytest.fixture(scope="module")
def skel(tmp_path_factory):
    return skeleton_file(tmp_path_factory.mktemp("skel") / "walk.npz")


@pytest.fixture(scope="module")
def actor(tmp_path_factory):
    return actor_dir(tmp_path_factory.mktemp("actor") / "a")


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    return toy_capture(tmp_path_factory.mktemp("cap") / "toy")


# ---------------------------------------------------------------------- calibration readers
@pytest.mark.parametrize("edit, match", [
    (lambda s: s.replace('viewrotation="0"', 'viewrotation="abc"', 1), "'viewrotation' is 'abc'"),
    (lambda s: s.replace('skew="0.000000"', 'skew="abc"', 1), "'skew' is 'abc'"),
    (lambda s: s.replace('radialDistortion3="0.000000"', 'radialDistortion3="nan"', 1), "'radialDistortion3'"),
])
def test_qualisys_optional_attributes(tmp_path, edit, match):
    path = tmp_path / "c.qca.txt"
    path.write_text(edit(DEMO.calibration.read_text()))
    with pytest.raises(MarionetteError, match=match):
        load_calibration(path)


TOML = """[cam_01]
name = "cam01"
size = [ 1088.0, 1920.0]
matrix = [ [ 1680.0, 0.0, 540.0], [ 0.0, 1680.0, 960.0], [ 0.0, 0.0, 1.0]]
distortions = [ -0.04, 0.13, 0.0, 0.0]
rotation = [ 1.2, -0.3, 0.2]
translation = [ 0.1, 0.9, 3.9]
"""


@pytest.mark.parametrize("old, new, match", [
    ("size = [ 1088.0, 1920.0]", "size = [ inf, 1920]", "field 'size' \\(width\\)"),
    ("size = [ 1088.0, 1920.0]", "size = [ 1087.5, 1920]", "field 'size' \\(width\\)"),
    ("rotation = [ 1.2, -0.3, 0.2]", 'rotation = "abc"', "field 'rotation'"),
    ("distortions = [ -0.04, 0.13, 0.0, 0.0]", 'distortions = "abc"', "field 'dist'"),
    ("distortions = [ -0.04, 0.13, 0.0, 0.0]", "distortions = [ nan, 0.13, 0.0, 0.0]", "field 'dist'"),
    ("matrix = [ [ 1680.0,", "matrix = [ [ 1e308,", "field 'K'"),
])
def test_pose2sim_toml_bad_values(tmp_path, old, new, match):
    path = tmp_path / "Calib.toml"
    path.write_text(TOML.replace(old, new))
    with pytest.raises(MarionetteError, match=match):
        load_calibration(path)


def _cameras_json(tmp_path, edit):
    from engine.geometry.camera import save_cameras
    from engine.synthetic.toy_capture import ring_cameras

    path = tmp_path / "cameras.json"
    save_cameras(path, ring_cameras(2, 64))
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(version="abc"), "field 'version'"),
    (lambda d: d.update(version=None), "field 'version'"),
    (lambda d: d["cameras"][0].update(dist="abc"), "field 'dist'"),
    (lambda d: d["cameras"][0].update(dist=[float("nan"), 0, 0, 0, 0]), "field 'dist'"),  # json writes NaN
    (lambda d: d["cameras"][0]["K"][0].__setitem__(0, 1e308), "field 'K'"),
    (lambda d: d["cameras"][0].update(width=63.5), "field 'width'"),
    (lambda d: d.update(up_axis="sideways"), "field 'up_axis'"),
])
def test_cameras_json_bad_values(tmp_path, edit, match):
    path = _cameras_json(tmp_path, edit)
    with pytest.raises(MarionetteError, match=match):
        load_calibration(path)


def test_cameras_json_whole_float_width_still_reads(tmp_path):
    path = _cameras_json(tmp_path, lambda d: d["cameras"][0].update(width=64.0))
    assert load_cameras_json(path)[0].width == 64


def test_nan_distortion_no_longer_drops_a_camera_silently(kp_capture, tmp_path, capsys):
    pose, calib = kp_capture
    doc = json.loads(calib.read_text())
    doc["cameras"][1]["dist"] = [float("nan"), 0, 0, 0, 0]
    bad = tmp_path / "cams.json"
    bad.write_text(json.dumps(doc))
    rc, err = run_cli(["triangulate", pose, "--calib", bad, "-o", tmp_path / "s.npz"], capsys)
    assert rc == 1 and "field 'dist'" in err and "cam01" in err
    assert not (tmp_path / "s.npz").exists()


# ---------------------------------------------------------------------- keypoint readers
def test_folder_named_like_a_frame_file(kp_capture, tmp_path):
    pose = shutil.copytree(kp_capture[0], tmp_path / "pose")
    (pose / "cam01_json" / "cam01.9999.json").mkdir()
    with pytest.raises(MarionetteError, match="cam01.9999.json: is a folder"):
        read_keypoints(pose)


def test_huge_frame_numbers_and_integers(kp_capture, tmp_path):
    pose = shutil.copytree(kp_capture[0], tmp_path / "pose")
    f = pose / "cam00_json" / "cam00.0000.json"
    shutil.copy(f, f.with_name("cam00." + "9" * 25 + ".json"))
    with pytest.raises(MarionetteError, match="frame number 9999999999999999999999999 is too large"):
        read_keypoints(pose)
    f.with_name("cam00." + "9" * 25 + ".json").unlink()
    doc = json.loads(f.read_text())
    f.write_text(json.dumps(doc).replace(str(doc["people"][0]["pose_keypoints_2d"][0]), "1" * 400, 1))
    with pytest.raises(MarionetteError, match="too large"):
        read_keypoints(pose)


def test_coco_list_image_id(tmp_path):
    doc = {"images": [{"id": 1, "file_name": "f_0001.png"}],
           "annotations": [{"image_id": [1], "keypoints": [1.0, 2.0, 2] * 17}]}
    for cam in ("a", "b"):
        (tmp_path / f"{cam}.json").write_text(json.dumps(doc))
    with pytest.raises(MarionetteError, match="field 'image_id'"):
        read_keypoints(tmp_path)


def test_utf8_bom_keypoints_are_read(kp_capture, tmp_path):
    pose = shutil.copytree(kp_capture[0], tmp_path / "pose")
    for f in pose.rglob("*.json"):
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    np.testing.assert_array_equal(read_keypoints(pose).data, read_keypoints(kp_capture[0]).data)


# ---------------------------------------------------------------------- skeleton .npz
def _tampered(skel, tmp_path, **changes) -> Path:
    with np.load(skel) as d:
        arrays = {k: d[k] for k in d.files}
    arrays.update(changes)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("change, match", [
    (dict(fps=np.array("abc")), "field 'fps'"),
    (dict(fps=np.array([30.0, 60.0])), "field 'fps' must be a single value"),
    (dict(version=np.array("abc")), "field 'version'"),
    (dict(version=np.array([1, 1])), "field 'version' must be a single value"),
    (dict(frame_indices=np.array(["a"] * 8)), "field 'frame_indices'"),
    (dict(frame_indices=np.array([0, 10 ** 15] + [10 ** 15 + i for i in range(1, 7)])), "field 'frame_indices'"),
])
def test_skeleton_fields(skel, tmp_path, capsys, change, match):
    bad = _tampered(skel, tmp_path, **change)
    with pytest.raises(MarionetteError, match=match):
        load_skeleton(bad)
    for argv in (["resample", bad, "--fps", "60", "-o", tmp_path / "o.npz"],
                 ["retarget", bad, "--target", "smpl_24", "-o", tmp_path / "o.npz"]):
        rc, err = run_cli(argv, capsys)
        assert rc == 1 and "bad.npz" in err
    assert not (tmp_path / "o.npz").exists()


def test_resampling_refuses_absurd_output_sizes(skel, tmp_path, capsys):
    bad = _tampered(skel, tmp_path, frame_indices=np.array([0, 1, 2, 3, 4, 5, 6, 10 ** 8]))
    rc, err = run_cli(["resample", bad, "--fps", "30", "-o", tmp_path / "o.npz"], capsys)
    assert rc == 1 and "more than 1000000" in err
    rc, err = run_cli(["resample", skel, "--fps", "1e9", "-o", tmp_path / "o.npz"], capsys)
    assert rc == 1 and "--fps" in err
    assert not (tmp_path / "o.npz").exists()


def test_npz_whose_arrays_would_not_fit_is_refused_before_loading(tmp_path):
    from engine.fileio import read_npz

    path = tmp_path / "big.npz"
    np.savez_compressed(path, joints=np.zeros((1000, 25, 3)))
    with pytest.raises(MarionetteError, match="GiB"):
        read_npz(path, max_bytes=100_000)


# ---------------------------------------------------------------------- actor, checkpoint, capture JSON
def _tamper_actor(actor, tmp_path, edit) -> Path:
    work = shutil.copytree(actor, tmp_path / "actor")
    doc = json.loads((work / "actor.json").read_text())
    edit(doc)
    (work / "actor.json").write_text(json.dumps(doc))
    return work


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(bones=5), "field 'bones'"),
    (lambda d: d["tensors"].update(bytes="abc"), "field 'tensors.bytes'"),
    (lambda d: d["tensors"].update(shapes=7), "field 'tensors.shapes'"),
    (lambda d: d["tensors"].update(file="/etc/passwd"), "field 'tensors.file'"),
    (lambda d: d["tensors"].update(file="../a/actor.safetensors"), "field 'tensors.file'"),
    (lambda d: d["decoder"].update(base_channels=10 ** 7), "field 'decoder.base_channels'"),
    (lambda d: d["decoder"].update(base_channels=1024), "actor the JSON describes"),
    # bone textures of the largest size: refused by shape on the meta device, never allocated
    (lambda d: (d.update(version=3, texture_channels=64, texture_size=64),
                d["decoder"].update(in_channels=d["decoder"]["in_channels"] + 64)), "actor the JSON describes"),
    (lambda d: d.update(version=3, texture_channels=65), "field 'texture_channels'"),
    (lambda d: d.update(texture_channels=8), "needs actor file version 3"),
    (lambda d: d.update(latent_dim=float("inf")), "field 'latent_dim'"),
    (lambda d: d.update(density="abc"), "field 'density'"),
])
def test_tampered_actor_json(actor, tmp_path, monkeypatch, edit, match):
    from engine.neural.actor import model_file

    work = _tamper_actor(actor, tmp_path, edit)

    def no_actor(*a, **k):
        raise AssertionError("the actor was built before its JSON was checked against the tensors")

    monkeypatch.setattr(model_file, "Actor", no_actor)
    with pytest.raises(MarionetteError, match=match):
        model_file.load_actor(work)


def test_tensor_file_outside_the_actor_folder_is_never_opened(actor, tmp_path, monkeypatch):
    from engine.neural.actor import model_file

    outside = tmp_path / "outside.safetensors"
    shutil.copy(actor / "actor.safetensors", outside)
    work = _tamper_actor(actor, tmp_path, lambda d: d["tensors"].update(file=str(outside)))
    opened = []
    monkeypatch.setattr(model_file, "read_tensors", lambda path, *a: opened.append(path))
    with pytest.raises(MarionetteError, match="no absolute path"):
        model_file.load_actor(work)
    assert opened == []


def test_safetensors_files_follow_the_umask(tmp_path):
    import torch

    from engine.neural.actor.model_file import write_tensors

    old = os.umask(0o022)
    try:
        write_tensors(tmp_path / "t.safetensors", {"a": torch.zeros(3)})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "t.safetensors").stat().st_mode) == 0o644


def test_capture_frames_infinity(capture, tmp_path):
    from engine.io.capture_folder import load_capture

    work = shutil.copytree(capture, tmp_path / "cap")
    doc = json.loads((work / "capture.json").read_text())
    doc["frames"][1] = float("inf")
    (work / "capture.json").write_text(json.dumps(doc))  # json writes Infinity
    with pytest.raises(MarionetteError, match="field 'frames'"):
        load_capture(work)
    doc["frames"][1] = 1
    doc["heldout_cameras"] = [["cam02"]]
    (work / "capture.json").write_text(json.dumps(doc))
    with pytest.raises(MarionetteError, match="field 'heldout_cameras'"):
        load_capture(work)


@pytest.fixture(scope="module")
def trained(capture, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "a"
    rc = main(["train", "--capture", str(capture), "-o", str(out), "--steps", "2", "--checkpoint-every", "1",
               "--resolution", "32", "--batch", "2", "--decoder", "tiny", "--latent-dim", "4", "--quiet",
               "--eval-views", "0", "--threads", "1"])
    assert rc == 0
    return out


RESUME = ["--steps", "3", "--resolution", "32", "--batch", "2", "--decoder", "tiny", "--latent-dim", "4", "--quiet",
          "--eval-views", "0", "--threads", "1", "--resume"]


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["checkpoint"].update(step="abc"), "field 'checkpoint.step'"),
    (lambda d: d["checkpoint"].update(param_groups=5), "param_groups"),
    (lambda d: d["checkpoint"]["param_groups"][0].update(betas="ab"), "optimizer setting 'betas'"),
    (lambda d: d.update(checkpoint=[]), "not a version-1"),
])
def test_tampered_checkpoint(trained, capture, tmp_path, capsys, edit, match):
    work = shutil.copytree(trained, tmp_path / "a")
    ck = work / "checkpoints" / json.loads((work / "checkpoints" / "latest.json").read_text())["checkpoint"]
    doc = json.loads((ck / "checkpoint.json").read_text())
    edit(doc)
    (ck / "checkpoint.json").write_text(json.dumps(doc))
    rc, err = run_cli(["train", "--capture", capture, "-o", work, *RESUME], capsys)
    assert rc == 1 and match in err


def test_checkpoint_pointer_is_confined(trained, capture, tmp_path, capsys):
    work = shutil.copytree(trained, tmp_path / "a")
    (work / "checkpoints" / "latest.json").write_text(json.dumps({"checkpoint": "../../elsewhere", "step": 1}))
    rc, err = run_cli(["train", "--capture", capture, "-o", work, *RESUME], capsys)
    assert rc == 1 and "field 'checkpoint' must name a checkpoint folder" in err


# ---------------------------------------------------------------------- options
def test_option_ranges(kp_capture, skel, actor, capture, tmp_path, capsys):
    pose, calib = kp_capture
    out = tmp_path / "out"
    cams = capture / "cameras.json"
    cases = [
        (["render", actor, "--skeleton", skel, "--camera", cams, "--camera-name", "cam00", "-o", out, "--batch", "0"],
         "--batch must be an integer >= 1"),
        (["render", actor, "--skeleton", skel, "--camera", cams, "--camera-name", "cam00", "-o", out, "--scale", "inf"],
         "--scale must be a finite number > 0"),
        (["triangulate", pose, "--calib", calib, "-o", out / "s.npz", "--fps", "inf"], "--fps must be"),
        (["triangulate", pose, "--calib", calib, "-o", out / "s.npz", "--max-gap", "-1"], "--max-gap must be"),
        (["triangulate", pose, "--calib", calib, "-o", out / "s.npz", "--reproj-threshold", "-5"],
         "--reproj-threshold must be"),
        (["resample", skel, "--fps", "1e9", "-o", out / "r.npz"], "--fps must be a finite number > 0 and <= 10000"),
        (["retarget", skel, "--target", "smpl_24", "-o", out / "r.npz", "--contact-height", "nan"],
         "--contact-height must be"),
        (["evaluate", actor, "--capture", capture, "--max-views", "-1"], "--max-views must be an integer >= 0"),
        (["calibrate-from-keypoints", pose, "--intrinsics", calib, "--bone", "LKnee", "LKnee", "0.4", "-o",
          out / "c.json"], "the two joints must differ"),
        (["calibrate-from-keypoints", pose, "--intrinsics", calib, "--bone", "LKnee", "LAnkle", "inf", "-o",
          out / "c.json"], "--bone: length"),
        (["train", "--capture", capture, "-o", out / "a", "--threads", "-4"], "--threads must be an integer >= 0"),
        (["train", "--capture", capture, "-o", out / "a", "--seed", "-1"], "--seed must be"),
        (["train", "--capture", capture, "-o", out / "a", "--max-minutes", "nan"], "--max-minutes must be"),
    ]
    for argv, match in cases:
        rc, err = run_cli(argv, capsys)
        assert rc == 1 and match in err, (argv, err)
        assert not out.exists(), argv


def test_fit_smpl_nan_smooth(skel, tmp_path, capsys):
    from engine.body.smpl.model import save_smpl_npz
    from engine.synthetic.smpl import make_synthetic_smpl_model

    save_smpl_npz(tmp_path / "model.npz", make_synthetic_smpl_model(1, num_vertices=1500))
    rc, err = run_cli(["fit-smpl", skel, "--model", tmp_path / "model.npz", "-o", tmp_path / "f.npz", "--smooth",
                       "nan"], capsys)
    assert rc == 1 and "--smooth must be" in err and not (tmp_path / "f.npz").exists()


def test_output_paths_under_a_regular_file(kp_capture, skel, actor, capture, tmp_path, capsys):
    pose, calib = kp_capture
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [
        ["triangulate", pose, "--calib", calib, "-o", blocker / "s.npz"],
        ["resample", skel, "--fps", "60", "-o", blocker / "r.npz"],
        ["retarget", skel, "--target", "smpl_24", "-o", blocker / "r.npz"],
        ["render", actor, "--skeleton", skel, "--camera", capture / "cameras.json", "--camera-name", "cam00",
         "-o", blocker / "frames"],
        ["evaluate", actor, "--capture", capture, "-o", blocker / "eval"],
        ["evaluate", actor, "--capture", capture, "--grid", blocker / "grid.png"],
        ["train", "--capture", capture, "-o", blocker / "actor", "--steps", "1"],
        ["calibrate-from-keypoints", pose, "--intrinsics", calib, "--height", "1.7", "-o", blocker / "c.json"],
        ["demo", "--no-render", "-o", blocker / "out"],
    ]
    for argv in cases:
        rc, err = run_cli(argv, capsys)
        assert rc == 1 and "is a file, not a folder" in err, (argv, err)
    assert blocker.read_text() == "x"


# ---------------------------------------------------------------------- results that look like success
def test_triangulate_fails_when_nothing_triangulates(kp_capture, tmp_path, capsys):
    pose, calib = kp_capture
    out = tmp_path / "s.npz"
    rc, err = run_cli(["triangulate", pose, "--calib", calib, "-o", out, "--min-confidence", "0.95"], capsys)
    assert rc == 1 and "nothing could be triangulated" in err and "--min-confidence" in err
    assert not out.exists()
    # cameras whose frame numbers never overlap
    disjoint = shutil.copytree(pose, tmp_path / "pose")
    for c, folder in enumerate(sorted(disjoint.iterdir())):
        for f in sorted(folder.iterdir(), reverse=True):
            n = int(f.name.split(".")[1])
            f.rename(f.with_name(f"{folder.name[:5]}.{n + 100 * c:04d}.json"))
    rc, err = run_cli(["triangulate", disjoint, "--calib", calib, "-o", out], capsys)
    assert rc == 1 and "frame numbers overlap" in err and not out.exists()
    rc, _ = run_cli(["triangulate", pose, "--calib", calib, "-o", out], capsys)
    assert rc == 0 and np.isfinite(load_skeleton(out).joints).all()


# ---------------------------------------------------------------------- files and state
def test_evaluate_writes_next_to_grid_and_never_into_the_actor(actor, capture, tmp_path, capsys):
    before = files_under(actor)
    grid = tmp_path / "elsewhere" / "deep" / "grid.png"
    rc = main(["evaluate", str(actor), "--capture", str(capture), "--max-views", "1", "--grid", str(grid), "--quiet"])
    assert rc == 0
    assert grid.is_file() and json.loads((grid.parent / "metrics.json").read_text())["views"] == 3
    capsys.readouterr()
    rc = main(["evaluate", str(actor), "--capture", str(capture), "--max-views", "1", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["overall"]["views"] == 3
    out = tmp_path / "ev"
    assert main(["evaluate", str(actor), "--capture", str(capture), "--max-views", "1", "-o", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "metrics.json"]
    assert files_under(actor) == before


def test_failed_train_leaves_no_actor_folder(capture, tmp_path, capsys):
    out = tmp_path / "actors" / "x"
    rc, err = run_cli(["train", "--capture", tmp_path / "nope", "-o", out, "--steps", "1"], capsys)
    assert rc == 1 and "not found" in err
    assert not out.exists() and not out.parent.exists()  # nor the parent folder it created
    from engine.neural.actor.train import TrainConfig, train

    cfg = TrainConfig(capture=str(capture), out=str(out), steps=3, resolution=32, batch=2, preset="tiny",
                      latent_dim=4, checkpoint_every=2, progress=False, eval_views=0)
    with pytest.raises(MarionetteError, match="nothing was saved"):
        train(cfg, _poison_step=0)
    assert not out.exists()
    (tmp_path / "mine").mkdir()  # a folder the user made is kept
    rc, _ = run_cli(["train", "--capture", tmp_path / "nope", "-o", tmp_path / "mine", "--steps", "1"], capsys)
    assert rc == 1 and (tmp_path / "mine").is_dir()


def test_demo_bad_actor_fails_before_writing_anything(tmp_path, capsys):
    out = tmp_path / "out"
    (tmp_path / "bad_actor").mkdir()
    rc, err = run_cli(["demo", "-o", out, "--actor", tmp_path / "bad_actor"], capsys)
    assert rc == 1 and ("--actor" in err or "bpy" in err)
    assert files_under(out) == []
    rc, err = run_cli(["demo", "-o", out, "--fps", "0"], capsys)
    assert rc == 1 and "--fps" in err and files_under(out) == []


def test_render_batch_refuses_frames_outside_the_scene():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "render_batch", Path(__file__).resolve().parent.parent / "scripts" / "render_batch.py")
    rb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rb)
    rb.check_in_range([1, 2, 3], 1, 3)
    with pytest.raises(ValueError, match="outside the scene's frame range 1-3"):
        rb.check_in_range(rb.parse_frames("2-5"), 1, 3)
    with pytest.raises(ValueError):
        rb.parse_frames("1-" + "9" * 30)


# ---------------------------------------------------------------------- internal errors
def test_internal_error_is_short_with_a_log(monkeypatch, capsys):
    import engine.cli.commands.resample as resample

    def boom(args):
        raise ValueError("something unexpected")

    monkeypatch.setattr(resample, "run", boom)
    rc = main(["resample", "x.npz", "-o", "y.npz", "--fps", "30"])
    err = capsys.readouterr().err
    assert rc == 3 and "internal error" in err and "ValueError: something unexpected" in err
    assert "Traceback" not in err and "--debug" in err
    log = err.split("the traceback is in ")[1].split(";")[0]
    assert "Traceback" in Path(log).read_text()
    with pytest.raises(ValueError):
        main(["--debug", "resample", "x.npz", "-o", "y.npz", "--fps", "30"])


# ---------------------------------------------------------------------- found by the fuzzer (tests/test_fuzz_*.py)
def test_calibrate_writes_into_a_new_folder(kp_capture, tmp_path, capsys):
    pose, calib = kp_capture
    out = tmp_path / "new" / "sub" / "c.json"
    rc, _ = run_cli(["calibrate-from-keypoints", pose, "--intrinsics", calib, "--height", "1.7", "-o", out], capsys)
    assert rc == 0 and len(load_cameras_json(out)) == 3


def test_capture_listing_a_camera_twice(capture, tmp_path):
    from engine.io.capture_folder import load_capture

    work = shutil.copytree(capture, tmp_path / "cap")
    doc = json.loads((work / "capture.json").read_text())
    doc["cameras"].append(doc["cameras"][0])
    (work / "capture.json").write_text(json.dumps(doc))
    with pytest.raises(MarionetteError, match="more than once"):
        load_capture(work)


def test_capture_keypoints_with_nan_coordinates_are_missing(tmp_path):
    from engine.io.capture_folder import read_openpose_json

    path = tmp_path / "k.json"
    path.write_text(json.dumps({"people": [{"pose_keypoints_2d": [None, 2.0, 0.9] + [1.0, 2.0, 0.9] * 24}]}))
    kp = read_openpose_json(path, 25)
    assert kp[0, 2] == 0 and np.isnan(kp[0, :2]).all() and kp[1, 2] == 0.9


@pytest.mark.parametrize("edit, ok", [
    (lambda g: g.update(betas=[1.0, 0.99]), False),   # bias correction 1 - 1**t = 0: a division by zero
    (lambda g: g.update(betas=[0.9, 1.5]), False),    # the square root of a negative number
    (lambda g: g.update(eps=0), False),
    (lambda g: g.pop("lr"), True),                    # a setting the file lacks keeps this run's value
])
def test_checkpoint_optimizer_settings(trained, capture, tmp_path, capsys, edit, ok):
    work = shutil.copytree(trained, tmp_path / "a")
    ck = work / "checkpoints" / json.loads((work / "checkpoints" / "latest.json").read_text())["checkpoint"]
    doc = json.loads((ck / "checkpoint.json").read_text())
    edit(doc["checkpoint"]["param_groups"][0])
    (ck / "checkpoint.json").write_text(json.dumps(doc))
    rc, err = run_cli(["train", "--capture", capture, "-o", work, *RESUME], capsys)
    assert rc == (0 if ok else 1), err
    if not ok:
        assert "optimizer setting" in err
