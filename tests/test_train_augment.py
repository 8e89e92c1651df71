"""Training-time view augmentation keeps images and cameras consistent."""

from __future__ import annotations

import shlex

import torch

from engine.neural.actor.augment import augment_views


def test_augmented_camera_projects_onto_the_moved_content():
    H = W = 48
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    u0, v0 = 27.0, 18.0
    blob = torch.exp(-((xx - u0) ** 2 + (yy - v0) ** 2) / (2 * 2.0 ** 2))
    img = blob.expand(2, 3, H, W).clone()
    K = torch.tensor([[40.0, 0.0, 23.5], [0.0, 40.0, 23.5], [0.0, 0.0, 1.0]]).expand(2, 3, 3).clone()
    b = {"rgb": img, "mask": img[:, :1].clone(), "K": K, "joints": torch.zeros(2, 3, 3)}
    out = augment_views(b, torch.Generator().manual_seed(5))
    ray = torch.linalg.inv(K[0]) @ torch.tensor([u0, v0, 1.0])
    for i in range(2):
        p = out["K"][i] @ ray
        p = p[:2] / p[2]
        w = out["rgb"][i, 0]
        c = torch.stack([(xx * w).sum() / w.sum(), (yy * w).sum() / w.sum()])
        assert torch.allclose(c, p, atol=0.15), (c, p)
    assert torch.equal(out["joints"], b["joints"])  # everything else passes through
    assert not torch.equal(out["K"][0], out["K"][1])  # each view draws its own zoom and shift


def test_mirror_permutation_swaps_sides_and_is_an_involution():
    from engine.body.joint_sets import get_joint_set
    from engine.neural.actor.augment import mirror_permutation

    js = get_joint_set("BODY_25B")
    perm = mirror_permutation(js)
    assert [perm[p] for p in perm] == list(range(js.num_joints))
    assert perm[js.index("LKnee")] == js.index("RKnee")
    assert perm[js.index("Neck")] == js.index("Neck")


def test_mirrored_skeleton_projects_onto_the_flipped_image():
    import numpy as np

    from engine.body.joint_sets import get_joint_set
    from engine.geometry.camera import Camera
    from engine.neural.actor.augment import mirror_images, mirror_joints, mirror_permutation

    js = get_joint_set("BODY_25B")
    perm = mirror_permutation(js)
    rng = np.random.default_rng(3)
    cam = Camera.look_at("c", eye=(1.5, -3.0, 1.4), target=(0.1, 0.2, 1.0), width=40, height=32)
    K = torch.as_tensor(cam.K, dtype=torch.float64)[None].repeat(2, 1, 1)
    K[:, 0, 1] = 0.7  # a skewed camera too
    R = torch.as_tensor(cam.R, dtype=torch.float64)[None].repeat(2, 1, 1)
    t = torch.as_tensor(cam.t, dtype=torch.float64)[None].repeat(2, 1, 1).squeeze(-1).reshape(2, 3)
    joints = torch.as_tensor(rng.normal(size=(2, js.num_joints, 3)) * 0.3 + [0, 0, 1.0])
    joints.requires_grad_(True)
    img = torch.rand(2, 3, 32, 40, dtype=torch.float64)
    b = {"rgb": img, "mask": img[:, :1].clone(), "K": K, "R": R, "t": t}
    flip = torch.tensor([True, False])
    out = mirror_images(b, flip)
    mj = mirror_joints(joints, R, t, flip, perm)

    def project(Kb, X):
        x = (X @ R[0].T + t[0]) @ Kb.T
        return x[:, :2] / x[:, 2:]

    before = project(K[0], joints[0].detach())
    after = project(out["K"][0], mj[0].detach())
    # joint j seen at (u, v) is, mirrored, its opposite joint seen at (W - 1 - u, v)
    assert torch.allclose(after[perm], torch.stack([39 - before[:, 0], before[:, 1]], 1), atol=1e-9)
    assert torch.equal(out["rgb"][0], img[0].flip(-1)) and torch.equal(out["rgb"][1], img[1])
    assert torch.equal(mj[1], joints[1]) and torch.equal(out["K"][1], K[1])
    # the reflected skeleton keeps bone lengths and stays differentiable (pose refinement trains through it)
    d0 = (joints[0, 5] - joints[0, 7]).norm()
    d1 = (mj[0, perm[5]] - mj[0, perm[7]]).norm()
    assert torch.isclose(d0, d1)
    mj.sum().backward()
    assert joints.grad is not None and torch.isfinite(joints.grad).all()


