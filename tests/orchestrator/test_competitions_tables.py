"""The community's tables (migrations 0006, 0007) on SQLite and PostgreSQL: their constraints hold, 0007 downgrades
to 0006 (dropping the submission jobs and the filesystem digest only), 0006 to 0005 (dropping only the community's
tables), and both upgrade again."""

from __future__ import annotations

import pytest
import sqlalchemy.exc
from sqlalchemy import create_engine, inspect

from cortexbox.registry import Registry
from cortexbox.registry.models import (
    Account,
    ApiToken,
    Competition,
    Submission,
    SubmissionJob,
    SubmissionRun,
    Team,
    TeamMember,
)
from tests.registry.test_migrations import _alembic_config, empty_url  # noqa: F401 - the database fixture
from tests.registry.test_registry import postgres_url  # noqa: F401 - the throwaway PostgreSQL cluster

TABLES = {"account", "api_token", "team", "team_member", "competition", "submission", "submission_run", "submission_job"}


def _rejected(registry, *rows) -> None:
    with registry.session() as s:
        s.add_all(rows)
        with pytest.raises(sqlalchemy.exc.IntegrityError):
            s.commit()


def test_community_tables_hold_their_constraints_and_downgrade(empty_url):  # noqa: F811
    from alembic import command

    registry = Registry(empty_url)
    with registry.session() as s:
        s.add_all([Account(name="org", is_admin=True), Account(name="ann"), Team(name="red")])
        s.commit()
        s.add_all([TeamMember(team_id=1, account_id=2), ApiToken(token_id="a" * 16, account_id=2, salt="0" * 32, secret_hash="1" * 64),
                   Competition(slug="c", organiser_id=1, spec={"tracks": []})])
        s.commit()
        s.add(Submission(competition_id=1, team_id=1, account_id=2, digest="sha256:x", image_ref="sha256:x"))
        s.commit()
        s.add(SubmissionRun(submission_id=1, benchmark="B2020.x"))
        s.add(SubmissionJob(submission_id=1))
        s.commit()
    _rejected(registry, Account(name="ann"))  # one account per name
    _rejected(registry, Team(name="red"))
    _rejected(registry, TeamMember(team_id=1, account_id=2))  # one team per account
    _rejected(registry, ApiToken(token_id="a" * 16, account_id=1, salt="", secret_hash=""))  # token ids are unique
    _rejected(registry, Competition(slug="c", organiser_id=1))
    _rejected(registry, SubmissionRun(submission_id=1, benchmark="B2020.x"))  # one row per attempt
    _rejected(registry, SubmissionJob(submission_id=1))  # one job per (submission, attempt): a delivery claims it
    _rejected(registry, SubmissionJob(submission_id=9, attempt=1))  # no such submission
    _rejected(registry, Submission(competition_id=7, team_id=1, account_id=2, digest="d", image_ref="d"))  # no such competition
    with registry.session() as s:
        s.add(SubmissionRun(submission_id=1, benchmark="B2020.x", attempt=1))  # a rescoring attempt is another row
        s.add(SubmissionJob(submission_id=1, attempt=1))
        s.commit()
    registry.engine.dispose()
    engine = create_engine(empty_url)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA foreign_keys = OFF")
        command.downgrade(_alembic_config(conn), "0006")
        names = set(inspect(conn).get_table_names())
        assert "submission_job" not in names and TABLES - {"submission_job"} <= names
        columns = {c["name"] for c in inspect(conn).get_columns("submission")}
        assert not {"layers_digest", "resembles"} & columns and "duplicate_of" in columns
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM submission_run").scalar() == 2  # rows kept
        command.downgrade(_alembic_config(conn), "0005")
        names = set(inspect(conn).get_table_names())
        assert not names & TABLES and {"model", "run", "score", "score_job"} <= names
    engine.dispose()
    again = Registry(empty_url)
    assert again.revision == "0007" and TABLES <= set(inspect(again.engine).get_table_names())
    again.engine.dispose()
