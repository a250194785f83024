-- Version 5: the bytes of each table a node leads, as it reports them at each heartbeat (JSON,
-- a list of {tenant, table, bytes}; '' when none), which rebalancing weighs replicas by.

ALTER TABLE nodes ADD COLUMN table_bytes TEXT NOT NULL DEFAULT '';
