"""Submissions against the real Docker engine, over HTTP: a re-labelled copy of another team's image (another
digest, the same filesystem layers) is flagged for the organisers only, and an upload refused after its image was
loaded (the quota re-checked when it is stored) leaves no tag in the engine. Scoring is not what these tests are
about: the submission queue is stubbed."""

from __future__ import annotations

import io
import time

import docker.errors
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from cortexbox.registry import Registry
from cortexbox.registry.models import Competition, Submission
from tests.orchestrator.test_competitions_helpers import bearer, people, spec

pytestmark = [pytest.mark.docker]
SLUG = "eng-2027"


@pytest.fixture(scope="module")
def images(docker_client, template_image, tmp_path_factory):
    """The pixels template and a copy of it with one label more (another config, the same layers), both saved;
    the copy and every tag the submissions got are removed at the end."""
    pixels = template_image("pixels")
    copy_tag = f"cortexbox-test/pixels-relabelled:{int(time.time())}"
    docker_client.images.build(fileobj=io.BytesIO(f"FROM {pixels}\nLABEL x=y\n".encode()), tag=copy_tag,
                               network_mode="none", rm=True)
    folder = tmp_path_factory.mktemp("tarballs")
    paths = {}
    for name, ref in (("pixels", pixels), ("copy", copy_tag)):
        paths[name] = folder / f"{name}.tar"
        with open(paths[name], "wb") as f:
            for chunk in docker_client.images.get(ref).save(chunk_size=1024**2):
                f.write(chunk)
    yield {**paths, "pixels_id": docker_client.images.get(pixels).id, "copy_id": docker_client.images.get(copy_tag).id}
    for image in docker_client.images.list():
        for tag in image.tags:
            if tag.startswith(f"cortexbox-submission/{SLUG}:"):
                docker_client.images.remove(tag)
    try:
        docker_client.images.remove(copy_tag, force=True)
    except docker.errors.ImageNotFound:
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    from cortexbox.orchestrator.web import create_app

    monkeypatch.delenv("CORTEXBOX_BROKER_URL", raising=False)
    monkeypatch.delenv("CORTEXBOX_IMAGE_REGISTRY", raising=False)
    url = f"sqlite:///{tmp_path / 'community.db'}"
    registry = Registry(url)
    tokens = people(registry)
    app = create_app(f"sqlite:///{tmp_path / 'main.db'}", community_url=url)
    app.state.community.upload_dir = tmp_path / "uploads"
    app.state.community.queue.enqueue = lambda *args, **kwargs: None  # stored, never scored here
    with TestClient(app) as client:
        r = client.post("/api/competitions", json=spec(SLUG, quota=3, limits={"upload": "1g", "unpacked": "2g"}),
                        headers=bearer(tokens["org"]))
        assert r.status_code == 201, r.text
        with registry.session() as s:  # opened without registering its benchmarks (nothing is scored)
            row = s.exec(select(Competition).where(Competition.slug == SLUG)).one()
            row.status = "open"
            s.add(row)
            s.commit()
        yield client, registry, tokens
    registry.engine.dispose()


def upload(client, path, token):
    with open(path, "rb") as f:
        return client.post(f"/api/competitions/{SLUG}/submissions", content=f, headers=bearer(token))


