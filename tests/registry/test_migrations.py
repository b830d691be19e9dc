"""The registry's schema comes from its Alembic migrations, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sqlalchemy import create_engine, inspect, text
from sqlmodel import SQLModel

from cortexbox.registry import Registry
from cortexbox.registry.store import _head_revision
from tests.registry.test_registry import postgres_url  # noqa: F401 - the throwaway cluster fixture


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path):
    """An empty database of each kind (its own database in the PostgreSQL cluster)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    server = request.getfixturevalue("postgres_url")
    name = f"m{time.monotonic_ns()}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return server.rsplit("/", 1)[0] + "/" + name


def _schema_differences(url: str) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(url)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
    engine.dispose()
    return diffs


def test_a_new_database_is_migrated_to_head_and_matches_the_models(empty_url):
    registry = Registry(empty_url)
    assert registry.revision == _head_revision()
    with registry.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == _head_revision()
    # the migrations build exactly the tables registry/models.py declares (a model change needs a revision)
    assert _schema_differences(empty_url) == []
    assert Registry(empty_url).revision == _head_revision()  # opening again changes nothing
    registry.engine.dispose()


#: The tables of the baseline revision 0001, which is what `create_all` made before migrations existed.
BASELINE_TABLES = {"model", "benchmark", "layer_commitment", "run", "score", "score_job"}


def test_a_database_made_by_create_all_is_stamped_and_keeps_its_rows(empty_url):
    from alembic import command
    from alembic.config import Config

    from cortexbox.registry.store import BASELINE_REVISION, MIGRATIONS

    legacy = create_engine(empty_url)
    # how the registry made its tables before migrations: the baseline's schema (frozen in revision 0001, while
    # registry/models.py moves on), and no alembic_version
    with legacy.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, BASELINE_REVISION)
        conn.execute(text("DROP TABLE alembic_version"))
        assert set(inspect(conn).get_table_names()) == BASELINE_TABLES
    with legacy.begin() as conn:
        conn.execute(text("INSERT INTO model (digest, name, version, image_ref, created_at) "
                          "VALUES ('sha256:old', 'old', '1', '', CURRENT_TIMESTAMP)"))
        assert not inspect(conn).has_table("alembic_version")
    legacy.dispose()
    registry = Registry(empty_url)
    assert registry.revision == _head_revision()
    assert [m.name for m in registry.models()] == ["old"]
    assert _schema_differences(empty_url) == []
    registry.engine.dispose()


def test_alembic_command_line_config_points_at_the_migrations(tmp_path, monkeypatch):
    from alembic import command
    from alembic.config import Config

    from tests.conftest import REPO

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("CORTEXBOX_DATABASE_URL", url)
    command.upgrade(Config(str(REPO / "alembic.ini")), "head")  # what `alembic upgrade head` does
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == _head_revision()
    engine.dispose()


