"""Training an actor on a capture folder (``marionette train``).

One process by default; under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment)
it becomes DistributedDataParallel with a ``DistributedSampler`` — PyTorch's own
engine, so gradients are averaged across processes/GPUs and only rank 0 writes files.

Files in ``ACTOR_DIR``::

    actor.json, actor.safetensors          the latest good actor (rewritten at every checkpoint)
    checkpoints/step-NNNNNN/               checkpoint.json + checkpoint.safetensors (model, Adam
                                           state flattened to tensors by key, RNG state)
    checkpoints/latest.json                which checkpoint --resume continues from
    logs/                                  TensorBoard event files (when tensorboard is installed)

A checkpoint folder is written under a temporary name and renamed when complete,
then ``latest.json`` is replaced atomically, then older checkpoints are pruned — so
an interruption at any moment leaves the previous checkpoint usable. A NaN/inf loss,
gradient or parameter stops training with a clear message and writes nothing, so
the last good checkpoint and actor stay in place.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from engine import MarionetteError
from engine.neural.actor import model_file as mf
from engine.validate import MAX_BATCH, MAX_RENDER_SIDE, MAX_THREADS, is_number, number, optional_number
from engine.neural.actor.losses import (ActorLoss, VGGPerceptual, find_perceptual_weights, latent_colour_loss,
                                        silhouette_loss)
from engine.neural.actor.augment import (augment_views, crop_views, mirror_images, mirror_joints, mirror_permutation,
                                         mirror_reflections,
                                        roll_views)
from engine.neural.actor.model import RENDER_MODES, Actor, make_config
from engine.neural.render.texture import CHART_KINDS
from engine.neural.actor.weight_average import WeightAverage

CHECKPOINT_FORMAT = "marionette.actor-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class TrainConfig:
    capture: str
    out: str
    steps: int = 2000
    resolution: int | None = None  # None: the capture's own resolution
    batch: int = 4
    mode: str = "transmittance"
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    log_dir: str | None = None
    lr: float = 1e-3
    preset: str = "small"
    upsample: int = 1
    latent_dim: int = 16
    per_bone: int = 4  # Gaussians per bone (1 = the seed paper's one-Gaussian-per-bone actor)
    texture_channels: int = 0  # feature channels of the maps wrapped around each bone (0 = none)
    texture_size: int = 16  # their size, along x around
    texture_charts: str = "bones"  # "parts": a body part's bones share one map (trunk, head, feet)
    light_conditioning: bool = False  # latent codes that vary with how each bone is turned in the world
    pose_conditioning: bool = False  # latent codes that vary with where each bone points in the body's frame
    # learn per-training-camera gain/offset (never applied at render); off by default: on the real clip it
    # cost 0.5 dB on the held-out camera at equal time (docs/sections/50-neural-actor.md)
    colour_correction: bool = False
    checkpoint_every: int = 250
    log_every: int = 10
    keep_checkpoints: int = 2
    perceptual_weights: str | None = None
    max_minutes: float | None = None
    snapshot_minutes: tuple = ()  # also save the actor to OUT/snapshots/<M>min/ after M minutes (learning curves)
    # weight of an L1 loss between the *renderer's* alpha (the Gaussians alone, before the decoder)
    # and the person mask: makes the primitives' geometry explain the silhouette, which carries over
    # to new poses, instead of leaving the decoder to paint it per view
    silhouette_weight: float = 0.0
    # weight of an L1 loss between the first three latent channels (the Gaussians' own colour, before
    # the decoder) and the masked image: the colours then live on the primitives in 3D, where every
    # camera sees the same ones, instead of in a decoder that learned them from the training views
    latent_colour_weight: float = 0.0
    # random zoom (x0.85-1.15) and shift (+-8 % of the image) of every training view, with the
    # camera changed to match, so the decoder cannot memorise where things sit in each view
    augment: bool = False
    # share of training views mirrored left-right together with the skeleton (left and right joints
    # swapped): a nearly symmetric person seen by a sparse rig gains a virtual camera per real one
    mirror: float = 0.0
    # largest random turn (degrees) of each training camera about its optical axis, image turned to match
    roll: float = 0.0
    # train on crop x crop windows round the person of the views loaded at `resolution` (None: whole views):
    # a step's pixels go to the person, at the finer scale; renders supersample to match (Actor.forward_supersampled)
    crop: int | None = None
    # learn a per-frame correction of the capture's skeleton with the actor (from the training cameras),
    # kept small and smooth in time; the held-out camera then sees the same, better posed, frames
    refine_pose: bool = False
    pose_weight: float = 1.0  # strength of the pull back towards the captured skeleton
    eval_views: int = 16  # held-out views scored at the end (0: skip)
    # decay of a running average of the weights, saved as the actor (0: off, the last step's weights)
    ema: float = 0.0
    threads: int | None = None
    command: str = ""
    progress: bool = True

    def colour_cameras_enabled(self) -> bool:
        return bool(self.colour_correction)

    def validate(self) -> None:
        if self.steps < 1:
            raise MarionetteError(f"--steps must be at least 1, got {self.steps}")
        if self.batch < 1:
            raise MarionetteError(f"--batch must be at least 1, got {self.batch}")
        number(self.batch, "--batch", lo=1, hi=MAX_BATCH, integer=True)
        if self.resolution is not None and self.resolution < 16:
            raise MarionetteError(f"--resolution must be at least 16 pixels, got {self.resolution}")
        optional_number(self.resolution, "--resolution", lo=16, hi=MAX_RENDER_SIDE, integer=True)
        number(self.latent_dim, "--latent-dim", lo=1, hi=mf.LIMITS["latent_dim"], integer=True)
        optional_number(self.threads, "--threads", lo=0, hi=MAX_THREADS, integer=True)
        number(self.seed, "--seed", lo=0, hi=2 ** 32 - 1, integer=True)
        optional_number(self.max_minutes, "--max-minutes", lo=0, lo_open=True)
        for m in self.snapshot_minutes:
            number(m, "--snapshot-minutes", lo=0)
        number(self.eval_views, "--eval-views", lo=0, integer=True)
        number(self.pose_weight, "--pose-weight", lo=0)
        number(self.silhouette_weight, "--silhouette-weight", lo=0)
        number(self.latent_colour_weight, "--latent-colour-weight", lo=0)
        number(self.mirror, "--mirror", lo=0, hi=1)
        number(self.roll, "--roll", lo=0, hi=45)
        optional_number(self.crop, "--crop", lo=16, hi=MAX_RENDER_SIDE, integer=True)
        number(self.ema, "--ema", lo=0, hi=1, hi_open=True)
        number(self.keep_checkpoints, "keep_checkpoints", lo=1, integer=True)
        if self.mode not in RENDER_MODES:
            raise MarionetteError(f"--mode must be one of {RENDER_MODES}, got {self.mode!r}")
        if self.upsample not in (1, 2):
            raise MarionetteError(f"--upsample must be 1 or 2, got {self.upsample}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise MarionetteError(f"--lr must be a positive number, got {self.lr}")
        number(self.texture_channels, "--texture-channels", lo=0, hi=mf.LIMITS["texture_channels"], integer=True)
        number(self.texture_size, "--texture-size", lo=2, hi=mf.LIMITS["texture_size"], integer=True)
        if self.texture_charts not in CHART_KINDS:
            raise MarionetteError(f"--texture-charts must be one of {CHART_KINDS}, got {self.texture_charts!r}")
        if self.texture_charts != "bones" and not self.texture_channels:
            raise MarionetteError(f"--texture-charts {self.texture_charts} needs bone textures: add --texture-channels "
                                  "C (e.g. 8)")
        if not (1 <= self.per_bone <= 64):
            raise MarionetteError(f"--per-bone must be between 1 and 64, got {self.per_bone}")
        if self.checkpoint_every < 1:
            raise MarionetteError(f"--checkpoint-every must be at least 1, got {self.checkpoint_every}")


class NonFiniteError(MarionetteError):
    pass


# ---------------------------------------------------------------------------- devices / DDP
def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise MarionetteError("--device cuda: no CUDA GPU is visible to PyTorch (is a CUDA build of torch "
                                  "installed?); use --device cpu or auto")
        return torch.device("cuda", local_rank)
    if name == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise MarionetteError("--device mps: Apple Metal is not available; use --device cpu or auto")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise MarionetteError(f"--device must be auto, cpu, cuda or mps, got {name!r}")


@dataclass
class Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> Dist:
    """Join the torchrun process group when launched by torchrun, else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(world=dist.get_world_size(), rank=dist.get_rank(), local_rank=local)


