-- ghatta-central schema 3: a customer's energy by time range (GET
-- /v1/grids/G/customers/C/energy) reads one customer's hours in hour order; the primary key
-- leads with the hour, so without this index it would read every subject's hours.
CREATE INDEX wan_energy_hours_customer ON wan_energy_hours (grid_id, kind, id, hour_start_ms);
