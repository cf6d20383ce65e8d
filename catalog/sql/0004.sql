
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
;