def _train_args(*extra):
    from engine.cli import build_parser
    from engine.cli.commands.train import apply_recipe

    args = build_parser().parse_args(["train", "--capture", "c", "-o", "a", *extra])
    apply_recipe(args)
    return args


def test_cpu_recipe_sets_its_options_and_explicit_options_win():
    plain = _train_args()
    assert (plain.decoder, plain.augment, plain.ema, plain.silhouette_weight, plain.refine_pose) == \
        ("small", False, 0.0, 0.0, False)
    cpu = _train_args("--recipe", "cpu")
    assert (cpu.decoder, cpu.augment, cpu.ema, cpu.silhouette_weight, cpu.refine_pose) == \
        ("tiny", True, 0.995, 0.5, True)
    mixed = _train_args("--recipe", "cpu", "--decoder", "small", "--silhouette-weight", "0")
    assert (mixed.decoder, mixed.silhouette_weight, mixed.ema, mixed.mirror) == ("small", 0.0, 0.995, 0.5)
    assert plain.mirror == 0.0 and plain.texture_channels == 0 and cpu.texture_channels == 8
    assert cpu.pose_conditioning and not plain.pose_conditioning
    assert _train_args("--recipe", "cpu", "--texture-channels", "0").texture_channels == 0


def test_recorded_command_spells_out_what_the_recipe_chose():
    from engine.cli.commands.train import effective_command

    args = _train_args("--recipe", "cpu")
    cmd = effective_command(args)
    for flag in ("--decoder tiny", "--ema 0.995", "--silhouette-weight 0.5", "--augment",
                 "--refine-pose", "--mirror 0.5", "--texture-channels 8", "--pose-conditioning"):
        assert flag in cmd, (flag, cmd)
    # the recorded command replays the same run without naming the recipe, whatever the recipe becomes
    assert "--recipe" not in cmd
    replay = _train_args(*shlex.split(cmd)[6:])
    assert {k: v for k, v in vars(replay).items() if k != "recipe"} == \
        {k: v for k, v in vars(args).items() if k != "recipe"}


def test_rolled_camera_projects_a_world_point_onto_the_moved_content():
    """A blob drawn where a world point projects must, after roll_views, sit where the rolled camera
    projects that point (non-square pixels and an off-centre principal point included)."""
    from engine.neural.actor.augment import roll_views

    H, W = 40, 48
    K = torch.tensor([[44.0, 0.0, 22.0], [0.0, 38.0, 21.0], [0.0, 0.0, 1.0]])
    R = torch.eye(3)
    t = torch.tensor([0.1, -0.05, 3.0])
    X = torch.tensor([0.6, -0.5, 0.4])
    p = K @ (R @ X + t)
    u0, v0 = float(p[0] / p[2]), float(p[1] / p[2])
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    blob = torch.exp(-((xx - u0) ** 2 + (yy - v0) ** 2) / (2 * 1.5 ** 2))
    b = {"rgb": blob.expand(3, 3, H, W).clone(), "mask": blob.expand(3, 1, H, W).clone(),
         "K": K.expand(3, 3, 3).clone(), "R": R.expand(3, 3, 3).clone(), "t": t.expand(3, 3).clone()}
    out = roll_views(b, torch.Generator().manual_seed(2), max_degrees=20.0)
    for i in range(3):
        q = out["K"][i] @ (out["R"][i] @ X + out["t"][i])
        q = q[:2] / q[2]
        w = out["rgb"][i, 0]
        c = torch.stack([(xx * w).sum() / w.sum(), (yy * w).sum() / w.sum()])
        assert torch.allclose(c, q, atol=0.15), (i, c, q)
        assert torch.allclose(out["R"][i] @ out["R"][i].T, torch.eye(3), atol=1e-5)  # still a rotation
    assert not torch.allclose(out["R"][0], out["R"][1])  # each view draws its own angle
    assert torch.equal(out["K"], b["K"])
    moved = (out["rgb"][:, 0].flatten(1).argmax(1) != blob.flatten().argmax()).any()
    assert moved


