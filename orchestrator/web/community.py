"""The community router: accounts, teams, competitions and submissions, as JSON under /api and as pages.

Who asks is decided on every request from a bearer token (``Authorization: Bearer cbx_...``) or the web login's
session cookie (HttpOnly, SameSite=Strict, a session token of its own, never the API token). Every request that
changes something needs one; a team sees its own submissions only (another team's is a 404), and of a private run
only its status and failure class. Everything reads and writes the community registry (a database of its own, see
``cortexbox.orchestrator.community``), so the public board's pages never show a submission or a private score.
"""


import asyncio
import contextlib
import functools
import json
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, Field

from cortexbox.orchestrator.community import community_url as default_community_url
from cortexbox.orchestrator.community import competitions, submissions
from cortexbox.orchestrator.community.accounts import (
    SESSION_S,
    AuthError,
    Caller,
    Forbidden,
    add_team,
    authenticate,
    issue_token,
    join_team,
    revoke,
    revoke_token,
    team_members,
    tokens_of,
)
from cortexbox.orchestrator.community.archive import ArchiveRejected, Limits, UploadTooLarge, check_archive, receive
from cortexbox.orchestrator.community.competitions import NotFound, Refused
from cortexbox.orchestrator.errors import UserError
from cortexbox.orchestrator.web.live import STREAM_S, follow_run
from cortexbox.registry import Registry

logger = logging.getLogger(__name__)
COOKIE = "cbx_session"
#: Kinds of run events a team sees of a private run, and the fields it sees of each.
PRIVATE_EVENTS = {"status": ("status",), "progress": ("done", "total", "label"), "failed": ("failure_class",),
                  "done": ("status", "failure_class")}
BOARD_POLL_S = 1.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class TeamRequest(BaseModel):
    name: str = Field(..., description="The new team's name (the caller becomes its first member)")


class MemberRequest(BaseModel):
    user: str = Field(..., description="A user without a team")


def _status(e: UserError) -> int:
    if isinstance(e, AuthError):
        return 401
    if isinstance(e, Forbidden):
        return 403
    if isinstance(e, NotFound):
        return 404
    if isinstance(e, Refused):
        return e.status
    if isinstance(e, UploadTooLarge):
        return 413
    if isinstance(e, submissions.EngineUnavailable):
        return 503
    return 400


@contextlib.contextmanager
def _errors():
    """A UserError becomes one line with its hint and the matching HTTP status."""
    try:
        yield
    except UserError as e:
        detail = f"{e} (hint: {e.hint})" if e.hint else str(e)
        raise HTTPException(_status(e), detail) from None


def _sse(event_id: Any, kind: str, data: dict) -> str:
    head = "" if event_id is None else f"id: {event_id}\n"
    return f"{head}event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"


@dataclass
class CommunityState:
    url: str
    score: Any = None
    cache_dir: str | None = None
    upload_dir: Path | None = None
    #: The web app's Celery app of $CORTEXBOX_BROKER_URL, or None (read per call): submissions go to the workers.
    broker: Any = None

    @functools.cached_property
    def registry(self) -> Registry:
        return Registry(self.url)

    @functools.cached_property
    def queue(self) -> submissions.SubmissionQueue:
        return submissions.SubmissionQueue(self.registry, score=self.score, cache_dir=self.cache_dir, broker=self.broker)

    def close(self, timeout: float | None = None) -> None:
        if "queue" in self.__dict__:
            self.queue.close(timeout)


