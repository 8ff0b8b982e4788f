#!/usr/bin/env python3
"""Open executed notebooks in a real JupyterLab, started by kernels/lab, in headless Chromium
(driven by Playwright) and check that every plotly output is drawn by the plotly renderer: an
SVG with traces, not an error box or "No renderer could be found". A screenshot of each
notebook's first plot is kept in OUT_DIR.

usage: jupyterlab.py EXECUTED_NOTEBOOK_DIR OUT_DIR NOTEBOOK [NOTEBOOK ...]
"""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from playwright.sync_api import sync_playwright

PLOTLY_MIME = "application/vnd.plotly.v1+json"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plotly_outputs(path):
    nb = json.load(open(path))
    return sum(PLOTLY_MIME in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))


def main():
    nb_dir, out_dir, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    os.makedirs(out_dir, exist_ok=True)
    port, token = free_port(), secrets.token_hex(16)
    log = open(os.path.join(out_dir, "jupyterlab.log"), "w")
    # JupyterLab 4 virtualises long notebooks ("windowing"): cells scrolled out of view leave the
    # page, so a count of drawn plots would depend on the scroll position. This Lab keeps every
    # cell in the page; the user's own settings are not read or touched.
    settings = os.path.join(out_dir, "settings")
    tracker = os.path.join(settings, "@jupyterlab", "notebook-extension")
    os.makedirs(tracker, exist_ok=True)
    with open(os.path.join(tracker, "tracker.jupyterlab-settings"), "w") as f:
        json.dump({"windowingMode": "none"}, f)
    server = subprocess.Popen(
        [os.path.join(REPO, "kernels", "lab"), nb_dir, "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}"]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "JUPYTERLAB_SETTINGS_DIR": settings},
    )
    base = f"http://127.0.0.1:{port}"
    failed = False
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise SystemExit("JupyterLab did not start; see " + log.name)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu"]
            )
            for name in names:
                want = plotly_outputs(os.path.join(nb_dir, name))
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{base}/lab/tree/{name}?token={token}")
                try:
                    page.wait_for_selector(".jp-Notebook .js-plotly-plot .main-svg", timeout=180_000)
                except Exception as e:  # noqa: BLE001 (report, screenshot, fail)
                    print(f"[jupyterlab] {name}: no plotly plot rendered ({e.__class__.__name__})")
                # Lab renders cells lazily as they scroll into view: visit every output.
                for _ in range(80):
                    page.mouse.wheel(0, 900)
                    page.wait_for_timeout(150)
                page.wait_for_timeout(2000)
                plots = page.locator(".jp-Notebook .js-plotly-plot").count()
                traces = page.locator(".jp-Notebook .js-plotly-plot .main-svg .trace").count()
                text = page.inner_text(".jp-Notebook")
                errors = [m for m in ("No renderer could be found", "Error displaying widget",
                                      "Javascript Error") if m in text]
                first = page.locator(".jp-Notebook .js-plotly-plot").first
                shot = os.path.join(out_dir, os.path.splitext(name)[0] + ".png")
                if plots:
                    first.scroll_into_view_if_needed()
                    page.wait_for_timeout(500)
                page.screenshot(path=shot)
                ok = plots >= want > 0 and traces > 0 and not errors
                failed |= not ok
                print(f"[jupyterlab] {name}: {plots}/{want} plotly outputs rendered in JupyterLab, "
                      f"{traces} traces drawn, screenshot {shot}" + ("" if ok else f" FAILED {errors}"),
                      flush=True)
                page.close()
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