def test_a_relabelled_copy_of_another_teams_image_is_flagged_for_the_organisers_only(server, images):
    """Blue uploads red's image rebuilt with one more LABEL: a new digest (not a duplicate) but the same layers,
    so it resembles red's submission: in the organiser's export (JSON, CSV), page and view, never in what either
    team sees or on the board. The same copy from red itself is not flagged."""
    client, registry, tokens = server
    assert images["copy_id"] != images["pixels_id"]
    r = upload(client, images["pixels"], tokens["alice"])
    assert r.status_code == 202, r.text
    red = r.json()
    r = upload(client, images["copy"], tokens["bob"])
    assert r.status_code == 202, r.text
    blue = r.json()
    assert blue["digest"] == images["copy_id"] and blue["duplicate_of"] is None and "resembles" not in blue
    r = upload(client, images["copy"], tokens["carol"])  # red's own copy: its layers are red's own
    assert r.status_code == 202, r.text
    red_copy = r.json()
    assert red_copy["duplicate_of"] == blue["submission"]  # blue's very digest (the existing rule)
    with registry.session() as s:
        subs = {x.id: x for x in s.exec(select(Submission))}
    assert subs[blue["submission"]].resembles == red["submission"]
    assert subs[red["submission"]].resembles is None and subs[red_copy["submission"]].resembles is None
    assert subs[red["submission"]].layers_digest == subs[blue["submission"]].layers_digest is not None
    # the organisers see it
    org = bearer(tokens["org"])
    export = {x["submission"]: x for x in client.get(f"/api/competitions/{SLUG}/export", headers=org).json()["submissions"]}
    assert export[blue["submission"]]["resembles"] == red["submission"] and export[red["submission"]]["resembles"] is None
    csv_text = client.get(f"/api/competitions/{SLUG}/export?format=csv", headers=org).text
    assert csv_text.splitlines()[0].split(",").count("resembles") == 1
    page = client.get(f"/competitions/{SLUG}/organise", headers=org).text
    assert f'of another team, under another image config">{red["submission"]}</span>' in page
    assert client.get(f"/api/submissions/{blue['submission']}", headers=org).json()["resembles"] == red["submission"]
    # the teams never do
    for who in ("alice", "bob", "carol"):
        for path in (f"/api/submissions/{blue['submission']}", f"/api/competitions/{SLUG}/submissions",
                     f"/competitions/{SLUG}/team", f"/api/competitions/{SLUG}/board", f"/competitions/{SLUG}"):
            r = client.get(path, headers=bearer(tokens[who]))
            assert "resembles" not in r.text and "another image config" not in r.text, (who, path)
        assert client.get(f"/api/competitions/{SLUG}/export", headers=bearer(tokens[who])).status_code == 403


def test_an_upload_refused_after_its_load_leaves_no_tag(server, images, docker_client, monkeypatch):
    """The quota is checked again when the submission is stored: another upload of the team landed while this one
    was loaded and pinned, so it is refused (429, nothing stored) and the tag its load made is removed; a tag that
    was there before (the team's earlier submission of the same image) stays."""
    from cortexbox.orchestrator.community import submissions

    client, registry, tokens = server
    for image in docker_client.images.list():  # the tags of the test above
        for old in image.tags:
            if old.startswith(f"cortexbox-submission/{SLUG}:"):
                docker_client.images.remove(old)
    tag = f"cortexbox-submission/{SLUG}:blue-{images['copy_id'][7:19]}"
    assert not _exists(docker_client, tag)
    real_pin = submissions.pin

    def racing_pin(image_id, repository):  # the team's other uploads land meanwhile: its quota (3) is used up
        with registry.session() as s:
            for _ in range(3):
                s.add(Submission(competition_id=1, team_id=2, account_id=3, digest="sha256:" + "c" * 64, image_ref="x"))
            s.commit()
        return real_pin(image_id, repository)

    monkeypatch.setattr(submissions, "pin", racing_pin)
    r = upload(client, images["copy"], tokens["bob"])
    assert r.status_code == 429 and "used its 3 submission(s) of today" in r.json()["detail"], r.text
    assert not _exists(docker_client, tag)
    with registry.session() as s:
        assert {x.digest for x in s.exec(select(Submission))} == {"sha256:" + "c" * 64}  # nothing of this upload
    # red's tag exists from an accepted upload; the same refusal leaves it in place
    monkeypatch.setattr(submissions, "pin", real_pin)
    assert upload(client, images["pixels"], tokens["alice"]).status_code == 202
    red_tag = f"cortexbox-submission/{SLUG}:red-{images['pixels_id'][7:19]}"
    assert _exists(docker_client, red_tag)
    monkeypatch.setattr(submissions, "store", _refusing_store)
    r = upload(client, images["pixels"], tokens["alice"])
    assert r.status_code == 429 and _exists(docker_client, red_tag)


