"""End to end through the CLI on a procedural capture (no Blender): train, checkpoint, resume,
NaN guard, evaluate JSON, render RGBA PNGs, and bad input."""

import json
import shutil

import numpy as np
import pytest
import torch

from engine import MarionetteError
from engine.neural.actor.model_file import load_actor
from engine.synthetic.toy_capture import make_toy_capture
from engine.cli import main

TRAIN = ["--resolution", "32", "--batch", "2", "--decoder", "tiny", "--latent-dim", "4", "--quiet",
         "--eval-views", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    return make_toy_capture(tmp_path_factory.mktemp("cap") / "toy", cameras=3, frames=6, size=32, heldout_every=3)


@pytest.fixture(scope="module")
def trained(capture, tmp_path_factory):
    out = tmp_path_factory.mktemp("actors") / "a"
    rc = main(["train", "--capture", str(capture), "-o", str(out), "--steps", "4", "--checkpoint-every", "2", *TRAIN])
    assert rc == 0
    return out


def test_train_writes_actor_checkpoints_and_provenance(trained, capture):
    actor, doc = load_actor(trained)
    t = doc["training"]
    assert t["steps"] == 4 and t["seed"] == 0 and t["command"].startswith("marionette train")
    assert t["capture"] == str(capture.resolve()) and t["resolution"] == [32, 32]
    assert "heldout" in t["metrics"] and 0 <= t["metrics"]["heldout"]["mask_iou"] <= 1
    latest = json.loads((trained / "checkpoints" / "latest.json").read_text())
    assert latest == {"checkpoint": "step-0000004", "step": 4}
    assert sorted(p.name for p in (trained / "checkpoints").iterdir() if p.is_dir()) == ["step-0000002", "step-0000004"]
    assert not list(trained.rglob("*.tmp")) and not list(trained.rglob("*.pt")) and not list(trained.rglob("*.pkl"))
    assert list((trained / "logs").iterdir()), "tensorboard events expected"


def test_resume_continues_exactly(trained, capture, tmp_path):
    # resuming 2 -> 4 from the step-2 checkpoint gives the same weights as the straight 0 -> 4 run
    work = tmp_path / "r"
    shutil.copytree(trained, work)
    shutil.rmtree(work / "checkpoints" / "step-0000004")
    (work / "checkpoints" / "latest.json").write_text(json.dumps({"checkpoint": "step-0000002", "step": 2}))
    rc = main(["train", "--capture", str(capture), "-o", str(work), "--steps", "4", "--checkpoint-every", "2",
               "--resume", *TRAIN])
    assert rc == 0
    a, doc = load_actor(work)
    b, _ = load_actor(trained)
    assert doc["training"]["steps"] == 4
    assert doc["training"]["previous_runs"][0]["until_step"] == 2
    assert "--resume" in doc["training"]["command"]
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(v, w, atol=1e-5), k


def test_existing_folder_needs_resume_or_overwrite(trained, capture, capsys):
    rc = main(["train", "--capture", str(capture), "-o", str(trained), "--steps", "4", *TRAIN])
    assert rc == 1 and "--resume" in capsys.readouterr().err


def test_nan_stops_and_keeps_last_good_checkpoint(capture, tmp_path):
    from engine.neural.actor.train import TrainConfig, train

    out = tmp_path / "nan"
    cfg = TrainConfig(capture=str(capture), out=str(out), steps=6, resolution=32, batch=2, preset="tiny",
                      latent_dim=4, checkpoint_every=2, progress=False, eval_views=0)
    with pytest.raises(MarionetteError, match=r"step 3: the loss became NaN.*last good checkpoint \(step 2\)"):
        train(cfg, _poison_step=3)
    actor, doc = load_actor(out)  # still a valid, finite actor from step 2
    assert doc["training"]["steps"] == 2
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["step"] == 2
    assert all(torch.isfinite(p).all() for p in actor.parameters())


def test_evaluate_json_and_grid(trained, capture, capsys, tmp_path):
    # (issue 16: evaluate no longer writes into the actor folder by default; -o says where)
    rc = main(["evaluate", str(trained), "--capture", str(capture), "--json", "--max-views", "2", "-o",
               str(tmp_path / "eval")])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["splits"]) == {"novel_view", "novel_pose", "novel_both"}
    for s in list(res["splits"].values()) + [res["overall"]]:
        assert {"psnr", "psnr_person", "ssim", "mask_iou", "views"} <= set(s)
        assert np.isfinite(s["psnr"]) and -1 <= s["ssim"] <= 1
        assert 0 <= s["person_coverage"] <= 1
    assert res["lpips"].startswith("skipped")
    # every figure comes with its definition in the JSON itself
    assert set(res["overall"]) - {"views"} <= set(res["definitions"]) | {"lpips"}
    assert "truth mask" in res["definitions"]["psnr_person"] and "10 %" in res["definitions"]["psnr_box"]
    from PIL import Image

    with Image.open(res["grid"]) as im:  # a row per split, truth | render | error for each of its 2 views
        assert im.size == (2 * 3 * 32, 3 * 32)


