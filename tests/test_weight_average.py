"""The running average of the weights (--ema): its maths, its checkpoint round trip, and that the
trainer saves the averaged weights as the actor while resuming exactly."""

import json
import shutil

import pytest
import torch

from engine import MarionetteError
from engine.cli import main
from engine.neural.actor.model_file import load_actor
from engine.neural.actor.weight_average import WeightAverage
from engine.synthetic.toy_capture import make_toy_capture


def _net():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


def test_update_follows_the_warmed_up_decay_and_swap_restores():
    net = _net()
    avg = WeightAverage(net, 0.9)
    w0 = net.weight.detach().clone()
    expected = w0.clone()
    for i in range(5):
        with torch.no_grad():
            net.weight.add_(1.0)
        d = min(0.9, (1 + i) / (10 + i))
        expected = d * expected + (1 - d) * net.weight.detach()
        avg.update()
    assert torch.allclose(avg.shadow["weight"], expected, atol=1e-6)
    raw = net.weight.detach().clone()
    with avg.swapped_in():
        assert torch.allclose(net.weight, expected, atol=1e-6)
    assert torch.equal(net.weight, raw)


def test_swap_restores_even_when_the_block_fails():
    net = _net()
    avg = WeightAverage(net, 0.5)
    with torch.no_grad():
        net.weight.mul_(3)
    raw = net.weight.detach().clone()
    with pytest.raises(RuntimeError), avg.swapped_in():
        raise RuntimeError("boom")
    assert torch.equal(net.weight, raw)


def test_checkpoint_tensors_round_trip_and_bad_ones_are_named():
    net = _net()
    avg = WeightAverage(net, 0.99)
    for _ in range(3):
        with torch.no_grad():
            net.bias.add_(0.5)
        avg.update()
    saved = avg.tensors()
    other = WeightAverage(_net(), 0.99)
    assert other.load(saved, "ck.json") and other.updates == 3
    assert torch.equal(other.shadow["bias"], avg.shadow["bias"])
    assert not WeightAverage(_net(), 0.99).load({"model.weight": torch.zeros(2, 3)}, "ck.json")
    bad = dict(saved, **{"ema.weight": torch.zeros(5)})
    with pytest.raises(MarionetteError, match=r"ck.json: tensor 'ema.weight' .*shape \[2, 3\]"):
        other.load(bad, "ck.json")
    with pytest.raises(MarionetteError, match="missing"):
        other.load({k: v for k, v in saved.items() if k != "ema.bias"}, "ck.json")
    nan = dict(saved, **{"ema.bias": torch.tensor([float("nan"), 0.0])})
    with pytest.raises(MarionetteError, match="finite"):
        other.load(nan, "ck.json")


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1, 1.5])
def test_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(MarionetteError, match="--ema"):
        WeightAverage(_net(), decay)


TRAIN = ["--resolution", "32", "--batch", "2", "--decoder", "tiny", "--latent-dim", "4", "--quiet",
         "--eval-views", "0", "--threads", "1", "--ema", "0.9"]


def _train(capture, out, *extra):
    assert main(["train", "--capture", str(capture), "-o", str(out), "--steps", "4", "--checkpoint-every", "2",
                 *TRAIN, *extra]) == 0


def test_trainer_saves_the_average_and_resumes_it_exactly(tmp_path):
    from safetensors.torch import load_file

    cap = make_toy_capture(tmp_path / "toy", cameras=3, frames=4, size=32, heldout_every=2)
    straight = tmp_path / "a"
    _train(cap, straight)
    actor, doc = load_actor(straight)
    assert "--ema 0.9" in doc["training"]["command"]
    ck = load_file(str(straight / "checkpoints" / "step-0000004" / "checkpoint.safetensors"))
    assert float(ck["ema.updates"]) == 4
    params = dict(actor.named_parameters())
    names = [k[len("ema."):] for k in ck if k.startswith("ema.") and k != "ema.updates"]
    assert names and set(names) <= set(params)
    for n in names:
        assert torch.allclose(params[n].detach(), ck["ema." + n]), f"the actor file holds the averaged {n}"
    assert any(not torch.allclose(params[n].detach(), ck["model." + n]) for n in names), \
        "the checkpoint keeps the raw weights to train on"

    resumed = tmp_path / "r"
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-0000004")
    (resumed / "checkpoints" / "latest.json").write_text(json.dumps({"checkpoint": "step-0000002", "step": 2}))
    _train(cap, resumed, "--resume")
    b, _ = load_actor(resumed)
    for (k, v), (_, w) in zip(actor.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(v, w, atol=1e-5), k
