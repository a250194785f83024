-- Version 6: each table's files as its leader reports them whenever its manifest changes: size,
-- rows, CRC-32 and the manifest entry (per-column minimum, maximum and NULL count, JSON); and,
-- in `tables`, which leader, at which leader epoch and manifest version, the list comes from.

CREATE TABLE files (
    tenant TEXT NOT NULL,
    table_name TEXT NOT NULL,
    path TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    rows BIGINT NOT NULL,
    crc32 BIGINT NOT NULL,             -- -1 when the manifest has none
    entry_json TEXT NOT NULL,
    PRIMARY KEY (tenant, table_name, path)
);
ALTER TABLE tables ADD COLUMN files_node TEXT NOT NULL DEFAULT '';
ALTER TABLE tables ADD COLUMN files_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tables ADD COLUMN files_version BIGINT NOT NULL DEFAULT 0;
