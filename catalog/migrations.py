"""Versioned schema migrations, applied in order when a catalog is opened for writing.

Each migration is (version, name, sql), and its sql is the literal text it ran: no placeholders,
no text built from another migration's. A migration is never edited once released (a test holds
each one's digest); changes go into a new one. `schema_migrations` records which versions a
catalog file has. The chosen-label refresh that migrations 4 and 5 ran lives on in
catalog.labels.REFRESH_LABELS_SQL, where editing it changes the next refresh and no migration.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial tables",
        """
        CREATE TABLE videos (
            video_id      VARCHAR PRIMARY KEY,   -- blake2b of size + head/middle/tail bytes (see catalog.identity)
            path          VARCHAR NOT NULL,      -- absolute path where the bytes were last seen
            size_bytes    BIGINT,
            duration_s    DOUBLE,
            fps           DOUBLE,                -- average frame rate (frames / duration)
            width         INTEGER,               -- display width (after rotation)
            height        INTEGER,
            num_frames    INTEGER,
            codec         VARCHAR,
            container     VARCHAR,
            rotation      INTEGER DEFAULT 0,
            is_vfr        BOOLEAN DEFAULT FALSE,
            reader        VARCHAR,               -- decord | pyav
            status        VARCHAR NOT NULL,      -- ok | failed
            error         VARCHAR DEFAULT '',    -- reason when failed, '' when ok
            error_kind    VARCHAR DEFAULT '',    -- short reason code used in summaries
            split_key     VARCHAR DEFAULT '',    -- hash of the split options its clips came from
            ingested_at   TIMESTAMP DEFAULT current_timestamp
        );

        CREATE TABLE clip_segments (
            clip_id        VARCHAR PRIMARY KEY,  -- <video_id[:16]>_<start_frame>_<end_frame>
            video_id       VARCHAR NOT NULL,
            scene_index    INTEGER NOT NULL,
            window_index   INTEGER NOT NULL,
            start_frame    INTEGER NOT NULL,     -- inclusive, decode order
            end_frame      INTEGER NOT NULL,     -- exclusive
            start_s        DOUBLE NOT NULL,      -- presentation time of start_frame
            end_s          DOUBLE NOT NULL,      -- presentation time just after the last frame
            motion_score   DOUBLE,
            brightness     DOUBLE,
            colorfulness   DOUBLE,
            sharpness      DOUBLE,
            keyframe_path  VARCHAR,
            detector       VARCHAR,
            detector_params VARCHAR,             -- JSON
            split_key      VARCHAR,
            created_at     TIMESTAMP DEFAULT current_timestamp
        );

        CREATE TABLE captions (
            clip_id        VARCHAR NOT NULL,
            captioner      VARCHAR NOT NULL,
            prompt_version VARCHAR NOT NULL,
            status         VARCHAR NOT NULL,     -- ok | parse_error | decode_error | request_error
            caption        VARCHAR,
            tag_list       VARCHAR[],
            fields         VARCHAR,              -- JSON object of the structured fields
            raw_output     VARCHAR,
            error          VARCHAR DEFAULT '',
            num_frames     INTEGER,
            visual_tokens  INTEGER,
            seconds        DOUBLE,
            is_random_model BOOLEAN DEFAULT FALSE,
            created_at     TIMESTAMP DEFAULT current_timestamp,
            PRIMARY KEY (clip_id, captioner, prompt_version)
        );

        CREATE TABLE runs (
            run_id       VARCHAR PRIMARY KEY,
            command      VARCHAR NOT NULL,
            params       VARCHAR,                -- JSON
            counts       VARCHAR,                -- JSON
            status       VARCHAR,                -- running | ok | failed
            started_at   TIMESTAMP DEFAULT current_timestamp,
            finished_at  TIMESTAMP
        );

        CREATE TABLE run_clips (
            run_id   VARCHAR NOT NULL,
            clip_id  VARCHAR NOT NULL,
            role     VARCHAR NOT NULL,           -- train | holdout
            prompt   VARCHAR,
            PRIMARY KEY (run_id, clip_id, role)
        );

        CREATE TABLE settings (
            key   VARCHAR PRIMARY KEY,
            value VARCHAR
        );
        """,
    ),
    (
        2,
        "clips view",
        # The view picks one caption per clip: the pinned labelling when `settings.caption_pin`
        # names one ('captioner' or 'captioner@version'), else the most recent successfully
        # parsed caption of any labelling.
        """
        CREATE VIEW clips AS
        WITH pin AS (
            SELECT
                split_part(value, '@', 1) AS captioner,
                CASE WHEN strpos(value, '@') > 0 THEN split_part(value, '@', 2) END AS prompt_version
            FROM settings WHERE key = 'caption_pin'
        ),
        chosen AS (
            SELECT c.* FROM captions c
            WHERE c.status = 'ok'
              AND (NOT EXISTS (SELECT 1 FROM pin)
                   OR EXISTS (SELECT 1 FROM pin p WHERE p.captioner = c.captioner
                              AND (p.prompt_version IS NULL OR p.prompt_version = c.prompt_version)))
            QUALIFY row_number() OVER (PARTITION BY c.clip_id ORDER BY c.created_at DESC, c.prompt_version) = 1
        )
        SELECT
            s.clip_id,
            s.video_id,
            v.path                      AS video_path,
            s.start_s,
            s.end_s,
            s.end_s - s.start_s         AS duration_s,
            s.start_frame,
            s.end_frame,
            s.end_frame - s.start_frame AS num_frames,
            v.fps,
            v.width,
            v.height,
            s.motion_score,
            s.brightness,
            s.colorfulness,
            s.sharpness,
            s.keyframe_path,
            s.scene_index,
            s.window_index,
            s.detector,
            ch.caption,
            CASE WHEN ch.tag_list IS NULL THEN NULL ELSE array_to_string(ch.tag_list, ',') END AS tags,
            ch.tag_list,
            json_extract_string(ch.fields, '$.characters') AS characters,
            json_extract_string(ch.fields, '$.action')     AS action,
            json_extract_string(ch.fields, '$.setting')    AS setting,
            json_extract_string(ch.fields, '$.time_of_day') AS time_of_day,
            json_extract_string(ch.fields, '$.camera')     AS camera,
            json_extract_string(ch.fields, '$.motion')     AS motion,
            ch.fields                   AS caption_fields,
            ch.captioner,
            ch.prompt_version
        FROM clip_segments s
        JOIN videos v USING (video_id)
        LEFT JOIN chosen ch USING (clip_id)
        WHERE v.status = 'ok';
        """,
    ),
    (
        3,
        "runs record their process",
        # A row left 'running' by a process that no longer exists shows as interrupted.
        """
        ALTER TABLE runs ADD COLUMN pid INTEGER;
        ALTER TABLE runs ADD COLUMN host VARCHAR;
        ALTER TABLE runs ADD COLUMN error VARCHAR;
        """,
    ),
    (
        4,
        "materialised chosen labelling",
        # Choosing one caption per clip with a window over every caption, and pulling six fields
        # out of JSON, on every query made `de query` take ~2 s at a million clips. The choice is
        # now made when labels change (a caption batch is written, a pin changes: see
        # catalog.labels.refresh) and stored in `clip_labels`; the view is a plain join.
        """
        CREATE TABLE clip_labels (
            clip_id        VARCHAR PRIMARY KEY,
            captioner      VARCHAR,
            prompt_version VARCHAR,
            caption        VARCHAR,
            tags           VARCHAR,
            tag_list       VARCHAR[],
            characters     VARCHAR,
            action         VARCHAR,
            setting        VARCHAR,
            time_of_day    VARCHAR,
            camera         VARCHAR,
            motion         VARCHAR,
            fields         VARCHAR
        );

        CREATE OR REPLACE VIEW clips AS
        SELECT
            s.clip_id,
            s.video_id,
            v.path                      AS video_path,
            s.start_s,
            s.end_s,
            s.end_s - s.start_s         AS duration_s,
            s.start_frame,
            s.end_frame,
            s.end_frame - s.start_frame AS num_frames,
            v.fps,
            v.width,
            v.height,
            s.motion_score,
            s.brightness,
            s.colorfulness,
            s.sharpness,
            s.keyframe_path,
            s.scene_index,
            s.window_index,
            s.detector,
            l.caption,
            l.tags,
            l.tag_list,
            l.characters,
            l.action,
            l.setting,
            l.time_of_day,
            l.camera,
            l.motion,
            l.fields                    AS caption_fields,
            l.captioner,
            l.prompt_version
        FROM clip_segments s
        JOIN videos v USING (video_id)
        LEFT JOIN clip_labels l USING (clip_id)
        WHERE v.status = 'ok';
        

