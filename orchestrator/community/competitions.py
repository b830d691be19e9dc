"""Competitions: tracks, phases, quotas, and the public and final boards.

A competition's spec (checked by ``check_spec``)::

    {"slug": "v4-2027", "title": "...", "quota_per_day": 3, "team_size": 10,
     "limits": {"upload": "2g", "unpacked": "6g", "layers": 64},
     "tracks": [{"name": "it", "visibility": "public", "benchmarks": {"IT": ["Kriegeskorte2008.hIT-rdm"]}},
                {"name": "held-out", "visibility": "private", "benchmarks": ["Kriegeskorte2008.judgements-rdm"]}],
     "phases": [{"name": "main", "opens": "2027-01-01T00:00:00Z", "closes": "2027-03-01T00:00:00Z"}]}

A track is a benchmark tree (orchestrator/aggregation.py: a leaf is its ceiled score clipped to [0, 1], a parent the
unweighted mean of its children, a missing or failed child counts as 0). Every submission is scored on every track.

Rules (each is tested in tests/orchestrator/test_competitions*.py):

* Submissions are taken only while the competition is open and the time is inside a phase; a late one is refused
  with the phase's closing time, and nothing is stored.
* Quota: ``quota_per_day`` submissions per team per UTC day. A submission counts unless it ended
  ``platform_failed``: every failed run failed for a platform reason (``PLATFORM_FAILURES``: the scoring process was
  lost, the engine or our own code failed), so a platform failure never costs quota; the model's own failures
  (crash, out of memory, timeout, bad output, ...) do. An upload refused before it is stored (bad token, oversize,
  malformed archive, late) is not a submission and costs nothing.
* Team size: a team with more members than the spec's ``team_size`` (default ``TEAM_SIZE``, 10) may not submit.
* A team's entry is its submission with the best public value (ties: the earlier one). The public board ranks
  entries on the public tracks (their mean, as a tree over the tracks) while the competition runs; the final board
  ranks the same entries on the private tracks. Private values, and anything of a private run but its status and
  failure class (no score, error message or log line), are shown to teams only once the organiser reveals them,
  and private logs never.
* The same image digest from two teams is flagged (``duplicate_of``) on the boards and the organiser's export; the
  same filesystem (rootfs diff_ids) under another digest (a re-labelled copy) is flagged ``resembles`` in the
  organiser's export and page only.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from cortexbox.orchestrator.aggregation import BenchmarkTreeError, aggregate, latest_leaves, rank, tree_from_spec
from cortexbox.orchestrator.community.accounts import NAME, Caller, Forbidden
from cortexbox.orchestrator.community.archive import Limits
from cortexbox.orchestrator.errors import UserError
from cortexbox.registry import Benchmark, Registry, Run, Score
from cortexbox.registry.models import Competition, Submission, SubmissionRun, Team, TeamMember

#: Failure classes that are the platform's fault, never the model's: they never cost quota. "internal" is what
#: the community worker records for an exception of its own or of the engine; "lost" a scoring process that died;
#: "cancelled" a worker stopped under a run (teams cannot cancel).
PLATFORM_FAILURES = frozenset({"lost", "internal", "engine", "worker_lost", "platform_error", "cancelled"})
VISIBILITIES = ("public", "private")
#: Members a team may have to submit to a competition (its spec's ``team_size``), unless the spec says otherwise.
TEAM_SIZE = 10
QUOTA_RULE = ("quota_per_day submissions per team per UTC day; a submission counts unless it ended platform_failed "
              "(a platform failure never costs quota); an upload refused before it is stored costs nothing")


class NotFound(UserError):
    """HTTP 404."""


class Refused(UserError):
    """A submission that the competition's rules refuse (closed, late, out of quota): HTTP 403 or 429."""

    def __init__(self, message: str, hint: str | None = None, status: int = 403):
        super().__init__(message, hint)
        self.status = status


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _time(value: Any, where: str) -> datetime:
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"{where}: {value!r} is not an ISO 8601 time", "e.g. 2027-03-01T00:00:00Z") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def known_benchmarks(registry: Registry) -> set[str]:
    from cortexbox.benchmarks import list_benchmarks

    return set(list_benchmarks()) | {b.identifier for b in registry.benchmarks()}


