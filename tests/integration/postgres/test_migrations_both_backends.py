"""The shipped migrations build exactly the models' schema, on SQLite and on a real PostgreSQL
server, through the operator's command (`serverctl migrate`); and every migration step goes
up one at a time on PostgreSQL, as an upgrade from an older release does."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from serverctl.db.migrate import alembic_config, upgrade
from serverctl.db.models import Base
from support.postgres import Postgres
from support.server import VENV_BIN


def _migrate(url: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "serverctl"), "migrate"],
        env={**os.environ, "SERVERCTL_DATABASE_URL": url, "SERVERCTL_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_serverctl_migrate_builds_the_models_schema(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "postgresql":
        pg: Postgres = request.getfixturevalue("postgres_server")
        url = pg.create_database()
    else:
        url = f"sqlite:///{tmp_path / 'serverctl.db'}"
    done = _migrate(url, tmp_path / "var")
    assert done.returncode == 0, done.stdout + done.stderr
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            drift = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            tables = set(inspect(conn).get_table_names())
        assert drift == [], f"the migrations and the models differ on {backend}: {drift}"
        assert {table.name for table in Base.metadata.sorted_tables} <= tables
        # A second run finds nothing to do and says so.
        again = _migrate(url, tmp_path / "var")
        assert again.returncode == 0 and "up to date" in again.stdout + again.stderr
    finally:
        engine.dispose()


def test_each_migration_applies_on_its_own_on_postgresql(postgres_server: Postgres) -> None:
    engine = create_engine(postgres_server.create_database())
    try:
        script = ScriptDirectory.from_config(alembic_config(engine))
        revisions = [revision.revision for revision in reversed(list(script.walk_revisions()))]
        assert len(revisions) >= 5
        for revision in revisions:
            upgrade(engine, revision)
            with engine.connect() as conn:
                assert MigrationContext.configure(conn).get_current_revision() == revision
    finally:
        engine.dispose()
