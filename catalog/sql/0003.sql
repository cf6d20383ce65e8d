
        ALTER TABLE runs ADD COLUMN pid INTEGER;
        ALTER TABLE runs ADD COLUMN host VARCHAR;
        ALTER TABLE runs ADD COLUMN error VARCHAR;
        