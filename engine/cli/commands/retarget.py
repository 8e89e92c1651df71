"""``marionette retarget``: move a skeleton sequence's motion onto another skeleton (motion transfer)."""

from __future__ import annotations

NAME = "retarget"
HELP = "retarget a skeleton .npz onto another actor's skeleton (its bone lengths) or a rig such as SMPL-24"
ORDER = 45
DESCRIPTION = """\
Retarget the motion of a skeleton sequence onto another skeleton, keeping the target's
own bone lengths: limb directions follow the source, the hips travel scaled by the
ratio of leg lengths, and feet stay planted where the source's touched the ground.

The target is either another actor's capture (--onto: its median bone lengths and
joint set; this is motion transfer between actors), or a rig map with a default rest
skeleton (--target smpl_24). The output is a skeleton .npz in the target's joint set,
ready for 'marionette render' with the target actor's model.

Example (dance of actor A rendered as actor B):
  marionette retarget captures/a/joints3d.npz --onto captures/b/joints3d.npz -o a_on_b.npz
  marionette render actors/b --skeleton a_on_b.npz --camera captures/b/cameras.json \\
      --camera-name cam03 -o renders/a_on_b
"""


def add_arguments(parser):
    parser.add_argument("input", help="skeleton sequence .npz with the motion (the source)")
    parser.add_argument("-o", "--output", required=True, help="output skeleton .npz (written atomically)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--onto", metavar="ACTOR.npz",
                        help="skeleton sequence of the target actor (its bone lengths and joint set are used)")
    target.add_argument("--target", metavar="RIG",
                        help="a rig map with a default rest skeleton, e.g. smpl_24")
    parser.add_argument("--root", choices=("keep", "in_place"), default="keep",
                        help="keep: hips travel like the source's (scaled by leg length); in_place: no horizontal "
                             "travel, at the target's own place (default keep)")
    parser.add_argument("--no-feet", action="store_true", help="do not pin feet during ground contacts")
    parser.add_argument("--contact-height", type=float, default=0.05,
                        help="metres above a foot joint's standing height that still count as contact (default 0.05)")
    parser.add_argument("--contact-speed", type=float, default=0.3,
                        help="metres per second below which a low foot joint is in contact (default 0.3)")


def run(args) -> int:
    from engine import MarionetteError
    from engine.body.kinematics import Rig
    from engine.motion.retarget import retarget, rig_from_skeleton
    from engine.body.bone_maps import load_rig
    from engine.io.skeleton_file import load_skeleton, save_skeleton
    from engine.validate import number, output_file

    number(args.contact_height, "--contact-height", lo=0)
    number(args.contact_speed, "--contact-speed", lo=0)
    output_file(args.output, "-o", suffix=".npz")
    src = load_skeleton(args.input)
    if args.onto:
        actor = load_skeleton(args.onto)
        try:
            rig = rig_from_skeleton(actor)
        except MarionetteError as exc:
            raise MarionetteError(f"{args.onto}: {exc}") from None
        label = f"{args.onto} ({actor.joint_set.name})"
    else:
        rig = Rig.from_rig_map(load_rig(args.target))
        label = args.target
    try:
        res = retarget(src, rig, root=args.root, feet=not args.no_feet, contact_height=args.contact_height,
                       contact_speed=args.contact_speed)
    except MarionetteError as exc:
        raise MarionetteError(f"{args.input}: {exc}") from None
    out = res.to_skeleton()
    if "frame_indices" in src.extras:
        out.extras["frame_indices"] = src.extras["frame_indices"]
    save_skeleton(args.output, out)
    pinned = sum(int(m.sum()) for m in res.contacts.values())
    print(f"{args.output}: {out.num_frames} frames of {src.joint_set.name} motion retargeted onto {label}; "
          f"root scale {res.scale:.3f}, {len(res.aims)} bones driven"
          + ("" if args.no_feet else f", feet pinned in {pinned} joint-frames"))
    return 0
