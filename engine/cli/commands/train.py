"""marionette train: learn an actor from a capture folder."""

NAME = "train"
HELP = "train a neural actor (bone Gaussians + decoder) on a capture folder"
ORDER = 60
DESCRIPTION = """Train a neural actor on a capture folder (images, masks, cameras, 3D joints; see
'marionette make-capture'). Training uses the capture's train cameras and all frames
except its held-out frames; held-out views are scored at the end.

Example (CPU, about 20 minutes for a first look):
  marionette train --capture captures/train8 -o actors/me --steps 1500 --resolution 128

Continue later, or longer:
  marionette train --capture captures/train8 -o actors/me --steps 4000 --resume

Several GPUs (PyTorch DistributedDataParallel; --batch is per process):
  torchrun --nproc_per_node 4 -m engine train --capture captures/train8 -o actors/me --device cuda

The CPU recipe (the settings measured best on the bundled real clip in a CPU hour:
tiny decoder, bone textures, pose-dependent codes, view augmentation and mirroring, weight
averaging, silhouette loss, pose refinement):
  marionette train --capture captures/real_nv -o actors/real --recipe cpu --steps 11000 --max-minutes 60

Watch it: tensorboard --logdir actors/me/logs
"""

# --recipe NAME: a measured set of options (docs/sections/50-neural-actor.md); an option given on the
# command line wins over the recipe's value
RECIPES = {
    "cpu": {"decoder": "tiny", "augment": True, "ema": 0.995, "silhouette_weight": 0.5, "refine_pose": True,
            "mirror": 0.5, "texture_channels": 8, "pose_conditioning": True},
}
# the defaults of the options a recipe may set, used when neither the command line nor a recipe does
PLAIN_DEFAULTS = {"decoder": "small", "augment": False, "ema": 0.0, "silhouette_weight": 0.0, "refine_pose": False,
                  "mirror": 0.0, "roll": 0.0, "texture_channels": 0, "pose_conditioning": False}


