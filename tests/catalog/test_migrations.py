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
