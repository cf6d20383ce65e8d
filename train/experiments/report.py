"""Markdown reports with an HTML twin."""

from __future__ import annotations

import html
import re
from pathlib import Path


def _escape_cell(s: str) -> str:
    """A pipe inside a cell is `\\|` (GitHub-flavoured markdown), a newline a space."""
    return str(s).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def split_row(line: str) -> list[str]:
    """The cells of one markdown table row, honouring escaped pipes."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    cells = re.split(r"(?<!\\)\|", body)
    return [c.strip().replace("\\|", "|").replace("\\\\", "\\") for c in cells]


def table(headers: list[str], rows: list[list]) -> list[str]:
    def cell(v):
        if v is None:
            return "n/a"
        if isinstance(v, float):
            return "inf" if v == float("inf") else f"{v:.4g}"
        return _escape_cell(v)

    out = ["| " + " | ".join(_escape_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return out


def md_to_html(md: str, title: str) -> str:
    """A small converter for what our reports use: headings, tables, images, lists, paragraphs."""
    out, in_table = [], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = split_row(line)
            if all(set(c) <= set("-: ") for c in cells):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("#"):
            n = len(line) - len(line.lstrip("#"))
            out.append(f"<h{n}>{_inline(line[n:].strip())}</h{n}>")
        elif line.startswith("- "):
            out.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    if in_table:
        out.append("</table>")
    style = "body{font-family:sans-serif;max-width:1200px}td,th{padding:3px 8px;border:1px solid #ccc}table{border-collapse:collapse}"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(out)}</body></html>")


def _inline(s: str) -> str:
    s = html.escape(s)
    s = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", r'<img alt="\1" src="\2">', s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return s


def write(path_md: Path, md_lines: list[str], title: str) -> tuple[Path, Path]:
    md = "\n".join(md_lines) + "\n"
    path_md.write_text(md)
    h = path_md.with_suffix(".html")
    h.write_text(md_to_html(md, title))
    return path_md, h
