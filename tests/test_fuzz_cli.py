"""Fuzzing every command's options (issue 16): exit 0 with a correct output, exit 1 with one clear
message, or exit 2 (argparse usage); never a traceback, never a partial output.

Commands that are cheap on tiny inputs run for real (triangulate, resample, retarget, render,
evaluate, calibrate-from-keypoints). For the expensive ones (train, fit-smpl, demo, make-capture,
ingest) the heavy stage is replaced by a stub that checks what validation let through, so the
property covers their option validation; their real runs are in their own tests."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

from engine import MarionetteError
from fuzz_fixtures import actor_dir, keypoint_capture, skeleton_file, toy_capture
from fuzz_strategies import OPTION_VALUES, event, fuzz, no_partial_outputs, outcome, run_cli


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    pose, calib = keypoint_capture(root / "kp", cameras=3, frames=4)
    return {"pose": pose, "calib": calib, "skel": skeleton_file(root / "walk.npz", frames=6),
            "actor": actor_dir(root / "actor"), "capture": toy_capture(root / "cap")}


def draw_options(data, spec: dict) -> list[str]:
    """1-3 options of ``spec`` (option -> strategy of its values, or None for a flag) set to drawn values."""
    names = data.draw(st.permutations(sorted(spec)))[: data.draw(st.integers(1, min(3, len(spec))))]
    argv = []
    for name in names:
        if spec[name] is None:
            argv.append(name)
        else:
            value = data.draw(spec[name])
            argv += [f"{name}={value}"]  # '=' keeps values such as '-1' from reading as options
    return argv


def output_target(data, tmp: Path, name: str) -> Path:
    """Where -o points: a fresh path, or a path under a regular file, or an existing folder."""
    kind = data.draw(st.sampled_from(["fresh", "fresh", "fresh", "under_file", "folder"]))
    if kind == "under_file":
        (tmp / "blocker").write_text("x")
        return tmp / "blocker" / name
    if kind == "folder":
        (tmp / "existing").mkdir(exist_ok=True)
        return tmp / "existing"
    return tmp / "new" / name


NUM = OPTION_VALUES


# ---------------------------------------------------------------------- triangulate
@fuzz(20, 600, data=st.data())
def _triangulate(inputs, data):
    from engine.io.skeleton_file import load_skeleton

    spec = {"--fps": NUM, "--cutoff": NUM, "--max-gap": NUM, "--reproj-threshold": NUM, "--min-confidence": NUM,
            "--joint-set": st.sampled_from(["auto", "BODY_25B", "COCO_17", "body25b", "nope", ""])}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = output_target(data, tmp, data.draw(st.sampled_from(["s.npz", "s.txt"])))
        rc, _, _ = run_cli(["triangulate", inputs["pose"], "--calib", inputs["calib"], "-o", out,
                            *draw_options(data, spec)], "triangulate")
        if rc == 0:
            seq = load_skeleton(out)
            assert np.isfinite(seq.joints).any() and seq.num_frames == 4
        elif not out.is_dir():
            assert not out.exists()
        no_partial_outputs(tmp)


test_fuzz_triangulate, test_fuzz_triangulate_long = _triangulate


# ---------------------------------------------------------------------- resample / retarget
@fuzz(25, 800, data=st.data())
def _resample(inputs, data):
    from engine.io.skeleton_file import load_skeleton

    spec = {"--fps": NUM, "--max-gap": NUM, "--lengths": st.sampled_from(["keys", "median", "x"]),
            "--fill-only": None}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = output_target(data, tmp, "r.npz")
        rc, _, _ = run_cli(["resample", inputs["skel"], "-o", out, *draw_options(data, spec)], "resample")
        if rc == 0:
            seq = load_skeleton(out)
            assert np.isfinite(seq.joints).any() and math.isfinite(seq.fps)
        elif not out.is_dir():
            assert not out.exists()
        no_partial_outputs(tmp)


test_fuzz_resample, test_fuzz_resample_long = _resample


@fuzz(20, 600, data=st.data())
def _retarget(inputs, data):
    from engine.io.skeleton_file import load_skeleton

    spec = {"--contact-height": NUM, "--contact-speed": NUM, "--root": st.sampled_from(["keep", "in_place", "x"]),
            "--no-feet": None}
    target = data.draw(st.sampled_from([["--target", "smpl_24"], ["--onto", inputs["skel"]], ["--target", "x"]]))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = output_target(data, tmp, "t.npz")
        rc, _, _ = run_cli(["retarget", inputs["skel"], "-o", out, *target, *draw_options(data, spec)], "retarget")
        if rc == 0:
            assert np.isfinite(load_skeleton(out).joints).any()
        elif not out.is_dir():
            assert not out.exists()
        no_partial_outputs(tmp)


test_fuzz_retarget, test_fuzz_retarget_long = _retarget


# ---------------------------------------------------------------------- render / evaluate (tiny actor, 32 px)
@fuzz(15, 400, data=st.data())
def _render(inputs, data):
    spec = {"--batch": NUM, "--scale": st.one_of(NUM, st.sampled_from(["0.25", "1e-9"])),
            "--frames": st.sampled_from(["0-2", "1", "2-1", "0-99", "-1", "a-b", "0-" + "9" * 40, ""]),
            "--camera-name": st.sampled_from(["cam00", "nope", ""])}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = output_target(data, tmp, "frames")
        opts = draw_options(data, spec)
        if not any(o.startswith("--camera-name") for o in opts):
            opts += ["--camera-name", "cam01"]
        rc, _, _ = run_cli(["render", inputs["actor"], "--skeleton", inputs["skel"], "--camera",
                            inputs["capture"] / "cameras.json", "-o", out, "--quiet", "--device", "cpu", *opts],
                           "render")
        pngs = sorted(out.glob("frame_*.png")) if out.is_dir() else []
        if rc == 0:
            assert pngs
        else:
            assert not pngs
        no_partial_outputs(tmp)


test_fuzz_render, test_fuzz_render_long = _render


@fuzz(6, 300, data=st.data())
def _evaluate(inputs, data):
    import json

    spec = {"--max-views": NUM, "--resolution": st.one_of(NUM, st.sampled_from(["16", "32", "17"])),
            "--json": None}
    before = sorted(p.name for p in inputs["actor"].rglob("*"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        where = data.draw(st.sampled_from(["none", "output", "grid"]))
        extra = []
        if where == "output":
            extra = ["-o", output_target(data, tmp, "eval")]
        elif where == "grid":
            extra = ["--grid", output_target(data, tmp, data.draw(st.sampled_from(["g.png", "g.jpg"])))]
        opts = draw_options(data, spec)
        if not any(o.startswith("--max-views") for o in opts):
            opts += ["--max-views", "1"]
        rc, out, _ = run_cli(["evaluate", inputs["actor"], "--capture", inputs["capture"], "--quiet",
                              "--device", "cpu", *extra, *opts], "evaluate")
        written = sorted(p.name for p in tmp.rglob("*") if p.is_file() and p.name != "blocker")
        if rc == 0:
            if "--json" in opts:
                assert json.loads(out)["views"] >= 1
            assert written in ([], ["grid.png", "metrics.json"], ["g.png", "metrics.json"])
        else:
            assert written == []
        no_partial_outputs(tmp)
    assert sorted(p.name for p in inputs["actor"].rglob("*")) == before  # never writes into the actor


test_fuzz_evaluate, test_fuzz_evaluate_long = _evaluate


# ---------------------------------------------------------------------- calibrate-from-keypoints
@fuzz(10, 300, data=st.data())
def _calibrate(inputs, data):
    from engine.geometry.camera import load_cameras_json

    scale = data.draw(st.sampled_from(["height", "bone"]))
    if scale == "height":
        scale_args = [f"--height={data.draw(NUM)}"]
    else:
        joints = data.draw(st.sampled_from([("LKnee", "LAnkle"), ("LKnee", "LKnee"), ("LKnee", "left_knee"),
                                            ("Nope", "LAnkle")]))
        scale_args = ["--bone", *joints, data.draw(NUM)]
    source = data.draw(st.sampled_from(["intrinsics", "focal"]))
    if source == "intrinsics":
        src_args = ["--intrinsics", inputs["calib"]]
    else:
        src_args = [f"--focal-px={data.draw(NUM)}", "--size",
                    data.draw(st.sampled_from(["400x400", "0x400", "400", "x", "1e9x2", "-4x-4", "400x400x2"]))]
    spec = {"--min-confidence": NUM, "--reference": st.sampled_from(["cam00", "nope"])}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = output_target(data, tmp, "c.json")
        rc, _, _ = run_cli(["calibrate-from-keypoints", inputs["pose"], "-o", out, *src_args, *scale_args,
                            *draw_options(data, spec)], "calibrate-from-keypoints")
        if rc == 0:
            assert len(load_cameras_json(out)) >= 2
        elif not out.is_dir():
            assert not out.exists()
        no_partial_outputs(tmp)


test_fuzz_calibrate, test_fuzz_calibrate_long = _calibrate


# ---------------------------------------------------------------------- train, fit-smpl, demo: validation
class _Reached(MarionetteError):
    """Raised by a stub standing in for the expensive stage: validation let the options through."""


@fuzz(30, 1000, data=st.data())
def _train(inputs, data, monkeypatch_module):
    from engine.neural.actor import train as train_module

    seen = []

    def stub(cfg, _poison_step=None):
        seen.append(cfg)
        event("train: options accepted (stub reached)")
        raise _Reached("stub: training reached")

    monkeypatch_module.setattr(train_module, "_train", stub)
    spec = {name: NUM for name in ("--steps", "--resolution", "--per-bone", "--batch", "--seed", "--lr",
                                   "--latent-dim", "--checkpoint-every", "--max-minutes", "--eval-views",
                                   "--threads", "--upsample")}
    spec["--snapshot-minutes"] = NUM
    spec["--decoder"] = st.sampled_from(["tiny", "huge"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = output_target(data, tmp, "actor")
        rc, _, err = run_cli(["train", "--capture", inputs["capture"], "-o", out, *draw_options(data, spec)], "train")
        if seen:
            cfg = seen[0]
            assert rc == 1 and "stub: training reached" in err
            for value in (cfg.steps, cfg.batch, cfg.latent_dim, cfg.per_bone, cfg.checkpoint_every):
                assert isinstance(value, int) and value >= 1
            assert math.isfinite(cfg.lr) and cfg.lr > 0 and 0 <= cfg.seed < 2 ** 32
            assert cfg.threads is None or 0 <= cfg.threads <= 4096
            assert cfg.max_minutes is None or (math.isfinite(cfg.max_minutes) and cfg.max_minutes > 0)
            assert all(math.isfinite(m) and m >= 0 for m in cfg.snapshot_minutes)
        if out.name != "existing":
            assert not out.exists()  # a refused or failed run leaves no actor folder


test_fuzz_train, test_fuzz_train_long = _train


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def smpl_model(tmp_path_factory):
    from engine.body.smpl.model import save_smpl_npz
    from engine.synthetic.smpl import make_synthetic_smpl_model

    path = tmp_path_factory.mktemp("smpl") / "model.npz"
    save_smpl_npz(path, make_synthetic_smpl_model(1, num_vertices=1500))
    return path


@fuzz(25, 800, data=st.data())
def _fit_smpl(inputs, smpl_model, data, monkeypatch_module):
    import engine.body.smpl.fit as fit_module

    seen = []

    def stub(joints, joint_set, model, confidence, opts, progress=None):
        seen.append(opts)
        event("fit-smpl: options accepted (stub reached)")
        raise _Reached("stub: fit reached")

    monkeypatch_module.setattr(fit_module, "fit_smpl", stub)
    spec = {name: NUM for name in ("--iters", "--num-betas", "--smooth", "--silhouette-iters", "--silhouette-frames",
                                   "--threads")}
    spec["--device"] = st.sampled_from(["cpu", "cuda:99", "xyz", ""])
    spec["--gender"] = st.sampled_from(["female", "other"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = output_target(data, tmp, data.draw(st.sampled_from(["f.npz", "f.txt"])))
        rc, _, err = run_cli(["fit-smpl", inputs["skel"], "--model", smpl_model, "-o", out,
                              *draw_options(data, spec)], "fit-smpl")
        if seen:
            opts = seen[0]
            assert rc == 1 and "stub: fit reached" in err
            assert math.isfinite(opts.w_smooth) and opts.w_smooth >= 0 and opts.iters >= 0
        elif not out.is_dir():
            assert not out.exists()


test_fuzz_fit_smpl, test_fuzz_fit_smpl_long = _fit_smpl


@fuzz(20, 600, data=st.data())
def _demo(inputs, data, monkeypatch_module):
    import engine.cli.commands.demo as demo

    seen = []

    def stub(out_dir, progress=True):
        seen.append(out_dir)
        event("demo: options accepted (stub reached)")
        raise _Reached("stub: triangulation reached")

    monkeypatch_module.setattr(demo, "triangulate_demo", stub)
    spec = {"--resolution": NUM, "--seconds": NUM, "--fps": NUM, "--no-render": None,
            "--actor": st.sampled_from([str(inputs["actor"]), str(inputs["capture"]), "/nonexistent", ""])}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = output_target(data, tmp, "out")
        run_cli(["demo", "-o", out, *draw_options(data, spec)], "demo")
        if not seen and out.name != "existing":
            assert not out.exists()  # refused before writing anything


test_fuzz_demo, test_fuzz_demo_long = _demo


# ---------------------------------------------------------------------- make-capture, ingest: option validation
@fuzz(30, 1000, data=st.data())
def _make_capture(data):
    from engine.synthetic.capture_config import build_parser, config_from_args

    spec = {name: NUM for name in ("--cameras", "--heldout-cameras", "--frames", "--fps", "--resolution", "--seed",
                                   "--samples", "--radius", "--heights", "--focal-mm", "--look-at", "--heldout-every",
                                   "--keypoint-noise", "--drop-prob", "--threads")}
    spec["--resolution"] = st.one_of(NUM, st.sampled_from(["64x48", "0x0", "1x1x1", "x"]))
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["-o", str(Path(tmp) / "cap"), *draw_options(data, spec)]
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:
            assert exc.code == 2
            return
        status, cfg = outcome(config_from_args, args)
        if status == "ok":
            W, H = cfg.rig.width, cfg.rig.height
            # what the capture reader will accept once Blender has rendered it
            assert W >= 1 and H >= 1 and 1 <= cfg.frames <= 10 ** 6 and math.isfinite(cfg.fps) and 0 < cfg.fps <= 1e4
        assert not (Path(tmp) / "cap").exists()


test_fuzz_make_capture, test_fuzz_make_capture_long = _make_capture


@fuzz(30, 1000, data=st.data())
def _ingest_options(data):
    from engine.capture.ingest.pipeline import IngestOptions

    def num(kind):
        text = data.draw(NUM)
        try:
            return kind(text)
        except ValueError:
            return None  # argparse would refuse it (exit 2)

    fields = {"resolution": num(int), "margin": num(float), "bootstrap_stride": num(int), "workers": num(int),
              "subject": num(int), "cutoff": num(float)}
    fields = {k: v for k, v in fields.items() if v is not None}
    status, _ = outcome(IngestOptions(videos=[], calib="x", **fields).validate)


test_fuzz_ingest_options, test_fuzz_ingest_options_long = _ingest_options
