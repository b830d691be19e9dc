"""Accounts, API tokens and teams.

A token reads ``cbx_<token id>_<secret>``: the id is stored in clear (one indexed lookup), the secret only as
SHA-256 of a per-token random salt and the secret, compared with ``hmac.compare_digest``. The token is shown once,
when it is made; nothing else (logs, pages, provenance, the database) ever holds it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from cortexbox.orchestrator.errors import UserError
from cortexbox.registry import Registry
from cortexbox.registry.models import Account, ApiToken, Team, TeamMember

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
TOKEN = re.compile(r"^cbx_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
#: How long a web login lasts.
SESSION_S = 12 * 3600


class AuthError(UserError):
    """No token, an unknown or malformed one, or an expired session: HTTP 401."""


class Forbidden(UserError):
    """A known caller asking for something that is not theirs: HTTP 403."""


@dataclass(frozen=True)
class Caller:
    """Who asks: the account, and the team it submits for (None if it has none)."""

    account_id: int
    name: str
    is_admin: bool
    team_id: int | None
    team: str | None


def _hash(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def _check_name(name: str, what: str) -> str:
    if not NAME.match(name or ""):
        raise UserError(f"{what} name {name!r} is not allowed", "use 1-63 lower-case letters, digits, '.', '_' or '-'")
    return name


def issue_token(registry: Registry, account_id: int, kind: str = "api", ttl_s: float | None = None) -> str:
    """Makes a token for the account and returns it; only its salted hash is stored."""
    token_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_hex(16)
    expires = datetime.now(timezone.utc) + timedelta(seconds=ttl_s) if ttl_s else None
    with registry.session() as s:
        s.add(ApiToken(token_id=token_id, account_id=account_id, salt=salt, secret_hash=_hash(salt, secret),
                       kind=kind, expires_at=expires))
        s.commit()
    return f"cbx_{token_id}_{secret}"


def add_user(registry: Registry, name: str, *, admin: bool = False) -> tuple[Account, str]:
    """A new account and its first API token (returned once)."""
    _check_name(name, "user")
    with registry.session() as s:
        account = Account(name=name, is_admin=admin)
        s.add(account)
        try:
            s.commit()
        except IntegrityError:
            raise UserError(f"a user named {name!r} exists", "choose another name") from None
        s.refresh(account)
    return account, issue_token(registry, account.id)


def authenticate(registry: Registry, token: str | None) -> Caller:
    """The caller a token belongs to; AuthError for a missing, malformed, unknown, wrong or expired token (the
    message never quotes the token)."""
    match = TOKEN.match(token or "")
    if not match:
        raise AuthError("no valid token given", "send `Authorization: Bearer <token>` (from `cortexbox users add`) or log in")
    token_id, secret = match.groups()
    with registry.session() as s:
        row = s.exec(select(ApiToken).where(ApiToken.token_id == token_id)).first()
        # A hash is computed either way, so an unknown id takes as long as a wrong secret.
        salt, expected = (row.salt, row.secret_hash) if row is not None else ("00" * 16, "0" * 64)
        good = hmac.compare_digest(_hash(salt, secret), expected) and row is not None
        if good and row.expires_at is not None:
            expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=timezone.utc)
            good = expires > datetime.now(timezone.utc)
        if not good:
            raise AuthError("the token is not valid (unknown, revoked or expired)", "ask an admin for a new one")
        account = s.get(Account, row.account_id)
        member = s.exec(select(TeamMember).where(TeamMember.account_id == account.id)).first()
        team = s.get(Team, member.team_id) if member else None
        return Caller(account.id, account.name, account.is_admin, team.id if team else None, team.name if team else None)


def revoke(registry: Registry, token: str) -> None:
    """Deletes the token's row (a web logout); an unknown token is ignored."""
    match = TOKEN.match(token or "")
    if not match:
        return
    with registry.session() as s:
        row = s.exec(select(ApiToken).where(ApiToken.token_id == match.group(1))).first()
        if row is not None and hmac.compare_digest(_hash(row.salt, match.group(2)), row.secret_hash):
            s.delete(row)
            s.commit()


def tokens_of(registry: Registry, caller: Caller) -> list[dict]:
    """The caller's API tokens by their public id (never a secret): what it may revoke."""
    with registry.session() as s:
        rows = s.exec(select(ApiToken).where(ApiToken.account_id == caller.account_id, ApiToken.kind == "api")
                      .order_by(ApiToken.id))
        return [{"token_id": r.token_id, "created_at": r.created_at.isoformat(timespec="seconds")} for r in rows]


def revoke_token(registry: Registry, token_id: str, by: Caller) -> int:
    """Revokes an API token by its public id (the ``<id>`` of ``cbx_<id>_<secret>``): the caller's own, or any
    account's for an admin (another's token is "not found" to anyone else, who learns nothing). Its account's web
    sessions end with it (a session made by logging in records no parent token, and must not outlive the token it
    came from). Returns the number of rows removed."""
    from cortexbox.orchestrator.community.competitions import NotFound

    with registry.session() as s:
        row = s.exec(select(ApiToken).where(ApiToken.token_id == token_id, ApiToken.kind == "api")).first() \
            if re.fullmatch(r"[0-9a-f]{16}", token_id or "") else None
        if row is None or (row.account_id != by.account_id and not by.is_admin):
            raise NotFound(f"no token {token_id!r} of yours", "GET /api/tokens lists your tokens' ids")
        sessions = list(s.exec(select(ApiToken).where(ApiToken.account_id == row.account_id, ApiToken.kind == "session")))
        for doomed in [row, *sessions]:
            s.delete(doomed)
        s.commit()
        return 1 + len(sessions)


def _account(s, name: str) -> Account:
    account = s.exec(select(Account).where(Account.name == name)).first()
    if account is None:
        raise UserError(f"no user named {name!r}", "add one with `cortexbox users add NAME`")
    return account


def add_team(registry: Registry, name: str, member: str) -> Team:
    """A new team with ``member`` (a user without a team) as its first member."""
    _check_name(name, "team")
    with registry.session() as s:
        account = _account(s, member)
        if s.exec(select(TeamMember).where(TeamMember.account_id == account.id)).first() is not None:
            raise UserError(f"user {member!r} is in a team already", "a user submits for one team")
        team = Team(name=name)
        s.add(team)
        try:
            s.flush()
        except IntegrityError:
            raise UserError(f"a team named {name!r} exists", "choose another name, or join it") from None
        s.add(TeamMember(team_id=team.id, account_id=account.id))
        s.commit()
        s.refresh(team)
        return team


def join_team(registry: Registry, team: str, member: str, *, by: Caller | None = None) -> None:
    """Adds a user (without a team) to a team. ``by``: the API caller, who must be in that team or an admin (the
    CLI, run by the operator, passes None)."""
    with registry.session() as s:
        row = s.exec(select(Team).where(Team.name == team)).first()
        if row is None:
            raise UserError(f"no team named {team!r}", "create it with `cortexbox teams add TEAM --user NAME`")
        if by is not None and not by.is_admin and by.team_id != row.id:
            raise Forbidden(f"only members of team {team!r} may add members to it")
        account = _account(s, member)
        if s.exec(select(TeamMember).where(TeamMember.account_id == account.id)).first() is not None:
            raise UserError(f"user {member!r} is in a team already", "a user submits for one team")
        s.add(TeamMember(team_id=row.id, account_id=account.id))
        s.commit()


def team_members(registry: Registry, team_id: int) -> list[str]:
    with registry.session() as s:
        rows = s.exec(select(Account.name).where(TeamMember.team_id == team_id, TeamMember.account_id == Account.id))
        return sorted(rows)
