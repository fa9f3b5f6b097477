-- ghatta-central schema 6: the days a grid folded (`Output::Folded`: a grid without its WAN for
-- longer than its detail window sums one subject's outbox records of a local day into one and
-- deletes the detail). The totals (energy per day, the fleet view's day, a customer's energy)
-- add these to the detail rows they read. One row per folded record, keyed by its outbox
-- sequence as every record is, so a record resent after a reconnect is stored once. Not
-- partitioned: a grid folds at most a row per subject and day, and retention deletes rows.
CREATE TABLE wan_folded_days (
    grid_id BIGINT NOT NULL,
    day_start_ms BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    utc_offset_min INTEGER NOT NULL,
    kind SMALLINT NOT NULL,
    id BIGINT NOT NULL,
    feeder INTEGER NOT NULL,
    first_seq BIGINT NOT NULL,
    end_seq BIGINT NOT NULL,
    records BIGINT NOT NULL,
    energy_wh BIGINT NOT NULL,
    ledger_lines BIGINT NOT NULL,
    charged_wh BIGINT NOT NULL,
    charged_mpaisa BIGINT NOT NULL,
    fees_mpaisa BIGINT NOT NULL,
    credited_mpaisa BIGINT NOT NULL,
    held_wh BIGINT NOT NULL,
    alarms BIGINT NOT NULL,
    relay_commands BIGINT NOT NULL,
    backfill BOOLEAN NOT NULL,
    PRIMARY KEY (grid_id, day_start_ms, seq)
);
-- A customer's folded days by day (GET /v1/grids/G/customers/C/folded-days).
CREATE INDEX wan_folded_days_subject ON wan_folded_days (grid_id, kind, id, day_start_ms);
COMMENT ON TABLE wan_folded_days IS 'Per-day sums of outbox records a grid folded before any central acknowledged them.';
COMMENT ON COLUMN wan_folded_days.grid_id IS 'Grid id (the distribution column on Citus).';
COMMENT ON COLUMN wan_folded_days.day_start_ms IS 'Start of the local day (grid log time), Unix ms.';
COMMENT ON COLUMN wan_folded_days.seq IS 'Outbox sequence at the grid of the folded record, a count of records.';
COMMENT ON COLUMN wan_folded_days.utc_offset_min IS 'The UTC offset the day is local to, minutes.';
COMMENT ON COLUMN wan_folded_days.kind IS '0 customer, 1 feeder, 2 plant, 3 grid (alarms, relay commands, set-points).';
COMMENT ON COLUMN wan_folded_days.id IS 'Customer id, or the node that owns the feeder or plant; 0 for the grid.';
COMMENT ON COLUMN wan_folded_days.feeder IS 'Feeder number on id (feeder rows), else 0.';
COMMENT ON COLUMN wan_folded_days.first_seq IS 'First outbox sequence of the fold pass that wrote it, a count of records.';
COMMENT ON COLUMN wan_folded_days.end_seq IS 'One past the last outbox sequence of that pass, a count of records.';
COMMENT ON COLUMN wan_folded_days.records IS 'Outbox records it stands for, a count.';
COMMENT ON COLUMN wan_folded_days.ledger_lines IS 'Ledger lines folded, a count.';
COMMENT ON COLUMN wan_folded_days.charged_mpaisa IS 'The folded charges'' amounts, mpaisa (taken from the credit, as a charge line''s).';
COMMENT ON COLUMN wan_folded_days.fees_mpaisa IS 'The folded fees'' amounts, mpaisa (taken from the credit).';
COMMENT ON COLUMN wan_folded_days.alarms IS 'Alarms folded, a count.';
COMMENT ON COLUMN wan_folded_days.relay_commands IS 'Relay commands folded, a count.';
COMMENT ON COLUMN wan_folded_days.backfill IS 'Arrived more than backfill_after_ms after its log time.';