def _alembic_config(connection):
    from alembic.config import Config

    from cortexbox.registry.store import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def test_run_events_revision_upgrades_a_baseline_database_and_downgrades(empty_url):
    from alembic import command

    engine = create_engine(empty_url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0001")
        conn.execute(text("INSERT INTO run (model_ref, benchmark_identifier, status, started_at) "
                          "VALUES ('m', 'b', 'running', CURRENT_TIMESTAMP)"))
        assert not inspect(conn).has_table("run_event")
    registry = Registry(empty_url)  # opening upgrades to head
    assert registry.revision == _head_revision() and [r.model_ref for r in registry.runs()] == ["m"]
    run_id = registry.runs()[0].id
    registry.add_run_events(run_id, [(0, "status", {"status": "running"}), (1, "progress", {"done": 1, "total": 2, "x": [1.5, None]})])
    registry.add_run_events(run_id, [(2, "done", {"status": "succeeded"})])
    assert [(e.seq, e.kind) for e in registry.run_events(run_id, after=0)] == [(1, "progress"), (2, "done")]
    assert registry.run_events(run_id, after=0, limit=1)[0].data == {"done": 1, "total": 2, "x": [1.5, None]}
    assert registry.last_run_events([run_id, run_id + 1])[run_id].kind == "done"
    import sqlalchemy.exc

    with pytest.raises(sqlalchemy.exc.IntegrityError):  # one writer per run: a seq is never stored twice
        registry.add_run_events(run_id, [(2, "done", {})])
    registry.engine.dispose()
    with engine.begin() as conn:
        command.downgrade(_alembic_config(conn), "0001")
        assert not inspect(conn).has_table("run_event") and inspect(conn).has_table("run")
    engine.dispose()


def test_a_registry_with_scores_upgrades_on_sqlite(tmp_path):
    """SQLite rebuilds a table to alter it: with foreign keys on (as the registry connects), dropping the old `model`
    table that scores point at failed, so a registry with scores could not be opened after an upgrade."""
    from alembic import command

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0002")
    registry_engine = create_engine(url)

    from sqlalchemy import event

    @event.listens_for(registry_engine, "connect")
    def _on(conn, _):
        conn.execute("PRAGMA foreign_keys = ON")

    with registry_engine.begin() as conn:
        conn.execute(text("INSERT INTO model (digest, name, version, image_ref, info, created_at) "
                          "VALUES ('sha256:aa', 'pixels', '1', 'cortexbox/pixels', '{}', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO benchmark (identifier, version, data_hash, region, description, citation, "
                          "definition, created_at) VALUES ('B.V4-pls', 1, 'h', 'V4', '', '', '{}', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO run (model_ref, benchmark_identifier, status, started_at) "
                          "VALUES ('cortexbox/pixels', 'B.V4-pls', 'succeeded', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO score (run_id, model_id, benchmark_id, raw, layer, provenance, created_at) "
                          "VALUES (1, 1, 1, 0.5, 'pixels', '{}', CURRENT_TIMESTAMP)"))
    registry_engine.dispose()
    engine.dispose()

    registry = Registry(url)  # opening upgrades to head
    assert registry.revision == _head_revision()
    [(score, model, bench)] = registry.scores()
    assert (score.raw, model.name, model.owner, bench.identifier) == (0.5, "pixels", "local", "B.V4-pls")
    with registry.engine.connect() as conn:  # foreign keys are on again for the registry's own connections
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    registry.engine.dispose()


def test_score_items_revision_upgrades_a_database_with_scores_stores_items_and_downgrades(empty_url):
    """Revision 0004 adds score_items to a registry whose scores predate it (they have no items, and keep their
    rows); a score stored with items reads them back byte for byte; downgrading to 0003 drops the table."""
    from alembic import command

    from cortexbox.benchmarks.metrics.items import ItemValues, mean_items

    engine = create_engine(empty_url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0003")
        conn.execute(text("INSERT INTO model_name (name, owner, digest, created_at) "
                          "VALUES ('pixels', 'local', 'sha256:aa', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO model (digest, name, owner, version, image_ref, info, created_at) "
                          "VALUES ('sha256:aa', 'pixels', 'local', '1', 'cortexbox/pixels', '{}', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO benchmark (identifier, version, data_hash, region, description, citation, "
                          "definition, created_at) VALUES ('B.V4-pls', 1, 'h', 'V4', '', '', '{}', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO run (model_ref, benchmark_identifier, status, started_at) "
                          "VALUES ('cortexbox/pixels', 'B.V4-pls', 'succeeded', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO score (run_id, model_id, benchmark_id, raw, layer, provenance, created_at) "
                          "VALUES (1, 1, 1, 0.5, 'pixels', '{}', CURRENT_TIMESTAMP)"))
        assert not inspect(conn).has_table("score_items")
    registry = Registry(empty_url)  # opening upgrades to head
    assert registry.revision == _head_revision()
    [(old, _, _)] = registry.scores()
    assert old.raw == 0.5 and registry.score_items([old.id]) == {}
    items = mean_items([f"word{i}" for i in range(1000)], np.random.default_rng(0).normal(size=1000))
    new = registry.add_score(run_id=1, model_id=1, benchmark_id=1, raw=items.estimate(), layer="pixels", items=items)
    stored = registry.score_items([old.id, new.id])
    assert list(stored) == [new.id] and stored[new.id].kind == "mean" and stored[new.id].n_items == 1000
    assert stored[new.id].payload == items.to_bytes()
    back = ItemValues.from_bytes("mean", stored[new.id].payload)
    assert list(back.ids) == list(items.ids) and back.estimate() == pytest.approx(items.estimate())
    import sqlalchemy.exc

    with pytest.raises(sqlalchemy.exc.IntegrityError):  # one item row per score
        with registry.session() as s:
            from cortexbox.registry.models import ScoreItems

            s.add(ScoreItems(score_id=new.id, kind="mean", n_items=1, payload=b"x"))
            s.commit()
    registry.engine.dispose()
    with engine.begin() as conn:
        command.downgrade(_alembic_config(conn), "0003")
        assert not inspect(conn).has_table("score_items") and inspect(conn).has_table("score")
    engine.dispose()
