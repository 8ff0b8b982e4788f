#!/usr/bin/env bash
# Remake the README's figure and table from a fresh run of the README's main command:
# `thermoflow sweep --html` on the default system, then a headless-Chromium screenshot of its
# C_V(T) figure (Playwright on the system Chromium, from the venv kernels/install makes: the
# same browser setup CI's notebook check uses). Writes docs/img/cv.png and prints the table.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
venv="${THERMOFLOW_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/thermoflow/venv}"
[ -x "$venv/bin/python" ] || kernels/install
out=target/figures
mkdir -p "$out" docs/img
cargo run --release --quiet -- sweep --html "$out/sweep.html" --json "$out/sweep.json" | tee "$out/table.txt"
"$venv/bin/python" docs/screenshot.py "$out/sweep.html" fig1 docs/img/cv.png
echo "[figures] docs/img/cv.png from $out/sweep.html"