def test_render_cli_writes_rgba_pngs(trained, capture, tmp_path):
    out = tmp_path / "frames"
    rc = main(["render", str(trained), "--skeleton", str(capture / "joints3d.npz"), "--camera",
               str(capture / "cameras.json"), "--camera-name", "cam01", "-o", str(out), "--frames", "1-3", "--quiet"])
    assert rc == 0
    from PIL import Image

    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["frame_000001.png", "frame_000002.png", "frame_000003.png"]
    with Image.open(files[0]) as im:
        assert im.mode == "RGBA" and im.size == (32, 32)
    # the PNG holds exactly the decoder's straight RGB and alpha
    actor, _ = load_actor(trained)
    from engine.geometry.camera import load_cameras_json
    from engine.io.skeleton_file import load_skeleton

    cam = [c for c in load_cameras_json(capture / "cameras.json") if c.name == "cam01"][0]
    rgb, alpha = actor.render_frames(load_skeleton(capture / "joints3d.npz").joints[1:2], cam)
    with Image.open(files[0]) as im:
        png = np.asarray(im, dtype=np.float32) / 255
    np.testing.assert_allclose(png[..., :3], rgb[0], atol=1 / 255 + 1e-6)
    np.testing.assert_allclose(png[..., 3], alpha[0], atol=1 / 255 + 1e-6)


def test_render_maps_joint_sets_and_rejects_bad_skeletons(trained, capture, tmp_path, capsys):
    from engine.io.skeleton_file import SkeletonSequence, load_skeleton, save_skeleton
    from engine.body.joint_sets import get_joint_set

    seq = load_skeleton(capture / "joints3d.npz")
    # COCO-17 has no toes, heels or head top: they are estimated (engine.body.joint_sets.ESTIMATED)
    coco = get_joint_set("COCO_17")
    from engine.body.joint_sets import map_joints

    save_skeleton(tmp_path / "coco.npz", SkeletonSequence(map_joints(seq.joints, seq.joint_set, coco), coco, 30.0))
    args = ["--camera", str(capture / "cameras.json"), "--camera-name", "cam00", "-o", str(tmp_path / "o"), "--quiet"]
    assert main(["render", str(trained), "--skeleton", str(tmp_path / "coco.npz"), *args]) == 0
    assert len(list((tmp_path / "o").glob("*.png"))) == seq.num_frames
    capsys.readouterr()
    bad = seq.joints.copy()
    bad[2, 5] = np.nan
    save_skeleton(tmp_path / "nan.npz", SkeletonSequence(bad, seq.joint_set, 30.0))
    assert main(["render", str(trained), "--skeleton", str(tmp_path / "nan.npz"), *args]) == 1
    assert "LShoulder" in capsys.readouterr().err
    assert main(["render", str(trained), "--skeleton", str(capture / "joints3d.npz"), "--camera",
                 str(capture / "cameras.json"), "-o", str(tmp_path / "o"), "--quiet"]) == 1
    assert "--camera-name" in capsys.readouterr().err


