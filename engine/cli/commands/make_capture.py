"""``marionette make-capture``: render a synthetic multi-view capture with Blender (bpy module).

This module validates the arguments (cheaply, without bpy) and then runs
``python -m addon.synthetic.make_capture`` with the same arguments in a subprocess of the
same Python, turning its progress lines into a progress bar. The engine never imports bpy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path

from engine import MarionetteError
from engine.synthetic.capture_config import (DESCRIPTION, ERROR_PREFIX, INFO_PREFIX, PROGRESS_PREFIX,  # noqa: F401
                                             CaptureConfig, add_arguments, argv_from_args, build_parser,
                                             config_from_args)

NAME = "make-capture"
HELP = "render a synthetic multi-view capture (images, masks, cameras, 3D joints, 2D keypoints) with Blender"
ORDER = 5


def run(args) -> int:
    config_from_args(args)  # fail fast, before Blender starts
    from tqdm import tqdm

    cmd = [sys.executable, "-m", "addon.synthetic.make_capture"] + argv_from_args(args)
    root = Path(__file__).resolve().parents[3]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    tail: deque = deque(maxlen=40)
    error = None
    bar = None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=root,
                            bufsize=1)
    try:
        for line in proc.stdout:
            if line.startswith(PROGRESS_PREFIX):
                done, total, label = (line[len(PROGRESS_PREFIX):].rstrip("\n").split(" ", 2) + [""])[:3]
                if bar is None:
                    bar = tqdm(total=int(total), unit="view", desc="rendering", dynamic_ncols=True)
                bar.n = int(done)
                bar.set_postfix_str(label, refresh=False)
                bar.refresh()
            elif line.startswith(ERROR_PREFIX):
                error = line[len(ERROR_PREFIX):].strip()
            elif line.startswith(INFO_PREFIX):
                (tqdm.write if bar else print)(line[len(INFO_PREFIX):].rstrip("\n"))
            else:
                tail.append(line)
                if args.verbose:
                    (tqdm.write if bar else print)(line.rstrip("\n"))
        rc = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        _remove_partial(Path(args.output))
        raise
    finally:
        if bar is not None:
            bar.close()
    if error:
        raise MarionetteError(error)
    if rc != 0:
        _remove_partial(Path(args.output))
        raise MarionetteError(f"the Blender renderer exited with status {rc}; its last output:\n" + "".join(tail))
    return 0


def _remove_partial(out: Path) -> None:
    from engine.io.capture_folder import partial_path

    shutil.rmtree(partial_path(out), ignore_errors=True)
