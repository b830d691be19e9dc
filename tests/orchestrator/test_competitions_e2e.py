"""A competition end to end, over HTTP against a real uvicorn server: an organiser creates and opens a competition
with a public and a private track; two teams submit real template images as `docker save` tarballs (one through
the API with a file, one with `cortexbox submit IMAGE`), which are checked, loaded, scored in real containers and
followed live; the quota holds (a platform failure is refunded); the same digest from two teams is flagged; the
public board updates live (in a browser too, when Chromium is installed); private scores stay hidden from both
teams on every API and page until the reveal; then the final board, recomputed from the stored digests."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import threading
import time

import pytest
import requests
from sqlalchemy import text
from sqlmodel import select
from typer.testing import CliRunner

from cortexbox.registry import Registry, Score
from cortexbox.registry.models import Submission, SubmissionRun
from tests.orchestrator.test_competitions_helpers import bearer, people, spec
from tests.orchestrator.test_web_browser import Browser
from tests.orchestrator.test_web_browser import Server as _BrowserServer

pytestmark = [pytest.mark.docker, pytest.mark.slow]
SLUG = "hit-2027"


@pytest.fixture(scope="module")
def tarballs(docker_client, base_image, template_image, tmp_path_factory):
    """The pixels template saved once, and a variant of it (another digest: one label more) for the second team;
    the variant and every tag the submissions got are removed at the end."""
    import io

    import docker.errors

    pixels = template_image("pixels")
    folder = tmp_path_factory.mktemp("tarballs")
    variant_tag = f"cortexbox-test/pixels-variant:{int(time.time())}"
    docker_client.images.build(fileobj=io.BytesIO(f"FROM {pixels}\nLABEL cortexbox.test=variant\n".encode()),
                               tag=variant_tag, network_mode="none", rm=True)
    path = folder / "pixels.tar"
    with open(path, "wb") as f:
        for chunk in docker_client.images.get(pixels).save(chunk_size=1024**2):
            f.write(chunk)
    yield {"pixels": path, "pixels_id": docker_client.images.get(pixels).id, "variant": variant_tag,
           "variant_id": docker_client.images.get(variant_tag).id}
    for image in docker_client.images.list():
        for tag in image.tags:
            if tag.startswith(f"cortexbox-submission/{SLUG}:"):
                docker_client.images.remove(tag)
    try:
        docker_client.images.remove(variant_tag, force=True)
    except docker.errors.ImageNotFound:
        pass


def _events(url: str, token: str, stop: str = "done", timeout: float = 300) -> list[tuple[str, dict]]:
    """The server-sent events of a stream until the ``stop`` event."""
    out, kind = [], None
    with requests.get(url, headers=bearer(token), stream=True, timeout=(5, timeout)) as r:
        assert r.status_code == 200, r.text
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind:
                out.append((kind, json.loads(line[6:])))
                if kind == stop:
                    break
    return out


class Server(_BrowserServer):
    """The browser tests' uvicorn thread, with uvicorn's access log on (the secrets check reads it)."""

    def __init__(self, app):
        import uvicorn

        super().__init__(app)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="info"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)


class BoardWatcher:
    """Follows the public board's event stream in a thread (anonymously, over a plain socket that ``close`` shuts
    down), keeping every board it receives."""

    def __init__(self, base: str, path: str):
        import http.client
        from urllib.parse import urlsplit

        self.boards: list[dict] = []
        parts = urlsplit(base)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
        self.connection.request("GET", path)
        self.response = self.connection.getresponse()
        assert self.response.status == 200
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        kind = None
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "board":
                    self.boards.append(json.loads(line[6:]))
        except Exception:  # noqa: BLE001 - the socket is shut down at the end
            pass

    def wait(self, predicate, timeout: float = 30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.boards and predicate(self.boards[-1]):
                return self.boards[-1]
            time.sleep(0.2)
        raise AssertionError(f"the board never got there: {self.boards[-1:]}")

    def close(self):
        import socket

        with contextlib.suppress(OSError):
            self.connection.sock.shutdown(socket.SHUT_RDWR)
        self.connection.close()
        self.thread.join(5)


def test_a_competition_end_to_end(tarballs, data_dir, tmp_path, caplog, monkeypatch):
    from cortexbox.orchestrator.cli import app as cli_app
    from cortexbox.orchestrator.community.seams import score_model
    from cortexbox.orchestrator.web import create_app

    for name in ("cortexbox", "uvicorn", "uvicorn.access", "uvicorn.error"):
        caplog.set_level(logging.DEBUG, logger=name)
    t_start = time.time()

    def step(text: str) -> None:
        print(f"[{time.time() - t_start:6.1f} s] {text}")
    community_url = f"sqlite:///{tmp_path / 'community.db'}"
    main_url = f"sqlite:///{tmp_path / 'main.db'}"
    community = Registry(community_url)
    tokens = people(community)
    org, alice, bob, carol = (tokens[n] for n in ("org", "alice", "bob", "carol"))
    platform_failures = {"left": 0}

    def score(request, **kwargs):
        """score_model, but the engine 'vanishes' for the benchmarks of a submission the test marks."""
        if platform_failures["left"] > 0:
            platform_failures["left"] -= 1
            raise ConnectionError("the container engine went away")
        return score_model(request, **kwargs)

    application = create_app(main_url, score=score, community_url=community_url, cache_dir=str(tmp_path / "cache"))
    application.state.community.upload_dir = tmp_path / "uploads"
    queue_idle = lambda: application.state.community.queue.idle.wait(300)  # noqa: E731
    pages: dict[str, str] = {}  # every response body a team or anonymous caller got, for the leak check
    with Server(application) as server:
        base = server.url

        def get(path: str, token: str | None = None, name: str | None = None, **kw) -> requests.Response:
            r = requests.get(base + path, headers=bearer(token) if token else {}, timeout=30, **kw)
            if token != org:
                pages[name or f"{path} as {token[:8] if token else 'anonymous'}"] = r.text
            return r

        step("creating")
        # the organiser creates and opens the competition: hIT public, the judgements private, quota 2 per day
        body = spec(SLUG, quota=2, limits={"upload": "1g", "unpacked": "2g"})
        assert requests.post(base + "/api/competitions", json=body, headers=bearer(alice), timeout=30).status_code == 403
        r = requests.post(base + "/api/competitions", json=body, headers=bearer(org), timeout=30)
        assert r.status_code == 201, r.text
        r = requests.post(base + f"/api/competitions/{SLUG}/open", headers=bearer(org), timeout=300)
        assert r.status_code == 200 and r.json()["status"] == "open", r.text
        watcher = BoardWatcher(base, f"/api/competitions/{SLUG}/board/events")
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None and os.environ.get("CI") == "true":
            pytest.fail("chromium is missing in CI (scripts/setup.sh installs Debian's chromium)")
        browser = Browser(chromium) if chromium else None
        try:
            watcher.wait(lambda b: b["rows"] == [])
            if browser is not None:  # the competition page, opened once: its board must fill in without a reload
                browser.goto(base + f"/competitions/{SLUG}")
                browser.wait_for("document.body.dataset.boardUpdates === '1'")
                assert "no scored entry yet" in browser.eval("document.getElementById('public-board').innerText")

            step("red submits")
            # red submits the pixels tarball through the API, streamed from the file, and follows it live
            t0 = time.time()
            with open(tarballs["pixels"], "rb") as f:
                r = requests.post(base + f"/api/competitions/{SLUG}/submissions", data=f, headers=bearer(alice), timeout=600)
            upload_s = time.time() - t0
            assert r.status_code == 202, r.text
            red1 = r.json()
            assert red1["digest"] == tarballs["pixels_id"] and red1["duplicate_of"] is None
            events = _events(base + red1["events_url"], alice)
            kinds = [k for k, _ in events]
            assert kinds[-1] == "done" and events[-1][1]["status"] == "succeeded", events[-3:]
            runs = [d for k, d in events if k == "run"]
            assert [(d["benchmark"], d["private"]) for d in runs] == [("Kriegeskorte2008.hIT-rdm", False),
                                                                      ("Kriegeskorte2008.judgements-rdm", True)]
            public_scores = [d for k, d in events if k == "score"]
            assert [d["benchmark"] for d in public_scores] == ["Kriegeskorte2008.hIT-rdm"]  # the private score is not sent
            private_events = [(k, d) for k, d in events if d.get("benchmark") == "Kriegeskorte2008.judgements-rdm"]
            assert {k for k, _ in private_events} <= {"run", "status", "progress", "failed", "run_done"}
            assert all(set(d) <= {"status", "done", "total", "label", "failure_class", "benchmark", "private"} for _, d in private_events)
            board = watcher.wait(lambda b: len(b["rows"]) == 1)
            assert board["rows"][0]["team"] == "red" and board["rows"][0]["value"] == pytest.approx(
                min(max(public_scores[0]["ceiled"], 0), 1))

            step("blue submits with the CLI")
            # blue submits a variant image with the CLI (docker save streamed into the request) and follows it
            result = CliRunner().invoke(cli_app, ["submit", tarballs["variant"], "--server", base, "--competition", SLUG,
                                                  "--token", bob])
            assert result.exit_code == 0, result.output
            assert re.search(r"submission \d+: succeeded", result.output), result.output
            assert "Kriegeskorte2008.hIT-rdm: ceiled" in result.output and "judgements-rdm: ceiled" not in result.output
            board = watcher.wait(lambda b: len(b["rows"]) == 2)
            assert {row["team"] for row in board["rows"]} == {"red", "blue"}
            if browser is not None:
                browser.wait_for("document.querySelectorAll('#public-board tr.board-row').length === 2")
                assert browser.eval("Number(document.body.dataset.boardUpdates)") >= 2
                assert browser.eval("location.pathname") == f"/competitions/{SLUG}"  # no reload, no navigation
                assert "hidden until the organiser reveals it" in browser.eval("document.body.innerText")
                browser.screenshot(tmp_path / "competition-live-board.png")

            step("platform failure")
            # a platform failure (the engine goes away) is refunded; the team sees the class, not our error text
            platform_failures["left"] = 2
            with open(tarballs["pixels"], "rb") as f:
                r = requests.post(base + f"/api/competitions/{SLUG}/submissions", data=f, headers=bearer(alice), timeout=600)
            assert r.status_code == 202, r.text
            red2 = r.json()
            assert _events(base + red2["events_url"], alice)[-1][1]["status"] == "platform_failed"
            seen = get(f"/api/submissions/{red2['submission']}", alice).json()
            assert seen["status"] == "platform_failed" and seen["counts_quota"] is False
            assert [(x["status"], x["failure_class"]) for x in seen["runs"]] == [("failed", "internal")] * 2
            assert "engine went away" not in json.dumps(seen)
            quota = get(f"/api/competitions/{SLUG}/quota", alice).json()
            assert (quota["used"], quota["left"], quota["refunded_today"]) == (1, 1, 1)

            step("second counted")
            # the second counted submission of the day is taken (scored from the activation cache), the third refused
            with open(tarballs["pixels"], "rb") as f:
                r = requests.post(base + f"/api/competitions/{SLUG}/submissions", data=f, headers=bearer(carol), timeout=600)
            assert r.status_code == 202, r.text
            red3 = r.json()
            assert _events(base + red3["events_url"], carol)[-1][1]["status"] == "succeeded"
            r = requests.post(base + f"/api/competitions/{SLUG}/submissions", data=b"x" * 1000, headers=bearer(alice), timeout=30)
            assert r.status_code == 429 and "used its 2 submission(s) of today" in r.json()["detail"], r.text

            step("duplicate")
            # blue submits red's very image: accepted, flagged as a duplicate of red's first submission
            with open(tarballs["pixels"], "rb") as f:
                r = requests.post(base + f"/api/competitions/{SLUG}/submissions", data=f, headers=bearer(bob), timeout=600)
            assert r.status_code == 202 and r.json()["duplicate_of"] == red1["submission"], r.text
            blue2 = r.json()
            assert queue_idle()
            assert _events(base + blue2["events_url"], bob)[-1][1]["status"] == "succeeded"

            step("leak checks")
            # private values: hidden from both teams (and anonymous callers) on every API and page until the reveal
            with community.session() as s:
                private_ids = [sr.run_id for sr in s.exec(select(SubmissionRun).where(SubmissionRun.private == True))]  # noqa: E712
                private_scores = list(s.exec(select(Score).where(Score.run_id.in_(private_ids))))
                subs = list(s.exec(select(Submission).order_by(Submission.id)))
            assert len(private_scores) == 4  # red1, blue1, red3, blue2
            for token in (alice, bob, carol, None):
                assert get(f"/api/competitions/{SLUG}/final", token).status_code == 403
                for path in ("/api/competitions", f"/api/competitions/{SLUG}", f"/api/competitions/{SLUG}/board",
                             f"/competitions/{SLUG}", "/competitions"):
                    assert get(path, token).status_code == 200
            for token in (alice, bob, carol):
                for path in (f"/api/competitions/{SLUG}/submissions", f"/competitions/{SLUG}/team", "/api/me"):
                    assert get(path, token).status_code == 200
                mine = [x for x in subs if x.team_id == (1 if token in (alice, carol) else 2)]
                for sub in mine:
                    assert get(f"/api/submissions/{sub.id}", token).status_code == 200
                    assert get(f"/submissions/{sub.id}/live", token).status_code == 200
                    get(f"/api/submissions/{sub.id}/events", token, stream=False)
                others = [x for x in subs if x not in mine]
                for sub in others:
                    assert get(f"/api/submissions/{sub.id}", token).status_code == 404
                    assert get(f"/api/submissions/{sub.id}/events", token).status_code == 404
                assert get(f"/api/competitions/{SLUG}/export", token).status_code == 403
            # the public leaderboard's pages read the main registry: no submission appears there at all
            for path in ("/", "/api/leaderboard", "/api/runs", "/api/models", "/runs"):
                assert get(path, None).status_code == 200
            for run_id in private_ids:
                get(f"/api/runs/{run_id}/progress", None)
            leaks = []
            for score_row in private_scores:
                for value in (score_row.raw, score_row.ceiled):
                    for text_form in (repr(value), f"{value:.3f}", f"{value:.4f}", f"{value:.6f}"):
                        # (event streams carry times in seconds with 3 decimals: only the long forms are checked there)
                        leaks += [(name, text_form) for name, body_text in pages.items() if text_form in body_text
                                  and ("/events" not in name or len(text_form) > 6)]
            assert not leaks, leaks[:5]
            assert "judgements-rdm" in pages[f"/api/competitions/{SLUG} as anonymous"]  # the track itself is public

            step("reveal")
            # the organiser reveals: the final board ranks the teams' entries on the private track
            assert requests.post(base + f"/api/competitions/{SLUG}/reveal", headers=bearer(org), timeout=30).json()["revealed"]
            final = get(f"/api/competitions/{SLUG}/final", bob).json()
            assert {row["team"] for row in final["rows"]} == {"red", "blue"} and final["tracks"] == ["heldout"]
            by_run = {x.run_id: x for x in private_scores}
            with community.session() as s:
                entry_private = {row["submission"]: next(by_run[sr.run_id] for sr in s.exec(select(SubmissionRun).where(
                    SubmissionRun.submission_id == row["submission"], SubmissionRun.private == True)))  # noqa: E712
                    for row in final["rows"]}
            for row in final["rows"]:
                assert row["value"] == pytest.approx(min(max(entry_private[row["submission"]].ceiled, 0.0), 1.0))
            page = get(f"/competitions/{SLUG}", alice).text
            if browser is not None:
                browser.goto(base + f"/competitions/{SLUG}")
                assert browser.eval("document.querySelectorAll('#final-board tr.board-row').length") == 2
                browser.screenshot(tmp_path / "competition-final-board.png")
            assert "Final board" in page and f"{final['rows'][0]['value']:.3f}" in page
            seen = get(f"/api/submissions/{red1['submission']}", alice).json()
            private_run = next(x for x in seen["runs"] if x["private"])
            assert private_run["ceiled"] is not None and "log_tail" not in private_run and "run_id" not in private_run
            export = requests.get(base + f"/api/competitions/{SLUG}/export?format=csv", headers=bearer(org), timeout=30)
            assert export.status_code == 200 and tarballs["pixels_id"] in export.text and tarballs["variant_id"] in export.text

            step("rescore")
            # the final ranking is recomputed from the stored digests (no cached activations): the same values
            r = requests.post(base + f"/api/competitions/{SLUG}/rescore", headers=bearer(org), timeout=30)
            assert sorted(r.json()["rescoring"]) == sorted(row["submission"] for row in final["rows"])
            time.sleep(0.5)
            assert queue_idle()
            again = get(f"/api/competitions/{SLUG}/final", org).json()
            assert [(x["team"], x["submission"]) for x in again["rows"]] == [(x["team"], x["submission"]) for x in final["rows"]]
            for before, after in zip(final["rows"], again["rows"]):
                assert after["value"] == pytest.approx(before["value"], abs=1e-9)
            with community.session() as s:
                assert len(list(s.exec(select(SubmissionRun).where(SubmissionRun.attempt == 1)))) == 4
        finally:
            watcher.close()
            if browser is not None:
                browser.close()

    # secrets: no token in the registries (community and main, provenance included), the pages or the logs
    dumps = []
    for url in (community_url, main_url):
        engine = Registry(url).engine
        with engine.connect() as conn:
            for (table,) in conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'")):
                dumps += [repr(tuple(row)) for row in conn.execute(text(f'SELECT * FROM "{table}"'))]
    everything = "\n".join(dumps) + "\n".join(pages.values()) + caplog.text
    for token in tokens.values():
        assert token.split("_", 2)[2] not in everything
    assert not list((tmp_path / "uploads").iterdir())  # uploads are removed once loaded
    step("done")
    print(f"upload of a {tarballs['pixels'].stat().st_size / 1e6:.0f} MB tarball, checked and loaded: {upload_s:.1f} s")