INSERT INTO clip_labels
WITH pin AS (
    SELECT split_part(value, '@', 1) AS captioner,
           CASE WHEN strpos(value, '@') > 0 THEN split_part(value, '@', 2) END AS prompt_version
    FROM settings WHERE key = 'caption_pin'
)
SELECT c.clip_id, c.captioner, c.prompt_version, c.caption,
       CASE WHEN c.tag_list IS NULL THEN NULL ELSE array_to_string(c.tag_list, ',') END,
       c.tag_list,
       json_extract_string(c.fields, '$.characters'),
       json_extract_string(c.fields, '$.action'),
       json_extract_string(c.fields, '$.setting'),
       json_extract_string(c.fields, '$.time_of_day'),
       json_extract_string(c.fields, '$.camera'),
       json_extract_string(c.fields, '$.motion'),
       c.fields
FROM captions c
WHERE c.status = 'ok' 
  AND (NOT EXISTS (SELECT 1 FROM pin)
       OR c.captioner = 'human'
       OR EXISTS (SELECT 1 FROM pin p WHERE p.captioner = c.captioner
                  AND (p.prompt_version IS NULL OR p.prompt_version = c.prompt_version)))
QUALIFY row_number() OVER (PARTITION BY c.clip_id
                           ORDER BY (c.captioner = 'human') DESC, c.created_at DESC, c.prompt_version) = 1