def _all_true(flag: bool, d: Dist, device) -> bool:
    if not d.enabled:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def _broadcast_flag(flag: bool, d: Dist, device) -> bool:
    if not d.enabled:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item() > 0.5)


# ---------------------------------------------------------------------------- checkpoints
def _param_names(model: torch.nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def optimizer_tensors(model, opt) -> tuple[dict, list]:
    """Adam state flattened to ``optim.<param name>.<key>`` tensors, and the param groups without params."""
    names = _param_names(model)
    sd = opt.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            tensors[f"optim.{names[idx]}.{key}"] = torch.as_tensor(value).detach().cpu().clone()
    groups = [{k: v for k, v in g.items() if k != "params"} | {"param_names": [names[i] for i in g["params"]]}
              for g in sd["param_groups"]]
    return tensors, groups


def load_optimizer_tensors(model, opt, tensors: dict, groups: list, where: str) -> None:
    names = _param_names(model)
    index = {n: i for i, n in enumerate(names)}
    # optimizer_tensors labels state index i with names[i]; index i is the optimizer's i-th parameter
    shapes = [tuple(p.shape) for g in opt.param_groups for p in g["params"]]
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if not key.startswith("optim."):
            continue
        pname, _, skey = key[len("optim."):].rpartition(".")
        if pname not in index:
            raise MarionetteError(f"{where}: optimizer state for unknown parameter {pname!r}")
        i = index[pname]
        want = () if skey == "step" else (shapes[i] if i < len(shapes) else None) if skey in _ADAM_STATE else None
        if want is None:
            raise MarionetteError(f"{where}: unknown optimizer state {key!r}")
        if tuple(value.shape) != want or not value.is_floating_point() or not bool(torch.isfinite(value).all()):
            raise MarionetteError(f"{where}: optimizer state {key!r} is {value.dtype} {list(value.shape)}, expected "
                                  f"finite floats of shape {list(want)}")
        if skey == "step" and not float(value) >= 0:
            raise MarionetteError(f"{where}: optimizer state {key!r} must be a step count >= 0, got {float(value)}")
        state.setdefault(index[pname], {})[skey] = value
    for i, st in state.items():
        if not {"step", "exp_avg", "exp_avg_sq"} <= set(st):
            raise MarionetteError(f"{where}: optimizer state of {names[i]!r} is incomplete (has {sorted(st)}, needs "
                                  "step, exp_avg, exp_avg_sq)")
    cur = opt.state_dict()["param_groups"]
    if len(groups) != len(cur):
        raise MarionetteError(f"{where}: optimizer has {len(groups)} parameter groups, expected {len(cur)}")
    new_groups = []
    for g, c in zip(groups, cur):
        pn = g.get("param_names", [])
        if not isinstance(pn, list) or [index.get(n) if isinstance(n, str) else None for n in pn] != c["params"]:
            raise MarionetteError(f"{where}: optimizer parameter groups do not match this model")
        group = {k: v for k, v in c.items() if k != "params"}  # a setting the file lacks keeps this run's value
        for k, v in g.items():
            if k == "param_names":
                continue
            if k not in c:
                raise MarionetteError(f"{where}: unknown optimizer setting {k!r}")
            group[k] = _optimizer_setting(v, c[k], k, f"{where}: optimizer setting {k!r}")
        new_groups.append(group | {"params": c["params"]})
    opt.load_state_dict({"state": state, "param_groups": new_groups})


_ADAM_STATE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
# Adam's settings outside these ranges divide by zero or take square roots of negatives
_ADAM_BOUNDS = {"lr": dict(lo=0), "betas": dict(lo=0, hi=1, hi_open=True), "eps": dict(lo=0, lo_open=True),
                "weight_decay": dict(lo=0)}


def _optimizer_setting(value, current, key: str, what: str):
    """A saved optimizer setting, of the same kind as this optimizer's own (a number, a pair, a flag...)."""
    if isinstance(current, bool) or current is None:
        if not (isinstance(value, bool) or value is None):
            raise MarionetteError(f"{what} must be true, false or null, got {str(value)[:40]!r}")
        return value
    bounds = _ADAM_BOUNDS.get(key, {})
    if is_number(current):
        return number(value, what, **bounds)
    if isinstance(current, (tuple, list)):
        if not isinstance(value, list) or len(value) != len(current):
            raise MarionetteError(f"{what} must be a list of {len(current)} numbers, got {str(value)[:40]!r}")
        return tuple(number(v, what, **bounds) for v in value)
    if isinstance(current, str):
        if not isinstance(value, str):
            raise MarionetteError(f"{what} must be a string, got {str(value)[:40]!r}")
        return value
    return current


def save_checkpoint(out: Path, actor: Actor, opt, step: int, train_doc: dict, keep: int = 2,
                    extra: dict | None = None) -> Path:
    ckdir = out / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    final = ckdir / name
    tmp = ckdir / (name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    tensors = {f"model.{k}": v for k, v in actor.state_dict().items()}
    opt_t, groups = optimizer_tensors(actor, opt)
    tensors.update(opt_t)
    tensors.update(extra or {})
    tensors["rng.torch"] = torch.get_rng_state()
    doc = mf.actor_header(actor)
    doc["checkpoint"] = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": step,
                         "param_groups": groups}
    doc["tensors"] = mf.write_tensors(tmp / "checkpoint.safetensors", tensors, {"format": CHECKPOINT_FORMAT})
    doc["training"] = train_doc
    mf.write_json(tmp / "checkpoint.json", doc)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    mf.write_json(ckdir / "latest.json", {"checkpoint": name, "step": step})
    # prune: keep the newest `keep` complete checkpoints (never the one just written)
    done = sorted(p for p in ckdir.iterdir() if p.is_dir() and p.name.startswith("step-")
                  and not p.name.endswith(".tmp"))
    for old in done[:-max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out: Path) -> Path | None:
    ptr = out / "checkpoints" / "latest.json"
    if not ptr.is_file():
        return None
    doc = mf.read_json(ptr, "checkpoint pointer")
    name = doc.get("checkpoint")
    if not (isinstance(name, str) and re.fullmatch(r"step-\d{1,12}", name)):
        raise MarionetteError(f"{ptr}: field 'checkpoint' must name a checkpoint folder such as 'step-0000250', "
                              f"got {str(name)[:60]!r}")
    path = out / "checkpoints" / name
    if not (path / "checkpoint.json").is_file():
        raise MarionetteError(f"{ptr}: points to {path}, which is missing or incomplete")
    return path


def load_checkpoint(path: Path, actor: Actor, opt, average: WeightAverage | None = None) -> dict:
    where = str(path / "checkpoint.json")
    doc = mf.read_json(path / "checkpoint.json", "checkpoint description")
    ck = doc.get("checkpoint", {})
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT or ck.get("version") != CHECKPOINT_VERSION \
            or isinstance(ck.get("version"), bool):
        raise MarionetteError(f"{where}: not a version-{CHECKPOINT_VERSION} Marionette training checkpoint")
    ck["step"] = number(ck.get("step"), f"{where}: field 'checkpoint.step'", lo=0, hi=10 ** 12, integer=True)
    groups = ck.get("param_groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise MarionetteError(f"{where}: field 'checkpoint.param_groups' must be a list of objects")
    if not isinstance(doc.get("training", {}), dict):
        raise MarionetteError(f"{where}: field 'training' must be an object")
    cfg = mf.config_from_header(doc, where)
    if cfg.to_dict() != actor.config.to_dict():
        raise MarionetteError(f"{where}: the checkpoint was made with a different actor configuration "
                              f"({cfg.to_dict()}) than requested ({actor.config.to_dict()}); resume with the same "
                              "--mode/--latent-dim/--decoder/--upsample or start a new folder")
    tensors = mf.read_tensors(path / "checkpoint.safetensors", doc.get("tensors"), where)
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    mf.load_state_checked(actor, model_state, str(path / "checkpoint.safetensors"), None)
    load_optimizer_tensors(actor, opt, tensors, groups, where)
    if average is not None and not average.load(tensors, where):
        average.shadow = {n: p.detach().clone() for n, p in actor.named_parameters() if n in average.shadow}
    if "rng.torch" in tensors:
        rng = tensors["rng.torch"]
        if rng.dtype != torch.uint8 or rng.shape != torch.get_rng_state().shape:
            raise MarionetteError(f"{where}: tensor 'rng.torch' is {rng.dtype} {list(rng.shape)}, expected the "
                                  f"random generator state (uint8 {list(torch.get_rng_state().shape)})")
        torch.set_rng_state(rng)
    return doc


# ---------------------------------------------------------------------------- training
def _param_groups(actor: Actor, lr: float) -> list[dict]:
    # widths/densities live in log space: a smaller step keeps the bones from collapsing early
    groups = [
        {"params": list(actor.decoder.parameters()) + [actor.actor_code], "lr": lr, "name": "decoder"},
        {"params": [actor.codes, actor.background] + ([actor.texture.maps] if actor.config.texture_channels else [])
         + ([actor.pose_code_weights] if actor.config.pose_conditioning else [])
         + ([actor.light_code_weights] if actor.config.light_conditioning else []),
         "lr": lr * 5, "name": "codes"},
        {"params": list(actor.primitives.parameters()), "lr": lr * 0.5, "name": "primitives"},
    ]
    if actor.config.colour_cameras:
        groups.append({"params": [actor.camera_colour], "lr": lr, "name": "camera_colour"})
    if actor.config.pose_frames:
        # Adam steps are about lr (1 mm); the images pull a frame's offsets only when the frame is in a
        # batch (a few dozen times in an hour on a CPU), the prior at every step
        groups.append({"params": [actor.pose_offsets], "lr": lr, "name": "pose_offsets"})
    return groups


POSE_SIGMA_M = 0.02  # a correction of this size costs as much as ...
POSE_SMOOTH_M = 0.01  # ... a change of this size between consecutive frames


def pose_prior(offsets: torch.Tensor, trained_rows: torch.Tensor) -> torch.Tensor:
    """Penalty on the skeleton corrections [T, J, 3]: small (in units of ``POSE_SIGMA_M``) on the
    trained rows and smooth in time (``POSE_SMOOTH_M`` between consecutive rows)."""
    size = (offsets[trained_rows] / POSE_SIGMA_M).pow(2).mean()
    if offsets.shape[0] < 2:
        return size
    return size + ((offsets[1:] - offsets[:-1]) / POSE_SMOOTH_M).pow(2).mean()


def capture_resolution(cap) -> int:
    """The capture's own image size (longer side), the default training resolution."""
    res = cap.meta.get("resolution")
    if isinstance(res, list) and len(res) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_RENDER_SIDE for v in res):
        return int(max(res))
    return int(max(max(c.width, c.height) for c in cap.cameras))


def _lr_factor(step: int, total: int, warmup: int = 50) -> float:
    if step < warmup:
        return (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))  # cosine to 10%


