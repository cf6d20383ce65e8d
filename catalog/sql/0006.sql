
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
        