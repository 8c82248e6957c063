"""`make ui` in a real browser: the MLflow UI over the session's tiny pipeline's store
(tiny_pipeline.py) lists the pipeline's parent run, and expanding it shows its children: the
stages' runs, the pretraining job's among them. Headless Chromium through Playwright;
skipped, saying why, where either is missing (Playwright's own browser download comes from a
CDN, so the test uses a system Chromium: Debian's `apt-get install chromium`).
ZERORAY_UI_SCREENSHOT=PATH keeps the screenshot."""

from __future__ import annotations

import importlib.util
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
# Checked before any fixture is set up: pytest builds session fixtures (the tiny pipeline)
# before a test's own, so a skip from inside the test came after them and the UI's start.
pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None, reason="playwright is not installed"
    ),
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no Chromium on this machine: Playwright's browser download comes from a CDN "
        "that cannot be reached here; `apt-get install chromium` provides one",
    ),
]
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
def ui(tiny_pipeline_root, tmp_path):
    """`make ui` (python -m cluster.ui) over the tiny pipeline's output_dir, on loopback."""
    port = free_port()
    output_dir = tiny_pipeline_root
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


def test_the_ui_lists_the_pipeline_and_its_stages_runs_in_a_real_browser(ui, tmp_path):
    from playwright import sync_api

    url, output_dir = ui
    runs = runs_in(output_dir, "pipeline-default")
    # The first invocation's parent (test_pipeline.py may have added a second) and its
    # children: the prepare stage's run, which only it has, and the pretraining job's own.
    parent = min(
        (r for r in runs if "mlflow.parentRunId" not in r.data.tags),
        key=lambda r: r.info.start_time,
    )
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    names = {r.data.tags.get("zeroray.stage", r.info.run_name): r.info.run_name for r in children}
    pretrain = next(n for n in names.values() if n.startswith("default-pretrain-"))
    screenshot = Path(os.environ.get("ZERORAY_UI_SCREENSHOT", tmp_path / "ui.png"))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 700})
            experiment = parent.info.experiment_id
            page.goto(f"{url}/#/experiments/{experiment}/runs", timeout=120_000)
            page.get_by_text(parent.info.run_name, exact=True).wait_for(timeout=120_000)
            # Nested: the children are hidden until their parent's row is expanded.
            for child in (names["prepare"], pretrain):
                assert page.get_by_text(child, exact=True).count() == 0
            row = page.locator("[role=row]", has=page.get_by_text(parent.info.run_name, exact=True))
            row.locator("[col-id='attributes.`Run Name`'] button").click()
            for child in (names["prepare"], pretrain):
                page.get_by_text(child, exact=True).wait_for(timeout=60_000)
            page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
