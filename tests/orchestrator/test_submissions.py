"""Submitted image archives are checked before the engine sees them, and every API refuses what it must, with a
clear one-line error and nothing stored (no Docker needed: every refusal here comes before the engine)."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import tarfile
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from cortexbox.orchestrator.community import competitions
from cortexbox.orchestrator.community.archive import (
    ArchiveRejected,
    Limits,
    UploadTooLarge,
    check_archive,
    load_stream,
    receive,
)
from cortexbox.registry import Registry
from cortexbox.registry.models import Competition, Submission, SubmissionRun
from tests.orchestrator.test_competitions_helpers import _add, bearer, image_archive, layer_bytes, people, spec


# -- the archive checks -----------------------------------------------------------------------------------------------
def test_a_docker_save_shaped_archive_passes_and_its_id_is_its_config_digest(tmp_path):
    import hashlib

    path = image_archive(tmp_path / "ok.tar", layers=2)
    info = check_archive(path)
    with tarfile.open(path) as tar:
        config = tar.extractfile(info.config).read()
    assert info.image_id == "sha256:" + hashlib.sha256(config).hexdigest()
    assert len(info.layers) == 2 and info.repo_tags == ["evil/base:latest"]
    assert info.unpacked_bytes == sum(m.size for m in tarfile.open(path).getmembers())


def _symlink(name, target):
    def add(tar):
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.SYMTYPE, target
        tar.addfile(info)
    return add


def _hardlink(name, target):
    def add(tar):
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.LNKTYPE, target
        tar.addfile(info)
    return add


def _device(tar):
    info = tarfile.TarInfo("dev/sda")
    info.type, info.devmajor, info.devminor = tarfile.BLKTYPE, 8, 0
    tar.addfile(info)


def _entry(name, data=b"x"):
    return lambda tar: _add(tar, name, data)


BAD = {
    "two images": dict(manifest=[{"Config": "a.json", "Layers": ["l0/layer.tar"]}] * 2),
    "no image": dict(manifest=[]),
    "manifest not a list": dict(manifest={"Config": "a.json"}),
    "layer outside the archive": dict(manifest=[{"Config": "x.json", "Layers": ["../../etc/passwd"]}]),
    "absolute layer path": dict(manifest=[{"Config": "x.json", "Layers": ["/etc/passwd"]}]),
    "missing config": dict(manifest=[{"Config": "nope.json", "Layers": ["l0/layer.tar"]}]),
    "absolute entry": dict(extra=_entry("/etc/cron.d/evil")),
    "dot-dot entry": dict(extra=_entry("a/../../evil")),
    "symlink escaping": dict(extra=_symlink("l9/layer.tar", "../../../etc/shadow")),
    "absolute symlink": dict(extra=_symlink("l9/layer.tar", "/etc/shadow")),
    "hardlink escaping": dict(extra=_hardlink("l9/layer.tar", "../outside")),
    "device file": dict(extra=_device),
    "rootfs not matching the layers": dict(config={"rootfs": {"diff_ids": []}}),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_malformed_archive_is_refused_with_a_reason(tmp_path, case):
    path = image_archive(tmp_path / "bad.tar", **BAD[case])
    with pytest.raises(ArchiveRejected) as e:
        check_archive(path)
    assert "\n" not in str(e.value) and e.value.hint


def test_not_a_tar_and_a_duplicate_entry_are_refused(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is no tar archive" * 100)
    with pytest.raises(ArchiveRejected, match="not a tar archive"):
        check_archive(junk)
    twice = image_archive(tmp_path / "twice.tar", extra=_entry("manifest.json", b"[]"))
    with pytest.raises(ArchiveRejected, match="twice"):
        check_archive(twice)


def test_absurd_layer_counts_and_sizes_are_refused(tmp_path):
    many = image_archive(tmp_path / "many.tar", layers=5)
    with pytest.raises(ArchiveRejected, match="5 layers, more than 4"):
        check_archive(many, Limits(layers=4))
    big = image_archive(tmp_path / "big.tar", layer_data=layer_bytes({"blob": b"\0" * 300_000}))
    with pytest.raises(ArchiveRejected, match="unpacks to"):
        check_archive(big, Limits(unpacked_bytes=200_000))
    # a gzip bomb: 20 MB of zeros compressed to ~20 KB; its unpacked size is counted, not trusted
    bomb = image_archive(tmp_path / "bomb.tar", layer_data=gzip.compress(b"\0" * 20_000_000))
    assert (tmp_path / "bomb.tar").stat().st_size < 200_000
    with pytest.raises(ArchiveRejected, match="layers unpack to more than"):
        check_archive(bomb, Limits(unpacked_bytes=5_000_000))
    assert check_archive(bomb, Limits(unpacked_bytes=30_000_000)).unpacked_bytes > 20_000_000
    entries = image_archive(tmp_path / "entries.tar", extra=lambda tar: [_add(tar, f"f{i}", b"") for i in range(30)])
    with pytest.raises(ArchiveRejected, match="more than 20 entries"):
        check_archive(entries, Limits(entries=20))


def test_the_engine_gets_the_archive_without_its_tags(tmp_path):
    path = image_archive(tmp_path / "tagged.tar", extra=_entry("repositories", b'{"cortexbox/base": {"bookworm": "x"}}'))
    info = check_archive(path)
    assert info.repo_tags == ["evil/base:latest"] and info.dropped == ["repositories"]
    loaded = tarfile.open(fileobj=io.BytesIO(b"".join(load_stream(path))))
    names = loaded.getnames()
    assert "repositories" not in names and set(names) == set(tarfile.open(path).getnames()) - {"repositories"}
    assert json.loads(loaded.extractfile("manifest.json").read())[0]["RepoTags"] is None
    with tarfile.open(path) as original:
        assert loaded.extractfile(info.layers[0]).read() == original.extractfile(info.layers[0]).read()


def test_an_upload_is_counted_as_it_streams_and_cut_off_past_the_cap(tmp_path):
    async def chunks(n):
        for _ in range(n):
            yield b"x" * 1000

    dest = tmp_path / "up.tar"
    assert asyncio.run(receive(chunks(5), dest, 5000)) == 5000 and dest.stat().st_size == 5000
    with pytest.raises(UploadTooLarge):
        asyncio.run(receive(chunks(10_000), dest, 5000))
    assert not dest.exists()


# -- the HTTP API refuses, and stores nothing -------------------------------------------------------------------------
@pytest.fixture
def server(tmp_path):
    from cortexbox.orchestrator.web import create_app

    community = f"sqlite:///{tmp_path / 'community.db'}"
    registry = Registry(community)
    tokens = people(registry)
    app = create_app(f"sqlite:///{tmp_path / 'main.db'}", community_url=community)
    app.state.community.upload_dir = tmp_path / "uploads"
    with TestClient(app) as client:
        for name, closes in (("open", timedelta(days=1)), ("late", timedelta(seconds=-1))):
            body = spec(name, closes_in=closes, limits={"upload": "64k"})
            if closes.total_seconds() < 0:
                body["phases"][0]["opens"] = body["phases"][0]["closes"][:4] + "-01-01T00:00:00+00:00"
                body["phases"][0]["opens"] = "2000-01-01T00:00:00+00:00"
            r = client.post("/api/competitions", json=body, headers=bearer(tokens["org"]))
            assert r.status_code == 201, r.text
            with registry.session() as s:  # opened without registering its benchmarks (no data needed here)
                row = s.exec(select(Competition).where(Competition.slug == name)).one()
                row.status = "open"
                s.add(row)
                s.commit()
        yield client, registry, tokens, tmp_path


def _nothing_stored(registry, tmp_path):
    with registry.session() as s:
        assert s.exec(select(Submission)).all() == [] and s.exec(select(SubmissionRun)).all() == []
    assert not list((tmp_path / "uploads").glob("*")) if (tmp_path / "uploads").exists() else True


def test_every_api_refuses_a_wrong_or_missing_token(server):
    client, registry, tokens, tmp_path = server
    good = tokens["alice"]
    wrong = [None, "nonsense", good[:-1] + ("A" if good[-1] != "A" else "B"), "cbx_" + "0" * 16 + "_" + good.split("_")[2]]
    calls = [("post", "/api/competitions/open/submissions"), ("post", "/api/teams"), ("post", "/api/teams/red/members"),
             ("post", "/api/competitions"), ("post", "/api/competitions/open/close"), ("get", "/api/me"),
             ("get", "/api/competitions/open/quota"), ("get", "/api/competitions/open/submissions"),
             ("get", "/api/submissions/1"), ("get", "/api/competitions/open/export")]
    for token in wrong:
        for method, url in calls:
            r = getattr(client, method)(url, headers=bearer(token) if token else {}, **({"content": b"x"} if method == "post" else {}))
            assert r.status_code == 401, (token, url, r.status_code, r.text)
            detail = r.json()["detail"]
            assert "hint:" in detail and "\n" not in detail and (token is None or token not in detail)
    assert client.get("/api/me", headers=bearer(good)).json()["team"] == "red"
    assert client.post("/api/competitions/open/close", headers=bearer(good)).status_code == 403  # not the organiser
    assert client.post("/api/competitions", json=spec("x"), headers=bearer(good)).status_code == 403  # not an admin
    _nothing_stored(registry, tmp_path)


def test_oversize_malformed_late_and_teamless_uploads_are_refused_and_nothing_is_stored(server):
    client, registry, tokens, tmp_path = server
    alice = bearer(tokens["alice"])
    # declared too large: refused before a byte is read
    r = client.post("/api/competitions/open/submissions", content=b"x" * 70_000, headers=alice)
    assert r.status_code == 413 and "cap of 65536 bytes" in r.json()["detail"], r.text
    # no declared length (chunked): cut off by the running count

    def chunks():
        for _ in range(100):
            yield b"y" * 1000

    r = client.post("/api/competitions/open/submissions", content=chunks(), headers=alice)
    assert r.status_code == 413, r.text
    r = client.post("/api/competitions/open/submissions", content=b"not a tarball" * 10, headers=alice)
    assert r.status_code == 400 and "not a tar archive" in r.json()["detail"]
    bad = image_archive(tmp_path / "two.tar", manifest=[{"Config": "a", "Layers": []}] * 2).read_bytes()
    r = client.post("/api/competitions/open/submissions", content=bad, headers=alice)
    assert r.status_code == 400 and "exactly one image" in r.json()["detail"]
    ok = image_archive(tmp_path / "ok.tar").read_bytes()
    r = client.post("/api/competitions/late/submissions", content=ok, headers=alice)
    assert r.status_code == 403 and r.json()["detail"].startswith("late submission refused: phase main of late closed at")
    r = client.post("/api/competitions/open/submissions", content=ok, headers=bearer(tokens["eve"]))
    assert r.status_code == 403 and "in no team" in r.json()["detail"]
    r = client.post("/api/competitions/nope/submissions", content=ok, headers=alice)
    assert r.status_code == 404
    _nothing_stored(registry, tmp_path)
    assert competitions.quota(registry, competitions.get(registry, "open"), 1)["used"] == 0


def test_a_team_never_sees_another_teams_submission(server):
    client, registry, tokens, tmp_path = server
    comp = competitions.get(registry, "open")
    with registry.session() as s:
        sub = Submission(competition_id=comp.id, team_id=1, account_id=2, digest="sha256:" + "a" * 64, image_ref="x")
        s.add(sub)
        s.commit()
        s.refresh(sub)
    for who, code in (("alice", 200), ("carol", 200), ("org", 200), ("bob", 404), ("eve", 404)):
        assert client.get(f"/api/submissions/{sub.id}", headers=bearer(tokens[who])).status_code == code, who
        if code == 404:  # (a stream of one's own queued submission would run until it ends)
            assert client.get(f"/api/submissions/{sub.id}/events", headers=bearer(tokens[who])).status_code == 404
    r = client.get(f"/api/submissions/{sub.id}", headers=bearer(tokens["bob"]))
    assert r.json()["detail"].startswith(f"no submission {sub.id} of yours")
    assert client.get("/api/competitions/open/submissions", headers=bearer(tokens["bob"])).json() == []
    assert [x["submission"] for x in client.get("/api/competitions/open/submissions", headers=bearer(tokens["carol"])).json()] == [sub.id]
    assert client.get(f"/submissions/{sub.id}/live", headers=bearer(tokens["bob"])).status_code == 404


def test_cortexbox_submit_reports_a_refusal_in_one_line(server, tmp_path):
    """`cortexbox submit TARBALL` against a real server: a wrong token and a malformed archive end with the server's
    one-line reason (exit code 2), and nothing is stored."""
    from typer.testing import CliRunner

    from cortexbox.orchestrator.cli import app as cli_app
    from tests.orchestrator.test_web_browser import Server

    client, registry, tokens, _ = server
    bad = image_archive(tmp_path / "bad.tar", manifest=[])
    with Server(client.app) as running:
        runner = CliRunner()
        wrong = runner.invoke(cli_app, ["submit", str(bad), "--server", running.url, "--competition", "open", "--token", "cbx_nope"])
        assert wrong.exit_code != 0 and "refused the submission (401): no valid token given" in str(wrong.exception)
        malformed = runner.invoke(cli_app, ["submit", str(bad), "--server", running.url, "--competition", "open",
                                            "--token", tokens["alice"]])
        assert "refused the submission (400): the archive must hold exactly one image" in str(malformed.exception)
        assert tokens["alice"] not in str(malformed.exception) + malformed.output
    _nothing_stored(registry, tmp_path)


def test_an_image_registry_pins_the_submission_and_its_failure_is_a_platform_error(monkeypatch):
    from cortexbox.orchestrator import image_registry
    from cortexbox.orchestrator.community import submissions
    from cortexbox.orchestrator.errors import UserError

    assert submissions.pin("sha256:" + "a" * 64, "cortexbox-submission/c") == ("sha256:" + "a" * 64, None)  # none configured
    monkeypatch.setattr(image_registry, "configured_registry", lambda: "127.0.0.1:5999")
    monkeypatch.setattr("cortexbox.orchestrator.runtime.docker_client", lambda: object())
    pushed = []

    def push(client, image, *, repository=None, **_):
        pushed.append((image, repository))
        return image_registry.RegistryImage(f"127.0.0.1:5999/{repository}@sha256:{'b' * 64}", "sha256:" + "b" * 64, image)

    monkeypatch.setattr(image_registry, "push", push)
    ref, digest = submissions.pin("sha256:" + "a" * 64, "cortexbox-submission/c")
    assert ref == f"127.0.0.1:5999/cortexbox-submission/c@sha256:{'b' * 64}" and digest == "sha256:" + "b" * 64
    assert pushed == [("sha256:" + "a" * 64, "cortexbox-submission/c")]

    def down(*args, **kwargs):
        raise image_registry.RegistryUnavailable("connection refused", "start it")

    monkeypatch.setattr(image_registry, "push", down)
    with pytest.raises(submissions.EngineUnavailable, match="the image registry failed") as e:
        submissions.pin("sha256:" + "a" * 64, "cortexbox-submission/c")
    assert isinstance(e.value, UserError)


# -- tokens revoked, team size -----------------------------------------------------------------------------------------
def test_an_account_revokes_its_own_token_an_admin_any_and_a_revoked_token_is_refused_everywhere(server):
    """Over HTTP: alice revokes her token (its id from GET /api/tokens): from then on it is refused by every API,
    page and the login form, and the web session she opened with it ends too; bob cannot revoke carol's token (a
    404: he learns nothing of it), the admin can."""
    from cortexbox.orchestrator.community.accounts import issue_token

    client, registry, tokens, tmp_path = server
    alice, carol = tokens["alice"], tokens["carol"]
    listed = client.get("/api/tokens", headers=bearer(alice)).json()
    assert [t["token_id"] for t in listed] == [alice.split("_")[1]] and alice.split("_")[2] not in json.dumps(listed)
    r = client.post("/login", data={"token": alice}, follow_redirects=False)  # a web session made with the token
    session = r.cookies["cbx_session"]
    assert client.get("/api/me", headers={"Cookie": f"cbx_session={session}"}).json()["user"] == "alice"
    client.cookies.clear()
    spare = issue_token(registry, 2)  # alice's second token stays valid
    r = client.delete(f"/api/tokens/{alice.split('_')[1]}", headers=bearer(alice))
    assert r.status_code == 200 and r.json() == {"revoked": alice.split("_")[1], "sessions_ended": 1}, r.text
    ok = image_archive(tmp_path / "ok.tar").read_bytes()
    calls = [("get", "/api/me"), ("get", "/api/tokens"), ("get", "/api/competitions/open/quota"),
             ("get", "/api/competitions/open/submissions"), ("post", "/api/competitions/open/submissions"),
             ("post", "/api/teams"), ("delete", f"/api/tokens/{spare.split('_')[1]}")]
    for method, url in calls:
        r = client.request(method.upper(), url, headers=bearer(alice), **({"content": ok} if method == "post" else {}))
        assert r.status_code == 401 and "revoked" in r.json()["detail"], (url, r.status_code, r.text)
    assert client.get("/api/me", headers={"Cookie": f"cbx_session={session}"}).status_code == 401
    client.cookies.clear()
    r = client.get("/competitions/open/team", headers=bearer(alice), follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")  # a page treats it as no login
    r = client.post("/login", data={"token": alice}, follow_redirects=False)
    assert r.headers["location"] == "/login?error=1" and "cbx_session" not in r.cookies
    assert client.get("/api/me", headers=bearer(spare)).json()["user"] == "alice"
    # another's token: not found for bob (and his own stays), revoked by the admin
    carol_id = carol.split("_")[1]
    r = client.delete(f"/api/tokens/{carol_id}", headers=bearer(tokens["bob"]))
    assert r.status_code == 404 and r.json()["detail"] == f"no token '{carol_id}' of yours (hint: GET /api/tokens lists your tokens' ids)"
    assert client.delete("/api/tokens/not-an-id", headers=bearer(tokens["bob"])).status_code == 404
    assert client.get("/api/me", headers=bearer(carol)).status_code == 200
    assert client.delete(f"/api/tokens/{carol_id}", headers=bearer(tokens["org"])).status_code == 200
    assert client.get("/api/me", headers=bearer(carol)).status_code == 401
    _nothing_stored(registry, tmp_path)


def test_a_team_larger_than_the_competitions_team_size_is_refused_and_nothing_is_stored(server):
    """team_size (default 10, competitions.TEAM_SIZE) in the spec: red has two members, a competition of one-person
    teams refuses its upload with a clear 403 before anything is read; bob's one-person team is let through to the
    archive check. A bad team_size is refused when the competition is made."""
    client, registry, tokens, tmp_path = server
    assert competitions.get(registry, "open").spec["team_size"] == competitions.TEAM_SIZE == 10
    for bad in (0, "3", True, 1001):
        r = client.post("/api/competitions", json=spec("solo", limits={"upload": "64k"}) | {"team_size": bad},
                        headers=bearer(tokens["org"]))
        assert r.status_code == 400 and "team_size must be a whole number from 1 to 1000" in r.json()["detail"], bad
    r = client.post("/api/competitions", json=spec("solo", limits={"upload": "64k"}) | {"team_size": 1},
                    headers=bearer(tokens["org"]))
    assert r.status_code == 201 and r.json()["team_size"] == 1
    with registry.session() as s:
        row = s.exec(select(Competition).where(Competition.slug == "solo")).one()
        row.status = "open"
        s.add(row)
        s.commit()
    r = client.post("/api/competitions/solo/submissions", content=b"x" * 100, headers=bearer(tokens["alice"]))
    assert r.status_code == 403, r.text
    assert r.json()["detail"] == ("team red has 2 members; solo takes submissions from teams of at most 1 "
                                  "(hint: ask an admin to move members to another team)")
    r = client.post("/api/competitions/solo/submissions", content=b"x" * 100, headers=bearer(tokens["bob"]))
    assert r.status_code == 400 and "not a tar archive" in r.json()["detail"]  # past the team check
    _nothing_stored(registry, tmp_path)


# -- with a broker: the web app stages, the worker loads -----------------------------------------------------------------
class _Broker:
    def __init__(self):
        self.sent: list = []

    def send_task(self, name, args, **kwargs):
        self.sent.append((name, args))


def test_with_a_broker_the_web_app_stages_the_archive_without_an_engine_and_the_worker_loads_it(server, monkeypatch):
    """The web app with a broker never calls the engine: the checked archive's submission is stored without an image
    (digest and duplicate flag from the archive), its archive kept in the upload folder, its task published. The
    worker's side (tasks.run): an engine away is the platform's failure (retried, the archive kept); the image loaded
    and pinned is recorded and its archive deleted, a redelivery reuses it; an engine that refuses another archive
    ends that submission ``bad_image``, counted, its archive deleted, the engine's reason shown to the team."""
    from cortexbox.orchestrator.community import submissions, tasks
    from cortexbox.registry.models import SubmissionJob

    client, registry, tokens, tmp_path = server
    uploads = tmp_path / "uploads"
    monkeypatch.setenv("CORTEXBOX_UPLOAD_DIR", str(uploads))  # the worker's side reads the same folder
    broker = _Broker()
    client.app.state.community.broker = lambda: broker

    def no_engine(*args, **kwargs):
        raise AssertionError("the web app touched the engine")

    monkeypatch.setattr("cortexbox.orchestrator.runtime.docker_client", no_engine)
    ok = image_archive(tmp_path / "ok.tar")
    r = client.post("/api/competitions/open/submissions", content=ok.read_bytes(), headers=bearer(tokens["alice"]))
    assert r.status_code == 202, r.text
    first = r.json()
    r = client.post("/api/competitions/open/submissions", content=ok.read_bytes(), headers=bearer(tokens["bob"]))
    assert r.status_code == 202 and r.json()["duplicate_of"] == first["submission"], r.text
    digest = check_archive(ok).image_id
    with registry.session() as s:
        subs = s.exec(select(Submission).order_by(Submission.id)).all()
    assert [(x.digest, x.image_ref, x.status) for x in subs] == [(digest, "", "queued")] * 2
    staged = [submissions.archive_path(x, uploads) for x in subs]
    assert sorted(p.name for p in uploads.iterdir()) == sorted(p.name for p in staged)
    assert staged[0].read_bytes() == ok.read_bytes()
    assert broker.sent == [(tasks.TASK, [x.id, 0, tasks.masked(registry.url)]) for x in subs]

    # the worker: its engine away first (the platform's: retried, nothing counted, the archive kept)
    loads = []

    def away(path, info, tag):
        raise submissions.EngineUnavailable("the container engine is not reachable: ConnectionError", "try again later")

    monkeypatch.setattr(submissions, "tag_exists", lambda tag: False)
    monkeypatch.setattr(submissions, "load_into_engine", away)
    scored = []

    def score(request, registry, events):
        scored.append(request.image)

    def deliver(sub_id):
        return tasks.run(registry, sub_id, 0, worker="w@test:1", lease_s=30, score=score, own_containers=False)

    out = deliver(subs[0].id)
    assert (out["status"], out["failure_class"]) == ("queued", "engine") and staged[0].exists() and scored == []

    def load(path, info, tag):
        loads.append((path, tag))
        return info.image_id

    monkeypatch.setattr(submissions, "load_into_engine", load)
    monkeypatch.setattr(submissions, "pin", lambda image_id, repository: (f"127.0.0.1:5999/{repository}@sha256:{'b' * 64}",
                                                                         "sha256:" + "b" * 64))
    assert deliver(subs[0].id)["status"] == "succeeded"
    ref = f"127.0.0.1:5999/cortexbox-submission/open@sha256:{'b' * 64}"
    assert loads == [(staged[0], submissions.submission_tag("open", "red", digest))] and scored == [ref, ref]
    with registry.session() as s:
        done = s.get(Submission, subs[0].id)
    assert (done.status, done.image_ref, done.registry_digest, done.counts_quota) == ("succeeded", ref, "sha256:" + "b" * 64, True)
    assert not staged[0].exists()
    assert submissions.install(registry, subs[0].id).image_ref == ref and len(loads) == 1  # a redelivery reuses it

    # another engine refuses the second team's image: the submission's own failure, final and counted
    def refuse(path, info, tag):
        raise ArchiveRejected("the engine refused the image: layer does not match its diff_id", "use `docker save`")

    monkeypatch.setattr(submissions, "load_into_engine", refuse)
    out = deliver(subs[1].id)
    assert (out["status"], out["failure_class"]) == ("failed", submissions.BAD_IMAGE) and len(scored) == 2
    with registry.session() as s:
        refused = s.get(Submission, subs[1].id)
        (job,) = s.exec(select(SubmissionJob).where(SubmissionJob.submission_id == subs[1].id)).all()
    assert (refused.status, refused.counts_quota, refused.image_ref, job.attempts) == ("failed", True, "", 1)
    assert not staged[1].exists() and not list(uploads.iterdir())
    seen = client.get(f"/api/submissions/{subs[1].id}", headers=bearer(tokens["bob"])).json()
    assert seen["failure_class"] == "bad_image" and "layer does not match its diff_id" in seen["error"]
    assert "error" not in client.get(f"/api/submissions/{subs[0].id}", headers=bearer(tokens["alice"])).json()
