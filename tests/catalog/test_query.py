"""Safe user queries: valid WHERE clauses work; hostile text is refused and changes nothing."""

from __future__ import annotations

import hashlib
import json

import duckdb
import pytest

from catalog import db
from catalog.query import QueryError, check_where_clause, run_query
from dataengine.cli import main


@pytest.fixture()
def cat(tmp_path):
    """A small catalog with two videos, three clips and captions written through the real store."""
    from catalog import store

    path = tmp_path / "q.duckdb"
    con = db.connect(path)
    with db.transaction(con):
        for vid, n in (("a" * 32, 2), ("b" * 32, 1)):
            store.save_video(con, {"video_id": vid, "path": f"/v/{vid[:3]}.mp4", "status": "ok", "fps": 24.0,
                                   "width": 320, "height": 240, "split_key": "k"},
                             [{"clip_id": f"{vid[:16]}_{i}", "video_id": vid, "scene_index": i, "window_index": 0,
                               "start_frame": i * 50, "end_frame": i * 50 + 48, "start_s": i * 2.0,
                               "end_s": i * 2.0 + 2.0, "motion_score": float(i + 1)} for i in range(n)])
        con.execute("INSERT INTO captions (clip_id, captioner, prompt_version, status, caption, tag_list, fields) "
                    "VALUES (?, 'm', 'v1', 'ok', 'a cat chases a mouse', ['chase','kitchen'], ?)",
                    ["a" * 16 + "_0", json.dumps({"action": "chase"})])
        con.execute("INSERT INTO captions (clip_id, captioner, prompt_version, status, caption, tag_list) "
                    "VALUES (?, 'm', 'v1', 'ok', 'a quiet night', ['night'])", ["b" * 16 + "_0"])
    con.close()
    return path


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_tags_like_works_as_written(cat):
    rows = run_query("tags LIKE '%chase%'", cat)
    assert [r["clip_id"] for r in rows] == ["a" * 16 + "_0"]
    assert rows[0]["tag_list"] == ["chase", "kitchen"] and rows[0]["tags"] == "chase,kitchen"
    assert rows[0]["action"] == "chase"


def test_other_expressions(cat):
    assert len(run_query("list_contains(tag_list, 'night')", cat)) == 1
    assert len(run_query("caption IS NULL", cat)) == 1
    assert len(run_query("motion_score >= 2 AND (duration_s > 1)", cat)) == 1
    assert len(run_query("video_path LIKE '%;%'", cat)) == 0  # ';' inside a string is fine
    assert len(run_query("caption = 'it''s'", cat)) == 0
    assert len(run_query(None, cat)) == 3


HOSTILE = [
    "1=1; DROP TABLE videos",
    "1=1; DELETE FROM clip_segments",
    "1=1) OR (1=1",
    "1=1) UNION SELECT * FROM videos --",
    "clip_id IN (SELECT clip_id FROM captions)",
    "1=1 -- comment",
    "1=1 /* c */",
    "ATTACH '/tmp/x.db' AS x",
    "COPY clip_segments TO '/tmp/out.csv'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "PRAGMA database_list",
    "EXISTS (FROM read_csv('/etc/passwd'))",
    "length(read_text('/etc/passwd')) > 0",
    "(SELECT count(*) FROM glob('/*')) > 0",
    "getenv('HOME') IS NOT NULL",
    "current_setting('threads') > 0",
    "1=1; CREATE TABLE t AS SELECT 1",
    "INSERT INTO settings VALUES ('a','b')",
    "UPDATE videos SET status = 'x'",
    "$$x$$ = 'x'",
    "'unterminated",
    "((1=1)",
    "",
    "   ",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_queries_refused_and_catalog_untouched(cat, runner, text):
    before = digest(cat)
    with pytest.raises(QueryError):
        run_query(text, cat)
    r = runner.invoke(main, ["query", text, "--catalog", str(cat)])
    assert r.exit_code == 1
    assert r.output.startswith("Error: ")
    assert "Traceback" not in r.output
    assert digest(cat) == before
    con = duckdb.connect(str(cat), read_only=True)
    assert con.execute("SELECT count(*) FROM videos").fetchone()[0] == 2
    assert con.execute("SELECT count(*) FROM settings").fetchone()[0] == 0
    con.close()


def test_sandbox_blocks_file_access_even_if_checks_were_bypassed(cat):
    from catalog.query import open_sandboxed

    con = open_sandboxed(cat)
    with pytest.raises(duckdb.Error):
        con.execute("SELECT * FROM read_csv('/etc/passwd')").fetchall()
    with pytest.raises(duckdb.Error):
        con.execute("CREATE TABLE x (a INT)")
    with pytest.raises(duckdb.Error):
        con.execute("SET enable_external_access = true")
    con.close()


def test_bad_column_is_a_clear_error(cat, runner):
    r = runner.invoke(main, ["query", "no_such_col = 1", "--catalog", str(cat)])
    assert r.exit_code == 1 and "query failed" in r.output and "no_such_col" in r.output


def test_cli_formats(cat, runner):
    r = runner.invoke(main, ["query", "tags LIKE '%chase%'", "--catalog", str(cat), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)[0]["tags"] == "chase,kitchen"
    r = runner.invoke(main, ["query", "1=1", "--catalog", str(cat), "--csv"])
    assert r.exit_code == 0 and r.output.splitlines()[0].startswith("clip_id,video_id,video_path")
    assert len(r.output.strip().splitlines()) == 4
    r = runner.invoke(main, ["query", "1=1", "--catalog", str(cat)])
    assert r.exit_code == 0 and "3 clip(s)" in r.output


def test_missing_catalog(tmp_path, runner):
    r = runner.invoke(main, ["query", "1=1", "--catalog", str(tmp_path / "none.duckdb")])
    assert r.exit_code == 1 and "no catalog at" in r.output


def test_env_var_fallback(cat, runner, monkeypatch):
    monkeypatch.setenv("DE_CATALOG", str(cat))
    r = runner.invoke(main, ["query", "tags LIKE '%night%'", "--json"])
    assert r.exit_code == 0 and len(json.loads(r.output)) == 1


def test_check_is_pure():
    assert check_where_clause("  a = 1 ") == "a = 1"
    with pytest.raises(QueryError, match="not allowed"):
        check_where_clause("select_me = 1 OR SELECT")
    assert check_where_clause("selection = 1") == "selection = 1"  # whole words only
