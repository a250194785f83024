-- Version 2: the routing table's version. Every change of a table's placement or leader bumps
-- it in the same transaction, so a node whose copy has an older version knows to fetch it.
-- A table is placed whole for now (placement.partition_key = ''); `epoch` in placement is the
-- table's leader epoch, the same on each of its rows.

CREATE TABLE routing (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO routing (id, version) VALUES (1, 0);
