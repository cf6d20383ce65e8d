ALTER TABLE clip_segments ADD COLUMN cam_pan DOUBLE;
ALTER TABLE clip_segments ADD COLUMN cam_tilt DOUBLE;
ALTER TABLE clip_segments ADD COLUMN cam_zoom DOUBLE;
ALTER TABLE clip_segments ADD COLUMN cam_rotation DOUBLE;
ALTER TABLE clip_segments ADD COLUMN cam_shake DOUBLE;
ALTER TABLE clip_segments ADD COLUMN camera_measured VARCHAR;
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
            s.camera_measured,
            s.cam_pan,
            s.cam_tilt,
            s.cam_zoom,
            s.cam_rotation,
            s.cam_shake,
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