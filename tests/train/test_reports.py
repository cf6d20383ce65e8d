"""Reports people can read: markdown tables that parse, plot labels without offsets or 10^0."""

from __future__ import annotations

import re

from helpers import assert_well_formed, tables
from train.experiments.report import md_to_html, table


def test_pipes_in_headers_and_cells_keep_the_columns():
    md = "\n".join(table(["metric", "|base - real|", "|LoRA - real|"], [["a | b", 1.0, None], ["c", 2.5, 3.0]]))
    assert_well_formed(md)
    assert tables(md)[0][0] == ["metric", "|base - real|", "|LoRA - real|"]
    html = md_to_html(md, "t")
    rows = re.findall(r"<tr>(.*?)</tr>", html)
    assert [len(re.findall(r"<t[hd]>", r)) for r in rows] == [3, 3, 3]
    assert "<th>|base - real|</th>" in html and "<td>a | b</td>" in html


def test_eval_report_tables_parse(tmp_path):
    """The markdown every experiment writes goes through `table`; a report of the shape eval writes."""
    from train.experiments.report import write

    md = ["# r", ""] + table(["metric", "real", "base", "LoRA", "|base - real|", "|LoRA - real|"],
                             [["saturation", 0.5, 0.2, 0.2, 0.3, 0.3]])
    p, h = write(tmp_path / "report.md", md, "r")
    assert_well_formed(p.read_text())
    assert "<th>|base - real|</th>" in h.read_text()


def test_plot_labels_are_plain_numbers_and_integer_steps():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from train.experiments.plotstyle import tidy

    fig, ax = plt.subplots(1, 2)
    ax[0].plot([1, 2, 3, 4], [1.66, 1.62, 1.71, 1.69])
    ax[0].set_yscale("log")
    ax[1].plot([1, 2, 3], [1.595e0 + 1e-6, 1.595e0 + 2e-6, 1.595e0 + 3e-6])
    for a in ax:
        tidy(a, integer_x=True)
    fig.canvas.draw()
    for a in ax:
        labels = [t.get_text() for t in a.get_yticklabels() + a.get_xticklabels() if t.get_text()]
        assert labels and not any("10^" in s or "\\times" in s or "×" in s for s in labels), labels
        xs = [t.get_text() for t in a.get_xticklabels() if t.get_text()]
        assert all(re.fullmatch(r"[−-]?\d+", s) for s in xs), xs
        assert a.yaxis.get_offset_text().get_text() == ""
    plt.close(fig)
