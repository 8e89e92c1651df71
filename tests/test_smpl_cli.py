"""``marionette fit-smpl`` end to end, bad input, and the optional silhouette term."""

import json

import numpy as np
import pytest
import torch

from engine import MarionetteError
from engine.geometry.camera import Camera, save_cameras
from engine.cli import main
from engine.body.smpl.silhouette import SilhouetteTerm, soft_silhouette
from engine.io.skeleton_file import SkeletonSequence, save_skeleton
from engine.body.joint_sets import get_joint_set
from engine.body.smpl.fit import FitOptions, fit_smpl
from engine.synthetic.smpl import make_synthetic_motion, synthetic_observations
from engine.body.smpl.model import save_smpl_npz
from engine.body.smpl.skinning import SMPLTorch
from engine.synthetic.smpl import make_synthetic_smpl_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    model = make_synthetic_smpl_model(1, num_vertices=1500)
    save_smpl_npz(root / "model.npz", model)
    js = get_joint_set("BODY_25B")
    poses, trans, betas = make_synthetic_motion(6, fps=25.0, seed=2)
    kp, _ = synthetic_observations(model, js, poses, trans, betas)
    kp[2, :20] = np.nan  # one frame with too few joints
    save_skeleton(root / "skel.npz", SkeletonSequence(kp, js, 25.0, up_axis="Z",
                                                      extras={"frame_indices": np.arange(10, 16)}))
    return root, model, (poses, trans, betas)


def test_cli_writes_amass_style_fit(setup, capsys):
    root, model, _ = setup
    out = root / "fit.npz"
    rc = main(["fit-smpl", str(root / "skel.npz"), "--model", str(root / "model.npz"), "-o", str(out),
               "--iters", "8", "--gender", "female"])
    assert rc == 0
    with np.load(out) as d:
        assert d["poses"].shape == (6, 72) and d["trans"].shape == (6, 3) and d["betas"].shape == (10,)
        assert str(d["gender"]) == "female" and float(d["mocap_framerate"]) == 25.0 and str(d["up_axis"]) == "Z"
        assert d["failed"].tolist() == [False, False, True, False, False, False]
        assert str(d["failure_reason"][2]) == "too few joints"
        assert d["fit_error"].shape == (6,) and np.nanmax(d["fit_error"]) < 0.03
        assert d["frame_indices"].tolist() == list(range(10, 16))
    from engine.body.smpl.motion import load_smpl_motion

    load_smpl_motion(out)  # the Blender importer's reader accepts it
    assert "1 of 6 frames failed" in capsys.readouterr().out
    assert not list(root.glob("*.tmp.npz"))


def test_cli_bad_input(setup, tmp_path, capsys):
    root, model, _ = setup
    (tmp_path / "model.pkl").write_bytes(b"\x80\x02cposix\nsystem\nq\x00.")
    rc = main(["fit-smpl", str(root / "skel.npz"), "--model", str(tmp_path / "model.pkl"), "-o",
               str(tmp_path / "o.npz")])
    assert rc == 1 and "refused" in capsys.readouterr().err
    rc = main(["fit-smpl", str(root / "skel.npz"), "--model", str(root / "skel.npz"), "-o", str(tmp_path / "o.npz")])
    assert rc == 1 and "missing field 'v_template'" in capsys.readouterr().err
    rc = main(["fit-smpl", str(root / "skel.npz"), "--model", str(root / "model.npz"), "-o", str(tmp_path / "o.txt")])
    assert rc == 1 and ".npz" in capsys.readouterr().err
    if not torch.cuda.is_available():
        rc = main(["fit-smpl", str(root / "skel.npz"), "--model", str(root / "model.npz"), "-o",
                   str(tmp_path / "o.npz"), "--device", "cuda"])
        assert rc == 1 and "CUDA" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()


def _cameras(w=48, h=64):
    cams = []
    for i, ang in enumerate(np.linspace(0, 2 * np.pi, 4, endpoint=False)):
        eye = [3.0 * np.cos(ang), 3.0 * np.sin(ang), 1.0]
        cams.append(Camera.look_at(f"cam{i:02d}", eye, [0, 0, 1.0], w, h, fov_deg=50))
    return cams


def test_soft_silhouette_is_differentiable():
    pts = torch.tensor([[[10.0, 12.0], [30.0, 5.0]]], requires_grad=True)
    sil = soft_silhouette(pts, 20, 40, sigma_px=1.0)
    assert sil.shape == (1, 20, 40)
    sil_np = sil.detach()
    assert float(sil_np[0, 12, 10]) > 0.8 and float(sil_np[0, 0, 0]) < 1e-6
    sil.sum().backward()
    assert torch.isfinite(pts.grad).all()


