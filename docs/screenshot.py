#!/usr/bin/env python3
"""Screenshot one plotly figure of a self-contained HTML page in headless Chromium.

usage: screenshot.py PAGE FIGURE_ID PNG   (FIGURE_ID: the figure's div id, e.g. fig1)
"""
import os
import shutil
import sys

from playwright.sync_api import sync_playwright


def main():
    page_path, fig, png = sys.argv[1], sys.argv[2], sys.argv[3]
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900}, device_scale_factor=2)
        page.goto("file://" + os.path.abspath(page_path))
        page.wait_for_selector(f"#{fig} .main-svg", timeout=60_000)
        page.locator(f"#{fig}").screenshot(path=png)
        browser.close()


if __name__ == "__main__":
    main()
