-- ghatta-central schema 2: energy hours are local hours. Each row carries the grid's UTC
-- offset the hour opened under, so energy per local day is rebuilt from the rows alone
-- (local day = (hour_start_ms + utc_offset_min * 60000) / 86400000). Rows stored before
-- are UTC hours: offset 0.
ALTER TABLE wan_energy_hours ADD COLUMN utc_offset_min INTEGER NOT NULL DEFAULT 0;
COMMENT ON COLUMN wan_energy_hours.utc_offset_min IS 'The grid''s UTC offset when the hour opened, minutes (Nepal: 345; 0 for the UTC hours grids sent before local hours).';
COMMENT ON COLUMN wan_energy_hours.hour_start_ms IS 'Start of the hour (grid log time), Unix ms: a local hour''s start under utc_offset_min (the partition key).';
