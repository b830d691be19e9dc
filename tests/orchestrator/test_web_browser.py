"""The web app in a real browser: headless Debian Chromium driven over the DevTools protocol, against a real
uvicorn server. Screenshots go to $CORTEXBOX_SCREENSHOTS (or a temporary folder, printed).

Chromium missing: skipped on a developer's machine, a failure in CI (CI=true), where scripts/setup.sh installs it.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.orchestrator.test_web import TREE, seed_registry

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,1000",
    "--remote-debugging-port=0", "--remote-allow-origins=*",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """Just enough of the Chrome DevTools protocol: navigate, evaluate, wait, screenshot."""

    def __init__(self, executable: str):
        import websocket

        self.profile = tempfile.mkdtemp(prefix="cortexbox-chromium-")
        self.process = subprocess.Popen([executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            port_file = Path(self.profile) / "DevToolsActivePort"
            deadline = time.time() + 30
            while not (port_file.exists() and port_file.read_text().strip()):
                if self.process.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"chromium did not start: {self.process.stderr.read()[-2000:] if self.process.poll() is not None else 'timeout'}")
                time.sleep(0.05)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                page = next(t for t in json.loads(r.read()) if t["type"] == "page")
            self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        except BaseException:
            self.close()
            raise
        self._ids = itertools.count(1)
        self.send("Page.enable")
        self.send("Runtime.enable")

    def send(self, method: str, **params):
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0, interval: float = 0.1):
        deadline = time.time() + timeout
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.time() > deadline:
                raise AssertionError(f"timed out waiting for {expression}")
            time.sleep(interval)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        time.sleep(0.05)
        self.wait_for(f"document.readyState === 'complete' && location.href.startsWith({json.dumps(url.split('?')[0])})")

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing in CI (scripts/setup.sh installs Debian's chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture
def browser(chromium):
    b = Browser(chromium)
    yield b
    b.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("CORTEXBOX_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {folder}")
    return folder


class Server:
    """uvicorn serving the app in a thread of the test process; stopped (lifespan shutdown included) on exit."""

    def __init__(self, app):
        import uvicorn

        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.time() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(20)
        assert not self.thread.is_alive(), "uvicorn did not stop"


def test_leaderboard_model_page_and_compare_in_a_browser(browser, screenshots, tmp_path):
    from cortexbox.orchestrator.web import create_app

    url = f"sqlite:///{tmp_path / 'web.db'}"
    ids = seed_registry(url)
    with Server(create_app(url, tree=TREE)) as server:
        browser.goto(server.url + "/")
        rows = browser.eval("Array.from(document.querySelectorAll('#board tbody tr')).map(r => r.cells[1].innerText.split(' ')[0])")
        assert rows == ["goodnet", "okaynet", "pixels"]
        assert browser.eval("document.querySelectorAll('#board .missing').length") > 0  # missing is marked, not 0
        browser.screenshot(screenshots / "1-leaderboard.png")
        # search filters rows; sorting by the aggregate (ascending on the second click) reverses the ranking
        browser.eval("{ const s = document.getElementById('search'); s.value = 'okay'; s.dispatchEvent(new Event('input')); }")
        assert browser.eval("Array.from(document.querySelectorAll('#board tbody tr')).filter(r => r.style.display !== 'none').length") == 1
        browser.eval("{ const s = document.getElementById('search'); s.value = ''; s.dispatchEvent(new Event('input')); }")
        browser.eval("document.querySelectorAll('#board thead th')[2].click(); document.querySelectorAll('#board thead th')[2].click()")
        assert browser.eval("document.querySelector('#board tbody tr').cells[1].innerText.split(' ')[0]") == "pixels"
        # open a model page from its link
        browser.eval("Array.from(document.querySelectorAll('a.model-link')).find(a => a.textContent === 'goodnet').click()")
        browser.wait_for(f"location.pathname === '/models/{ids['goodnet']}' && document.readyState === 'complete'")
        assert browser.eval("document.querySelectorAll('.curve svg circle').length") >= 3  # layer-by-layer curve
        assert browser.eval("document.querySelectorAll('#scores tbody tr').length") == 4
        browser.screenshot(screenshots / "2-model.png")
        # compare two models chosen on the leaderboard
        browser.goto(server.url + "/")
        browser.eval(f"document.querySelector('input.cmp[value=\"{ids['goodnet']}\"]').click();"
                     f"document.querySelector('input.cmp[value=\"{ids['pixels']}\"]').click();"
                     "document.getElementById('compare-btn').click()")
        browser.wait_for("location.pathname === '/compare' && document.readyState === 'complete' && !!document.getElementById('cmp-benchmarks')")
        assert browser.eval("document.getElementById('cmp-benchmarks').innerText.includes('significant')")
        assert "1 shared" in browser.eval("document.getElementById('cmp-aggregates').innerText")
        browser.screenshot(screenshots / "3-compare.png")
        browser.goto(server.url + "/benchmarks/Alpha2020.V4-pls")
        assert browser.eval("document.querySelectorAll('svg circle').length") == 3  # one dot per scored model
        browser.screenshot(screenshots / "4-benchmark.png")


@pytest.mark.docker
def test_live_run_page_updates_while_a_real_model_is_scored(browser, screenshots, template_image, tmp_path):
    from cortexbox.orchestrator.web import create_app

    image = template_image("pixels")
    with Server(create_app(f"sqlite:///{tmp_path / 'live.db'}")) as server:
        browser.goto(server.url + "/runs")
        browser.eval(f"document.getElementById('model').value = {json.dumps(image)};"
                     "document.getElementById('benchmark').value = 'Cowley2023.V4-pls';"
                     "document.querySelector('#start button').click()")
        browser.wait_for("location.pathname.startsWith('/live/') && document.readyState === 'complete'")
        browser.eval("window.__sameDocument = true")
        # progress appears without a reload, while the run is still going
        browser.wait_for("document.querySelectorAll('#bars .progress').length > 0 || document.querySelectorAll('tr.score-row').length > 0", timeout=120)
        seen_running = browser.eval("document.getElementById('status').textContent") == "running"
        browser.screenshot(screenshots / "5-live-running.png")
        browser.wait_for("document.getElementById('status').textContent === 'succeeded' || document.getElementById('status').textContent === 'failed'", timeout=180)
        assert browser.eval("window.__sameDocument") is True  # updated in place, never reloaded
        assert browser.eval("document.getElementById('status').textContent") == "succeeded", browser.eval("document.getElementById('log').textContent")
        assert seen_running
        row = browser.eval("Array.from(document.querySelectorAll('tr.score-row td')).map(td => td.textContent)")
        assert row[0] == "Cowley2023.V4-pls" and 0 < float(row[1]) < 1 and row[5] == "pixels"
        assert int(browser.eval("document.body.dataset.events")) >= 5
        browser.screenshot(screenshots / "6-live-done.png")
        # the run and its score are in the registry, and on the leaderboard
        runs = json.loads(urllib.request.urlopen(server.url + "/api/runs").read())
        assert runs[0]["status"] == "succeeded" and runs[0]["benchmark"] == "Cowley2023.V4-pls"
        browser.goto(server.url + "/")
        assert "pixels" in browser.eval("document.getElementById('board').innerText")
        browser.screenshot(screenshots / "7-leaderboard-after-live-run.png")


@pytest.mark.docker
def test_the_demo_ends_on_a_ranked_web_board_with_no_missing_for_what_it_scored(browser, screenshots, base_image):
    """The demo's own code path (orchestrator/demo.py: real images, real containers) on a subset that is quick to
    score (two templates, the two Kriegeskorte benchmarks of the vision root: one IT, one behaviour), then the web
    board of the vision domain: every model ranked, every scored cell a number, "missing" only where nothing was
    scored, and the same ranks and aggregates as `cortexbox leaderboard --domain vision`."""
    from cortexbox.orchestrator import demo
    from cortexbox.orchestrator.web import create_app, data
    from cortexbox.registry import Registry

    scored = ["Kriegeskorte2008.hIT-rdm", "Kriegeskorte2008.judgements-rdm"]
    assert set(scored) <= set(demo.vision_brain_benchmarks())
    lines: list[str] = []
    result = demo.run(Path(__file__).resolve().parents[2] / "model_templates", ("pixels", "pytorch-vision"), scored, say=lines.append)
    assert not result.failed and len(result.scored) == 4, lines
    assert any(line.startswith("[1/3]") for line in lines) and any("Step " in line or "exists" in line for line in lines)
    cli_board = data.leaderboard(data.load(Registry()), "brainscore", "vision")
    with Server(create_app()) as server:  # the registry of this test's CORTEXBOX_HOME, where the demo stored its scores
        browser.goto(server.url + "/?domain=vision")
        browser.eval("document.getElementById('leaves').click()")  # show a column per benchmark
        browser.screenshot(screenshots / "8-demo-board.png")
        headers = browser.eval("Array.from(document.querySelectorAll('#board thead th')).map(th => th.textContent.replace('\u00a0†', '').trim())")
        rows = browser.eval("Array.from(document.querySelectorAll('#board tbody tr')).map(r => Array.from(r.cells).map(c => c.textContent.trim()))")
    assert headers[:4] == ["rank", "model", "vision", "coverage"]
    assert [(r[0], r[1].split(" ")[0]) for r in rows] == [(str(r["rank"]), r["model"]) for r in cli_board["rows"]]
    assert sorted(r[0] for r in rows) == ["1", "2"] and {r[1].split(" ")[0] for r in rows} == {"pixels", "alexnet"}  # pytorch-vision serves AlexNet
    number = re.compile(r"^\d\.\d{3}")
    for row, cli_row in zip(rows, cli_board["rows"]):
        cells = dict(zip(headers, row))
        assert number.match(cells["vision"]) and cells["vision"].startswith(data.fmt(cli_row["ranked_by"]["value"]))
        for name in scored + ["IT"]:  # the scored leaves, and the region all of whose leaves were scored
            assert number.match(cells[name]) and "missing" not in cells[name] and "failed" not in cells[name], (name, cells[name])
        for name, text in cells.items():  # "missing" only where something below was not scored
            if "missing" in text:
                assert name not in scored + ["IT", "rank", "model"], (name, text)

