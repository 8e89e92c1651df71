"""Build the Blender extension zip: ``python scripts/build_extension.py`` -> dist/marionette-<version>.zip

Layout inside the zip (what Blender installs as ``bl_ext.<repo>.marionette``):

    blender_manifest.toml
    __init__.py, ops_import.py, ...      <- addon/
    _vendor/engine/...                   <- engine/ (the add-on puts _vendor on sys.path)

Not shipped: tests, scripts, docs, caches, and anything matched by the manifest's
``[build] paths_exclude_pattern`` (gitignore-style: ``/x/`` anchored folder, ``x/`` any
folder, ``*.pyc`` any file). The small demo capture in ``engine/data`` (BSD-3, with its
licence) does ship, so the demo can run inside Blender.

The zip is written atomically and then checked with Blender's own validator
(``bpy/<version>/scripts/addons_core/bl_pkg/cli/blender_ext.py validate``) when the
``bpy`` module is installed; ``--no-validate`` skips that.

Example:
    python scripts/build_extension.py                 # dist/marionette-0.1.0.zip
    python scripts/build_extension.py -o /tmp/out     # another output folder
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import importlib.util
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "blender_manifest.toml"


def read_manifest(path: Path = MANIFEST) -> dict:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def _excluded(arcname: str, patterns: list[str]) -> bool:
    """gitignore-style subset: '/a/' anchored folder, 'a/' folder anywhere, 'x' name glob anywhere."""
    parts = arcname.split("/")
    for pat in patterns:
        anchored = pat.startswith("/")
        is_dir = pat.endswith("/")
        p = pat.strip("/")
        if anchored:
            n = len(p.split("/"))
            if is_dir and len(parts) > n and fnmatch.fnmatch("/".join(parts[:n]), p):
                return True
            if not is_dir and fnmatch.fnmatch(arcname, p):
                return True
        else:
            names = parts[:-1] if is_dir else parts
            if any(fnmatch.fnmatch(x, p) for x in names):
                return True
    return False


def collect_files(patterns: list[str]) -> list[tuple[Path, str]]:
    """(source file, name in the zip) for everything the extension carries."""
    files = [(MANIFEST, "blender_manifest.toml")]
    for src_root, prefix in ((ROOT / "addon", ""), (ROOT / "engine", "_vendor/engine/")):
        for dirpath, dirnames, filenames in os.walk(src_root):
            dirnames.sort()
            rel_dir = Path(dirpath).relative_to(src_root).as_posix()
            for fn in sorted(filenames):
                rel = fn if rel_dir == "." else f"{rel_dir}/{fn}"
                arc = prefix + rel
                if not _excluded(arc, patterns):
                    files.append((Path(dirpath) / fn, arc))
    licence = ROOT / "LICENSE"
    if licence.is_file():
        files.append((licence, "LICENSE"))
    return files


def blender_validator() -> Path | None:
    """Blender's extension CLI shipped in the bpy wheel (found without importing bpy)."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.origin:
        return None
    hits = sorted(glob.glob(os.path.join(os.path.dirname(spec.origin), "*", "scripts", "addons_core", "bl_pkg",
                                         "cli", "blender_ext.py")))
    return Path(hits[-1]) if hits else None


def validate(zip_path: Path) -> None:
    cli = blender_validator()
    if cli is None:
        print("bpy not installed: skipped Blender's manifest validator")
        return
    res = subprocess.run([sys.executable, str(cli), "validate", str(zip_path)], capture_output=True, text=True)
    out = (res.stdout + res.stderr).strip()
    if res.returncode != 0 or "error" in out.lower():
        raise SystemExit(f"Blender's validator rejected {zip_path}:\n{out}")
    print(f"validated with {cli.relative_to(cli.parents[6])}: {out or 'ok'}")


def build(out_dir: Path = ROOT / "dist", check: bool = True) -> Path:
    manifest = read_manifest()
    build_cfg = manifest.get("build", {})
    if "paths" in build_cfg:
        raise SystemExit("blender_manifest.toml: this build uses [build] paths_exclude_pattern, not paths")
    patterns = list(build_cfg.get("paths_exclude_pattern", []))
    files = collect_files(patterns)
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_path = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
    tmp = zip_path.with_name(zip_path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for src, arc in files:
            zf.write(src, arc)
    os.replace(tmp, zip_path)
    size = zip_path.stat().st_size
    print(f"wrote {zip_path} ({len(files)} files, {size / 1e6:.2f} MB)")
    if check:
        validate(zip_path)
    return zip_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output-dir", type=Path, default=ROOT / "dist", help="folder for the zip (default dist/)")
    parser.add_argument("--no-validate", action="store_true", help="skip Blender's manifest validator")
    args = parser.parse_args(argv)
    build(args.output_dir, check=not args.no_validate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
