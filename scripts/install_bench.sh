#!/usr/bin/env bash
# Packages only the benchmarks need (scripts/bench_triangulation.py compares against aniposelib),
# kept out of scripts/install.sh so a user's Python does not get them. aniposelib's declared
# dependencies would upgrade numpy to 2.x and add opencv-contrib next to opencv, which breaks bpy;
# it runs with what is already installed plus these. Its triangulate imports jax; the newest jax
# needs numpy 2, 0.4.30 does not.
set -euo pipefail
PY=${PYTHON:-python3}
$PY -m pip install --no-deps "aniposelib==0.8.0"
$PY -m pip install "pandas==2.2.3" "toml" "numpy<2"
$PY -m pip install --no-deps "jax==0.4.30" "jaxlib==0.4.30" "ml_dtypes>=0.2,<0.5" "opt_einsum"
