"""The migrations are the schema: they go up, down and up again, and match the models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, create_engine, inspect, text

from migrations import downgrade, upgrade
from models import Base
from tests.conftest import BASE_PG_URL


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_database(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    name = f"stillhouse_mig_{tmp_path.name[-12:].replace('-', '_').lower()}"
    admin = create_engine(BASE_PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield BASE_PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, Base.metadata))
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_matches_models(empty_database: str) -> None:
    upgrade(empty_database)
    downgrade(empty_database)
    engine = create_engine(empty_database)
    with engine.connect() as conn:
        left = set(inspect(conn).get_table_names()) - {"alembic_version"}
    engine.dispose()
    assert left == set()
    upgrade(empty_database)
    assert _diff(empty_database) == []


def _insert(conn: Connection, table: str, values: dict[str, object]) -> None:
    """A row with ``values``, every other NOT NULL column without a default filled by type
    (the schema at an old revision: the models describe the newest)."""
    for column in inspect(conn).get_columns(table):
        if column["nullable"] or column.get("default") or column["name"] in values:
            continue
        kind = str(column["type"]).upper()
        if "BOOL" in kind:
            values[column["name"]] = False
        elif "INT" in kind or "FLOAT" in kind or "DOUBLE" in kind or "NUMERIC" in kind:
            values[column["name"]] = 0
        elif "TIME" in kind or "DATE" in kind:
            values[column["name"]] = datetime.now(UTC)
        elif "JSON" in kind:
            values[column["name"]] = "{}"
        else:
            values[column["name"]] = ""
    names = ", ".join(values)
    conn.execute(
        text(f"INSERT INTO {table} ({names}) VALUES ({', '.join(':' + n for n in values)})"),
        values,
    )


def test_artifacts_written_in_the_flat_shape_are_rewritten_and_back(empty_database: str) -> None:
    """0008: {format: file, "candidates": [...]} becomes {"student": ..., "candidates": ...}."""
    from core.artifacts import Artifacts

    art = {"file_id": "f1", "key": "k1", "sha256": "s1", "size_bytes": 1, "filename": "a.onnx"}
    flat = {"onnx": art, "candidates": [{"onnx": art}]}
    upgrade(empty_database, "0007_token_teachers")
    engine = create_engine(empty_database)
    try:
        with engine.begin() as conn:
            _insert(conn, "tenants", {"id": "tn_mig", "name": "migrations"})
            _insert(
                conn,
                "jobs",
                {"id": "job_1", "tenant_id": "tn_mig", "status": "succeeded",
                 "artifacts": json.dumps(flat)},
            )  # fmt: skip
        upgrade(empty_database)

        def stored() -> dict[str, object]:
            with engine.connect() as conn:
                raw = conn.execute(text("SELECT artifacts FROM jobs WHERE id = 'job_1'")).scalar()
            return json.loads(raw) if isinstance(raw, str) else raw

        assert stored() == {"student": {"onnx": art}, "candidates": [{"onnx": art}]}
        assert Artifacts.of(stored()) == Artifacts.of(flat)
        downgrade(empty_database, "0007_token_teachers")
        assert stored() == flat
    finally:
        engine.dispose()
