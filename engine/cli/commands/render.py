"""marionette render: render an actor along a skeleton sequence to RGBA PNGs (no Blender needed)."""

NAME = "render"
HELP = "render a trained actor along a skeleton .npz from a camera to RGBA PNGs"
ORDER = 62
DESCRIPTION = """Render a trained actor for every frame of a skeleton sequence, seen from one camera
of a camera JSON (the project's format, e.g. a capture's cameras.json). Writes
OUT_DIR/frame_NNNNNN.png: 8-bit RGBA, straight (non-premultiplied) sRGB colour and
alpha, exactly what the decoder outputs. A skeleton in another joint set is mapped
onto the actor's when every joint the actor's bones need can be obtained.

Example:
  marionette render actors/me --skeleton captures/train8/joints3d.npz \\
      --camera captures/train8/cameras.json --camera-name cam03 -o renders/me --frames 0-29
"""


def add_arguments(p):
    p.add_argument("actor", metavar="ACTOR_DIR", help="actor folder written by 'marionette train'")
    p.add_argument("--skeleton", required=True, metavar="SEQ.npz", help="skeleton sequence (.npz)")
    p.add_argument("--camera", required=True, metavar="CAMERA_JSON", help="camera JSON file")
    p.add_argument("--camera-name", metavar="NAME", help="which camera of the file (needed when it has several)")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder for the PNGs")
    p.add_argument("--frames", metavar="A-B", help="rows of the sequence to render, inclusive, e.g. 0-29 (default all)")
    p.add_argument("--scale", type=float, default=1.0, help="scale the camera's resolution (default 1)")
    p.add_argument("--batch", type=int, default=4, help="frames per forward pass (default 4)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def parse_frames(spec: str | None, count: int) -> list[int]:
    from engine import MarionetteError

    if not spec:
        return list(range(count))
    try:
        if len(spec) > 40:
            raise ValueError
        if "-" in spec:
            a, b = (int(x) for x in spec.split("-", 1))
        else:
            a = b = int(spec)
    except ValueError:
        raise MarionetteError(f"--frames: expected A-B or A (row numbers), got {spec!r}") from None
    if a < 0 or b < a or b >= count:
        raise MarionetteError(f"--frames {spec}: the sequence has rows 0-{count - 1}")
    return list(range(a, b + 1))


def pick_camera(path, name):
    from engine import MarionetteError
    from engine.geometry.camera import load_cameras_json

    cams = load_cameras_json(path)
    if name is None:
        if len(cams) > 1:
            raise MarionetteError(f"{path}: holds {len(cams)} cameras ({', '.join(c.name for c in cams)}); "
                                  "choose one with --camera-name")
        return cams[0]
    for c in cams:
        if c.name == name:
            return c
    raise MarionetteError(f"{path}: no camera named {name!r} (cameras: {', '.join(c.name for c in cams)})")


def actor_joints(seq, actor, where: str):
    """The sequence's joints in the actor's joint set, or a clear error."""
    import numpy as np

    from engine import MarionetteError
    from engine.body.joint_sets import map_joints, mapping_matrix

    src, dst = seq.joint_set, actor.joint_set
    if src.name == dst.name:
        return seq.joints
    M = mapping_matrix(src, dst)
    missing = [dst.names[j] for j in actor.needed_joints() if not (M[j] != 0).any()]
    if missing:
        raise MarionetteError(f"{where}: the skeleton is {src.name} but the actor was trained on {dst.name}, and "
                              f"its joints {missing} cannot be obtained from {src.name}")
    return map_joints(seq.joints, src, dst).astype(np.float32)


def run(args) -> int:
    import os
    from pathlib import Path

    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from engine import MarionetteError
    from engine.neural.actor.model import check_joints
    from engine.neural.actor.model_file import load_actor
    from engine.neural.actor.train import resolve_device
    from engine.io.skeleton_file import load_skeleton
    from engine.validate import MAX_BATCH, MAX_RENDER_SIDE, number, output_folder

    number(args.batch, "--batch", lo=1, hi=MAX_BATCH, integer=True)
    number(args.scale, "--scale", lo=0, lo_open=True, hi=MAX_RENDER_SIDE)
    output_folder(args.output, "-o")
    device = resolve_device(args.device)
    actor, _ = load_actor(args.actor, device=device)
    seq = load_skeleton(args.skeleton)
    cam = pick_camera(args.camera, args.camera_name)
    if cam.has_distortion:
        raise MarionetteError(f"{args.camera}: camera {cam.name!r} has lens distortion; the renderer draws pinhole "
                              "images (set 'dist' to zeros or undistort)")
    if not (args.scale > 0):
        raise MarionetteError(f"--scale must be positive, got {args.scale}")
    side = max(cam.width, cam.height) * args.scale
    if side > MAX_RENDER_SIDE:
        raise MarionetteError(f"--scale {args.scale:g}: camera {cam.name!r} ({cam.width}x{cam.height}) would render "
                              f"{round(side)} pixels wide, more than {MAX_RENDER_SIDE}")
    if args.scale != 1.0:
        cam = cam.scaled(args.scale)
    rows = parse_frames(args.frames, seq.num_frames)
    joints = actor_joints(seq, actor, str(args.skeleton))[rows]
    check_joints(joints, actor.joint_set, actor.needed_joints(), where=str(args.skeleton))
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MarionetteError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    bar = None if args.quiet else tqdm(total=len(rows), desc="rendering", unit="frame", dynamic_ncols=True)
    written = 0
    for start in range(0, len(rows), max(1, args.batch)):
        chunk = rows[start:start + args.batch]
        rgb, alpha = actor.render_frames(joints[start:start + len(chunk)], cam, batch=args.batch, device=device)
        for r, c, a in zip(chunk, rgb, alpha):
            rgba = np.concatenate([c, a[..., None]], axis=-1)
            img = Image.fromarray((np.clip(rgba, 0, 1) * 255 + 0.5).astype(np.uint8), mode="RGBA")
            path = out / f"frame_{r:06d}.png"
            tmp = path.with_name(path.name + ".tmp.png")
            img.save(tmp)
            os.replace(tmp, path)
            written += 1
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()
    print(f"wrote {written} RGBA PNGs ({cam.width}x{cam.height}) to {out}")
    return 0
