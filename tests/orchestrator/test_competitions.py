"""Accounts and tokens, teams, competition specs, quotas and boards (no Docker: runs and scores are rows)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from cortexbox.orchestrator.community import competitions
from cortexbox.orchestrator.community.accounts import AuthError, Caller, add_team, add_user, authenticate, join_team
from cortexbox.orchestrator.errors import UserError
from cortexbox.registry import Registry
from cortexbox.registry.models import Submission, SubmissionRun
from tests.orchestrator.test_competitions_helpers import people, spec


@pytest.fixture
def registry(tmp_path):
    return Registry(f"sqlite:///{tmp_path / 'community.db'}")


def _dump(registry) -> str:
    """Every value of every table, as text."""
    parts = []
    with registry.engine.connect() as conn:
        for (table,) in conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'")):
            parts += [repr(tuple(row)) for row in conn.execute(text(f'SELECT * FROM "{table}"'))]
    return "\n".join(parts)


def test_a_token_is_stored_only_as_a_salted_hash_and_checked_by_its_id(registry):
    account, token = add_user(registry, "alice")
    other = add_user(registry, "bob")[1]
    assert re.fullmatch(r"cbx_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", token)
    _, token_id, secret = token.split("_", 2)
    dump = _dump(registry)
    assert token_id in dump and secret not in dump and token not in dump  # the id is the lookup key; the secret never stored
    assert authenticate(registry, token).name == "alice" and authenticate(registry, other).name == "bob"
    for wrong in ("", "cbx_x", token[:-2] + ("aa" if not token.endswith("aa") else "bb"),
                  f"cbx_{other.split('_')[1]}_{secret}",  # bob's id with alice's secret
                  f"cbx_{'f' * 16}_{secret}"):
        with pytest.raises(AuthError) as e:
            authenticate(registry, wrong)
        assert secret not in str(e.value)
    with pytest.raises(UserError, match="exists"):
        add_user(registry, "alice")
    with pytest.raises(UserError, match="not allowed"):
        add_user(registry, "Robert'); DROP TABLE account;--")


def test_teams_have_members_and_one_team_per_user(registry):
    people(registry)
    assert authenticate(registry, add_user(registry, "dave")[1]).team is None
    with pytest.raises(UserError, match="in a team already"):
        join_team(registry, "blue", "alice")
    with pytest.raises(UserError, match="exists"):
        add_team(registry, "red", "dave")
    outsider = Caller(99, "mallory", False, 2, "blue")
    with pytest.raises(UserError, match="only members of team 'red'"):
        join_team(registry, "red", "dave", by=outsider)


def test_the_cli_adds_users_and_teams_and_prints_a_token_once(tmp_path):
    from cortexbox.orchestrator.cli import app

    url = f"sqlite:///{tmp_path / 'c.db'}"
    runner = CliRunner()
    result = runner.invoke(app, ["users", "add", "org", "--admin", "--database-url", url])
    assert result.exit_code == 0, result.output
    token = re.search(r"cbx_\S+", result.output).group(0)
    registry = Registry(url)
    assert authenticate(registry, token).is_admin
    assert runner.invoke(app, ["users", "add", "ann", "--database-url", url]).exit_code == 0
    assert runner.invoke(app, ["teams", "add", "red", "--user", "ann", "--database-url", url]).exit_code == 0
    assert runner.invoke(app, ["users", "add", "ben", "--database-url", url]).exit_code == 0
    assert runner.invoke(app, ["teams", "join", "red", "ben", "--database-url", url]).exit_code == 0
    from cortexbox.orchestrator.community.accounts import team_members

    assert team_members(registry, 1) == ["ann", "ben"]
    bad = runner.invoke(app, ["teams", "join", "nope", "ben", "--database-url", url])
    assert bad.exit_code != 0 and isinstance(bad.exception, UserError)
    spec_file = tmp_path / "spec.json"
    import json

    spec_file.write_text(json.dumps(spec("cli")))
    result = runner.invoke(app, ["competitions", "create", str(spec_file), "--organiser", "org", "--database-url", url])
    assert result.exit_code == 0 and "created" in result.output
    assert competitions.get(registry, "cli").status == "draft"
    assert token not in _dump(registry)


def test_specs_are_checked():
    known = {"A2020.x", "B2020.y", "C2020.z"}
    good = spec("s", public=("A2020.x",), private=("B2020.y",))
    assert competitions.check_spec(good, known)["tracks"][1]["visibility"] == "private"
    bad = [
        ({**good, "slug": "Bad Slug"}, "slug"),
        ({**good, "quota_per_day": 0}, "quota_per_day"),
        ({**good, "tracks": [good["tracks"][1]]}, "at least one public track"),
        ({**good, "tracks": [good["tracks"][0], {**good["tracks"][1], "benchmarks": ["A2020.x"]}]}, "is in tracks it and heldout"),
        ({**good, "tracks": [{**good["tracks"][0], "benchmarks": ["Nope2020.q"]}]}, "unknown benchmark"),
        ({**good, "tracks": [{**good["tracks"][0], "benchmarks": {"IT": []}}]}, "track it"),
        ({**good, "phases": [{"name": "p", "opens": "2027-02-01T00:00:00Z", "closes": "2027-01-01T00:00:00Z"}]}, "closes"),
        ({**good, "phases": [{"name": "p", "opens": "soon", "closes": "later"}]}, "ISO 8601"),
        ({**good, "phases": []}, "at least one phase"),
        ({**good, "limits": {"upload": "lots"}}, "limits"),
    ]
    for body, message in bad:
        with pytest.raises(UserError, match=message):
            competitions.check_spec(body, known)


def _scored(registry, sub_id: int, bench, value: float | None, *, failure: str | None = None, private=False) -> None:
    """A run (and a score unless it failed) of submission ``sub_id`` on ``bench``."""
    run = registry.start_run("x", bench.identifier)
    registry.update_run(run, benchmark_id=bench.id, status="failed" if failure else "succeeded", failure_class=failure)
    if value is not None:
        model = registry.models()[0]
        registry.add_score(run_id=run.id, model_id=model.id, benchmark_id=bench.id, raw=value, ceiled=value, ceiling=1.0)
    with registry.session() as s:
        s.add(SubmissionRun(submission_id=sub_id, benchmark=bench.identifier, private=private, run_id=run.id,
                            status="failed" if failure else "succeeded", failure_class=failure))
        s.commit()


def test_quota_refunds_platform_failures_and_boards_rank_entries_by_the_tree(registry):
    tokens = people(registry)
    org = authenticate(registry, tokens["org"])
    a, b = authenticate(registry, tokens["alice"]), authenticate(registry, tokens["bob"])
    body = spec("q", quota=2, public=("A2020.x", "A2020.w"), private=("B2020.y",))
    body["tracks"][0]["benchmarks"] = {"IT": ["A2020.x"], "V4": ["A2020.w"]}
    for identifier in ("A2020.x", "A2020.w", "B2020.y"):
        registry.upsert_benchmark(identifier, 1, identifier * 3)
    registry.upsert_model("sha256:" + "1" * 64, "m", "1", "m", {})
    comp = competitions.create(registry, body, org)
    with pytest.raises(competitions.Refused, match="is draft"):
        competitions.check_submission(registry, comp, a)
    with registry.session() as s:  # opened without `act` (which registers real benchmarks' data)
        row = s.get(type(comp), comp.id)
        row.status = "open"
        s.add(row)
        s.commit()
    comp = competitions.get(registry, "q")
    benches = {bench.identifier: bench for bench in registry.benchmarks()}

    def submit(team: Caller, digest: str) -> int:
        with registry.session() as s:
            row = Submission(competition_id=comp.id, team_id=team.team_id, account_id=team.account_id, digest=digest, image_ref=digest)
            s.add(row)
            s.commit()
            s.refresh(row)
            return row.id

    a1 = submit(a, "sha256:a1")
    _scored(registry, a1, benches["A2020.x"], 0.4)
    _scored(registry, a1, benches["A2020.w"], 0.2)
    _scored(registry, a1, benches["B2020.y"], 0.9, private=True)
    a2 = submit(a, "sha256:a2")  # lost by the platform: refunded
    with registry.session() as s:
        row = s.get(Submission, a2)
        row.status, row.failure_class, row.counts_quota = "platform_failed", "lost", False
        s.add(row)
        s.commit()
    assert competitions.quota(registry, comp, a.team_id)["used"] == 1
    a3 = submit(a, "sha256:a3")
    _scored(registry, a3, benches["A2020.x"], 0.8)  # V4 failed: counts as 0 in the track (Brain-Score's rule)
    _scored(registry, a3, benches["A2020.w"], None, failure="crash")
    _scored(registry, a3, benches["B2020.y"], 0.1, private=True)
    q = competitions.quota(registry, comp, a.team_id)
    assert (q["used"], q["left"], q["refunded_today"]) == (2, 0, 1)
    with pytest.raises(competitions.Refused, match="used its 2 submission") as e:
        competitions.check_submission(registry, comp, a)
    assert e.value.status == 429
    assert competitions.check_submission(registry, comp, b) == "main"
    b1 = submit(b, "sha256:b1")
    _scored(registry, b1, benches["A2020.x"], 0.5)
    _scored(registry, b1, benches["A2020.w"], 0.5)
    _scored(registry, b1, benches["B2020.y"], 0.3, private=True)
    public = competitions.board(registry, comp, "public")
    # a1: mean(0.4, 0.2) = 0.3; a3: mean(0.8, 0) = 0.4 -> red's entry is a3; blue 0.5
    assert [(r["team"], r["submission"], r["rank"], round(r["value"], 6)) for r in public["rows"]] == [("blue", b1, 1, 0.5), ("red", a3, 2, 0.4)]
    assert public["tracks"] == ["it"] and "B2020.y" not in str(public)
    final = competitions.board(registry, comp, "final")  # the same entries, on the private track
    assert [(r["team"], r["submission"], r["rank"], r["value"]) for r in final["rows"]] == [("blue", b1, 1, 0.3), ("red", a3, 2, 0.1)]
    assert not competitions.may_see_final(a, comp) and competitions.may_see_final(org, comp)
    csv_text = competitions.export(registry, comp, "csv")
    assert csv_text.splitlines()[0].startswith("submission,team,digest,status") and len(csv_text.splitlines()) == 5


def test_late_and_early_submissions_are_refused_with_the_phase_times(registry):
    tokens = people(registry)
    org, a = authenticate(registry, tokens["org"]), authenticate(registry, tokens["alice"])
    registry.upsert_benchmark("A2020.x", 1, "h")
    registry.upsert_benchmark("B2020.y", 1, "g")
    now = datetime.now(timezone.utc)
    body = spec("p", public=("A2020.x",), private=("B2020.y",))
    body["phases"] = [{"name": "one", "opens": (now - timedelta(days=2)).isoformat(), "closes": (now - timedelta(days=1)).isoformat()},
                      {"name": "two", "opens": (now + timedelta(days=1)).isoformat(), "closes": (now + timedelta(days=2)).isoformat()}]
    comp = competitions.create(registry, body, org)
    comp.status = "open"
    with pytest.raises(competitions.Refused, match="the next phase \\(two\\) opens at"):
        competitions.check_submission(registry, comp, a)
    assert competitions.check_submission(registry, comp, a, now + timedelta(days=1, hours=1)) == "two"
    with pytest.raises(competitions.Refused, match="late submission refused: phase two of p closed at"):
        competitions.check_submission(registry, comp, a, now + timedelta(days=3))


def test_web_login_sets_a_session_cookie_that_is_not_the_token(tmp_path):
    from cortexbox.orchestrator.web import create_app

    url = f"sqlite:///{tmp_path / 'c.db'}"
    tokens = people(Registry(url))
    app = create_app(f"sqlite:///{tmp_path / 'main.db'}", community_url=url)
    with TestClient(app) as client:
        r = client.post("/login", data={"token": "cbx_nope"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login?error=1" and "cbx_session" not in r.cookies
        r = client.post("/login", data={"token": tokens["alice"], "next": "//evil.example"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/competitions"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and tokens["alice"] not in cookie
        me = client.get("/api/me")
        assert me.status_code == 200 and me.json()["user"] == "alice" and me.json()["team"] == "red"
        page = client.get("/competitions")
        assert "signed in as <b>alice</b>" in page.text and tokens["alice"] not in page.text
        client.post("/logout", follow_redirects=False)
        client.cookies.clear()
        assert client.get("/api/me").status_code == 401


def test_team_and_organiser_pages_answer_only_their_people(tmp_path):
    from cortexbox.orchestrator.web import create_app

    url = f"sqlite:///{tmp_path / 'c.db'}"
    registry = Registry(url)
    tokens = people(registry)
    registry.upsert_benchmark("A2020.x", 1, "h")
    registry.upsert_benchmark("B2020.y", 1, "g")
    competitions.create(registry, spec("pages", public=("A2020.x",), private=("B2020.y",)), authenticate(registry, tokens["org"]))
    app = create_app(f"sqlite:///{tmp_path / 'main.db'}", community_url=url)
    with TestClient(app) as client:
        def page(path, who=None):
            return client.get(path, headers={"Authorization": f"Bearer {tokens[who]}"} if who else {}, follow_redirects=False)

        assert page("/competitions/pages/organise").headers["location"] == "/login?next=/competitions/pages/organise"
        assert page("/competitions/pages/organise", "alice").status_code == 403
        organise = page("/competitions/pages/organise", "org")
        assert organise.status_code == 200 and all(f"/organise/{a}" in organise.text for a in ("open", "close", "reveal", "rescore"))
        assert "export?format=csv" in organise.text
        team = page("/competitions/pages/team", "alice")
        assert team.status_code == 200 and "0 of 2 used today, 2 left" in team.text and "alice, carol" in team.text
        assert page("/competitions/pages/team", "eve").status_code == 403
        comp = page("/competitions/pages")
        assert comp.status_code == 200 and "B2020.y" in comp.text and "hidden until the organiser reveals it" in comp.text
        assert page("/competitions/nope").status_code == 404
        # an organiser's form action needs the organiser
        assert client.post("/competitions/pages/organise/close", headers={"Authorization": f"Bearer {tokens['bob']}"},
                           follow_redirects=False).status_code == 403
        assert client.post("/competitions/pages/organise/close", headers={"Authorization": f"Bearer {tokens['org']}"},
                           follow_redirects=False).status_code == 303
        assert competitions.get(registry, "pages").status == "closed"