def test_bad_captures_give_clear_errors(capture, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(capture, broken)
    (broken / "images" / "cam00" / "000002.png").unlink()
    assert main(["train", "--capture", str(broken), "-o", str(tmp_path / "x"), "--steps", "1", *TRAIN]) == 1
    assert "000002.png" in capsys.readouterr().err
    from PIL import Image

    shutil.copy(capture / "images" / "cam00" / "000001.png", broken / "images" / "cam00" / "000002.png")
    Image.new("L", (16, 16)).save(broken / "masks" / "cam01" / "000000.png")
    assert main(["train", "--capture", str(broken), "-o", str(tmp_path / "x"), "--steps", "1", *TRAIN]) == 1
    assert "16x16" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_ddp_two_processes(capture, tmp_path):
    """DistributedDataParallel on CPU (gloo): two processes, rank 0 writes the actor."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "engine", "train",
           "--capture", str(capture), "-o", str(out), "--steps", "2", "--checkpoint-every", "2", *TRAIN]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, doc = load_actor(out)
    assert doc["training"]["world_size"] == 2 and doc["training"]["steps"] == 2


def test_mismatched_cameras_give_clear_error(capture, tmp_path, capsys):
    broken = tmp_path / "cams"
    shutil.copytree(capture, broken)
    doc = json.loads((broken / "cameras.json").read_text())
    doc["cameras"][1]["name"] = "somebody_else"
    (broken / "cameras.json").write_text(json.dumps(doc))
    assert main(["train", "--capture", str(broken), "-o", str(tmp_path / "x"), "--steps", "1", *TRAIN]) == 1
    err = capsys.readouterr().err
    assert "cameras.json" in err and "cam01" in err


def test_crop_training_records_the_views_scale_and_scores_supersampled(capture, tmp_path, capsys):
    """--crop trains on windows of the views; the actor records the views' resolution and the person's
    height in them, so scoring at half that resolution renders supersampled."""
    out = tmp_path / "crop"
    rc = main(["train", "--capture", str(capture), "-o", str(out), "--steps", "3", "--crop", "16", *TRAIN])
    assert rc == 0
    actor, doc = load_actor(out)
    t = doc["training"]
    assert t["config"]["crop"] == 16 and t["resolution"] == [32, 32] and "--crop 16" in t["command"]
    assert actor.native_person_px == t["person_height_px"] > 0
    lo, hi = actor.person_range_px
    assert lo == t["person_height_range_px"][0] and 0 < lo <= actor.native_person_px <= hi
    capsys.readouterr()
    assert main(["evaluate", str(out), "--capture", str(capture), "--resolution", "16", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["resolution"] == [16, 16] and 0 <= ev["overall"]["mask_iou"] <= 1
    assert main(["train", "--capture", str(capture), "-o", str(tmp_path / "bad"), "--crop", "8", *TRAIN]) != 0
    assert "--crop must be an integer >= 16" in capsys.readouterr().err


def test_pose_conditioning_trains_and_is_recorded(capture, tmp_path):
    out = tmp_path / "pc"
    rc = main(["train", "--capture", str(capture), "-o", str(out), "--steps", "12", "--pose-conditioning",
               "--per-bone", "2", *TRAIN])
    assert rc == 0
    actor, doc = load_actor(out)
    assert doc["version"] == 4 and doc["pose_conditioning"] == 1
    assert "--pose-conditioning" in doc["training"]["command"]
    assert actor.pose_code_weights.abs().max() > 0  # learned from zero
    assert np.isfinite(doc["training"]["metrics"]["heldout"]["psnr"])


def test_light_codes_and_part_charts_train_with_mirrored_views_and_are_recorded(capture, tmp_path):
    out = tmp_path / "lc"
    rc = main(["train", "--capture", str(capture), "-o", str(out), "--steps", "12", "--light-conditioning",
               "--mirror", "0.5", "--texture-channels", "2", "--texture-size", "4", "--texture-charts", "parts",
               "--per-bone", "2", *TRAIN])
    assert rc == 0
    actor, doc = load_actor(out)
    assert doc["version"] == 5 and doc["light_conditioning"] == 1 and doc["texture_charts"] == "parts"
    assert "--light-conditioning" in doc["training"]["command"] and "--texture-charts parts" in doc["training"]["command"]
    assert actor.light_code_weights.abs().max() > 0  # learned from zero, mirrored views included
    assert actor.texture.maps.shape[0] == 12
    assert np.isfinite(doc["training"]["metrics"]["heldout"]["psnr"])


def test_training_hands_mirrored_views_their_reflection_for_the_light_codes(capture, tmp_path, monkeypatch):
    from engine.neural.actor.model import Actor

    seen = []
    original = Actor.light_codes

    def spy(self, joints, light_mirror=None):
        if self.training:
            seen.append(light_mirror)
        return original(self, joints, light_mirror)

    monkeypatch.setattr(Actor, "light_codes", spy)
    rc = main(["train", "--capture", str(capture), "-o", str(tmp_path / "m"), "--steps", "3", "--light-conditioning",
               "--mirror", "1", "--per-bone", "2", *TRAIN])
    assert rc == 0 and seen
    assert all(m is not None and torch.allclose(torch.linalg.det(m), -torch.ones(len(m), dtype=m.dtype)) for m in seen)


def test_resolution_defaults_to_the_capture_and_is_never_upsampled(capture, tmp_path, capsys):
    opts = [o for o in TRAIN if o not in ("--resolution", "32")]
    out = tmp_path / "native"
    assert main(["train", "--capture", str(capture), "-o", str(out), "--steps", "1", *opts]) == 0
    assert load_actor(out)[1]["training"]["resolution"] == [32, 32]
    capsys.readouterr()
    # a 32² capture trained at 64² would learn nothing the views hold, at 4x the cost per step
    assert main(["train", "--capture", str(capture), "-o", str(tmp_path / "up"), "--steps", "1",
                 "--resolution", "64", *opts]) == 1
    err = capsys.readouterr().err
    assert "--resolution 64 is above the capture's own 32-pixel images" in err and str(capture) in err
    assert not (tmp_path / "up").exists()


def test_short_training_lowers_the_image_loss(tmp_path):
    """The smoke test of learning itself: 80 steps on a tiny capture bring the render far closer to the
    training views than the actor after its first step."""
    from engine.neural.actor.dataset import ViewSet, open_capture, split_views
    from engine.neural.actor.train import TrainConfig, train

    cap_dir = make_toy_capture(tmp_path / "cap", cameras=3, frames=4, size=32, heldout_every=4)
    cap = open_capture(cap_dir)
    b = ViewSet(cap, split_views(cap, "train")[:6], resolution=32).batch(range(6))
    errors = []
    for steps in (1, 80):
        out = tmp_path / f"s{steps}"
        train(TrainConfig(capture=str(cap_dir), out=str(out), steps=steps, batch=2, preset="tiny", latent_dim=4,
                          eval_views=0, progress=False, threads=1, seed=0))
        actor, _ = load_actor(out)
        with torch.no_grad():
            res = actor(b["joints"], b["K"], b["R"], b["t"], 32, 32)
        # premultiplied colour and coverage against the truth: what a viewer sees over any background
        colour = (res["rgb"] * res["alpha"] - b["rgb"] * b["mask"]).pow(2).mean()
        coverage = (res["alpha"] - b["mask"]).pow(2).mean()
        errors.append(float(colour + coverage))
    assert errors[1] < 0.5 * errors[0], errors
