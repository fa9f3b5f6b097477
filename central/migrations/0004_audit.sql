-- ghatta-central schema 4: what an auditor needs of a ledger line beyond its amounts, from
-- what the grid's record already carries: the log entry that made it, whether a charge was
-- made in friendly hours (debt without a disconnect, by design), and the line's own fields
-- (token id, token code and count, operator reference, disconnect reason, held energy, meter
-- replacement). Lines stored before: log index 0, not friendly, no detail.
ALTER TABLE wan_ledger ADD COLUMN log_index BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN friendly BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN detail TEXT NOT NULL DEFAULT '';
ALTER TABLE wan_latest_customer ADD COLUMN log_index BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN friendly BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN detail TEXT NOT NULL DEFAULT '';
COMMENT ON COLUMN wan_ledger.log_index IS 'Raft log index at the grid of the entry that made the line, a count of entries (0: stored before schema 4).';
COMMENT ON COLUMN wan_ledger.friendly IS 'A charge made during friendly hours (may create debt without a disconnect).';
COMMENT ON COLUMN wan_ledger.detail IS 'The line''s own fields as key=value;...: token_id; code, count, value, set; ref_id; reason; held_wh, allowed_wh; old_final_wh, new_read_wh (Wh values in Wh).';
COMMENT ON COLUMN wan_latest_customer.log_index IS 'Raft log index at the grid of the entry that made the line, a count of entries.';
COMMENT ON COLUMN wan_latest_customer.friendly IS 'A charge made during friendly hours.';
COMMENT ON COLUMN wan_latest_customer.detail IS 'The line''s own fields as key=value;... (see wan_ledger.detail).';
