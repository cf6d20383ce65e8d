
ALTER TABLE captions ADD COLUMN model_kind VARCHAR;
UPDATE captions SET model_kind = CASE
    WHEN is_random_model THEN 'random'
    WHEN captioner = 'human' THEN 'human'
    WHEN captioner = 'synth-truth' THEN 'truth'
    WHEN captioner = 'toy-qwen2-vl' THEN 'toy'
    ELSE 'real' END;