def _refusing_store(registry, comp, caller, *args):
    """``store`` whose quota re-check refuses (the race of the test above, for red)."""
    from cortexbox.orchestrator.community import competitions

    raise competitions.Refused(f"team {caller.team} has used its 3 submission(s) of today in {comp.slug}", status=429)


def _exists(client, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def test_a_staged_upload_is_loaded_by_the_worker_and_an_image_the_engine_refuses_is_the_submissions_failure(
        server, images, docker_client, monkeypatch, tmp_path):
    """With a broker the web app only stages uploads; the worker's delivery (tasks.run, on this engine) loads the
    pixels tarball, tags it, records its image id and deletes the archive, and a redelivery of a job requeued after
    that reuses the image without the archive. An archive that passes our checks but whose layer is not what its
    config's diff_id says is refused by the engine: ``bad_image``, final and counted, no tag left, archive deleted."""
    import hashlib
    import json

    from cortexbox.orchestrator.community import submissions, tasks
    from cortexbox.orchestrator.community.archive import check_archive
    from tests.orchestrator.test_competitions_helpers import image_archive

    client, registry, tokens = server
    uploads = client.app.state.community.upload_dir
    monkeypatch.setenv("CORTEXBOX_UPLOAD_DIR", str(uploads))
    client.app.state.community.broker = lambda: object()  # staged; the queue is stubbed (no message sent)
    for image in docker_client.images.list():  # the tags of the tests above
        for old in image.tags:
            if old.startswith(f"cortexbox-submission/{SLUG}:"):
                docker_client.images.remove(old)
    r = upload(client, images["pixels"], tokens["alice"])
    assert r.status_code == 202, r.text
    red = r.json()["submission"]
    tag = submissions.submission_tag(SLUG, "red", images["pixels_id"])
    assert not _exists(docker_client, tag) and len(list(uploads.iterdir())) == 1  # staged, not loaded
    scored = []

    def deliver(sub_id):
        tasks.enqueue(registry, sub_id)
        return tasks.run(registry, sub_id, 0, worker="w@test:1", lease_s=30, own_containers=False,
                         score=lambda request, registry, events: scored.append(request.image))

    assert deliver(red)["status"] == "succeeded" and scored == [images["pixels_id"]] * 2
    assert _exists(docker_client, tag) and not list(uploads.iterdir())
    with registry.session() as s:  # a redelivery after the image was loaded: its row emptied as if never recorded
        row = s.get(Submission, red)
        row.image_ref = ""
        s.add(row)
        s.commit()
    assert submissions.install(registry, red).image_ref == images["pixels_id"]  # from the engine, no archive

    layer = b"not the layer its diff_id names" + b"\0" * 482
    config = {"architecture": "amd64", "os": "linux", "config": {"Labels": {"t": str(time.time())}},
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(b"another").hexdigest()]}}
    forged = image_archive(tmp_path / "forged.tar", config=config, layer_data=layer)
    digest = check_archive(forged).image_id
    r = client.post(f"/api/competitions/{SLUG}/submissions", content=forged.read_bytes(), headers=bearer(tokens["bob"]))
    assert r.status_code == 202, r.text
    blue = r.json()["submission"]
    out = deliver(blue)
    assert (out["status"], out["failure_class"]) == ("failed", submissions.BAD_IMAGE), out
    with registry.session() as s:
        row = s.get(Submission, blue)
    assert (row.status, row.counts_quota, row.image_ref) == ("failed", True, "")
    assert not _exists(docker_client, submissions.submission_tag(SLUG, "blue", digest)) and not list(uploads.iterdir())
    seen = client.get(f"/api/submissions/{blue}", headers=bearer(tokens["bob"])).json()
    assert seen["failure_class"] == "bad_image" and "the engine refused the image" in seen["error"], json.dumps(seen)