def check_spec(spec: Any, known: set[str] | None = None) -> dict[str, Any]:
    """The spec, normalised (times in ISO UTC), or UserError naming what is wrong."""
    if not isinstance(spec, dict):
        raise UserError("a competition spec is a JSON object", "see orchestrator/community/competitions.py")
    slug = str(spec.get("slug", ""))
    if not NAME.match(slug):
        raise UserError(f"competition slug {slug!r} is not allowed", "use 1-63 lower-case letters, digits, '.', '_' or '-'")
    quota = spec.get("quota_per_day", 5)
    if not isinstance(quota, int) or isinstance(quota, bool) or not 1 <= quota <= 1000:
        raise UserError(f"quota_per_day must be a whole number from 1 to 1000, got {quota!r}")
    team_size = spec.get("team_size", TEAM_SIZE)
    if not isinstance(team_size, int) or isinstance(team_size, bool) or not 1 <= team_size <= 1000:
        raise UserError(f"team_size must be a whole number from 1 to 1000, got {team_size!r}")
    try:
        Limits.from_spec(spec)
    except (TypeError, ValueError) as e:
        raise UserError(f"limits: {e}", 'e.g. {"upload": "2g", "unpacked": "6g", "layers": 64}') from None
    tracks, seen_tracks, seen_benchmarks = [], set(), {}
    for i, track in enumerate(spec.get("tracks") or []):
        name = str((track or {}).get("name", ""))
        if not NAME.match(name) or name in seen_tracks:
            raise UserError(f"track {i + 1}: name {name!r} is missing, not allowed or used twice")
        visibility = track.get("visibility", "public")
        if visibility not in VISIBILITIES:
            raise UserError(f"track {name}: visibility must be public or private, got {visibility!r}")
        try:
            tree = tree_from_spec(track.get("benchmarks"), name)
        except BenchmarkTreeError as e:
            raise UserError(f"track {name}: {e}") from None
        for leaf in tree.leaves():
            if known is not None and leaf not in known:
                raise UserError(f"track {name}: unknown benchmark {leaf!r}", "see `cortexbox benchmarks list`")
            if leaf in seen_benchmarks:
                raise UserError(f"benchmark {leaf} is in tracks {seen_benchmarks[leaf]} and {name}",
                                "a benchmark is public or private, not both")
            seen_benchmarks[leaf] = name
        seen_tracks.add(name)
        tracks.append({"name": name, "visibility": visibility, "benchmarks": track.get("benchmarks")})
    if not any(t["visibility"] == "public" for t in tracks):
        raise UserError("a competition needs at least one public track", "its board ranks on the public tracks")
    phases = []
    for i, phase in enumerate(spec.get("phases") or []):
        name = str((phase or {}).get("name", f"phase-{i + 1}"))
        opens, closes = _time(phase.get("opens"), f"phase {name} opens"), _time(phase.get("closes"), f"phase {name} closes")
        if closes <= opens:
            raise UserError(f"phase {name} closes ({closes.isoformat()}) before it opens ({opens.isoformat()})")
        phases.append({"name": name, "opens": opens.isoformat(), "closes": closes.isoformat()})
    if not phases:
        raise UserError("a competition needs at least one phase with opening and closing times")
    return {"slug": slug, "title": str(spec.get("title") or slug), "description": str(spec.get("description") or ""),
            "quota_per_day": quota, "team_size": team_size, "limits": dict(spec.get("limits") or {}), "tracks": tracks,
            "phases": phases}


def create(registry: Registry, spec: Any, organiser: Caller) -> Competition:
    """A draft competition organised by ``organiser`` (an admin)."""
    if not organiser.is_admin:
        raise Forbidden("only admins create competitions", "ask an admin (`cortexbox users add NAME --admin`)")
    checked = check_spec(spec, known_benchmarks(registry))
    with registry.session() as s:
        row = Competition(slug=checked["slug"], title=checked["title"], organiser_id=organiser.account_id, spec=checked)
        s.add(row)
        try:
            s.commit()
        except IntegrityError:
            raise UserError(f"a competition {checked['slug']!r} exists", "choose another slug") from None
        s.refresh(row)
        return row


def get(registry: Registry, slug: str) -> Competition:
    with registry.session() as s:
        row = s.exec(select(Competition).where(Competition.slug == slug)).first()
    if row is None:
        raise NotFound(f"no competition {slug!r}", "see /competitions")
    return row


def listing(registry: Registry) -> list[Competition]:
    with registry.session() as s:
        return list(s.exec(select(Competition).order_by(Competition.id)))


def may_organise(caller: Caller | None, comp: Competition) -> bool:
    return caller is not None and (caller.is_admin or caller.account_id == comp.organiser_id)


def benchmarks(comp: Competition) -> list[tuple[str, bool]]:
    """(identifier, private) of every benchmark of every track, in track order."""
    return [(leaf, t["visibility"] == "private") for t in comp.spec["tracks"]
            for leaf in tree_from_spec(t["benchmarks"], t["name"]).leaves()]


