"""The README's examples run as written.

Every ``marionette ...`` command in the README's capability table is extracted from README.md
(so the two cannot drift apart). One test parses each with the real argument parser; another
runs them all (about 30 s), in order, in a scratch folder on small data: options appended to a
command override the README's (argparse keeps the last), e.g. ``train ... --steps 2``, and the
licence-restricted SMPL model path is replaced by a synthetic model of the same format.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from engine.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The ``marionette`` commands with arguments in the README's capability table, in order."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Capabilities"):text.index("## Data formats")]
    table = "\n".join(line for line in table.splitlines() if line.startswith("|"))  # the table's rows only
    return [c for c in re.findall(r"`(marionette [^`]+)`", table) if len(shlex.split(c)) > 2]


def test_readme_has_the_examples_this_test_runs():
    names = [shlex.split(c)[1] for c in readme_commands()]
    for cmd in ("ingest", "triangulate", "calibrate-from-keypoints", "make-capture", "train", "evaluate", "render",
                "fit-smpl", "resample", "retarget"):
        assert cmd in names, f"README capability table lost its '{cmd}' example"


@pytest.mark.parametrize("command", readme_commands())
def test_readme_example_parses(command):
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert callable(args._run)


# small-data overrides, appended to the README's command (the README's own options stay)
SMALL = {
    "ingest": ["--frames", "0-99:33", "--resolution", "64", "--workers", "1"],
    "train": ["--steps", "2", "--resolution", "32", "--eval-views", "0", "--quiet"],
    "render": ["--frames", "0-1", "--quiet"],
    "make-capture": ["--cameras", "2", "--heldout-cameras", "1", "--frames", "2", "--resolution", "32"],
    "evaluate": ["--max-views", "2", "--quiet"],
    "fit-smpl": ["--iters", "2"],
}
ORDER = ["triangulate", "calibrate-from-keypoints", "resample", "retarget", "fit-smpl", "ingest", "train",
         "evaluate", "render", "make-capture"]


def test_readme_examples_run(tmp_path, monkeypatch, capsys):
    pytest.importorskip("mediapipe")
    from engine.synthetic.smpl import make_synthetic_smpl_model
    from engine.body.smpl.model import save_smpl_npz

    (tmp_path / "engine").symlink_to(ROOT / "engine")  # the examples' relative data paths
    monkeypatch.chdir(tmp_path)
    save_smpl_npz(tmp_path / "smpl.npz", make_synthetic_smpl_model(1, num_vertices=1500))
    cmds = sorted(readme_commands(), key=lambda c: ORDER.index(shlex.split(c)[1]))
    for command in cmds:
        argv = shlex.split(command)[1:]
        if argv[0] == "fit-smpl":
            argv[argv.index("--model") + 1] = str(tmp_path / "smpl.npz")
        argv += SMALL.get(argv[0], [])
        rc = main(argv)
        out = capsys.readouterr()
        assert rc == 0, f"README example failed: {command}\n{out.err[-2000:]}"
    for produced in ("skel.npz", "skel.png", "cams.json", "skel60.npz", "skel_on_actor.npz", "fit.npz",
                     "captures/pose2sim/capture.json", "actors/me/actor.json", "renders",
                     "captures/train8/capture.json"):
        assert (tmp_path / produced).exists(), produced