def test_pixels_from_outside_the_image_do_not_count_in_the_silhouette_losses():
    """A person filling the frame: after zooming out and rolling, the border shows pixels from outside
    the captured image (mask 0 there, though the person may continue). ``valid`` marks them, travels
    through the mirror, and the alpha and silhouette losses of a render covering the whole frame
    ignore them, while an all-valid batch keeps the plain means."""
    from engine.neural.actor.augment import mirror_images, roll_views
    from engine.neural.actor.losses import ActorLoss, silhouette_loss

    B, H, W = 4, 32, 32
    K = torch.tensor([[30.0, 0.0, 15.5], [0.0, 30.0, 15.5], [0.0, 0.0, 1.0]]).expand(B, 3, 3).clone()
    b = {"rgb": torch.full((B, 3, H, W), 0.5), "mask": torch.ones(B, 1, H, W), "K": K,
         "R": torch.eye(3).expand(B, 3, 3).clone(), "t": torch.tensor([0.0, 0.0, 3.0]).expand(B, 3).clone()}
    out = roll_views(b, torch.Generator().manual_seed(1), max_degrees=30.0)
    out = augment_views(out, torch.Generator().manual_seed(3), zoom=(0.7, 0.8))
    out = mirror_images(out, torch.tensor([True, False, True, False]))
    valid = out["valid"]
    assert valid.shape == (B, 1, H, W)
    assert float(valid.min()) == 0.0 and float(valid.amax(dim=(1, 2, 3)).min()) == 1.0
    # wholly inside the captured image the mask is the person's (1); where it reads background, the
    # pixel came from outside
    assert torch.all(out["mask"][valid > 0] > 0.999) and torch.all(valid[out["mask"] < 0.5] == 0)
    full = torch.ones(B, 1, H, W)  # a render that covers the whole frame, as the person does
    rgb = torch.full((B, 3, H, W), 0.5)
    loss = ActorLoss()
    assert float(loss(rgb, full, out["rgb"], out["mask"], valid)["alpha"]) < 1e-6
    assert float(loss(rgb, full, out["rgb"], out["mask"])["alpha"]) > 0.1  # without it: punished for the person
    assert float(silhouette_loss(full[..., ::2, ::2], out["mask"], valid)) < 1e-2  # latent at half size
    plain = torch.rand(B, 1, H, W)
    assert torch.allclose(loss(rgb, plain, b["rgb"], b["mask"], torch.ones_like(plain))["alpha"],
                          loss(rgb, plain, b["rgb"], b["mask"])["alpha"])