;""",
    ),
    (
        5,
        "human curation",
        # `de serve` writes human corrections as the labelling captioner='human' (one row per
        # clip, prompt_version 'human', its fields hold `rejected` and the edit time). A human
        # row wins over the machine labellings in the chosen label (catalog.labels.REFRESH_LABELS_SQL), and
        # `rejected` is a column of the view so queries can say `NOT rejected`.
        """
        CREATE OR REPLACE VIEW human_verdicts AS
        SELECT clip_id, bool_or(coalesce(TRY_CAST(json_extract_string(fields, '$.rejected') AS BOOLEAN), false))
               AS rejected
        FROM captions WHERE captioner = 'human' AND status = 'ok' GROUP BY clip_id;

        CREATE OR REPLACE VIEW clips AS
        SELECT
            s.clip_id,
            s.video_id,
            v.path                      AS video_path,
            s.start_s,
            s.end_s,
            s.end_s - s.start_s         AS duration_s,
            s.start_frame,
            s.end_frame,
            s.end_frame - s.start_frame AS num_frames,
            v.fps,
            v.width,
            v.height,
            s.motion_score,
            s.brightness,
            s.colorfulness,
            s.sharpness,
            s.keyframe_path,
            s.scene_index,
            s.window_index,
            s.detector,
            l.caption,
            l.tags,
            l.tag_list,
            l.characters,
            l.action,
            l.setting,
            l.time_of_day,
            l.camera,
            l.motion,
            l.fields                    AS caption_fields,
            l.captioner,
            l.prompt_version,
            coalesce(h.rejected, false) AS rejected
        FROM clip_segments s
        JOIN videos v USING (video_id)
        LEFT JOIN clip_labels l USING (clip_id)
        LEFT JOIN human_verdicts h USING (clip_id)
        WHERE v.status = 'ok';
        DELETE FROM clip_labels;
        

