"""The README's main job, end to end: keypoints -> skeleton -> armature -> neural frames."""


import numpy as np
import pytest

pytest.importorskip("bpy")
pytest.importorskip("torch")

from engine.cli import main  # noqa: E402


def test_demo_renders_a_person(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["demo", "-o", str(out), "--resolution", "96", "--seconds", "0.2", "--fps", "10"])
    assert rc == 0
    frames = sorted((out / "frames").glob("frame_*.png"))
    assert len(frames) == 2
    for name in ("skeleton.npz", "skeleton_on_actor.npz", "demo.gif", "demo.blend", "demo_contact_sheet.png"):
        assert (out / name).is_file(), name
    from PIL import Image

    img = np.asarray(Image.open(frames[0]).convert("RGB")).astype(np.float64) / 255
    background = img[0, 0]
    person = np.abs(img - background).max(axis=-1) > 0.1
    # a person, not a blank frame and not noise everywhere
    assert 0.02 < person.mean() < 0.6, person.mean()
    assert "motion transfer" in capsys.readouterr().out
