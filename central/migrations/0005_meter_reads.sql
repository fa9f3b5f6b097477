-- ghatta-central schema 5: the meter read a ledger line was billed from, so an auditor
-- rebuilds a bill from reads and tariffs without trusting the grid's Wh: a charge's and a held
-- read's baseline and register, a refused (backwards) read against its baseline, an account's
-- baseline read. NULL on other lines and on lines stored before (or sent by grids before
-- their billing sent reads).
ALTER TABLE wan_ledger ADD COLUMN read_from_wh BIGINT,
    ADD COLUMN read_to_wh BIGINT,
    ADD COLUMN read_at_ms BIGINT;
ALTER TABLE wan_latest_customer ADD COLUMN read_from_wh BIGINT,
    ADD COLUMN read_to_wh BIGINT,
    ADD COLUMN read_at_ms BIGINT;
COMMENT ON COLUMN wan_ledger.read_from_wh IS 'The meter register billing billed from (the baseline before this read), Wh; a Baseline line: its own register.';
COMMENT ON COLUMN wan_ledger.read_to_wh IS 'The read''s meter register, Wh (a ReadRejected line: the refused register, below read_from_wh).';
COMMENT ON COLUMN wan_ledger.read_at_ms IS 'When the node read the meter (the node''s clock), Unix ms; for an old meter''s final register entered with a replacement, the entry''s log time.';
COMMENT ON COLUMN wan_latest_customer.read_from_wh IS 'The meter register billed from, Wh (see wan_ledger.read_from_wh).';
COMMENT ON COLUMN wan_latest_customer.read_to_wh IS 'The read''s meter register, Wh (see wan_ledger.read_to_wh).';
COMMENT ON COLUMN wan_latest_customer.read_at_ms IS 'When the node read the meter, Unix ms (see wan_ledger.read_at_ms).';
