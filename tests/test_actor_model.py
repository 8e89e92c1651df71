"""Decoder, actor module, losses and the actor model file (round trip and every corruption case)."""

import json
import math

import numpy as np
import pytest
import torch

from engine import MarionetteError
from engine.neural.actor.decoder import Decoder, DecoderConfig, count_parameters
from engine.neural.actor.losses import ActorLoss, mask_iou, psnr, ssim
from engine.neural.actor.model import Actor, latent_intrinsics, make_config
from engine.neural.actor.model_file import JSON_FILE, TENSOR_FILE, load_actor, save_actor
from engine.geometry.camera import Camera


@pytest.mark.parametrize("upsample,H,W", [(1, 20, 28), (2, 21, 30)])
def test_decoder_shapes_any_size(upsample, H, W):
    cfg = DecoderConfig.preset("tiny", in_channels=5, upsample=upsample, code_dim=4)
    dec = Decoder(cfg)
    x = torch.randn(2, 5, H, W)
    rgb, alpha = dec(x, torch.randn(4))
    assert rgb.shape == (2, 3, H * upsample, W * upsample)
    assert alpha.shape == (2, 1, H * upsample, W * upsample)
    assert 0 <= float(rgb.detach().min()) and float(rgb.detach().max()) <= 1
    (rgb.mean() + alpha.mean()).backward()
    assert dec.stem.weight.grad is not None and torch.isfinite(dec.stem.weight.grad).all()


def test_decoder_is_conditioned_on_code():
    cfg = DecoderConfig.preset("tiny", in_channels=3, code_dim=4)
    dec = Decoder(cfg)
    for m in dec.modules():  # FiLM starts as identity and the head at zero; perturb them so the code matters
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=0.5)
    torch.nn.init.normal_(dec.head.weight, std=0.5)
    x = torch.randn(1, 3, 16, 16)
    a, _ = dec(x, torch.zeros(4))
    b, _ = dec(x, torch.ones(4))
    assert (a - b).abs().max() > 1e-4


def test_decoder_starts_from_renderer_alpha():
    dec = Decoder(DecoderConfig.preset("tiny", in_channels=3, code_dim=4, upsample=2))
    x = torch.zeros(1, 3, 8, 8)
    x[:, -1, :4] = 1.0  # renderer alpha: top half covered
    with torch.no_grad():
        rgb, alpha = dec(x, torch.randn(4))
    assert torch.allclose(rgb, torch.full_like(rgb, 0.5))
    assert float(alpha[0, 0, :6].min()) > 0.9 and float(alpha[0, 0, 10:].max()) < 0.1


def test_decoder_config_validation():
    with pytest.raises(MarionetteError, match="upsample"):
        DecoderConfig.from_dict({"upsample": 3})
    with pytest.raises(MarionetteError, match="unknown fields"):
        DecoderConfig.from_dict({"banana": 1})
    with pytest.raises(MarionetteError, match="preset"):
        DecoderConfig.preset("huge")


def test_decoder_presets_grow_in_order_and_run_at_odd_sizes():
    sizes = []
    for name in ("tiny", "medium", "small", "large"):
        cfg = DecoderConfig.preset(name, in_channels=5, code_dim=4)
        dec = Decoder(cfg)
        rgb, alpha = dec(torch.randn(1, 5, 19, 23), torch.randn(4))
        assert rgb.shape == (1, 3, 19, 23) and alpha.shape == (1, 1, 19, 23), name
        sizes.append(count_parameters(dec))
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    assert DecoderConfig.preset("medium").base_channels == 16 and DecoderConfig.preset("medium").levels == 3


def test_latent_intrinsics_matches_camera_scaled():
    cam = Camera.look_at("c", [0, -3, 1], [0, 0, 1], 64, 48)
    K2 = latent_intrinsics(torch.tensor(cam.K), 2).numpy()
    np.testing.assert_allclose(K2, cam.scaled(0.5).K, atol=1e-9)


def test_losses_and_metrics():
    x = torch.rand(2, 3, 24, 24)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    assert float(ssim(x, torch.rand(2, 3, 24, 24)).mean()) < 0.5
    noisy = (x + 0.1).clamp(0, 1)
    assert 15 < float(psnr(noisy, x).mean()) < 30
    m = torch.zeros(1, 1, 8, 8)
    m[..., :4, :] = 1
    a = torch.zeros(1, 1, 8, 8)
    a[..., :2, :] = 1
    assert math.isclose(float(mask_iou(a, m)), 0.5)
    parts = ActorLoss()(x, torch.ones(2, 1, 24, 24), x, torch.ones(2, 1, 24, 24))
    assert float(parts["l1"]) == 0 and float(parts["alpha"]) == 0 and abs(float(parts["ssim"])) < 1e-5


def _small_actor(**kw):
    return Actor(make_config("BODY_25B", preset="tiny", latent_dim=4, code_dim=4, **kw))


def test_actor_forward_and_gradients_reach_everything():
    actor = _small_actor(upsample=2)
    torch.nn.init.normal_(actor.decoder.head.weight, std=0.1)  # zero at init (grey start); as after a first step
    cam = Camera.look_at("c", [0, -3, 1], [0, 0, 0.9], 30, 22)
    from engine.synthetic.toy_capture import walk_sequence

    J = torch.tensor(walk_sequence(2))
    K, R, t = (torch.tensor(np.stack([x, x]), dtype=torch.float32) for x in (cam.K, cam.R, cam.t))
    out = actor(J, K, R, t, 22, 30)
    assert out["rgb"].shape == (2, 3, 22, 30) and out["alpha"].shape == (2, 1, 22, 30)
    assert out["latent"].shape == (2, 4, 11, 15)
    (out["rgb"].mean() + out["alpha"].mean()).backward()
    for name, p in actor.named_parameters():
        assert p.grad is not None, name
    assert actor.codes.grad.abs().sum() > 0
    assert actor.primitives.log_widths.grad.abs().sum() > 0


