"""The HTML report as a person sees it: rendered by headless Chromium (playwright driving the
system's chromium) in a 1,400 x 900 window, every table fits its width. Skips when playwright or a
Chromium binary is absent (CI installs neither: playwright's browser download needs the network)."""

import shutil

import pytest
from test_report import GROUPS, timed_run

from harness.report import build_report

WINDOW = 1400


def _chromium() -> str:
    pytest.importorskip("playwright.sync_api")
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium binary on PATH")


def test_report_tables_fit_a_1400_px_window(tmp_path):
    chromium = _chromium()                              # skips without playwright or Chromium
    from playwright.sync_api import sync_playwright
    long_family = "a-family-label-that-is-long-" * 6 + "<script>x</script>"
    sweeps = [dict(GROUPS, axes={"g": [1, 2, 4, 8]}), dict(GROUPS, family=long_family)]
    run = timed_run(tmp_path, sweeps, [1e-4, 3e-4, 5e-4, 9e-4, 2e-4, 6e-4])
    rep = build_report([run.run_dir], tmp_path / "r", formats=("html",))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": WINDOW, "height": 900})
            page.goto(rep.html.resolve().as_uri())
            main_table = page.evaluate("document.querySelector('table#rows').scrollWidth")
            tables = page.evaluate("[...document.querySelectorAll('table')].map(t => t.scrollWidth)")
            page_width = page.evaluate("document.documentElement.scrollWidth")
            headers = page.evaluate("[...document.querySelectorAll('table#rows th')].map(t => t.innerText)")
            scripts = page.evaluate("document.querySelectorAll('script').length")
        finally:
            browser.close()
    assert 0 < main_table <= WINDOW and max(tables) <= WINDOW and page_width <= WINDOW, (main_table, tables)
    assert headers[:4] == ["case", "dtype", "time", "achieved"] and scripts == 0