INSERT INTO clip_labels
WITH pin AS (
    SELECT split_part(value, '@', 1) AS captioner,
           CASE WHEN strpos(value, '@') > 0 THEN split_part(value, '@', 2) END AS prompt_version
    FROM settings WHERE key = 'caption_pin'
)
SELECT c.clip_id, c.captioner, c.prompt_version, c.caption,
       CASE WHEN c.tag_list IS NULL THEN NULL ELSE array_to_string(c.tag_list, ',') END,
       c.tag_list,
       json_extract_string(c.fields, '$.characters'),
       json_extract_string(c.fields, '$.action'),
       json_extract_string(c.fields, '$.setting'),
       json_extract_string(c.fields, '$.time_of_day'),
       json_extract_string(c.fields, '$.camera'),
       json_extract_string(c.fields, '$.motion'),
       c.fields
FROM captions c
WHERE c.status = 'ok' 
  AND (NOT EXISTS (SELECT 1 FROM pin)
       OR c.captioner = 'human'
       OR EXISTS (SELECT 1 FROM pin p WHERE p.captioner = c.captioner
                  AND (p.prompt_version IS NULL OR p.prompt_version = c.prompt_version)))
QUALIFY row_number() OVER (PARTITION BY c.clip_id
                           ORDER BY (c.captioner = 'human') DESC, c.created_at DESC, c.prompt_version) = 1