def act(registry: Registry, slug: str, action: str, caller: Caller) -> Competition:
    """The organiser's actions: ``open`` (registers the tracks' benchmarks in the community registry, which pins
    their versions and ceilings), ``close``, ``reveal`` (private values become visible to teams)."""
    comp = get(registry, slug)
    if not may_organise(caller, comp):
        raise Forbidden(f"only the organiser of {slug} (or an admin) may {action} it")
    if action == "open":
        from cortexbox.orchestrator.community.seams import register_benchmark, resolve_benchmark

        for identifier, _ in benchmarks(comp):
            register_benchmark(resolve_benchmark(identifier, registry), registry=registry, queue_jobs=False)
        fields: dict[str, Any] = {"status": "open"}
    elif action == "close":
        fields = {"status": "closed"}
    elif action == "reveal":
        fields = {"revealed": True}
    else:
        raise UserError(f"unknown action {action!r}", "open, close or reveal")
    with registry.session() as s:
        row = s.get(Competition, comp.id)
        for key, value in fields.items():
            setattr(row, key, value)
        s.add(row)
        s.commit()
        s.refresh(row)
        return row


def current_phase(comp: Competition, now: datetime | None = None) -> dict[str, Any] | None:
    now = now or utcnow()
    for phase in comp.spec["phases"]:
        if _time(phase["opens"], "") <= now < _time(phase["closes"], ""):
            return phase
    return None


def quota(registry: Registry, comp: Competition, team_id: int, now: datetime | None = None) -> dict[str, Any]:
    """The team's quota today (UTC): per day, used (submissions that count), left, and when it resets."""
    now = now or utcnow()
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    with registry.session() as s:
        rows = list(s.exec(select(Submission).where(Submission.competition_id == comp.id, Submission.team_id == team_id)))
    used = sum(1 for r in rows if r.counts_quota and _aware(r.created_at) >= day)
    per_day = int(comp.spec["quota_per_day"])
    return {"per_day": per_day, "used": used, "left": max(0, per_day - used),
            "resets_at": (day + timedelta(days=1)).isoformat(),
            "refunded_today": sum(1 for r in rows if not r.counts_quota and _aware(r.created_at) >= day),
            "rule": QUOTA_RULE}


def check_submission(registry: Registry, comp: Competition, caller: Caller, now: datetime | None = None) -> str:
    """The phase a submission of the caller's team goes to now, or Refused/Forbidden saying why not."""
    now = now or utcnow()
    if caller.team_id is None:
        raise Forbidden(f"user {caller.name!r} is in no team", "join one: `cortexbox teams join TEAM USER`")
    if comp.status != "open":
        raise Refused(f"competition {comp.slug} is {comp.status}: it takes no submissions")
    phase = current_phase(comp, now)
    if phase is None:
        past = [p for p in comp.spec["phases"] if _time(p["closes"], "") <= now]
        future = [p for p in comp.spec["phases"] if _time(p["opens"], "") > now]
        if future:
            raise Refused(f"competition {comp.slug}: the next phase ({future[0]['name']}) opens at {future[0]['opens']}",
                          "submit once it is open")
        last = past[-1] if past else comp.spec["phases"][-1]
        raise Refused(f"late submission refused: phase {last['name']} of {comp.slug} closed at {last['closes']}",
                      "no submissions are taken after a phase's closing time")
    cap = comp.spec.get("team_size", TEAM_SIZE)
    with registry.session() as s:
        members = len(list(s.exec(select(TeamMember.id).where(TeamMember.team_id == caller.team_id))))
    if members > cap:
        raise Refused(f"team {caller.team} has {members} members; {comp.slug} takes submissions from teams of at most {cap}",
                      "ask an admin to move members to another team")
    left = quota(registry, comp, caller.team_id, now)
    if left["left"] <= 0:
        raise Refused(f"team {caller.team} has used its {left['per_day']} submission(s) of today in {comp.slug}",
                      f"the quota resets at {left['resets_at']}; platform failures are refunded", status=429)
    return phase["name"]


# -- boards --------------------------------------------------------------------------------------------------------
@dataclass
class Standing:
    submission: Submission
    team: str
    values: dict[str, float | None]  # track -> value, plus "public" and "private"


