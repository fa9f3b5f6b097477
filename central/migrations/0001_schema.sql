-- ghatta-central schema 1: what grids upload, partitioned by log time so old months can be
-- detached and archived (ALTER TABLE ... DETACH PARTITION), keyed so that a replayed batch is
-- a no-op. Monthly partitions are made by the central before it stores a batch that needs
-- them (PgStore::ensure_partitions); there is no default partition, so a row never lands
-- where detaching a month would miss it.
--
-- Ids are BIGINT (the grid's u64 values as stored bit-for-bit only up to 2^63 - 1; the central
-- refuses larger ones with an error rather than wrap).

CREATE TABLE wan_cursors (
    grid_id BIGINT NOT NULL,
    stream BIGINT NOT NULL,
    next_seq BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (grid_id, stream)
);
COMMENT ON TABLE wan_cursors IS 'Per (grid, stream): every record below next_seq is stored; the ack the grid receives.';
COMMENT ON COLUMN wan_cursors.grid_id IS 'Grid id (the distribution column on Citus).';
COMMENT ON COLUMN wan_cursors.stream IS 'WAN stream id (ledger, energy, events, ...).';
COMMENT ON COLUMN wan_cursors.next_seq IS 'Next expected outbox sequence, a count of records.';
COMMENT ON COLUMN wan_cursors.updated_ms IS 'Central wall clock of the last batch that moved it, Unix ms.';

CREATE TABLE wan_records (
    grid_id BIGINT NOT NULL,
    stream BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    log_index BIGINT NOT NULL,
    log_time_ms BIGINT NOT NULL,
    actor SMALLINT NOT NULL,
    output BYTEA NOT NULL,
    backfill BOOLEAN NOT NULL,
    received_ms BIGINT NOT NULL,
    -- The dedupe key. log_time_ms is in it because PostgreSQL (and Citus) only enforce
    -- uniqueness that includes the partition key; a record's log time never changes between
    -- resends, so (grid, stream, seq) alone is unique too, and the cursor row locked by
    -- every ingest guards it across partitions.
    UNIQUE (grid_id, stream, seq, log_time_ms)
) PARTITION BY RANGE (log_time_ms);
COMMENT ON TABLE wan_records IS 'Every committed record a grid uploaded, exactly once.';
COMMENT ON COLUMN wan_records.seq IS 'Outbox sequence at the grid, a count of records.';
COMMENT ON COLUMN wan_records.log_index IS 'Raft log index at the grid (a count of entries).';
COMMENT ON COLUMN wan_records.log_time_ms IS 'Log time at the grid, Unix ms (the partition key).';
COMMENT ON COLUMN wan_records.actor IS 'Producing actor: 1 balancing, 2 billing.';
COMMENT ON COLUMN wan_records.output IS 'The actor output, bincode ghatta_actor_sdk::Output.';
COMMENT ON COLUMN wan_records.backfill IS 'Arrived more than backfill_after_ms after its log time.';
COMMENT ON COLUMN wan_records.received_ms IS 'Central wall clock when stored, Unix ms.';

CREATE TABLE wan_ledger (
    grid_id BIGINT NOT NULL,
    customer BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    energy_wh BIGINT NOT NULL,
    amount_mpaisa BIGINT NOT NULL,
    balance_after_mpaisa BIGINT NOT NULL,
    tariff_version BIGINT NOT NULL,
    backfill BOOLEAN NOT NULL,
    -- Serves the ledger pages: (customer, seq) order within a grid.
    UNIQUE (grid_id, customer, seq, at_ms)
) PARTITION BY RANGE (at_ms);
COMMENT ON TABLE wan_ledger IS 'Ledger lines (charges, fees, top-ups) decoded from billing records.';
COMMENT ON COLUMN wan_ledger.customer IS 'Customer id at the grid.';
COMMENT ON COLUMN wan_ledger.seq IS 'Outbox sequence at the grid, a count of records.';
COMMENT ON COLUMN wan_ledger.at_ms IS 'Log time of the event, Unix ms (the partition key).';
COMMENT ON COLUMN wan_ledger.kind IS 'Charge, Fee, TopUp, ...';
COMMENT ON COLUMN wan_ledger.tariff_version IS 'Tariff version the line was billed under (a counter).';
COMMENT ON COLUMN wan_ledger.backfill IS 'Arrived late or older than the newest stored line of its customer.';
-- Exports by time range across customers, and energy per day.
CREATE INDEX wan_ledger_grid_time ON wan_ledger (grid_id, at_ms);

