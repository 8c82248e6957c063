"""`make ui` in a real browser: the MLflow UI over the session's reference run's store lists
that run. Headless Chromium through Playwright; skipped, saying why, where either is missing
(Playwright's own browser download comes from a CDN, so the test uses a system Chromium:
Debian's `apt-get install chromium`). ZERORAY_UI_SCREENSHOT=PATH keeps the screenshot."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from serve_apps import free_port
from tracked_runs import runs_in

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
UI_START_S = 240  # the first start downloads the UI package (uv caches it); a busy 2-core box


def _wait_for(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the UI exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"the UI did not answer {url} within {timeout_s} s")


@pytest.fixture
def ui(reference_run, tmp_path):
    """`make ui` (python -m cluster.ui) over the reference run's output_dir, on loopback."""
    port = free_port()
    output_dir = reference_run.parent.parent
    log = (tmp_path / "ui.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster.ui", "--port", str(port), f"output_dir={output_dir}"],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: uv, mlflow and uvicorn stop together
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/health", proc, UI_START_S)
        yield f"http://127.0.0.1:{port}", output_dir
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_the_ui_lists_the_run_in_a_real_browser(ui, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if CHROMIUM is None:
        pytest.skip(
            "no Chromium on this machine: Playwright's browser download comes from a CDN "
            "that cannot be reached here; `apt-get install chromium` provides one"
        )
    url, output_dir = ui
    (run,) = runs_in(output_dir, "ref")
    screenshot = Path(os.environ.get("ZERORAY_UI_SCREENSHOT", tmp_path / "ui.png"))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 700})
            page.goto(f"{url}/#/experiments/{run.info.experiment_id}/runs", timeout=120_000)
            # The runs table lists the job's one run by its name (the run directory's).
            page.get_by_text("reference", exact=True).first.wait_for(timeout=120_000)
            assert page.get_by_text("1 matching run").is_visible()
            page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