def test_render_frames_rejects_nan_joints():
    actor = _small_actor()
    from engine.synthetic.toy_capture import walk_sequence

    J = walk_sequence(3)
    J[1, 9] = np.nan  # LWrist
    cam = Camera.look_at("c", [0, -3, 1], [0, 0, 0.9], 16, 16)
    with pytest.raises(MarionetteError, match="LWrist.*frame 1"):
        actor.render_frames(J, cam)


# ------------------------------------------------------------------ model file
@pytest.fixture()
def saved(tmp_path):
    actor = _small_actor()
    with torch.no_grad():
        actor.codes.add_(1.0)
    d = save_actor(tmp_path / "a", actor, {"steps": 3, "seed": 0, "command": "test"})
    return actor, d


def test_round_trip(saved):
    actor, d = saved
    loaded, doc = load_actor(d)
    for (k, v), (k2, v2) in zip(actor.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert doc["format"] == "marionette.actor" and doc["version"] == 1
    assert doc["joint_set"] == "BODY_25B" and len(doc["bones"]) == len(doc["widths"]) == 26
    assert doc["training"]["steps"] == 3 and doc["decoder"]["base_channels"] == 8
    assert not list(d.glob("*.pkl")) and not list(d.glob("*.pt"))


def _edit_json(d, fn):
    p = d / JSON_FILE
    doc = json.loads(p.read_text())
    fn(doc)
    p.write_text(json.dumps(doc))


def test_other_version_is_refused(saved):
    _, d = saved
    _edit_json(d, lambda doc: doc.update(version=6))
    with pytest.raises(MarionetteError, match="version 6 is newer"):
        load_actor(d)


def test_truncated_tensor_file_is_refused(saved):
    _, d = saved
    p = d / TENSOR_FILE
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(MarionetteError, match="truncated"):
        load_actor(d)


def test_corrupted_tensor_file_is_refused(saved):
    _, d = saved
    p = d / TENSOR_FILE
    raw = bytearray(p.read_bytes())
    raw[-10] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(MarionetteError, match="corrupted"):
        load_actor(d)


def test_unreadable_tensor_file_is_refused_without_hash(saved):
    _, d = saved
    (d / TENSOR_FILE).write_bytes(b"not a safetensors file at all")
    _edit_json(d, lambda doc: doc["tensors"].pop("sha256") and doc["tensors"].pop("bytes"))
    with pytest.raises(MarionetteError, match="not a readable safetensors"):
        load_actor(d)


def test_shape_mismatch_with_json_is_refused(saved):
    _, d = saved
    _edit_json(d, lambda doc: doc.update(latent_dim=8) or doc["decoder"].update(in_channels=9))
    with pytest.raises(MarionetteError, match="shape"):
        load_actor(d)


def test_actor_for_another_joint_set_is_refused(saved):
    _, d = saved
    with pytest.raises(MarionetteError, match="trained for joint set BODY_25B, not COCO_17"):
        load_actor(d, joint_set="COCO_17")
    _edit_json(d, lambda doc: doc.update(joint_set="COCO_17"))
    with pytest.raises(MarionetteError, match="'bones' does not match"):
        load_actor(d)


def test_not_an_actor_folder(tmp_path):
    with pytest.raises(MarionetteError, match="actor folder not found"):
        load_actor(tmp_path / "nothing")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / JSON_FILE).write_text("{broken")
    with pytest.raises(MarionetteError, match="not valid JSON"):
        load_actor(tmp_path / "x")


def test_refuses_to_save_nan(tmp_path):
    actor = _small_actor()
    with torch.no_grad():
        actor.codes[0, 0] = float("nan")
    with pytest.raises(MarionetteError, match="NaN"):
        save_actor(tmp_path / "a", actor)


def test_perceptual_weights_are_optional_and_never_fetched(monkeypatch, tmp_path):
    from engine.neural.actor.losses import find_perceptual_weights

    monkeypatch.delenv("MARIONETTE_VGG_WEIGHTS", raising=False)
    assert find_perceptual_weights(None) is None
    monkeypatch.setenv("MARIONETTE_VGG_WEIGHTS", str(tmp_path / "absent.safetensors"))
    assert find_perceptual_weights(None) is None  # an unset/missing default silently disables it
    with pytest.raises(MarionetteError, match="perceptual-loss weights not found"):
        find_perceptual_weights(tmp_path / "absent.safetensors")  # an explicit path must exist


@pytest.mark.slow
def test_perceptual_loss_loads_vgg_safetensors(tmp_path):
    from safetensors.torch import save_file

    from engine.neural.actor.losses import _LPIPS_CHANNELS, VGGPerceptual

    cfg, cin, sd, i = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512], 3, {}, 0
    for v in cfg:
        if v == "M":
            i += 1
            continue
        sd[f"features.{i}.weight"] = torch.randn(v, cin, 3, 3) * 0.05
        sd[f"features.{i}.bias"] = torch.zeros(v)
        cin, i = v, i + 2
    for k, c in enumerate(_LPIPS_CHANNELS):
        sd[f"lin{k}.model.1.weight"] = torch.rand(1, c, 1, 1)
    save_file(sd, str(tmp_path / "vgg.safetensors"))
    net = VGGPerceptual(tmp_path / "vgg.safetensors")
    assert net.is_lpips
    x = torch.rand(1, 3, 32, 32)
    assert float(net(x, x)) < 1e-6 and float(net(x, torch.rand(1, 3, 32, 32))) > 0
