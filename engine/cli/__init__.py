"""The ``marionette`` command line (also ``python -m engine``).

Exit status: 0 success; 1 a clear error (bad input, a missing file, an option out of range,
an empty result: ``MarionetteError``, one line, no traceback); 2 a usage error (argparse);
3 an internal error (a bug: a short message, the traceback in a log file, or on the
terminal with ``--debug`` / ``MARIONETTE_DEBUG=1``); 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import tempfile
import traceback
from pathlib import Path

from engine import MarionetteError, __version__
from engine.cli import commands as _commands


def _discover():
    found = []
    for info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"engine.cli.commands.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            found.append(module)
    return sorted(found, key=lambda m: getattr(m, "ORDER", 100))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marionette",
        description=(
            "Marionette: multi-view human capture to 3D skeletons, SMPL fits, "
            "Blender armatures and neural renders of learned actors.\n"
            "Run 'marionette COMMAND --help' for the options of one command."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"marionette {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show Python tracebacks (also MARIONETTE_DEBUG=1) instead of short error messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _discover():
        p = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get("MARIONETTE_DEBUG", "") not in ("", "0")
    try:
        return int(args._run(args) or 0)
    except MarionetteError as exc:
        if debug:
            raise
        print(f"marionette {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"marionette {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        where = _log_traceback(args.command)
        print(f"marionette {args.command}: internal error (a bug in Marionette, not in your input): "
              f"{type(exc).__name__}: {str(exc)[:300]}\n"
              f"  the traceback is in {where}; 'marionette --debug {args.command} ...' shows it here",
              file=sys.stderr)
        return 3


def _log_traceback(command: str) -> str:
    """Write the current exception's traceback to a log file; returns where it went."""
    text = f"marionette {__version__} {command}: {' '.join(sys.argv)}\n" + traceback.format_exc()
    user = "".join(c for c in os.environ.get("USER", os.environ.get("USERNAME", "")) if c.isalnum()) or "user"
    path = Path(tempfile.gettempdir()) / f"marionette-{user}-traceback.log"
    try:
        path.write_text(text, encoding="utf-8")
        return str(path)
    except OSError:
        print(text, file=sys.stderr)
        return "the output above"


if __name__ == "__main__":
    raise SystemExit(main())
