#!/usr/bin/env bash
# Execute every notebook headless through the thermoflow kernelspec and check the outputs
# (see tests/run_notebooks.py), then open the executed temperature sweep in a real JupyterLab
# started by kernels/lab and check that its plots render there (tests/jupyterlab.py; the
# screenshot is kept in target/jupyterlab/). THERMOFLOW_QUICK=1 keeps each notebook to a few
# minutes.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
kernels/install
venv="${THERMOFLOW_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/thermoflow/venv}"
plotly_js="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/plotly-0.14.1/resource/plotly.min.js | head -n 1)"
export THERMOFLOW_QUICK=1
"$venv/bin/python" tests/run_notebooks.py notebooks target/notebooks "$plotly_js"
"$venv/bin/python" tests/jupyterlab.py target/notebooks target/jupyterlab 04_temperature_sweep.ipynb
