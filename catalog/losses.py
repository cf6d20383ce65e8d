"""The `clip_losses` table: each training run's per-clip held-out loss (train.clip_losses
computes it; this module writes it)."""

from __future__ import annotations


def replace_run(con, run_id: str, rows: list[tuple[str, int, float, float]]) -> None:
    """Replace the run's rows with (clip_id, samples, mean_loss, mean_z); the caller holds the
    transaction."""
    con.execute("DELETE FROM clip_losses WHERE run_id = ?", [run_id])
    if rows:
        con.executemany("INSERT INTO clip_losses (run_id, clip_id, samples, mean_loss, mean_z, updated_at) "
                        "VALUES (?, ?, ?, ?, ?, current_timestamp)", [[run_id, *r] for r in rows])