def test_crops_hold_the_person_and_their_cameras_project_onto_the_moved_content():
    """crop_views: each window is an exact slice of its view round the person's box, inside the image,
    and the shifted camera projects a world point where the slice shows it."""
    from engine.neural.actor.augment import crop_views

    H, W, S = 64, 80, 24
    K = torch.tensor([[60.0, 0.0, 39.5], [0.0, 60.0, 31.5], [0.0, 0.0, 1.0]])
    X = torch.tensor([0.3, -0.2, 3.0])  # camera at the origin looking down +z
    p = K @ X
    u0, v0 = float(p[0] / p[2]), float(p[1] / p[2])
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    blob = torch.exp(-((xx - u0) ** 2 + (yy - v0) ** 2) / (2 * 1.5 ** 2))
    B = 6
    box = torch.tensor([u0 - 3, v0 - 3, u0 + 3, v0 + 3]).expand(B, 4).clone()
    box[-1] = torch.tensor([0.0, 0.0, 5.0, 5.0])  # a person in the corner: the window stays inside
    b = {"rgb": blob.expand(B, 3, H, W).clone(), "mask": blob.expand(B, 1, H, W).clone(),
         "K": K.expand(B, 3, 3).clone(), "box": box, "joints": torch.zeros(B, 3, 3)}
    out = crop_views(b, torch.Generator().manual_seed(3), S)
    assert out["rgb"].shape == (B, 3, S, S) and out["mask"].shape == (B, 1, S, S)
    offsets = set()
    for i in range(B):
        x0, y0 = -float(out["K"][i, 0, 2] - K[0, 2]), -float(out["K"][i, 1, 2] - K[1, 2])
        assert x0 == int(x0) and 0 <= x0 <= W - S and 0 <= y0 <= H - S
        x0, y0 = int(x0), int(y0)
        offsets.add((x0, y0))
        assert torch.equal(out["rgb"][i], b["rgb"][i, :, y0:y0 + S, x0:x0 + S])  # an exact slice
        assert torch.equal(out["box"][i], box[i] - torch.tensor([x0, y0, x0, y0], dtype=torch.float32))
        if i < B - 1:  # the window holds the person, and the camera sees it where the slice does
            q = out["K"][i] @ X
            q = q[:2] / q[2]
            w = out["rgb"][i, 0]
            c = torch.stack([(xx[:S, :S] * w).sum() / w.sum(), (yy[:S, :S] * w).sum() / w.sum()])
            assert torch.allclose(c, q, atol=0.15), (i, c, q)
    assert (0, 0) in offsets and len(offsets) > 2  # the corner person clamps; the others draw their own
    assert torch.equal(out["joints"], b["joints"])
    whole = crop_views(b, torch.Generator(), 100)  # a window larger than the views keeps them whole
    assert whole["rgb"] is b["rgb"]


def test_supersampled_render_is_the_area_average_of_a_finer_one():
    from engine.neural.actor.model import Actor, make_config, scale_intrinsics
    from tests.test_kernels import _cam
    from tests.test_surface_primitives import _standing

    torch.manual_seed(0)
    actor = Actor(make_config("BODY_25B", latent_dim=4, preset="tiny", per_bone=2)).eval()
    J = _standing(batch=1).float()
    K, R, t = (x.float() for x in _cam(20, 16))
    with torch.no_grad():
        h = float(actor.person_height_px(J, K, R, t)[0])
        direct = actor(J, K, R, t, 16, 20)
        assert torch.equal(actor.forward_supersampled(J, K, R, t, 16, 20)["rgb"], direct["rgb"])  # no record
        actor.person_range_px = [1.2 * h, 3 * h]  # a little smaller than any it learned from: rendered directly
        assert torch.equal(actor.forward_supersampled(J, K, R, t, 16, 20)["rgb"], direct["rgb"])
        actor.person_range_px = [1.9 * h, 3 * h]
        out = actor.forward_supersampled(J, K, R, t, 16, 20)
        fine = actor(J, scale_intrinsics(K, 2), R, t, 32, 40)
        # a batch of views needing different factors: each view as if rendered alone
        J2, K2, R2, t2 = (torch.cat([x, x]) for x in (J, K, R, t))
        K2[1] = scale_intrinsics(K2[1], 2.0)  # the second view twice as large: no supersampling needed
        mixed = actor.forward_supersampled(J2, K2, R2, t2, 16, 20)
        alone = actor(J2[1:], K2[1:], R2[1:], t2[1:], 16, 20)
    assert out["scale"] == [2.0] and out["rgb"].shape == (1, 3, 16, 20)
    assert mixed["scale"] == [2.0, 1.0] and torch.allclose(mixed["rgb"][0], out["rgb"][0])
    assert torch.allclose(mixed["rgb"][1], alone["rgb"][0]) and torch.allclose(mixed["depth"][1], alone["depth"][0])
    pool = torch.nn.functional.avg_pool2d
    assert torch.allclose(out["alpha"], pool(fine["alpha"], 2))
    covered = out["alpha"] > 1e-3
    premultiplied = pool(fine["rgb"] * fine["alpha"], 2)
    assert torch.allclose((out["rgb"] * out["alpha"])[covered.expand_as(out["rgb"])],
                          premultiplied[covered.expand_as(out["rgb"])], atol=1e-6)