def add_arguments(p):
    p.add_argument("--capture", required=True, metavar="DIR", help="capture folder (with capture.json)")
    p.add_argument("-o", "--output", required=True, metavar="ACTOR_DIR", help="actor folder to write")
    p.add_argument("--steps", type=int, default=2000, help="optimisation steps in total (default 2000)")
    p.add_argument("--resolution", type=int, default=None,
                   help="longer image side in pixels that training renders at (default: the capture's own)")
    p.add_argument("--per-bone", type=int, default=4, metavar="K",
                   help="Gaussians per bone, each with its own latent vector, placed in the bone's frame so front "
                        "and back differ (default 4; 1 = the seed paper's one Gaussian per bone)")
    p.add_argument("--colour-correction", action="store_true",
                   help="learn a per-camera colour gain/offset during training (never applied at render time); "
                        "off by default: on the bundled clip it cost 0.5 dB on the held-out camera")
    p.add_argument("--batch", type=int, default=4, help="views per step (per process under torchrun; default 4)")
    p.add_argument("--mode", choices=("transmittance", "rochette"), default="transmittance",
                   help="renderer: front-to-back compositing (default) or the seed paper's soft weighting")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="default auto")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--resume", action="store_true", help="continue from the folder's latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start over in a non-empty actor folder")
    p.add_argument("--log-dir", metavar="DIR", help="TensorBoard folder (default ACTOR_DIR/logs)")
    p.add_argument("--lr", type=float, default=1e-3, help="decoder learning rate (default 1e-3)")
    p.add_argument("--recipe", choices=sorted(RECIPES),
                   help="a measured set of options: cpu = " + _describe(RECIPES["cpu"]) + " (the best held-out "
                        "figures in a CPU hour; options given explicitly win)")
    p.add_argument("--decoder", choices=("tiny", "medium", "small", "large"), default=None,
                   help="decoder size: tiny = base 8 ch, 2 levels; medium = base 16, 3 levels; small = base 32, "
                        "3 levels (CPU; the default); large = base 64, 4 levels (GPU)")
    p.add_argument("--upsample", type=int, choices=(1, 2), default=1,
                   help="2: render the latent image at half resolution and let the decoder upsample (faster)")
    p.add_argument("--latent-dim", type=int, default=16, help="latent channels per bone (default 16)")
    p.add_argument("--checkpoint-every", type=int, default=250, metavar="N", help="steps between checkpoints")
    p.add_argument("--max-minutes", type=float, metavar="M", help="stop (with a checkpoint) after M minutes")
    p.add_argument("--silhouette-weight", type=float, default=None, metavar="W",
                   help="weight of an L1 loss between the Gaussians' own alpha (before the decoder) and the person "
                        "mask, so the primitives explain the silhouette (default 0: off)")
    p.add_argument("--latent-colour-weight", type=float, default=0.0, metavar="W",
                   help="weight of an L1 loss between the first three latent channels (the Gaussians' own colour, "
                        "before the decoder) and the person's colours, so the colours live on the primitives in 3D "
                        "and new cameras see the same ones (default 0: off)")
    p.add_argument("--augment", action="store_true",
                   help="randomly zoom (0.85-1.15x) and shift (8 %%) training views, cameras changed to match")
    p.add_argument("--mirror", type=float, default=None, metavar="P",
                   help="share of training views mirrored left-right with the skeleton (left and right joints "
                        "swapped), a virtual camera per real one for a nearly symmetric person (default 0: off)")
    p.add_argument("--roll", type=float, default=None, metavar="DEG",
                   help="turn each training camera about its optical axis by a random angle up to DEG degrees, "
                        "image turned to match (default 0: off)")
    p.add_argument("--crop", type=int, default=None, metavar="N",
                   help="train on N x N windows round the person of the views at --resolution (e.g. --resolution "
                        "256 --crop 128: the cost of 128² steps, the person at 256² detail); renders of a smaller "
                        "person are then supersampled to match (default: whole views)")
    p.add_argument("--texture-channels", type=int, default=None, metavar="C",
                   help="feature channels of a learned map wrapped around each bone (a neural texture: detail "
                        "that stays on the body from every view); 0 = none (default; 8 in --recipe cpu)")
    p.add_argument("--texture-size", type=int, default=16, metavar="S",
                   help="size of each bone's map, along x around (default 16)")
    p.add_argument("--texture-charts", choices=("bones", "parts"), default="bones",
                   help="bones: a map per bone (default); parts: the bones of the trunk, the head and each foot "
                        "share one map round their part's axis (a stripe across the chest is one row of one "
                        "map), limbs keep their own")
    p.add_argument("--pose-conditioning", action="store_true",
                   help="pose-dependent appearance: each Gaussian's latent vector also varies (linearly, "
                        "starting at zero) with where its bone points relative to the trunk, for folds and "
                        "shading that follow the limb; on in --recipe cpu)")
    p.add_argument("--light-conditioning", action="store_true",
                   help="appearance that follows the capture's light: each Gaussian's latent vector also varies "
                        "(linearly, starting at zero) with how its bone is turned in the world, so a side turned "
                        "away from the room's light darkens (mirrored views are read with the light mirrored back)")
    p.add_argument("--refine-pose", action="store_true",
                   help="also learn a small, smooth per-frame correction of the capture's skeleton from the "
                        "training cameras (stored with the actor; 'marionette evaluate' uses it on this capture)")
    p.add_argument("--pose-weight", type=float, default=1.0, metavar="W",
                   help="with --refine-pose: how strongly corrections are pulled back to the captured skeleton "
                        "(default 1)")
    p.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="save the running average of the weights (decay per step, e.g. 0.995) instead of the last "
                        "step's: steadier and better on new views and poses (default 0: off)")
    p.add_argument("--snapshot-minutes", type=float, nargs="*", default=[], metavar="M",
                   help="also save the actor to ACTOR_DIR/snapshots/<M>min/ after M minutes of training "
                        "(for learning curves, e.g. 5 15 30)")
    p.add_argument("--perceptual-weights", metavar="FILE",
                   help="VGG-16 safetensors for a perceptual loss (default $MARIONETTE_VGG_WEIGHTS; never downloaded)")
    p.add_argument("--eval-views", type=int, default=16, metavar="N",
                   help="held-out views per split scored at the end (0 to skip)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for PyTorch")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _describe(recipe: dict) -> str:
    flags = []
    for k, v in recipe.items():
        flag = "--" + k.replace("_", "-")
        flags.append(flag if v is True else f"{flag} {v}")
    return " ".join(flags)


