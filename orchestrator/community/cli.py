"""The community's commands: ``cortexbox users``, ``teams``, ``competitions`` (run by the operator on the host,
against the community registry) and ``cortexbox submit`` (run by a team anywhere, against a server with its
token). Heavy imports happen inside the commands, so ``cortexbox --help`` stays fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from cortexbox.orchestrator.terminal import untrusted

out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

users_app = typer.Typer(no_args_is_help=True, help="Accounts of the community registry (each with an API token).")
teams_app = typer.Typer(no_args_is_help=True, help="Teams that submit to competitions.")
competitions_app = typer.Typer(no_args_is_help=True, help="Competitions: create, open, close, reveal, boards, export.")

DB_HELP = "Community registry URL (default: $CORTEXBOX_COMMUNITY_URL, else community.db in $CORTEXBOX_HOME)"


def _registry(url: str | None):
    from cortexbox.orchestrator.community import community_url
    from cortexbox.registry import Registry

    return Registry(community_url(url))


def _operator():
    """The operator on the host acts as an admin."""
    from cortexbox.orchestrator.community.accounts import Caller

    return Caller(account_id=-1, name="operator", is_admin=True, team_id=None, team=None)


@users_app.command("add")
def users_add(name: str = typer.Argument(..., help="lower-case name"),
              admin: bool = typer.Option(False, "--admin", help="May create and organise competitions"),
              database_url: Optional[str] = typer.Option(None, "--database-url", help=DB_HELP)) -> None:
    """Add a user; prints its API token once (only a salted hash is stored)."""
    from cortexbox.orchestrator.community.accounts import add_user

    account, token = add_user(_registry(database_url), name, admin=admin)
    err.print(f"user {account.name}{' (admin)' if account.is_admin else ''} added; its token, shown only now:")
    out.print(token, soft_wrap=True, highlight=False, markup=False)


@teams_app.command("add")
def teams_add(team: str = typer.Argument(...), user: str = typer.Option(..., "--user", help="Its first member"),
              database_url: Optional[str] = typer.Option(None, "--database-url", help=DB_HELP)) -> None:
    """Create a team with a first member."""
    from cortexbox.orchestrator.community.accounts import add_team

    add_team(_registry(database_url), team, user)
    out.print(f"team {team} added with member {user}", highlight=False, markup=False)


@teams_app.command("join")
def teams_join(team: str = typer.Argument(...), user: str = typer.Argument(...),
               database_url: Optional[str] = typer.Option(None, "--database-url", help=DB_HELP)) -> None:
    """Add a user (without a team) to a team."""
    from cortexbox.orchestrator.community.accounts import join_team

    join_team(_registry(database_url), team, user)
    out.print(f"{user} joined team {team}", highlight=False, markup=False)


@competitions_app.command("create")
def competitions_create(spec: Path = typer.Argument(..., exists=True, dir_okay=False, help="The spec (JSON)"),
                        organiser: str = typer.Option(..., "--organiser", help="An admin user who organises it"),
                        database_url: Optional[str] = typer.Option(None, "--database-url", help=DB_HELP)) -> None:
    """Create a competition (a draft: `competitions open SLUG` starts taking submissions)."""
    from sqlmodel import select

    from cortexbox.orchestrator.community import competitions
    from cortexbox.orchestrator.community.accounts import Caller
    from cortexbox.orchestrator.errors import UserError
    from cortexbox.registry.models import Account

    registry = _registry(database_url)
    with registry.session() as s:
        account = s.exec(select(Account).where(Account.name == organiser)).first()
    if account is None:
        raise UserError(f"no user named {organiser!r}", "add one with `cortexbox users add NAME --admin`")
    try:
        body = json.loads(spec.read_text())
    except ValueError as e:
        raise UserError(f"{spec} is not JSON: {e}") from None
    comp = competitions.create(registry, body, Caller(account.id, account.name, account.is_admin, None, None))
    out.print(f"competition {comp.slug} created (draft); open it with `cortexbox competitions open {comp.slug}`",
              highlight=False, markup=False)


def _act(slug: str, action: str, database_url: str | None) -> None:
    from cortexbox.orchestrator.community import competitions

    comp = competitions.act(_registry(database_url), slug, action, _operator())
    out.print(f"{comp.slug}: {comp.status}{', private values revealed' if comp.revealed else ''}", highlight=False, markup=False)


@competitions_app.command("open")
def competitions_open(slug: str, database_url: Optional[str] = typer.Option(None, "--database-url", help=DB_HELP)) -> None:
    """Start taking submissions (registers the tracks' benchmarks, pinning their versions)."""
    _act(slug, "open", database_url)


@competitions_app.command("close")
def competitions_close(slug: str, database_url: Optional[str] = typer.Option(None, "--database-url", help=DB_HELP)) -> None:
    """Stop taking submissions."""
    _act(slug, "close", database_url)


@competitions_app.command("reveal")
def competitions_reveal(slug: str, database_url: Optional[str] = typer.Option(None, "--database-url", help=DB_HELP)) -> None:
    """Show the private values (the final board) to everyone."""
    _act(slug, "reveal", database_url)


@competitions_app.command("export")
def competitions_export(slug: str, fmt: str = typer.Option("json", "--format", help="json or csv"),
                        database_url: Optional[str] = typer.Option(None, "--database-url", help=DB_HELP)) -> None:
    """Every submission with its digest, team, status and values, and both boards."""
    from cortexbox.orchestrator.community import competitions

    registry = _registry(database_url)
    print(competitions.export(registry, competitions.get(registry, slug), "csv" if fmt == "csv" else "json"))  # noqa: T201


def submit(image: str = typer.Argument(..., help="A Docker image (tag or id) or a `docker save` tarball"),
           server: str = typer.Option(..., "--server", help="e.g. http://127.0.0.1:8000"),
           competition: str = typer.Option(..., "--competition", help="The competition's slug"),
           token: str = typer.Option(..., "--token", envvar="CORTEXBOX_TOKEN", help="Your API token ($CORTEXBOX_TOKEN)"),
           follow: bool = typer.Option(True, "--follow/--no-follow", help="Follow the runs until they end"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Submit an image to a competition and follow its runs live."""
    import requests

    from cortexbox.orchestrator.errors import UserError

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-tar"}
    base = server.rstrip("/")
    path = Path(image)
    try:
        if path.is_file():
            with open(path, "rb") as body:
                response = requests.post(f"{base}/api/competitions/{competition}/submissions", data=body, headers=headers,
                                         timeout=(10, 3600))
        else:
            from cortexbox.orchestrator.runtime import docker_client

            try:
                saved = docker_client().images.get(image).save(chunk_size=1024**2)
            except Exception:  # noqa: BLE001 - ImageNotFound and friends
                raise UserError(f"no Docker image or file {image!r}", "give a tag, an image id or a tarball") from None
            response = requests.post(f"{base}/api/competitions/{competition}/submissions", data=saved, headers=headers,
                                     timeout=(10, 3600))
    except requests.RequestException as e:
        raise UserError(f"could not reach {base}: {type(e).__name__}", "check --server") from None
    if response.status_code != 202:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:300]
        raise UserError(f"the server refused the submission ({response.status_code}): {detail}")
    sub = response.json()
    if as_json and not follow:
        print(json.dumps(sub))  # noqa: T201
        return
    err.print(f"submission {sub['submission']} ({sub['digest'][:19]}) queued; live: {base}{sub['live_url']}", highlight=False, markup=False)
    if not follow:
        return
    final = None
    with requests.get(f"{base}{sub['events_url']}", headers={"Authorization": f"Bearer {token}"}, stream=True,
                      timeout=(10, 700)) as events:
        kind = None
        for line in events.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind:
                data = json.loads(line[6:])
                if as_json:
                    print(json.dumps({"event": kind, **data}))  # noqa: T201
                elif kind == "stage":
                    err.print(untrusted(f"  {data.get('benchmark')}: {data.get('text')}", oneline=True, limit=300))
                elif kind == "score":
                    out.print(f"{data.get('benchmark')}: ceiled {data.get('ceiled')} (raw {data.get('raw')})", highlight=False, markup=False)
                elif kind == "failed":
                    out.print(untrusted(f"{data.get('benchmark')}: failed ({data.get('failure_class')}) {data.get('error') or ''}",
                                        oneline=True, limit=1000))
                    if data.get("log_tail"):
                        err.print(untrusted(data["log_tail"], limit=4000, keep="end"))
                elif kind == "done":
                    final = data
                    out.print(f"submission {sub['submission']}: {data.get('status')}"
                              + (f" ({data['failure_class']})" if data.get("failure_class") else ""), highlight=False, markup=False)
                    break
    if final is None:
        err.print(f"stopped following; the submission goes on: {base}{sub['live_url']}", highlight=False, markup=False)