def community_router(community_url: str | None = None, *, score=None, cache_dir: str | None = None,
                     templates=None, broker=None) -> APIRouter:
    """The router (``router.state``: the community registry, opened on first use, and its submission queue, which
    publishes to ``broker()``'s workers when it returns a Celery app, else scores in this process)."""
    state = CommunityState(default_community_url(community_url), score=score, cache_dir=cache_dir, broker=broker)
    router = APIRouter()
    router.state = state  # type: ignore[attr-defined]

    def registry() -> Registry:
        return state.registry

    def _token(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return header[7:].strip()
        return request.cookies.get(COOKIE)

    def caller(request: Request) -> Caller:
        with _errors():
            return authenticate(registry(), _token(request))

    def maybe_caller(request: Request) -> Caller | None:
        try:
            return authenticate(registry(), _token(request)) if _token(request) else None
        except UserError:
            return None

    Who = Annotated[Caller, Depends(caller)]
    MaybeWho = Annotated[Caller | None, Depends(maybe_caller)]

    def competition(slug: str):
        with _errors():
            return competitions.get(registry(), slug)

    def comp_dict(comp, who: Caller | None) -> dict[str, Any]:
        phase = competitions.current_phase(comp)
        return {"slug": comp.slug, "title": comp.title, "description": comp.spec.get("description", ""),
                "status": comp.status, "revealed": comp.revealed, "quota_per_day": comp.spec["quota_per_day"],
                "team_size": comp.spec.get("team_size", competitions.TEAM_SIZE),
                "limits": Limits.from_spec(comp.spec).__dict__, "phases": comp.spec["phases"],
                "current_phase": phase["name"] if phase else None,
                "tracks": [{"name": t["name"], "visibility": t["visibility"], "benchmarks": t["benchmarks"]}
                           for t in comp.spec["tracks"]],
                "organiser": competitions.may_organise(who, comp), "quota_rule": competitions.QUOTA_RULE}

    # -- JSON API ---------------------------------------------------------------------------------------------------
    api = APIRouter(prefix="/api", tags=["community"])

    @api.get("/me", summary="Who the token belongs to")
    def api_me(who: Who) -> dict:
        members = team_members(registry(), who.team_id) if who.team_id else []
        return {"user": who.name, "admin": who.is_admin, "team": who.team, "members": members}

    @api.get("/tokens", summary="The caller's API tokens, by their public id")
    def api_tokens(who: Who) -> list[dict]:
        return tokens_of(registry(), who)

    @api.delete("/tokens/{token_id}", summary="Revoke an API token (the caller's own; an admin: anyone's)")
    def api_revoke(token_id: str, who: Who) -> dict:
        """Refused from then on everywhere (API, pages, login); the account's web sessions end with it."""
        with _errors():
            removed = revoke_token(registry(), token_id, who)
        return {"revoked": token_id, "sessions_ended": removed - 1}

    @api.post("/teams", status_code=201, summary="Create a team; the caller becomes its first member")
    def api_add_team(body: TeamRequest, who: Who) -> dict:
        with _errors():
            team = add_team(registry(), body.name, who.name)
        return {"team": team.name}

    @api.post("/teams/{team}/members", status_code=201, summary="Add a user to the caller's team")
    def api_join(team: str, body: MemberRequest, who: Who) -> dict:
        with _errors():
            join_team(registry(), team, body.user, by=who)
        return {"team": team, "user": body.user}

    @api.get("/competitions", summary="Competitions")
    def api_competitions(who: MaybeWho) -> list[dict]:
        return [comp_dict(c, who) for c in competitions.listing(registry())]

    @api.post("/competitions", status_code=201, summary="Create a competition (admins): tracks, phases, quota, limits")
    async def api_create(request: Request, who: Who) -> dict:
        try:
            spec = json.loads(await request.body())
        except ValueError:
            raise HTTPException(400, "the body is not JSON (hint: send the competition spec)") from None
        with _errors():
            comp = competitions.create(registry(), spec, who)
        return comp_dict(comp, who)

    @api.get("/competitions/{slug}", summary="A competition: tracks, phases, quota")
    def api_competition(slug: str, who: MaybeWho) -> dict:
        return comp_dict(competition(slug), who)

    @api.get("/competitions/{slug}/board", summary="The public board (entries ranked on the public tracks)")
    def api_board(slug: str) -> dict:
        return competitions.board(registry(), competition(slug), "public")

    @api.get("/competitions/{slug}/final", summary="The final board on the private tracks (after the reveal)")
    def api_final(slug: str, who: MaybeWho) -> dict:
        comp = competition(slug)
        if not competitions.may_see_final(who, comp):
            raise HTTPException(403, f"the final board of {slug} is hidden until the organiser reveals it")
        return competitions.board(registry(), comp, "final")

    @api.get("/competitions/{slug}/board/events", summary="Server-sent board updates", response_class=StreamingResponse)
    async def api_board_events(slug: str, request: Request) -> StreamingResponse:
        """``text/event-stream``: a ``board`` event (the public board, as ``/board``) now and whenever it changes."""
        comp = competition(slug)

        async def stream():
            yield "retry: 1000\n\n"
            last, deadline, n = None, time.monotonic() + STREAM_S, 0
            while time.monotonic() < deadline and not await request.is_disconnected():
                current = await asyncio.to_thread(competitions.board, registry(), comp, "public")
                text = json.dumps(current, sort_keys=True, default=str)
                if text != last:
                    last, n = text, n + 1
                    yield _sse(n, "board", current)
                await asyncio.sleep(BOARD_POLL_S)

        return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)

    @api.get("/competitions/{slug}/export", summary="Organiser: every submission with digest and values (json or csv)")
    def api_export(slug: str, who: Who, format: Annotated[str, Query(pattern="^(json|csv)$")] = "json"):
        comp = competition(slug)
        if not competitions.may_organise(who, comp):
            raise HTTPException(403, f"only the organiser of {slug} may export it")
        text = competitions.export(registry(), comp, format)
        if format == "csv":
            return PlainTextResponse(text, media_type="text/csv")
        return JSONResponse(json.loads(text))

    @api.get("/competitions/{slug}/quota", summary="The caller's team's quota today")
    def api_quota(slug: str, who: Who) -> dict:
        comp = competition(slug)
        if who.team_id is None:
            raise HTTPException(403, "you are in no team")
        return competitions.quota(registry(), comp, who.team_id)

    @api.get("/competitions/{slug}/submissions", summary="The caller's team's submissions (the organiser: all)")
    def api_submissions(slug: str, who: Who) -> list[dict]:
        comp = competition(slug)
        team = None if competitions.may_organise(who, comp) else who.team_id
        if team is None and not competitions.may_organise(who, comp):
            return []
        return [submissions.view(registry(), s, comp, who) for s in submissions.team_submissions(registry(), comp, team)]

    @api.post("/competitions/{slug}/submissions", status_code=202,
              summary="Submit an image: the body is a `docker save` tarball (application/x-tar), streamed")
    async def api_submit(slug: str, request: Request, who: Who) -> dict:
        """Checks, in order: the token, the team, the competition open and in a phase, the quota; then streams the
        body to disk with a running count (refused past the cap), checks the archive, loads it into the engine
        without its tags, pins it by digest, stores the submission and queues it. Any refusal stores nothing.
        With a broker the engine is the worker's: the archive is checked, the submission stored without an image
        and the archive left in the upload folder for the worker that takes its job (submissions.stage)."""
        comp = competition(slug)
        staged = state.broker is not None and state.broker() is not None
        limits = Limits.from_spec(comp.spec)
        with _errors():
            competitions.check_submission(registry(), comp, who)
            declared = request.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limits.upload_bytes:
                raise UploadTooLarge(f"the upload ({declared} bytes) is larger than this competition's cap of "
                                     f"{limits.upload_bytes} bytes", "make the image smaller")
            folder = state.upload_dir or default_upload_dir()
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = folder / f"{secrets.token_hex(12)}.tar"
            try:
                await receive(request.stream(), path, limits.upload_bytes)
                if staged:
                    info = await asyncio.to_thread(check_archive, path, limits)
                    sub = await asyncio.to_thread(submissions.stage, registry(), comp, who, info, path)
                else:
                    sub = await asyncio.to_thread(_accept, path, comp, who, limits)
            finally:
                path.unlink(missing_ok=True)
        try:
            state.queue.enqueue(sub.id)
        except UserError as e:  # stored with its job: published by the workers' recovery once the broker is back
            logger.warning("submission %s is stored but not published yet: %s", sub.id, e)
        return submissions.view(registry(), sub, comp, who)

    def _accept(path: Path, comp, who: Caller, limits: Limits):
        """Loads, pins and stores; a refusal after the load (the quota checked again in ``store``, another image
        than the manifest's, the image registry down) removes the tag the load made, unless it was there before
        (the team's earlier submission of the same image), so a refused upload leaves nothing in the engine."""
        info = check_archive(path, limits)
        tag = submissions.submission_tag(comp.slug, who.team, info.image_id)
        existed = submissions.tag_exists(tag)
        image_id = submissions.load_into_engine(path, info, tag)
        try:
            if image_id != info.image_id:
                raise ArchiveRejected("the engine loaded another image than the archive's manifest names", "use `docker save`")
            ref, registry_digest = submissions.pin(image_id, f"{submissions.TAG_REPOSITORY}/{comp.slug}")
            return submissions.store(registry(), comp, who, info, ref, registry_digest)
        except BaseException:
            if not existed:
                submissions.untag(tag)
            raise

    @api.get("/submissions/{submission_id}", summary="A submission of the caller's team")
    def api_submission(submission_id: int, who: Who) -> dict:
        with _errors():
            sub, comp = submissions.get(registry(), submission_id, who)
        return submissions.view(registry(), sub, comp, who)

    @api.get("/submissions/{submission_id}/events", summary="Server-sent events of a submission's runs",
             response_class=StreamingResponse)
    async def api_submission_events(submission_id: int, request: Request, who: Who) -> StreamingResponse:
        """The run events of each benchmark in turn (a ``run`` event first), then ``done`` {status, failure_class}.
        Of a private run a team gets status, progress and failure class only."""
        with _errors():
            sub, comp = submissions.get(registry(), submission_id, who)
        organiser = competitions.may_organise(who, comp)

        async def stream():
            yield "retry: 1000\n\n"
            seen: set[tuple[int, int]] = set()  # (row, run): a retried benchmark's row gets a new run
            deadline = time.monotonic() + STREAM_S
            while time.monotonic() < deadline and not await request.is_disconnected():
                rows = await asyncio.to_thread(submissions.runs_of, registry(), submission_id)
                fresh = [r for r in rows if (r.id, r.run_id) not in seen and r.run_id is not None]
                for sr in fresh:
                    seen.add((sr.id, sr.run_id))
                    yield _sse(f"{sr.id}", "run", {"benchmark": sr.benchmark, "private": sr.private})
                    async for seq, kind, data in follow_run(registry(), sr.run_id, disconnected=request.is_disconnected,
                                                            deadline=deadline):
                        if kind == "done":
                            kind = "run_done"
                        if sr.private and not organiser:
                            fields = PRIVATE_EVENTS.get("done" if kind == "run_done" else kind)
                            if fields is None:
                                continue
                            data = {k: data.get(k) for k in fields} | {"benchmark": sr.benchmark}
                        yield _sse(f"{sr.id}.{seq}", kind, data)
                current, _ = await asyncio.to_thread(submissions.get, registry(), submission_id, who)
                if current.status not in ("queued", "running") and all((r.id, r.run_id) in seen or r.run_id is None for r in
                                                                       await asyncio.to_thread(submissions.runs_of, registry(), submission_id)):
                    yield _sse(None, "done", {"status": current.status, "failure_class": current.failure_class,
                                              "submission": submission_id})
                    return
                if not fresh:
                    await asyncio.sleep(0.3)

        return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)

    # Last: its {action} would take /submissions and the other POST routes under a competition.
    @api.post("/competitions/{slug}/{action}", summary="Organiser: open, close, reveal or rescore (by digest)")
    def api_act(slug: str, action: str, who: Who) -> dict:
        with _errors():
            if action == "rescore":
                comp = competitions.get(registry(), slug)
                return {"rescoring": submissions.rescore(registry(), state.queue, comp, who)}
            comp = competitions.act(registry(), slug, action, who)
        return comp_dict(comp, who)

    router.include_router(api)

    # -- pages ------------------------------------------------------------------------------------------------------
    def page(name: str, **context: Any) -> HTMLResponse:
        env = templates() if callable(templates) else templates
        return HTMLResponse(env.get_template(name).render(**context))

    @router.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(who: MaybeWho, error: str = "", next: str = "/competitions") -> HTMLResponse:
        return page("community/login.html", who=who, error=error, next=next, title="Log in")

    @router.post("/login", include_in_schema=False)
    async def login(request: Request):
        """The login form (urlencoded, read here: a few hundred bytes at most, no multipart parser)."""
        from urllib.parse import parse_qs

        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > 4096:
                raise HTTPException(413, "the login form is too large")
        form = parse_qs(body.decode("utf-8", "replace"))
        token, next = (form.get("token") or [""])[0], (form.get("next") or ["/competitions"])[0]
        try:
            who = await asyncio.to_thread(authenticate, registry(), token)
        except UserError:
            return RedirectResponse("/login?error=1", status_code=303)
        session = await asyncio.to_thread(issue_token, registry(), who.account_id, "session", SESSION_S)
        target = next if next.startswith("/") and not next.startswith("//") else "/competitions"
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, session, max_age=SESSION_S, httponly=True, samesite="strict", path="/")
        return response

    @router.post("/logout", include_in_schema=False)
    def logout(request: Request):
        revoke(registry(), request.cookies.get(COOKIE, ""))
        response = RedirectResponse("/competitions", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @router.get("/competitions", response_class=HTMLResponse, include_in_schema=False)
    def competitions_page(who: MaybeWho) -> HTMLResponse:
        return page("community/competitions.html", who=who, comps=[comp_dict(c, who) for c in competitions.listing(registry())],
                    title="Competitions")

    @router.get("/competitions/{slug}", response_class=HTMLResponse, include_in_schema=False)
    def competition_page(slug: str, who: MaybeWho) -> HTMLResponse:
        comp = competition(slug)
        final = competitions.board(registry(), comp, "final") if competitions.may_see_final(who, comp) else None
        return page("community/competition.html", who=who, c=comp_dict(comp, who),
                    board=competitions.board(registry(), comp, "public"), final=final, title=comp.title)

    @router.get("/competitions/{slug}/team", response_class=HTMLResponse, include_in_schema=False)
    def team_page(slug: str, request: Request, who: MaybeWho):
        if who is None:
            return RedirectResponse(f"/login?next=/competitions/{slug}/team", status_code=303)
        comp = competition(slug)
        if who.team_id is None:
            raise HTTPException(403, "you are in no team (hint: `cortexbox teams join TEAM USER`)")
        subs = [submissions.view(registry(), s, comp, who) for s in submissions.team_submissions(registry(), comp, who.team_id)]
        return page("community/team.html", who=who, c=comp_dict(comp, who), subs=subs,
                    quota=competitions.quota(registry(), comp, who.team_id),
                    members=team_members(registry(), who.team_id), title=f"{who.team} in {comp.title}")

    @router.get("/competitions/{slug}/organise", response_class=HTMLResponse, include_in_schema=False)
    def organise_page(slug: str, who: MaybeWho):
        if who is None:
            return RedirectResponse(f"/login?next=/competitions/{slug}/organise", status_code=303)
        comp = competition(slug)
        if not competitions.may_organise(who, comp):
            raise HTTPException(403, f"only the organiser of {slug} may see this page")
        return page("community/organise.html", who=who, c=comp_dict(comp, who),
                    export=json.loads(competitions.export(registry(), comp, "json")), title=f"Organise {comp.title}")

    @router.post("/competitions/{slug}/organise/{action}", include_in_schema=False)
    def organise_action(slug: str, action: str, who: Who):
        with _errors():
            if action == "rescore":
                submissions.rescore(registry(), state.queue, competitions.get(registry(), slug), who)
            else:
                competitions.act(registry(), slug, action, who)
        return RedirectResponse(f"/competitions/{slug}/organise", status_code=303)

    @router.get("/submissions/{submission_id}/live", response_class=HTMLResponse, include_in_schema=False)
    def submission_live(submission_id: int, who: MaybeWho):
        if who is None:
            return RedirectResponse(f"/login?next=/submissions/{submission_id}/live", status_code=303)
        with _errors():
            sub, comp = submissions.get(registry(), submission_id, who)
        view = {"heading": f"Submission {sub.id} to {comp.slug}", "model": sub.digest, "status": sub.status,
                "benchmarks": [b for b, _ in competitions.benchmarks(comp)], "run_ids": [],
                "events_url": f"/api/submissions/{sub.id}/events"}
        return page("live.html", live=view, title=f"Submission {sub.id} (live)")

    return router


def default_upload_dir() -> Path:
    return submissions.upload_dir()


__all__ = ["COOKIE", "CommunityState", "community_router"]
