"""--refine-pose: per-frame skeleton corrections learned with the actor, stored with it, and used by
evaluate only on the capture whose skeleton they were fitted to."""

import json
import shutil

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.neural.actor.dataset import open_capture
from engine.neural.actor.evaluate import evaluate_actor, refined_poses_apply
from engine.neural.actor.model import Actor, make_config
from engine.neural.actor.model_file import load_actor, save_actor
from engine.neural.actor.train import pose_prior
from engine.synthetic.toy_capture import make_toy_capture

TRAIN = ["--resolution", "32", "--batch", "2", "--decoder", "tiny", "--latent-dim", "4", "--quiet",
         "--eval-views", "0", "--threads", "1", "--lr", "0.01"]


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    return make_toy_capture(tmp_path_factory.mktemp("cap") / "toy", cameras=3, frames=6, size=32, heldout_every=3)


@pytest.fixture(scope="module")
def refined(capture, tmp_path_factory):
    out = tmp_path_factory.mktemp("actors") / "rp"
    assert main(["train", "--capture", str(capture), "-o", str(out), "--steps", "12", "--refine-pose", *TRAIN]) == 0
    return out


def test_refine_joints_adds_the_rows_offsets():
    actor = Actor(make_config("BODY_25B", latent_dim=4, preset="tiny", pose_frames=5))
    with torch.no_grad():
        actor.pose_offsets[3] = 0.01
    J = torch.zeros(2, actor.joint_set.num_joints, 3)
    out = actor.refine_joints(J, torch.tensor([3, 0]))
    assert torch.allclose(out[0], torch.full_like(out[0], 0.01)) and torch.equal(out[1], J[1])
    plain = Actor(make_config("BODY_25B", latent_dim=4, preset="tiny"))
    assert plain.refine_joints(J, torch.tensor([3, 0])) is J


def test_pose_prior_penalises_size_on_trained_rows_and_jumps_between_frames():
    z = torch.zeros(4, 2, 3)
    assert float(pose_prior(z, torch.tensor([0, 1, 2, 3]))) == 0.0
    step = z.clone()
    step[2:] = 0.02  # a constant 2 cm shift from frame 2 on
    only_size = pose_prior(step, torch.tensor([0, 1]))  # the shifted rows are not trained: only the jump counts
    assert float(only_size) > 0
    smooth = torch.full_like(z, 0.02)
    assert float(pose_prior(smooth, torch.tensor([0, 1, 2, 3]))) == pytest.approx(1.0)  # (2 cm / 2 cm)^2, no jumps


def test_training_moves_the_trained_frames_and_saves_the_corrections(refined, capture):
    actor, doc = load_actor(refined)
    cap = open_capture(capture)
    assert actor.config.pose_frames == len(cap.frames)
    assert doc["training"]["config"]["refine_pose"] is True and "--refine-pose" in doc["training"]["command"]
    trained_rows = [cap.frame_row(f) for f in cap.frames if f not in set(cap.heldout_frames)]
    moved = actor.pose_offsets.detach().abs().amax(dim=(1, 2))
    assert float(moved[trained_rows].min()) > 0
    assert float(moved.max()) < 0.05  # corrections stay small (the prior and a small learning rate)
    # save/load round trip keeps them
    again, _ = load_actor(save_actor(refined.parent / "copy", actor, doc["training"]))
    assert torch.equal(again.pose_offsets, actor.pose_offsets)


def test_evaluate_uses_refined_poses_only_on_their_own_skeleton(refined, capture, tmp_path):
    actor, _ = load_actor(refined)
    cap = open_capture(capture)
    assert refined_poses_apply(actor, cap)
    with_refined = evaluate_actor(actor, cap, max_views=4)
    as_captured = evaluate_actor(actor, cap, max_views=4, refined_poses=False)
    assert with_refined["poses"] == "refined by training" and as_captured["poses"] == "capture"
    assert with_refined["overall"]["psnr"] != as_captured["overall"]["psnr"]
    # the same frames with another skeleton (a copy whose joints moved): the corrections do not belong
    other = tmp_path / "other"
    shutil.copytree(capture, other)
    with np.load(other / "joints3d.npz") as z:
        arrays = {k: z[k] for k in z.files}
    key = "joints" if "joints" in arrays else next(k for k in arrays if arrays[k].ndim == 3)
    arrays[key] = arrays[key] + 0.01
    np.savez(other / "joints3d.npz", **arrays)
    assert not refined_poses_apply(actor, open_capture(other))
    assert evaluate_actor(actor, open_capture(other), max_views=2)["poses"] == "capture"


def test_evaluate_cli_reports_which_poses(refined, capture, capsys):
    assert main(["evaluate", str(refined), "--capture", str(capture), "--json", "--max-views", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["poses"] == "refined by training"
    assert main(["evaluate", str(refined), "--capture", str(capture), "--json", "--max-views", "2",
                 "--capture-poses"]) == 0
    assert json.loads(capsys.readouterr().out)["poses"] == "capture"
