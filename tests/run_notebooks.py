#!/usr/bin/env python3
"""Execute every notebook headless through the thermoflow kernel and check it.

A notebook fails if a cell errors, or prints a Rust panic (evcxr reports a panicking cell as
status ok), or shows no plot. Each executed notebook is exported to HTML with plotly.js
inlined and its plotly outputs rendered with Plotly.newPlot; headless Chromium must then
find every plot rendered (offline). With THERMOFLOW_NOTEBOOK_CACHE_CHECK=1 the first notebook
is run twice at the end, to show that the second run reuses the kernel's build directory (CI
skips it: it checks nothing the first runs do not).

usage: run_notebooks.py NOTEBOOK_DIR OUT_DIR PLOTLY_JS
"""
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

PLOTLY_MIME = "application/vnd.plotly.v1+json"
BAD = ("panicked at", "Subprocess terminated", "thread 'main' panicked")


def execute(path, out_dir):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="thermoflow",
        timeout=1800,
        startup_timeout=1800,
        resources={"metadata": {"path": os.path.dirname(path)}},
    )
    t0 = time.time()
    client.execute()
    seconds = time.time() - t0
    problems, plots = [], 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                problems.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}")
            text = out.get("text", "")
            for mime, data in out.get("data", {}).items():
                if mime == PLOTLY_MIME:
                    plots += 1
                elif isinstance(data, str):
                    text += data
            for bad in BAD:
                if bad in text:
                    problems.append(f"cell {i}: {bad}: {text[:400]}")
            if out.output_type == "stream" and out.get("name") == "stderr" and re.search(r"^Error: ", text, re.M):
                problems.append(f"cell {i}: {text[:400]}")
    name = os.path.splitext(os.path.basename(path))[0]
    nbformat.write(nb, os.path.join(out_dir, name + ".ipynb"))
    return nb, seconds, problems, plots


def export_html(nb, html_path, plotly_js):
    n = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if PLOTLY_MIME in data:
                fig = data[PLOTLY_MIME]
                if isinstance(fig, str):
                    fig = json.loads(fig)
                div = f"plotly-output-{n}"
                n += 1
                data["text/html"] = (
                    f'<div id="{div}"></div><script>Plotly.newPlot("{div}", '
                    f"{json.dumps(fig.get('data', []))}, {json.dumps(fig.get('layout', {}))});</script>"
                )
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    body = body.replace("<head>", f"<head><script>{plotly_js}</script>", 1)
    with open(html_path, "w") as f:
        f.write(body)
    return n


def rendered_plots(html_path):
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [
                "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-quic", f"--user-data-dir={profile}", "--virtual-time-budget=20000",
                "--dump-dom", "file://" + os.path.abspath(html_path),
            ],
            capture_output=True, text=True, timeout=300,
        ).stdout
    return dom.count('class="plot-container plotly"')


def main():
    nb_dir, out_dir, plotly_path = sys.argv[1:4]
    os.makedirs(out_dir, exist_ok=True)
    plotly_js = open(plotly_path).read()
    paths = sorted(glob.glob(os.path.join(nb_dir, "*.ipynb")))
    failed = False
    timings = []
    for path in paths:
        nb, seconds, problems, plots = execute(path, out_dir)
        html = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + ".html")
        n = export_html(nb, html, plotly_js)
        shown = rendered_plots(html)
        ok = not problems and plots > 0 and shown >= n
        failed |= not ok
        timings.append(seconds)
        print(f"[notebooks] {os.path.basename(path)}: {seconds:.0f} s, {plots} plots, {shown}/{n} rendered offline"
              + ("" if ok else " FAILED"), flush=True)
        for p in problems:
            print(f"    {p}", flush=True)
    if paths and os.environ.get("THERMOFLOW_NOTEBOOK_CACHE_CHECK", "") not in ("", "0"):
        _, again, problems, _ = execute(paths[0], out_dir)
        print(f"[notebooks] build cache: {os.path.basename(paths[0])} first run {timings[0]:.0f} s, "
              f"second run {again:.0f} s", flush=True)
        failed |= bool(problems)
    passed = sum(1 for _ in paths) if not failed else 0
    print(f"{passed} passed, {len(paths) - passed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