def _standings(registry: Registry, comp: Competition) -> list[Standing]:
    with registry.session() as s:
        subs = list(s.exec(select(Submission).where(Submission.competition_id == comp.id).order_by(Submission.id)))
        teams = {t.id: t.name for t in s.exec(select(Team))}
        srs = list(s.exec(select(SubmissionRun).where(SubmissionRun.submission_id.in_([x.id for x in subs]))))
        latest: dict[tuple[int, str], SubmissionRun] = {}
        for sr in srs:  # the newest attempt with a run counts (organiser rescoring replaces the first)
            key = (sr.submission_id, sr.benchmark)
            if sr.run_id is not None and (key not in latest or sr.attempt > latest[key].attempt):
                latest[key] = sr
        run_ids = {sr.run_id: sr.submission_id for sr in latest.values()}
        runs = list(s.exec(select(Run).where(Run.id.in_(list(run_ids)))))
        scores = list(s.exec(select(Score).where(Score.run_id.in_(list(run_ids)))))
        bench_rows = list(s.exec(select(Benchmark)))
    fake_scores = [SimpleNamespace(id=x.id, model_id=run_ids[x.run_id], benchmark_id=x.benchmark_id, raw=x.raw,
                                   ceiled=x.ceiled, run_id=x.run_id) for x in scores]
    fake_runs = [SimpleNamespace(id=r.id, model_id=run_ids[r.id], benchmark_id=r.benchmark_id, status=r.status,
                                 failure_class=r.failure_class) for r in runs]
    leaves = latest_leaves(fake_scores, bench_rows, fake_runs)
    tracks = comp.spec["tracks"]
    trees = {t["name"]: tree_from_spec(t["benchmarks"], t["name"]) for t in tracks}
    groups = {v: tree_from_spec({t["name"]: t["benchmarks"] for t in tracks if t["visibility"] == v}, v)
              for v in VISIBILITIES if any(t["visibility"] == v for t in tracks)}
    out = []
    for sub in subs:
        own = leaves.get(sub.id, {})
        values: dict[str, float | None] = {name: aggregate(tree, own).value for name, tree in trees.items()}
        values.update({v: aggregate(tree, own).value for v, tree in groups.items()})
        out.append(Standing(sub, teams.get(sub.team_id, "?"), values))
    return out


def _entries(standings: list[Standing]) -> list[Standing]:
    """Each team's entry: its submission with the best public value (ties: the earlier one)."""
    best: dict[int, Standing] = {}
    for st in standings:
        value = st.values.get("public")
        if value is None:
            continue
        held = best.get(st.submission.team_id)
        if held is None or value > (held.values.get("public") or 0.0):
            best[st.submission.team_id] = st
    return list(best.values())


def board(registry: Registry, comp: Competition, which: str = "public") -> dict[str, Any]:
    """The ranked board: ``public`` (entries on the public tracks) or ``final`` (the same entries on the private
    tracks). Callers decide who may see ``final`` (``may_see_final``)."""
    entries = _entries(_standings(registry, comp))
    key = "public" if which == "public" else "private"
    tracks = [t["name"] for t in comp.spec["tracks"] if t["visibility"] == key]
    values = {i: e.values.get(key) for i, e in enumerate(entries)}
    ranks = rank(values)
    rows = [{"rank": ranks[i], "team": e.team, "submission": e.submission.id, "digest": e.submission.digest,
             "value": e.values.get(key), "tracks": {t: e.values.get(t) for t in tracks},
             "submitted_at": _aware(e.submission.created_at).isoformat(timespec="seconds"),
             "flagged": e.submission.duplicate_of is not None, "duplicate_of": e.submission.duplicate_of}
            for i, e in enumerate(entries)]
    rows.sort(key=lambda r: (r["rank"] is None, r["rank"] or 0, r["submission"]))
    return {"competition": comp.slug, "board": which, "tracks": tracks, "rows": rows, "status": comp.status,
            "revealed": comp.revealed}


def may_see_final(caller: Caller | None, comp: Competition) -> bool:
    return comp.revealed or may_organise(caller, comp)


def export(registry: Registry, comp: Competition, fmt: str = "json") -> str:
    """Every submission with its digest, team, status, flag and every track's value (the organiser's export)."""
    standings = _standings(registry, comp)
    names = [t["name"] for t in comp.spec["tracks"]]
    rows = [{"submission": st.submission.id, "team": st.team, "digest": st.submission.digest,
             "status": st.submission.status, "failure_class": st.submission.failure_class,
             "counts_quota": st.submission.counts_quota, "duplicate_of": st.submission.duplicate_of,
             "resembles": st.submission.resembles, "layers_digest": st.submission.layers_digest,
             "submitted_at": _aware(st.submission.created_at).isoformat(timespec="seconds"),
             "public": st.values.get("public"), "private": st.values.get("private"),
             **{f"track:{n}": st.values.get(n) for n in names}} for st in standings]
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["submission"])
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    import json

    return json.dumps({"competition": comp.slug, "spec": comp.spec, "submissions": rows,
                       "public": board(registry, comp, "public"), "final": board(registry, comp, "final")}, indent=2)
