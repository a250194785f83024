-- Version 1: nodes and leases (membership and leadership), and the tables the catalog's next
-- steps fill: tenants, tables and placement. The same text runs on PostgreSQL and SQLite.

CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    http_address TEXT,
    cores BIGINT NOT NULL,
    labels TEXT NOT NULL,              -- JSON object: failure domains (host, rack, ...)
    version TEXT NOT NULL,
    state TEXT NOT NULL,               -- 'up' or 'down'
    incarnation BIGINT NOT NULL,       -- grows at each registration
    registered_ms BIGINT NOT NULL,     -- catalog time, ms since the Unix epoch
    last_seen_ms BIGINT NOT NULL,
    disk_used_bytes BIGINT NOT NULL,
    disk_capacity_bytes BIGINT NOT NULL,
    queries_running BIGINT NOT NULL
);

-- A named lease held by one holder until expires_ms; epoch grows at every change of holder
-- (the fencing token checked by writes made under the lease).
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);

CREATE TABLE tenants (
    name TEXT PRIMARY KEY,
    created_ms BIGINT NOT NULL
);

CREATE TABLE tables (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    schema_json TEXT NOT NULL,
    partition_spec_json TEXT NOT NULL,
    settings_json TEXT NOT NULL,
    replication_factor BIGINT NOT NULL,
    write_quorum BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE placement (
    tenant TEXT NOT NULL,
    table_name TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    node_id TEXT NOT NULL,
    role TEXT NOT NULL,                -- 'leader' or 'follower'
    epoch BIGINT NOT NULL,
    PRIMARY KEY (tenant, table_name, partition_key, node_id)
);