CREATE TABLE wan_latest_customer (
    grid_id BIGINT NOT NULL,
    customer BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    energy_wh BIGINT NOT NULL,
    amount_mpaisa BIGINT NOT NULL,
    balance_after_mpaisa BIGINT NOT NULL,
    tariff_version BIGINT NOT NULL,
    backfill BOOLEAN NOT NULL,
    PRIMARY KEY (grid_id, customer)
);
COMMENT ON TABLE wan_latest_customer IS 'Each customer''s newest ledger line by log time (only a line at least as new replaces it).';
COMMENT ON COLUMN wan_latest_customer.at_ms IS 'Log time of the event, Unix ms.';

CREATE TABLE wan_energy_hours (
    grid_id BIGINT NOT NULL,
    hour_start_ms BIGINT NOT NULL,
    kind SMALLINT NOT NULL,
    id BIGINT NOT NULL,
    feeder INTEGER NOT NULL,
    energy_wh BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    backfill BOOLEAN NOT NULL,
    -- A grid closes each (subject, hour) once; the first record stays. Serves the pages.
    PRIMARY KEY (grid_id, hour_start_ms, kind, id, feeder)
) PARTITION BY RANGE (hour_start_ms);
COMMENT ON TABLE wan_energy_hours IS 'Hourly energy per customer, feeder or plant.';
COMMENT ON COLUMN wan_energy_hours.hour_start_ms IS 'Start of the UTC hour (grid log time), Unix ms (the partition key).';
COMMENT ON COLUMN wan_energy_hours.kind IS '0 customer, 1 feeder, 2 plant.';
COMMENT ON COLUMN wan_energy_hours.id IS 'Customer id, or the node that owns the feeder or plant.';
COMMENT ON COLUMN wan_energy_hours.feeder IS 'Feeder number on id (feeder rows), else 0.';
COMMENT ON COLUMN wan_energy_hours.seq IS 'Outbox sequence at the grid, a count of records.';

CREATE TABLE wan_grids (
    grid_id BIGINT PRIMARY KEY,
    records BIGINT NOT NULL,
    newest_time_ms BIGINT NOT NULL,
    last_event TEXT,
    last_event_ms BIGINT NOT NULL,
    backfilled BIGINT NOT NULL,
    last_upload_ms BIGINT NOT NULL
);
COMMENT ON TABLE wan_grids IS 'The latest known state of each grid that uploaded.';
COMMENT ON COLUMN wan_grids.records IS 'Records stored, a count.';
COMMENT ON COLUMN wan_grids.newest_time_ms IS 'Newest log time seen, Unix ms.';
COMMENT ON COLUMN wan_grids.last_event IS 'The newest alarm or relay event (debug form).';
COMMENT ON COLUMN wan_grids.last_event_ms IS 'Log time of last_event, Unix ms.';
COMMENT ON COLUMN wan_grids.backfilled IS 'Ledger lines that arrived as back-fill, a count.';
COMMENT ON COLUMN wan_grids.last_upload_ms IS 'Central wall clock of the last stored batch, Unix ms.';

-- The columns not described above (ids and flags repeat across tables; a BI tool shows each
-- table's own comments).
COMMENT ON COLUMN wan_records.grid_id IS 'Grid id (the distribution column on Citus).';
COMMENT ON COLUMN wan_records.stream IS 'WAN stream id the record came on.';
COMMENT ON COLUMN wan_ledger.grid_id IS 'Grid id (the distribution column on Citus).';
COMMENT ON COLUMN wan_latest_customer.grid_id IS 'Grid id (the distribution column on Citus).';
COMMENT ON COLUMN wan_latest_customer.customer IS 'Customer id at the grid.';
COMMENT ON COLUMN wan_latest_customer.seq IS 'Outbox sequence at the grid, a count of records.';
COMMENT ON COLUMN wan_latest_customer.kind IS 'Charge, Fee, TopUp, ...';
COMMENT ON COLUMN wan_latest_customer.tariff_version IS 'Tariff version the line was billed under (a counter).';
COMMENT ON COLUMN wan_latest_customer.backfill IS 'Arrived late or older than the newest stored line of its customer.';
COMMENT ON COLUMN wan_energy_hours.grid_id IS 'Grid id (the distribution column on Citus).';
COMMENT ON COLUMN wan_energy_hours.backfill IS 'Arrived more than backfill_after_ms after its log time.';
COMMENT ON COLUMN wan_grids.grid_id IS 'Grid id (the distribution column on Citus).';
