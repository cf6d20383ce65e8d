import duckdb

from catalog import db
from catalog.migrations import LATEST_VERSION


def test_migrations_run_once_and_record_versions(tmp_path):
    p = tmp_path / "m.duckdb"
    con = db.connect(p)
    assert db.schema_version(con) == LATEST_VERSION
    assert db.migrate(con) == []  # nothing pending on reopen
    con.close()
    con = db.connect(p)
    versions = [r[0] for r in con.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()]
    assert versions == list(range(1, LATEST_VERSION + 1))
    cols = {r[0] for r in con.execute("DESCRIBE clips").fetchall()}
    for c in ["clip_id", "video_id", "video_path", "start_s", "end_s", "duration_s", "start_frame", "end_frame",
              "num_frames", "fps", "width", "height", "motion_score", "brightness", "colorfulness", "sharpness",
              "keyframe_path", "caption", "tags", "tag_list", "captioner", "prompt_version"]:
        assert c in cols, c
    con.close()


def test_partial_old_catalog_is_migrated(tmp_path):
    p = tmp_path / "old.duckdb"
    from catalog.migrations import MIGRATIONS

    raw = duckdb.connect(str(p))
    raw.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)")
    raw.execute(MIGRATIONS[0][2])
    raw.execute("INSERT INTO schema_migrations VALUES (1, 'initial tables', now())")
    raw.close()
    con = db.connect(p)
    assert db.schema_version(con) == LATEST_VERSION
    con.close()


def test_read_only_open_refuses_old_schema(tmp_path):
    import pytest

    p = tmp_path / "old2.duckdb"
    duckdb.connect(str(p)).close()
    with pytest.raises(db.CatalogError, match="schema version 0"):
        db.connect(p, read_only=True)


# -- frozen migrations (issue 36.2) ----------------------------------------------------------------
# Each released migration's text, as a digest. A catalog made by an older version of this tool ran
# exactly this text: editing it changes nothing in those files and silently splits the fleet in two.
# A change to the schema is a new migration; never update a digest here.
FROZEN = {
    1: "218f24b75cf3648b",  # initial tables
    2: "308d8c8f10b028cf",  # clips view
    3: "94329afe0c0d372b",  # runs record their process
    4: "157c6d065fb06ab7",  # materialised chosen labelling
    5: "3e87d856d34c9c66",  # human curation
    6: "2c85cb771b6e1b1e",  # near-duplicates and per-clip training loss
    7: "ef8289c8082cc16a",  # sample aspect ratio
    8: "93ffe6a1e4e4f994",  # excluded spans
    9: "c30f1406d6cf90e4",  # captions by clip
    10: "33e2285dd7ac3e6b",  # label model kind
}


def test_released_migrations_are_frozen_text():
    import hashlib

    from catalog.migrations import MIGRATIONS

    got = {v: hashlib.sha256(sql.encode()).hexdigest()[:16] for v, _, sql in MIGRATIONS}
    assert {v: got[v] for v in FROZEN} == FROZEN
    assert [v for v, _, _ in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def test_each_migration_is_its_own_file_run_as_it_is():
    """No placeholder and no text derived from another migration or from code that keeps changing
    (the chosen-label refresh lives in catalog.labels): each migration is the bytes of its own
    file under catalog/sql, one file per version and nothing else there, and migrations.py only
    reads them."""
    import ast
    from pathlib import Path

    import catalog.migrations as m

    sql_dir = Path(m.__file__).parent / "sql"
    assert sorted(p.name for p in sql_dir.iterdir()) == [f"{v:04d}.sql" for v, _, _ in m.MIGRATIONS]
    for v, _, sql in m.MIGRATIONS:
        assert sql == (sql_dir / f"{v:04d}.sql").read_bytes().decode("utf-8")
        assert "{REFRESH" not in sql and "{where}" not in sql
    calls = {ast.unparse(n.func) for n in ast.walk(ast.parse(Path(m.__file__).read_text())) if isinstance(n, ast.Call)}
    assert not any(c.endswith((".replace", ".format", ".join")) for c in calls), calls


def _schema(con) -> dict:
    """What a catalog is: its tables' columns (name, type, default, nullability), its views' SQL
    and its indexes, by name."""
    cols = con.execute("SELECT table_name, column_name, data_type, column_default, is_nullable "
                       "FROM information_schema.columns WHERE table_schema = 'main' "
                       "ORDER BY table_name, ordinal_position").fetchall()
    views = con.execute("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()
    indexes = con.execute("SELECT index_name, table_name, sql FROM duckdb_indexes() ORDER BY 1").fetchall()
    return {"columns": cols, "views": views, "indexes": indexes}


def test_a_catalog_made_at_any_old_version_migrates_to_what_a_new_one_is(tmp_path):
    """For every released version k: a catalog that stopped at k (with a video, a clip and a
    caption in it, as a user's would have) opened by this tool equals a fresh catalog in schema,
    and keeps its rows."""
    from catalog.migrations import MIGRATIONS

    fresh = db.connect(tmp_path / "fresh.duckdb")
    want = _schema(fresh)
    fresh.close()
    for k in range(1, LATEST_VERSION):
        p = tmp_path / f"at{k}.duckdb"
        raw = duckdb.connect(str(p))
        raw.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, "
                    "applied_at TIMESTAMP DEFAULT current_timestamp)")
        for version, name, sql in MIGRATIONS[:k]:
            raw.execute(sql)
            raw.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
        raw.execute("INSERT INTO videos (video_id, path, status) VALUES ('v1', '/x/a.mp4', 'ok')")
        raw.close()
        con = db.connect(p)
        assert db.schema_version(con) == LATEST_VERSION
        assert _schema(con) == want, f"a catalog made at version {k} differs after migrating"
        assert con.execute("SELECT path FROM videos").fetchall() == [("/x/a.mp4",)]
        con.close()


def test_clip_columns_are_declared_once(tmp_path):
    """The clip row is `catalog.store.CLIP_FIELDS`: the table a fresh catalog makes, the writer's
    columns and ingest's ClipRecord all agree with it (a column added in one place only fails here)."""
    import dataclasses

    from catalog.store import CLIP_COLUMNS
    from dataengine.analyze import ClipRecord

    con = db.connect(tmp_path / "c.duckdb")
    try:
        table = [r[0] for r in con.execute("DESCRIBE clip_segments").fetchall()]
    finally:
        con.close()
    assert [c for c in table if c != "created_at"] == CLIP_COLUMNS  # created_at: the catalog's own default
    assert [f.name for f in dataclasses.fields(ClipRecord)] == CLIP_COLUMNS
