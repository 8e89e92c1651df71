"""An exponential moving average of a model's weights (Polyak averaging).

With few training views the weights at any one Adam step fit the last batches a little too
well; their running average sits in a flatter spot that generalises better to new cameras and
poses, at no extra cost per step. The trainer saves the *averaged* weights as the actor and keeps
the raw ones for the optimiser.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from engine import MarionetteError


class WeightAverage:
    """Running average of every trainable parameter of ``model``.

    ``decay`` is the weight of the old average per step; early on it is lowered to
    ``(1 + n) / (10 + n)`` after ``n`` updates so the average is not dominated by the random
    initialisation (it would otherwise need ~1/(1-decay) steps to forget it).
    """

    PREFIX = "ema."

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise MarionetteError(f"--ema must be between 0 and 1 (exclusive), got {decay}")
        self.model = model
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        d = self.current_decay()
        for n, p in self.model.named_parameters():
            if n in self.shadow:
                self.shadow[n].lerp_(p.detach(), 1.0 - d)
        self.updates += 1

    @contextmanager
    def swapped_in(self):
        """The model holds the averaged weights inside the block, its own ones again after it."""
        params = dict(self.model.named_parameters())
        saved = {n: params[n].detach().clone() for n in self.shadow}
        try:
            with torch.no_grad():
                for n, v in self.shadow.items():
                    params[n].copy_(v)
            yield self.model
        finally:
            with torch.no_grad():
                for n, v in saved.items():
                    params[n].copy_(v)

    # ------------------------------------------------------------------ checkpoints
    def tensors(self) -> dict[str, torch.Tensor]:
        out = {self.PREFIX + n: v.detach().cpu().clone() for n, v in self.shadow.items()}
        out[self.PREFIX + "updates"] = torch.tensor(float(self.updates))
        return out

    def load(self, tensors: dict[str, torch.Tensor], where: str) -> bool:
        """Restore from checkpoint tensors; False (average restarted from the current weights) when the
        checkpoint has none, e.g. it was written by a run without ``--ema``."""
        mine = {k[len(self.PREFIX):]: v for k, v in tensors.items() if k.startswith(self.PREFIX)}
        if not mine:
            return False
        updates = mine.pop("updates", None)
        if set(mine) != set(self.shadow):
            missing, extra = sorted(set(self.shadow) - set(mine)), sorted(set(mine) - set(self.shadow))
            raise MarionetteError(f"{where}: the weight average does not match this model (missing {missing[:3]}, "
                                  f"unexpected {extra[:3]})")
        for n, v in mine.items():
            want = self.shadow[n]
            if v.shape != want.shape or not v.is_floating_point() or not bool(torch.isfinite(v).all()):
                raise MarionetteError(f"{where}: tensor '{self.PREFIX}{n}' is {v.dtype} {list(v.shape)}, expected "
                                      f"finite floats of shape {list(want.shape)}")
        if updates is None or updates.numel() != 1 or not float(updates) >= 0:
            raise MarionetteError(f"{where}: tensor '{self.PREFIX}updates' must be one count >= 0")
        for n, v in mine.items():
            self.shadow[n].copy_(v.to(self.shadow[n]))
        self.updates = int(float(updates))
        return True