def apply_recipe(args) -> None:
    """Fill the options left unset from ``--recipe`` (if any), then from the plain defaults."""
    recipe = RECIPES.get(args.recipe or "", {})
    for key, plain in PLAIN_DEFAULTS.items():
        value = getattr(args, key)
        if isinstance(plain, bool):  # on/off flags: a recipe can only switch them on
            setattr(args, key, value or bool(recipe.get(key, False)))
        elif value is None:
            setattr(args, key, recipe.get(key, plain))


def effective_command(args) -> str:
    """The command line with every option spelled out, so the provenance records what really ran.

    ``--recipe`` itself is left out: the options it chose are all spelled out, and a recipe's meaning
    may grow (``cpu`` gained ``--pose-conditioning``, an on-switch a later command line cannot turn
    off), so a recorded command that named it would no longer replay the same run."""
    import shlex

    parts = ["marionette", "train", "--capture", args.capture, "-o", args.output]
    for opt in ("steps", "resolution", "batch", "mode", "device", "seed", "lr", "decoder", "upsample", "latent_dim",
                "per_bone", "texture_channels", "texture_size", "texture_charts", "silhouette_weight", "latent_colour_weight",
                "mirror", "roll", "crop", "pose_weight", "ema", "checkpoint_every", "max_minutes", "perceptual_weights", "eval_views", "threads",
                "log_dir"):
        value = getattr(args, opt)
        if value is not None:
            parts += ["--" + opt.replace("_", "-"), str(value)]
    if args.snapshot_minutes:
        parts += ["--snapshot-minutes"] + [f"{m:g}" for m in args.snapshot_minutes]
    parts += [f"--{f.replace('_', '-')}" for f in ("resume", "overwrite", "colour_correction", "augment", "refine_pose",
                                                  "pose_conditioning", "light_conditioning")
              if getattr(args, f)]
    return " ".join(shlex.quote(p) for p in parts)


def run(args) -> int:
    import json
    import os

    from engine.neural.actor.train import TrainConfig, train
    from engine.validate import output_folder

    apply_recipe(args)
    output_folder(args.output, "-o")
    if args.log_dir:
        output_folder(args.log_dir, "--log-dir")
    cfg = TrainConfig(capture=args.capture, out=args.output, steps=args.steps, resolution=args.resolution,
                      batch=args.batch, mode=args.mode, device=args.device, seed=args.seed, resume=args.resume,
                      overwrite=args.overwrite, log_dir=args.log_dir, lr=args.lr, preset=args.decoder,
                      upsample=args.upsample, latent_dim=args.latent_dim, checkpoint_every=args.checkpoint_every,
                      max_minutes=args.max_minutes, perceptual_weights=args.perceptual_weights,
                      eval_views=args.eval_views, threads=args.threads, progress=not args.quiet,
                      per_bone=args.per_bone, colour_correction=args.colour_correction,
                      snapshot_minutes=tuple(args.snapshot_minutes), silhouette_weight=args.silhouette_weight,
                      latent_colour_weight=args.latent_colour_weight,
                      augment=args.augment, mirror=args.mirror, roll=args.roll, crop=args.crop, refine_pose=args.refine_pose, pose_weight=args.pose_weight, ema=args.ema,
                      texture_channels=args.texture_channels, texture_size=args.texture_size,
                      texture_charts=args.texture_charts, light_conditioning=args.light_conditioning,
                      pose_conditioning=args.pose_conditioning, command=effective_command(args))
    summary = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 reports
        print(json.dumps({"actor": args.output, **summary}, indent=1))
    return 0
