
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
        