def test_silhouette_refinement_moves_towards_the_masks(setup):
    _, model, (poses, trans, betas) = setup
    cams = _cameras()[:2]
    smpl = SMPLTorch(model, "cpu", torch.float32)
    T = 2
    with torch.no_grad():
        verts = smpl(torch.tensor(betas, dtype=torch.float32), torch.tensor(poses[:T], dtype=torch.float32),
                     torch.tensor(trans[:T], dtype=torch.float32), full_mesh=True)["vertices"]
    term0 = SilhouetteTerm(cams, np.zeros((T, len(cams), 32, 24), np.float32), np.arange(T), sigma_px=0.7)
    masks = (term0.render(verts) > 0.5).float().numpy()
    assert masks.mean() > 0.02  # the body is in view
    js = get_joint_set("COCO_17")
    kp, _ = synthetic_observations(model, js, poses[:T], trans[:T], betas)
    kp = kp + np.array([0.0, 0.0, 0.05])  # joints 5 cm too high: silhouettes disagree
    term = SilhouetteTerm(cams, masks, np.arange(T), weight=50.0, sigma_px=0.7)
    base = fit_smpl(kp, js, model, options=FitOptions(iters=6))
    refined = fit_smpl(kp, js, model, options=FitOptions(iters=6, extra_terms=[term], refine_iters=10,
                                                          refine_lr=0.005, w_smooth_root=0.0))

    def sil_loss(res):
        with torch.no_grad():
            v = smpl(torch.tensor(res.betas), torch.tensor(res.poses), torch.tensor(res.trans), full_mesh=True)
            return float(((term.render(v["vertices"]) - term.masks) ** 2).mean())

    assert sil_loss(refined) < sil_loss(base)
    assert refined.trans[:, 2].mean() < base.trans[:, 2].mean()  # pulled back down towards the masks


def test_silhouette_term_rejects_bad_masks():
    with pytest.raises(MarionetteError, match="masks"):
        SilhouetteTerm(_cameras(), np.zeros((2, 3, 8, 8)), [0, 1])


def test_cli_with_capture_silhouettes(setup, tmp_path):
    from PIL import Image

    root, model, (poses, trans, betas) = setup
    cams = _cameras()
    cap = tmp_path / "capture"
    js = get_joint_set("BODY_25B")
    kp, _ = synthetic_observations(model, js, poses, trans, betas)
    save_skeleton(cap / "joints3d.npz", SkeletonSequence(kp, js, 25.0, up_axis="Z"))
    save_cameras(cap / "cameras.json", cams)
    smpl = SMPLTorch(model, "cpu", torch.float32)
    with torch.no_grad():
        verts = smpl(torch.tensor(betas, dtype=torch.float32), torch.tensor(poses, dtype=torch.float32),
                     torch.tensor(trans, dtype=torch.float32), full_mesh=True)["vertices"]
    sil = SilhouetteTerm(cams, np.zeros((6, 4, 64, 48), np.float32), np.arange(6)).render(verts).numpy()
    for c, cam in enumerate(cams):
        for f in range(6):
            for kind, arr in (("masks", sil[f, c] > 0.5), ("images", np.zeros((64, 48)))):
                p = cap / kind / cam.name / f"{f:06d}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray((arr * 255).astype(np.uint8)).save(p)
    (cap / "capture.json").write_text(json.dumps({
        "format": "marionette.capture", "version": 1, "complete": True, "fps": 25.0, "frames": list(range(6)),
        "cameras": [c.name for c in cams], "joint_set": "BODY_25B", "resolution": [48, 64]}))
    out = tmp_path / "fit.npz"
    rc = main(["fit-smpl", str(cap / "joints3d.npz"), "--model", str(root / "model.npz"), "-o", str(out),
               "--iters", "5", "--silhouettes", str(cap), "--silhouette-iters", "3", "--silhouette-frames", "2"])
    assert rc == 0
    with np.load(out) as d:
        assert np.isfinite(d["poses"]).all() and not d["failed"].any()
    other = tmp_path / "short.npz"
    save_skeleton(other, SkeletonSequence(kp[:4], js, 25.0))
    rc = main(["fit-smpl", str(other), "--model", str(root / "model.npz"), "-o", str(tmp_path / "x.npz"),
               "--silhouettes", str(cap)])
    assert rc == 1