;""",
    ),
    (
        6,
        "near-duplicates and per-clip training loss",
        # Ingest stores a 192-bit visual signature per clip (three 64-bit pHashes); `de dedup`
        # (and every ingest) groups near-duplicates into `clip_dups`. Training writes each clip's
        # loss into `clip_losses`; `clip_train_stats` is the newest run's numbers per clip.
        """
        ALTER TABLE clip_segments ADD COLUMN sig0 BIGINT;
        ALTER TABLE clip_segments ADD COLUMN sig1 BIGINT;
        ALTER TABLE clip_segments ADD COLUMN sig2 BIGINT;

        CREATE TABLE clip_dups (
            clip_id    VARCHAR PRIMARY KEY,
            dup_group  INTEGER NOT NULL,
            dup_rank   INTEGER NOT NULL          -- 1: the group's representative (longest, then sharpest)
        );

        CREATE TABLE clip_losses (
            run_id      VARCHAR NOT NULL,
            clip_id     VARCHAR NOT NULL,
            samples     INTEGER NOT NULL,        -- training samples drawn from the clip's windows
            mean_loss   DOUBLE,                  -- raw flow-matching loss
            mean_z      DOUBLE,                  -- z-score against the sample's sigma bucket
            updated_at  TIMESTAMP DEFAULT current_timestamp,
            PRIMARY KEY (run_id, clip_id)
        );

        CREATE OR REPLACE VIEW clip_train_stats AS
        SELECT clip_id, mean_z AS train_loss_z, mean_loss AS train_loss, samples AS train_samples,
               run_id AS train_run
        FROM clip_losses
        QUALIFY row_number() OVER (PARTITION BY clip_id ORDER BY updated_at DESC, run_id DESC) = 1;

        CREATE OR REPLACE VIEW clips AS
        SELECT
            s.clip_id,
            s.video_id,
            v.path                      AS video_path,
            s.start_s,
            s.end_s,
            s.end_s - s.start_s         AS duration_s,
            s.start_frame,
            s.end_frame,
            s.end_frame - s.start_frame AS num_frames,
            v.fps,
            v.width,
            v.height,
            s.motion_score,
            s.brightness,
            s.colorfulness,
            s.sharpness,
            s.keyframe_path,
            s.scene_index,
            s.window_index,
            s.detector,
            l.caption,
            l.tags,
            l.tag_list,
            l.characters,
            l.action,
            l.setting,
            l.time_of_day,
            l.camera,
            l.motion,
            l.fields                    AS caption_fields,
            l.captioner,
            l.prompt_version,
            coalesce(h.rejected, false) AS rejected,
            d.dup_group,
            coalesce(d.dup_rank, 1)     AS dup_rank,
            t.train_loss_z,
            t.train_loss,
            t.train_samples,
            t.train_run
        FROM clip_segments s
        JOIN videos v USING (video_id)
        LEFT JOIN clip_labels l USING (clip_id)
        LEFT JOIN human_verdicts h USING (clip_id)
        LEFT JOIN clip_dups d USING (clip_id)
        LEFT JOIN clip_train_stats t USING (clip_id)
        WHERE v.status = 'ok';
        """,
    ),
]

# 7: the sample aspect ratio. Anamorphic sources (DVD rips: 720x480 shown at 4:3 or 16:9) store
# non-square pixels; `width * sar / height` is the aspect a player shows, which buckets and every
# frame reader use. Videos ingested before have NULL (not read yet): the next `de ingest` over them
# fills it in from a probe, and until then the view shows 1.
# The view is v6's with one column more (sar).
MIGRATIONS.append((7, "sample aspect ratio", """ALTER TABLE videos ADD COLUMN sar DOUBLE;
CREATE OR REPLACE VIEW clips AS
        SELECT
            s.clip_id,
            s.video_id,
            v.path                      AS video_path,
            s.start_s,
            s.end_s,
            s.end_s - s.start_s         AS duration_s,
            s.start_frame,
            s.end_frame,
            s.end_frame - s.start_frame AS num_frames,
            v.fps,
            v.width,
            v.height,
            coalesce(v.sar, 1.0)        AS sar,
            s.motion_score,
            s.brightness,
            s.colorfulness,
            s.sharpness,
            s.keyframe_path,
            s.scene_index,
            s.window_index,
            s.detector,
            l.caption,
            l.tags,
            l.tag_list,
            l.characters,
            l.action,
            l.setting,
            l.time_of_day,
            l.camera,
            l.motion,
            l.fields                    AS caption_fields,
            l.captioner,
            l.prompt_version,
            coalesce(h.rejected, false) AS rejected,
            d.dup_group,
            coalesce(d.dup_rank, 1)     AS dup_rank,
            t.train_loss_z,
            t.train_loss,
            t.train_samples,
            t.train_run
        FROM clip_segments s
        JOIN videos v USING (video_id)
        LEFT JOIN clip_labels l USING (clip_id)
        LEFT JOIN human_verdicts h USING (clip_id)
        LEFT JOIN clip_dups d USING (clip_id)
        LEFT JOIN clip_train_stats t USING (clip_id)
        WHERE v.status = 'ok';"""))


# 8: what the clip-purity stage kept out of clips (dataengine.purity), per video: a JSON list of
# {start, end, reason} (frame spans of gradual transitions and fades; detector cuts it did not
# believe, as empty spans with "not a cut: flash" or "not a cut: motion"). `de stats` counts them.
MIGRATIONS.append((8, "excluded spans", "ALTER TABLE videos ADD COLUMN excluded VARCHAR;"))
# A clip's labellings by clip id alone: the primary key (clip, captioner, version) does not serve
# `WHERE clip_id = ?`, which then scanned every caption (26 ms of a `de serve` clip page at 1M
# clips, 2M captions; 1 ms with the index, which adds about a quarter to the file).
MIGRATIONS.append((9, "captions by clip", "CREATE INDEX captions_by_clip ON captions (clip_id);"))
# What made each labelling: a real model ('real'), a toy one trained on the toy world ('toy'), random
# weights ('random'), the toy world's truth ('truth') or a person ('human'). Toy and random labels
# are then visible everywhere and kept out of exports unless asked for. Rows written before this
# migration carry no kind: they are backfilled from what was recorded then (is_random_model) and
# from the fixed names of the labellings that were never a real model's.
MIGRATIONS.append((10, "label model kind", """
ALTER TABLE captions ADD COLUMN model_kind VARCHAR;
UPDATE captions SET model_kind = CASE
    WHEN is_random_model THEN 'random'
    WHEN captioner = 'human' THEN 'human'
    WHEN captioner = 'synth-truth' THEN 'truth'
    WHEN captioner = 'toy-qwen2-vl' THEN 'toy'
    ELSE 'real' END;
"""))


LATEST_VERSION = MIGRATIONS[-1][0]
