
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
        