def _image_grid(rgb, alpha, truth, mask, n: int = 2) -> torch.Tensor:
    """[3, H*n, W*3]: truth | render | |error|x4, composited over mid-grey."""
    rows = []
    grey = 0.5
    for i in range(min(n, rgb.shape[0])):
        t = truth[i] * mask[i] + grey * (1 - mask[i])
        r = rgb[i] * alpha[i] + grey * (1 - alpha[i])
        e = ((t - r).abs() * 4).clamp(0, 1)
        rows.append(torch.cat([t, r, e], dim=2))
    return torch.cat(rows, dim=1).clamp(0, 1).detach().cpu()


def train(cfg: TrainConfig, _poison_step: int | None = None) -> dict:
    """Train (or resume) an actor; returns a summary dict. ``_poison_step`` is a test hook that makes the
    loss NaN at that step, to exercise the NaN guard.

    A run that fails (or is interrupted) before it saved anything removes the actor folder it
    created, so a failed ``marionette train`` leaves no empty actor folder behind."""
    cfg.validate()
    out = Path(cfg.out)
    created = out.absolute()
    while not created.parent.exists() and created.parent != created:
        created = created.parent  # the topmost folder this run will create (None: out exists)
    created = None if out.exists() else created
    try:
        return _train(cfg, _poison_step)
    except BaseException:
        if created is not None and int(os.environ.get("RANK", "0")) == 0:
            _remove_unsaved(out, created)
        raise


