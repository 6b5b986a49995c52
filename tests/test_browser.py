"""The series as people use it: JupyterLab in Chromium, Run All, a slider moved by keyboard.

Needs Debian's Chromium at /usr/bin/chromium (``make test`` installs it where it can); without it
these tests are skipped with a message saying so. Screenshots go to test-artifacts/screenshots/.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

ROOT = Path(__file__).parent.parent
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"browser tests need Chromium at {CHROMIUM}: `sudo apt-get install chromium`, or run `make test` as root",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _probe_until_answering(url: str, server: subprocess.Popen, attempts: int = 100) -> None:
    """The server prints its URL just before it accepts connections: probe until it answers."""
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if server.poll() is not None:
                break
            threading.Event().wait(0.1)  # readiness probe interval, not a synchronisation
    raise AssertionError(f"JupyterLab never answered at {url}")


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the notebooks to serve: JupyterLab saves what it runs, and the committed ones stay clean."""
    root = tmp_path_factory.mktemp("site")
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    return root


@pytest.fixture(scope="module")
def lab_url(tmp_path_factory: pytest.TempPathFactory, lab_root: Path) -> Iterator[str]:
    """JupyterLab on a free loopback port, with a throwaway config and the repository's settings."""
    home = tmp_path_factory.mktemp("jupyter")
    # Render every cell, also those scrolled out of view, so their outputs can be read.
    tracker = home / "user-settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    port = _free_port()
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "user-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--ServerApp.port={port}",
            "--ServerApp.ip=127.0.0.1",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            f"--ServerApp.root_dir={lab_root}",
            f"--LabApp.app_settings_dir={ROOT / 'binder'}",
            "--ServerApp.port_retries=0",
            "--ServerApp.allow_root=True",
            "--ServerApp.disable_check_xsrf=True",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = threading.Event()
    log: list[str] = []

    def watch() -> None:
        assert server.stderr is not None
        for line in server.stderr:
            log.append(line)
            if f"127.0.0.1:{port}/lab" in line:
                ready.set()
        ready.set()  # the server exited: stop waiting

    threading.Thread(target=watch, daemon=True).start()
    try:
        assert ready.wait(120) and server.poll() is None, "JupyterLab did not start:\n" + "".join(log[-30:])
        url = f"http://127.0.0.1:{port}"
        _probe_until_answering(f"{url}/api/status", server)
        yield url
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    profile = ARTIFACTS / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        yield context
        context.close()


def _open(page: Any, lab_url: str, path: str) -> None:
    """Open one notebook in a fresh workspace, so no earlier tab is restored beside it."""
    page.goto(f"{lab_url}/lab/workspaces/{Path(path).stem}/tree/{path}?reset")


def _shut_down_kernels(lab_url: str) -> None:
    with urllib.request.urlopen(f"{lab_url}/api/kernels") as r:
        kernels = json.load(r)
    for kernel in kernels:
        urllib.request.urlopen(
            urllib.request.Request(f"{lab_url}/api/kernels/{kernel['id']}", method="DELETE")
        ).close()


def run_all(page: Any, lab_url: str, path: str) -> list[str]:
    """Open a notebook, Run All Cells, wait until no cell is queued or running, save it; return its
    error outputs ("name: value"), read from the saved file (printed text is not an error)."""
    _open(page, lab_url, path)
    page.get_by_text("| Idle").wait_for(timeout=120_000)
    assert page.locator(".jp-Dialog").count() == 0, "a dialog is in the way"
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    page.wait_for_function(
        """() => {
            const notebook = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
            if (!notebook) return false;
            const prompts = [...notebook.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(p => p.textContent);
            // Run All queues every cell ([*]); an error clears the queue, leaving the rest unnumbered.
            return prompts.some(t => /\\[\\d+\\]/.test(t)) && !prompts.some(t => t.includes('*'));
        }""",
        timeout=300_000,
    )
    page.get_by_text("| Idle").wait_for(timeout=120_000)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^File$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Save Notebook$")).click()
    page.locator(".lm-TabBar-tab.jp-mod-dirty").wait_for(state="detached", timeout=60_000)
    with urllib.request.urlopen(f"{lab_url}/api/contents/{path}?content=1") as r:
        cells = json.load(r)["content"]["cells"]
    assert any(c.get("execution_count") for c in cells), "the saved notebook shows no cell run"
    return [
        f"{o['ename']}: {o['evalue']}"
        for c in cells
        for o in c.get("outputs", [])
        if o["output_type"] == "error"
    ]


def test_lab_uses_the_repositorys_settings(lab_url: str) -> None:
    with urllib.request.urlopen(
        f"{lab_url}/lab/api/settings/@jupyterlab/apputils-extension:notification"
    ) as r:
        settings = json.load(r)
    assert settings["schema"]["properties"]["fetchNews"]["default"] == "false"  # built in: "none" (ask)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_in_jupyterlab(lab_url: str, browser: Any, path: Path) -> None:
    page = browser.new_page()
    (ARTIFACTS / "screenshots").mkdir(parents=True, exist_ok=True)
    try:
        errors = run_all(page, lab_url, f"notebooks/{path.name}")
        assert errors == []
        # The last panel with a num_workers slider (some panels vary other settings only).
        panels = page.locator(".widget-vbox:has(.widget-image)").filter(
            has=page.locator(".widget-slider", has_text="num_workers")
        )
        if panels.count():
            panel = panels.last
            panel.scroll_into_view_if_needed()
            slider = panel.locator(".widget-slider", has_text="num_workers")
            before_workers = int(slider.locator(".widget-readout").inner_text())
            # The status must already describe the new chart when the chart changes: note what it
            # says at that moment, then wait for it.
            page.evaluate(
                """([chart, status]) => {
                    window.statusWhenChartChanged = null;
                    new MutationObserver(() => { window.statusWhenChartChanged ??= status.innerText; })
                        .observe(chart, {attributes: true, attributeFilter: ['src']});
                }""",
                [
                    panel.locator(".swimlane-chart").element_handle(),
                    panel.locator(".widget-html").element_handle(),
                ],
            )
            slider.locator(".noUi-handle").focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_function("() => window.statusWhenChartChanged !== null", timeout=120_000)
            status = page.evaluate("() => window.statusWhenChartChanged")
            assert re.search(rf"\b{before_workers + 1} (new )?worker", status), status
        page.screenshot(path=str(ARTIFACTS / "screenshots" / f"{path.stem}.png"))
        if panels.count():
            panels.last.screenshot(path=str(ARTIFACTS / "screenshots" / f"{path.stem}-panel.png"))
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "screenshots" / f"{path.stem}-FAILED.png"))
        raise
    finally:
        page.close()
        _shut_down_kernels(lab_url)


def test_a_broken_cell_fails_the_run(lab_url: str, lab_root: Path, browser: Any) -> None:
    broken = nbformat.read(NOTEBOOKS[0], as_version=4)
    broken.cells.insert(2, nbformat.v4.new_code_cell("1 / 0"))
    nbformat.write(broken, lab_root / "notebooks" / "broken.ipynb")
    page = browser.new_page()
    try:
        errors = run_all(page, lab_url, "notebooks/broken.ipynb")
    finally:
        page.close()
        _shut_down_kernels(lab_url)
    assert len(errors) == 1 and "ZeroDivisionError" in errors[0]
