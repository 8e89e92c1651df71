"""Data bundled with the engine (see each folder's README for origin and licence)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class DemoCapture:
    pose_dir: Path      # one OpenPose JSON folder per camera
    calibration: Path   # Qualisys .qca.txt
    fps: float
    joint_set: str
    up_axis: str


def demo_capture_paths() -> DemoCapture:
    """The vendored Pose2Sim ``S01_Demo_SingleTrial`` capture (4 cameras, 100 frames, 60 fps)."""
    root = DATA_DIR / "pose2sim_demo"
    return DemoCapture(pose_dir=root / "pose", calibration=root / "Calib.qca.txt", fps=60.0,
                       joint_set="BODY_25B", up_axis="Z")


def demo_actor_path() -> Path:
    """The shipped demo actor: the real person of the bundled Pose2Sim videos, learned with
    ``marionette ingest`` + ``marionette train`` (see ``demo_actor/README.md`` for the commands)."""
    from engine import MarionetteError

    path = DATA_DIR / "demo_actor"
    if not (path / "actor.json").is_file():
        raise MarionetteError(f"{path}: the demo actor is missing from this installation")
    return path


def synthetic_actor_path() -> Path:
    """The second shipped actor, learned from a synthetic capture of a CC0 MakeHuman body
    (``synthetic_actor/README.md``): useful for two-actor scenes."""
    from engine import MarionetteError

    path = DATA_DIR / "synthetic_actor"
    if not (path / "actor.json").is_file():
        raise MarionetteError(f"{path}: the synthetic actor is missing from this installation")
    return path