def _remove_unsaved(out: Path, created: Path) -> None:
    """Remove the folders this run created when the actor folder holds no actor and no checkpoint."""
    if not (out / mf.JSON_FILE).exists() and not (out / "checkpoints" / "latest.json").exists():
        shutil.rmtree(created, ignore_errors=True)


def _train(cfg: TrainConfig, _poison_step: int | None = None) -> dict:
    """The training run as named stages: data, model, resume, the loop (batch -> losses -> optimiser
    step -> logs, snapshots, checkpoints), the held-out evaluation."""
    run = _Run(cfg, _poison_step)
    run.load_data()
    run.build_model()
    if not run.resume():
        return {"steps": run.step, "resumed_from": run.step}
    run.start()
    try:
        while run.step < cfg.steps:
            b = run.next_batch()
            parts, res = run.losses(b)
            run.optimise(parts["loss"])
            run.record(parts)
            if run.save_progress(res, b):
                break
    finally:
        run.close()
    return run.finish()


class _Run:
    """State of one training run; each method is a stage of ``_train``."""

    def __init__(self, cfg: TrainConfig, poison_step: int | None):
        self.cfg = cfg
        self.poison_step = poison_step
        self.t_start = time.time()
        self.d = init_distributed(cfg.device)
        self.device = resolve_device(cfg.device, self.d.local_rank)
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        self.out = Path(cfg.out)
        if self.d.main:
            _prepare_out(self.out, cfg)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.step = 0
        self.prev_elapsed = 0.0
        self.history: list[dict] = []  # earlier runs of this actor (provenance survives --resume)
        self.recent: list[tuple[float, float]] = []
        self.last_ck_step: int | None = None
        self.stopped_for_time = False
        self.bar = self.writer = None

    # ------------------------------------------------------------------ set-up
    def load_data(self) -> None:
        from engine.neural.actor.dataset import ViewSet, check_trainable_frames, open_capture, split_views

        cfg = self.cfg
        self.cap = cap = open_capture(cfg.capture)
        native = capture_resolution(cap)
        if cfg.resolution is None:
            cfg.resolution = native
        elif cfg.resolution > native:
            # upsampled views add no detail to learn, only cost ((r / native)² per step)
            raise MarionetteError(
                f"{cap.root}: --resolution {cfg.resolution} is above the capture's own {native}-pixel images "
                f"(capture.json 'resolution' / cameras.json width and height); use --resolution {native} or less, "
                f"or remake the capture larger (marionette ingest / make-capture --resolution)")
        self.views = split_views(cap, "train")
        check_trainable_frames(cap, cap.joint_set, sorted({v.frame for v in self.views}))
        bar = _bar(cfg, self.d, len(self.views), "loading views")
        self.ds = ViewSet(cap, self.views, resolution=cfg.resolution, progress=(bar.update if bar else None))
        if bar:
            bar.close()
        if self.ds.size is None and cfg.batch > 1:
            raise MarionetteError(f"{cap.root}: cameras differ in aspect ratio, so views have different sizes; "
                                  "use --batch 1")

    def build_model(self) -> None:
        cfg, cap = self.cfg, self.cap
        acfg = make_config(cap.joint_set.name, latent_dim=cfg.latent_dim, mode=cfg.mode, preset=cfg.preset,
                           upsample=cfg.upsample, per_bone=cfg.per_bone,
                           colour_cameras=len(cap.train_cameras) if cfg.colour_cameras_enabled() else 0,
                           pose_frames=len(cap.frames) if cfg.refine_pose else 0,
                           texture_channels=cfg.texture_channels, texture_size=cfg.texture_size,
                           pose_conditioning=int(cfg.pose_conditioning), texture_charts=cfg.texture_charts,
                           light_conditioning=int(cfg.light_conditioning))
        self.actor = Actor(acfg, seed=cfg.seed).to(self.device)
        self.opt = torch.optim.Adam(_param_groups(self.actor, cfg.lr), betas=(0.9, 0.99))
        self.base_lrs = [g["lr"] for g in self.opt.param_groups]
        self.average = WeightAverage(self.actor, cfg.ema) if cfg.ema > 0 else None
        wpath = find_perceptual_weights(cfg.perceptual_weights)
        self.loss_fn = ActorLoss(perceptual=VGGPerceptual(wpath).to(self.device) if wpath is not None else None)

    def resume(self) -> bool:
        """Continue from the latest checkpoint with --resume; False when it is already complete."""
        cfg, out = self.cfg, self.out
        if not cfg.resume:
            return True
        ck = latest_checkpoint(out)
        if ck is None:
            raise MarionetteError(f"{out}: --resume given but there is no checkpoint in {out / 'checkpoints'}")
        doc = load_checkpoint(ck, self.actor, self.opt, self.average)
        self.step = self.last_ck_step = int(doc["checkpoint"]["step"])
        prev = doc.get("training", {}) if isinstance(doc.get("training"), dict) else {}
        elapsed = prev.get("time_s", 0.0)
        self.prev_elapsed = float(elapsed) if is_number(elapsed) and 0 <= elapsed < 1e12 else 0.0
        runs = prev.get("previous_runs", [])
        self.history = [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []
        self.history += [{"command": prev.get("command"), "until_step": self.step, "time_s": prev.get("time_s"),
                          "device": prev.get("device")}]
        if self.step >= cfg.steps:
            if self.d.main:
                print(f"{ck}: already at step {self.step} >= --steps {cfg.steps}; nothing to do", file=sys.stderr)
            return False
        return True

    def start(self) -> None:
        from torch.utils.data.distributed import DistributedSampler

        cfg, d, ds = self.cfg, self.d, self.ds
        self.model = self.actor
        if d.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(self.actor, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        # the same sampler with one replica gives the single-process order, so runs are reproducible either way
        self.sampler = DistributedSampler(ds, num_replicas=d.world, rank=d.rank, shuffle=True, seed=cfg.seed,
                                          drop_last=True)
        self.batch = min(cfg.batch, max(1, len(self.sampler)))
        self.per_epoch = max(1, len(self.sampler) // self.batch)
        self.writer = _tensorboard(cfg, self.out) if d.main else None
        self.H, self.W = ds.size[1], ds.size[0]
        if cfg.crop:
            self.H, self.W = min(self.H, cfg.crop), min(self.W, cfg.crop)
        doc = _train_doc(cfg, self.cap, d, self.device, ds.size[1], ds.size[0])
        # the person's height in the views trained on (crops keep the views' scale): what renders match
        heights = _person_heights(ds)
        doc["person_height_px"] = round(float(np.median(heights)), 2) if heights else None
        # the spread over the training views (cameras at other distances): sizes the decoder has seen
        doc["person_height_range_px"] = [round(float(np.percentile(heights, q)), 2) for q in (5, 95)] \
            if heights else None
        self.actor.native_person_px = doc["person_height_px"]
        self.actor.person_range_px = doc["person_height_range_px"]
        self.trained_rows = torch.as_tensor(sorted({self.cap.frame_row(v.frame) for v in self.views}),
                                            device=self.device)
        if cfg.refine_pose:
            # which skeleton the corrections belong to: evaluate applies them only to this one
            doc["pose_skeleton_sha256"] = mf.sha256_file(self.cap.root / "joints3d.npz")
        if self.history:
            doc["previous_runs"] = self.history
        self.train_doc = doc
        self.bar = _bar(cfg, d, cfg.steps, "training", initial=self.step)
        self.gen = torch.Generator().manual_seed(cfg.seed + 7919 * self.step)  # augmentation draws
        self.mirror_perm = mirror_permutation(self.actor.joint_set) if cfg.mirror > 0 else None
        self.snapshots = sorted(float(m) for m in cfg.snapshot_minutes if float(m) * 60 > self.prev_elapsed)

    # ------------------------------------------------------------------ one step
    def next_batch(self) -> dict:
        epoch, offset = divmod(self.step, self.per_epoch)
        self.sampler.set_epoch(epoch)
        idx = list(self.sampler)[offset * self.batch:(offset + 1) * self.batch]
        b = {k: v.to(self.device, non_blocking=True) for k, v in self.ds.batch(idx).items()}
        for g, base in zip(self.opt.param_groups, self.base_lrs):
            g["lr"] = base * _lr_factor(self.step, self.cfg.steps)
        if self.cfg.crop:
            b = crop_views(b, self.gen, self.cfg.crop)
        if self.cfg.roll > 0:
            b = roll_views(b, self.gen, self.cfg.roll)
        if self.cfg.augment:
            b = augment_views(b, self.gen)
        if self.cfg.mirror > 0:
            flip = torch.rand(b["rgb"].shape[0], generator=self.gen) < self.cfg.mirror
            b = mirror_images(b, flip.to(self.device))
        return b

    def losses(self, b: dict) -> tuple[dict, dict]:
        cfg, actor = self.cfg, self.actor
        joints = actor.refine_joints(b["joints"], b["row"])
        extra = {}
        if "mirror" in b:
            joints = mirror_joints(joints, b["R"], b["t"], b["mirror"], self.mirror_perm)
            if actor.config.light_conditioning:
                extra["light_mirror"] = mirror_reflections(b["R"].to(joints.dtype), b["mirror"])
        res = self.model(joints, b["K"], b["R"], b["t"], self.H, self.W, **extra)
        rgb = actor.colour_correct(res["rgb"], b["camera_index"].clamp_min(0))
        parts = self.loss_fn(rgb, res["alpha"], b["rgb"], b["mask"], b.get("valid"))
        if cfg.silhouette_weight > 0:
            parts["silhouette"] = silhouette_loss(res["latent_alpha"], b["mask"], b.get("valid"))
            parts["loss"] = parts["loss"] + cfg.silhouette_weight * parts["silhouette"]
        if cfg.latent_colour_weight > 0:
            parts["latent_colour"] = latent_colour_loss(res["latent"], b["rgb"], b["mask"])
            parts["loss"] = parts["loss"] + cfg.latent_colour_weight * parts["latent_colour"]
        if actor.config.pose_frames:
            parts["pose"] = pose_prior(actor.pose_offsets, self.trained_rows)
            parts["loss"] = parts["loss"] + 1e-3 * cfg.pose_weight * parts["pose"]
        if actor.config.colour_cameras:
            # keep the corrections small: the decoder, not the cameras, should explain the person
            parts["loss"] = parts["loss"] + 1e-2 * actor.camera_colour.pow(2).mean()
        if self.poison_step is not None and self.step == self.poison_step:
            parts["loss"] = parts["loss"] * float("nan")
        return parts, res

    def optimise(self, loss: torch.Tensor) -> None:
        """Backward and Adam step, refusing non-finite losses, gradients and parameters."""
        d, device, out, step = self.d, self.device, self.out, self.step
        if not _all_true(bool(torch.isfinite(loss)), d, device):
            raise NonFiniteError(_nan_message(out, step, "the loss", self.last_ck_step))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.actor.parameters(), 1.0)
        if not _all_true(bool(torch.isfinite(gnorm)), d, device):
            raise NonFiniteError(_nan_message(out, step, "the gradients", self.last_ck_step))
        self.opt.step()
        if not all(bool(torch.isfinite(p).all()) for p in self.actor.parameters()):
            raise NonFiniteError(_nan_message(out, step, "the parameters", self.last_ck_step))
        if self.average is not None:
            self.average.update()
        self.step += 1

    def averaged(self):
        """The actor as it is saved and evaluated: with the running average of its weights under --ema."""
        return self.average.swapped_in() if self.average is not None else nullcontext(self.actor)

    def record(self, parts: dict) -> None:
        loss = float(parts["loss"].detach())
        self.recent = (self.recent + [(loss, float(parts["psnr"]))])[-50:]
        if self.bar:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", psnr=f"{float(parts['psnr']):.2f}")
        if self.writer is not None and (self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps):
            for k, v in parts.items():
                self.writer.add_scalar(f"train/{k}", float(v.detach()), self.step)
            self.writer.add_scalar("train/lr", self.opt.param_groups[0]["lr"], self.step)
            self.writer.add_scalar("train/mean_width_m", float(self.actor.primitives.widths().detach().mean()),
                                   self.step)

    def _metrics(self) -> dict:
        return {"train_loss": _mean(self.recent, 0), "train_psnr": _mean(self.recent, 1)}

    def save_progress(self, res: dict, b: dict) -> bool:
        """Snapshots, checkpoints and the time limit; True when the run must stop for time."""
        cfg, d, step = self.cfg, self.d, self.step
        elapsed_min = (self.prev_elapsed + time.time() - self.t_start) / 60.0
        while d.main and self.snapshots and elapsed_min >= self.snapshots[0]:
            m = self.snapshots.pop(0)
            self.train_doc.update(steps=step, time_s=round(elapsed_min * 60, 1), metrics=self._metrics())
            with self.averaged():
                mf.save_actor(self.out / "snapshots" / f"{m:g}min", self.actor, dict(self.train_doc))
        out_of_time = cfg.max_minutes is not None and (time.time() - self.t_start) > cfg.max_minutes * 60
        self.stopped_for_time = _broadcast_flag(out_of_time, d, self.device)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or self.stopped_for_time:
            self.train_doc.update(steps=step, time_s=round(self.prev_elapsed + time.time() - self.t_start, 1),
                                  metrics=self._metrics())
            if d.main:
                save_checkpoint(self.out, self.actor, self.opt, step, dict(self.train_doc), keep=cfg.keep_checkpoints,
                                extra=self.average.tensors() if self.average is not None else None)
                with self.averaged():
                    mf.save_actor(self.out, self.actor, dict(self.train_doc))
                if self.writer is not None:
                    self.writer.add_image("train/truth|render|error",
                                          _image_grid(res["rgb"], res["alpha"], b["rgb"], b["mask"]), step)
                    self.writer.flush()
            self.last_ck_step = step
        return self.stopped_for_time

    # ------------------------------------------------------------------ the end
    def close(self) -> None:
        if self.bar:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def finish(self) -> dict:
        cfg, cap, d, actor = self.cfg, self.cap, self.d, self.actor
        summary = {"steps": self.step, "time_s": round(time.time() - self.t_start, 1), **self._metrics(),
                   "stopped_for_time": self.stopped_for_time}
        if d.main and cfg.eval_views > 0 and (cap.heldout_cameras or cap.heldout_frames):
            from engine.neural.actor.evaluate import evaluate_actor

            actor.eval()
            actor.pose_skeleton_sha256 = self.train_doc.get("pose_skeleton_sha256")
            with self.averaged():
                ev = evaluate_actor(actor, cap, resolution=cfg.resolution, max_views=cfg.eval_views,
                                    device=self.device, progress=cfg.progress)
                self.train_doc["metrics"] = {**self.train_doc.get("metrics", {}), "heldout": ev["overall"],
                                             "heldout_views": ev["views"]}
                self.train_doc.update(steps=self.step,
                                      time_s=round(self.prev_elapsed + time.time() - self.t_start, 1))
                mf.save_actor(self.out, actor, dict(self.train_doc))
            summary["heldout"] = ev["overall"]
        if d.enabled:
            import torch.distributed as dist

            dist.barrier()
        return summary


def _person_heights(ds) -> list[float]:
    """On-screen heights (pixels, at the views' resolution) of the person in up to 64 training views."""
    from engine.neural.actor.model import person_height_px

    hs = []
    for i in range(0, len(ds), max(1, len(ds) // 64)):
        it = ds[i]
        J = it["joints"][None]
        hs.append(float(person_height_px(J, it["K"][None], it["R"][None], it["t"][None])[0]))
    return hs


def _mean(rows, i):
    return round(float(np.mean([r[i] for r in rows])), 5) if rows else None


def _nan_message(out: Path, step: int, what: str, last: int | None) -> str:
    keep = (f"the last good checkpoint (step {last}) and actor are kept in {out}; continue with --resume, "
            "perhaps with a lower --lr" if last is not None else
            "no checkpoint had been written yet (first one at --checkpoint-every); nothing was saved")
    return f"training stopped at step {step}: {what} became NaN or infinite; {keep}"


def _prepare_out(out: Path, cfg: TrainConfig) -> None:
    if out.exists() and not out.is_dir():
        raise MarionetteError(f"{out}: exists and is not a folder")
    has_content = out.is_dir() and any(out.iterdir())
    if has_content and not cfg.resume:
        if not cfg.overwrite:
            raise MarionetteError(f"{out}: folder exists and is not empty; pass --resume to continue its training, "
                                  "--overwrite to start over, or choose another folder")
        for name in ("checkpoints", mf.JSON_FILE, mf.TENSOR_FILE, "logs"):
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MarionetteError(f"{out}: cannot create the actor folder ({exc.strerror})") from None


def _train_doc(cfg: TrainConfig, cap, d: Dist, device, H: int, W: int) -> dict:
    return {
        "capture": str(Path(cap.root).resolve()), "capture_generator": cap.meta.get("generator"),
        "train_cameras": cap.train_cameras, "heldout_cameras": cap.heldout_cameras,
        "heldout_frames": cap.heldout_frames, "resolution": [W, H], "seed": cfg.seed,
        "command": cfg.command or " ".join(sys.argv), "config": {k: v for k, v in asdict(cfg).items()
                                                               if k not in ("command", "progress")},
        "device": str(device), "world_size": d.world, "torch": torch.__version__, "steps": 0,
    }


def _bar(cfg: TrainConfig, d: Dist, total: int, desc: str, initial: int = 0):
    if not (cfg.progress and d.main):
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step" if desc == "training" else "view",
                dynamic_ncols=True, file=sys.stderr)


def _tensorboard(cfg: TrainConfig, out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: training works without it
        return None
    return SummaryWriter(log_dir=str(cfg.log_dir or (out / "logs")))
