"""House rules that keep the tree in one shape (issue 36).

The catalog owns its tables: SQL text that names a catalog table appears only under `catalog/`.
Everything else asks `catalog` through a typed function, and user SQL goes only through
`catalog.query.run_query`. Tests and benchmarks may read a catalog directly; they are not code
that the next change has to find.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def code_lines(skip: set[str] = frozenset()):
    """(path, line number, line) of every line of the three packages, files in `skip` left out."""
    for pkg in ("dataengine", "train", "catalog"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            rel = str(f.relative_to(ROOT))
            if rel not in skip:
                for n, line in enumerate(f.read_text().splitlines(), 1):
                    yield rel, n, line


def catalog_tables() -> set[str]:
    """Every table and view the migrations create."""
    text = "\n".join(p.read_text() for p in sorted((ROOT / "catalog" / "sql").glob("*.sql")))
    return set(re.findall(r"CREATE (?:OR REPLACE )?(?:TABLE|VIEW)\s+(?:IF NOT EXISTS\s+)?(\w+)", text))


def sql_naming_tables(path: Path, tables: set[str]) -> list[str]:
    """`file:line: KEYWORD table` for each string constant (f-string parts too) that reads or
    writes a catalog table. SQL keywords are upper case in this house; prose ("from videos") is not
    SQL."""
    pat = re.compile(r"\b(FROM|JOIN|INTO|UPDATE|TABLE|DESCRIBE)\s+(%s)\b" % "|".join(sorted(tables)))
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = pat.search(node.value)
            if m:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}: {m.group(0)}")
    return out


def test_the_migrations_name_the_tables_this_test_looks_for():
    assert {"videos", "clip_segments", "clips", "captions", "runs", "run_clips", "clip_dups",
            "clip_losses", "settings"} <= catalog_tables()


def test_only_the_catalog_names_catalog_tables():
    tables = catalog_tables()
    offenders = [hit for pkg in ("dataengine", "train") for f in sorted((ROOT / pkg).rglob("*.py"))
                 for hit in sql_naming_tables(f, tables)]
    assert offenders == [], "SQL on catalog tables outside catalog/ (add a function in catalog/):\n" + \
        "\n".join(offenders)


def test_the_scan_sees_sql_in_plain_and_formatted_strings(tmp_path):
    """The teeth: the scan finds both kinds of string, and not prose."""
    f = ROOT / "tests" / "_house_probe.py"
    f.write_text('A = "SELECT count(*) FROM captions WHERE x = ?"\n'
                 'B = f"DELETE FROM clip_dups WHERE g = {1}"\n'
                 '"""Rows come from videos, into clips."""\n')
    try:
        hits = sql_naming_tables(f, catalog_tables())
    finally:
        f.unlink()
    assert [h.split(": ", 1)[1] for h in hits] == ["FROM captions", "FROM clip_dups"]


def test_files_are_written_one_way():
    """Every file is written through dataengine.atomic (mkstemp beside the target, then a rename),
    never to a predictable `name.tmp` that a planted symlink could redirect. The checkpoint folder
    is the one exception: it is made with mkdir, which fails on any existing name, link or not."""
    pat = re.compile(r"""\.tmp(\{|"|'|\.)""")
    offenders = [f"{rel}:{n}: {line.strip()}" for rel, n, line in
                 code_lines(skip={"dataengine/atomic.py", "train/checkpoint.py"})
                 if pat.search(line) and "mkstemp(" not in line]
    assert offenders == [], "\n".join(offenders)


def test_atomic_path_leaves_the_target_whole_or_untouched(tmp_path):
    from dataengine.atomic import atomic_path

    target = tmp_path / "clip.mp4"
    target.write_bytes(b"old")
    try:
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".mp4" and tmp != target
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    except RuntimeError:
        pass
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    # a symlink planted where a predictable temp name would be is never written through
    victim = tmp_path / "victim"
    victim.write_bytes(b"safe")
    (tmp_path / "clip.tmp.mp4").symlink_to(victim)
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"newer")
    assert victim.read_bytes() == b"safe" and target.read_bytes() == b"newer"


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the modules of catalog, dataengine and train it imports (at the top or inside a
    function: a lazy import is still a dependency)."""
    mods: dict[str, Path] = {}
    for pkg in ("catalog", "dataengine", "train"):
        for f in (root / pkg).rglob("*.py"):
            parts = f.relative_to(root).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph: dict[str, set[str]] = {}
    for m, f in mods.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg_parts = m.split(".") if f.name == "__init__.py" else m.split(".")[:-1]
                    pkg_parts = pkg_parts[:len(pkg_parts) - (node.level - 1)]
                    base = ".".join(pkg_parts + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for d in names:
                while d and d not in mods:
                    d = d.rpartition(".")[0]
                if d and d != m and not m.startswith(d + "."):  # a module's own package is no cycle
                    deps.add(d)
        graph[m] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_two_modules_import_each_other():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# a model's name compared with, or searched for, a literal: `model == "toy"`, `base_model in ("tiny", ...)`,
# `"qwen3" in name`, `model.startswith("tiny-")` (a spec's kind or family compared is fine)
NAME_TEST = re.compile(r"""\b(model|base_model|repo|model_name)\s*(==|!=|in)\s*[("']|"""
                       r"""["'](qwen3|qwen2\.5|tiny-random|tiny|toy)["'] in\b|\.startswith\(["']tiny-""")
REGISTRIES = {"train/specs.py", "dataengine/caption/specs.py"}


def test_only_the_registries_know_a_model_by_its_name():
    """What a model is (random, a toy, the real 2B; which Qwen-VL family; whether real-scale checks
    apply) is asked of its spec (train.specs, dataengine.caption.specs), never guessed from its name
    elsewhere."""
    offenders = [f"{rel}:{n}: {line.strip()}" for rel, n, line in code_lines(skip=REGISTRIES)
                 if NAME_TEST.search(line.split("#", 1)[0])]
    assert offenders == [], "\n".join(offenders)


def test_the_specs_say_what_the_name_tests_used_to():
    from dataengine.caption.specs import captioner, served_geometry
    from train.specs import video_model

    assert video_model("tiny").kind == "random" and not video_model("tiny").real_scale
    assert video_model("toy").kind == "toy" and not video_model("toy").real_scale
    real = video_model("Efficient-Large-Model/SANA-Video_2B_480p_diffusers")
    assert real.kind == "real" and real.real_scale
    assert captioner("tiny-qwen3-vl").geometry == (16, 2) and captioner("toy").label == "toy-qwen2-vl"
    assert served_geometry("Qwen/Qwen3-VL-2B-Instruct") == (16, 2)
    assert served_geometry("Qwen/Qwen2.5-VL-3B-Instruct") == served_geometry("qwen2-vl") == (14, 2)
    assert captioner("Qwen/Qwen2-VL-2B-Instruct") is None


def test_fault_hooks_live_in_one_module_and_are_read_when_they_fire():
    """The test hooks (DE_FAULT_*) are named only in dataengine/faults.py, which reads them when a
    hook is asked, never at import."""
    named = [str(f.relative_to(ROOT)) for pkg in ("dataengine", "train", "catalog") for f in (ROOT / pkg).rglob("*.py")
             if "DE_FAULT_" in f.read_text()]
    assert named == ["dataengine/faults.py"]
    import os

    from dataengine import faults

    os.environ[faults.KILL_AT_STEP] = "7"
    try:
        assert faults.step_hook(faults.KILL_AT_STEP) == 7
    finally:
        del os.environ[faults.KILL_AT_STEP]
    assert faults.step_hook(faults.KILL_AT_STEP) == 0


def test_no_module_over_400_lines_and_no_function_over_80():
    """A module a newcomer can read in one sitting, a function that fits a screen or two."""
    big = []
    for pkg in ("dataengine", "catalog", "train"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            src = f.read_text()
            rel = str(f.relative_to(ROOT))
            if len(src.splitlines()) > 400:
                big.append(f"{rel}: {len(src.splitlines())} lines")
            for node in ast.walk(ast.parse(src)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                    big.append(f"{rel}::{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert big == [], "\n".join(big)


def test_one_timeout_helper():
    """Work is stopped at its deadline through catalog/timeouts.py only: no other module starts a
    timer that interrupts a connection or cuts a socket."""
    offenders = [f"{rel}:{n}: {line.strip()}" for rel, n, line in code_lines(skip={"catalog/timeouts.py"})
                 if re.search(r"\.interrupt\b|threading\.Timer\([^)]*(timeout|cut)", line)]
    assert offenders == [], "\n".join(offenders)


def test_one_labelling_driver():
    """The summary, run record, progress bar, label writer and salvage exist once (run.label_clips);
    the backends (local, API, Ray) only prepare frames and generate. Nothing outside run.py makes a
    summary or a writer, or starts a caption run record."""
    pat = re.compile(r"\b(CaptionSummary\(|LabelWriter\(|start_run\(con, \"caption\"|\.salvage\()")
    offenders = [f"{rel}:{n}: {line.strip()}" for rel, n, line in code_lines(skip={"dataengine/caption/run.py"})
                 if pat.search(line)]
    assert offenders == [], "\n".join(offenders)
    from dataengine.caption.api import ApiBackend
    from dataengine.caption.ray_pipeline import RayBackend
    from dataengine.caption.run import Backend, LocalBackend

    assert all(issubclass(b, Backend) for b in (LocalBackend, ApiBackend, RayBackend))
