"""Versioned schema migrations, applied in order when a catalog is opened for writing.

Each migration is (version, name, sql), and its sql is the text of `catalog/sql/NNNN.sql`, exactly
as it ran: no placeholders, no text built from another migration's. A migration is never edited
once released (tests/catalog/test_migrations.py holds each one's digest); a change to the schema
is a new file and a new line in NAMES. `schema_migrations` records which versions a catalog file
has. The chosen-label refresh that migrations 4 and 5 ran lives on in
catalog.labels.REFRESH_LABELS_SQL, where editing it changes the next refresh and no migration.

What each one is for:

1. initial tables.
2. the clips view. It picks one caption per clip: the pinned labelling when `settings.caption_pin`
   names one ('captioner' or 'captioner@version'), else the most recent successfully parsed
   caption of any labelling.
3. runs record their process: a row left 'running' by a process that no longer exists shows as
   interrupted.
4. the materialised chosen labelling. Choosing one caption per clip with a window over every
   caption, and pulling six fields out of JSON, on every query made `de query` take ~2 s at a
   million clips; the choice is now made when labels change (a caption batch is written, a pin
   changes: catalog.labels.refresh) and stored in `clip_labels`, and the view is a plain join.
5. human curation. `de serve` writes human corrections as the labelling captioner='human' (one row
   per clip, prompt_version 'human'; its fields hold `rejected` and the edit time). A human row
   wins over the machine labellings in the chosen label, and `rejected` is a column of the view.
6. near-duplicates and per-clip training loss. Ingest stores a 192-bit visual signature per clip
   (three 64-bit pHashes); `de dedup` (and every ingest) groups near-duplicates into `clip_dups`.
   Training writes each clip's loss into `clip_losses`; `clip_train_stats` is the newest run's
   numbers per clip.
7. the sample aspect ratio. Anamorphic sources (DVD rips: 720x480 shown at 4:3 or 16:9) store
   non-square pixels; `width * sar / height` is the aspect a player shows, which buckets and every
   frame reader use. Videos ingested before have NULL: the next `de ingest` over them fills it in
   from a probe, and until then the view shows 1. The view is v6's with one column more.
8. what the clip-purity stage kept out of clips (dataengine.purity), per video: a JSON list of
   {start, end, reason} (frame spans of gradual transitions and fades; detector cuts it dropped or
   added, as empty spans). `de stats` counts them.
9. a clip's labellings by clip id alone: the primary key (clip, captioner, version) does not serve
   `WHERE clip_id = ?`, which then scanned every caption.
10. what made each labelling: a real model ('real'), a toy one trained on the toy world ('toy'),
    random weights ('random'), the toy world's truth ('truth') or a person ('human'). Toy and
    random labels are then visible everywhere and kept out of exports unless asked for. Rows
    written before it are backfilled from what was recorded then (is_random_model) and from the
    fixed names of the labellings that were never a real model's.
"""

from __future__ import annotations

from importlib.resources import files

NAMES: list[tuple[int, str]] = [
    (1, "initial tables"),
    (2, "clips view"),
    (3, "runs record their process"),
    (4, "materialised chosen labelling"),
    (5, "human curation"),
    (6, "near-duplicates and per-clip training loss"),
    (7, "sample aspect ratio"),
    (8, "excluded spans"),
    (9, "captions by clip"),
    (10, "label model kind"),
    (11, "camera motion measured"),
]


def migration_sql(version: int) -> str:
    """The literal text of one migration (catalog/sql/NNNN.sql, shipped in the wheel)."""
    return files("catalog").joinpath("sql", f"{version:04d}.sql").read_text(encoding="utf-8")


MIGRATIONS: list[tuple[int, str, str]] = [(v, name, migration_sql(v)) for v, name in NAMES]

LATEST_VERSION = MIGRATIONS[-1][0]
