ALTER TABLE videos ADD COLUMN sar DOUBLE;
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
        WHERE v.status = 'ok';