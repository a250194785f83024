-- Version 4: what a node is copying to other nodes (a leader catching followers up, JSON as the
-- node reports it at each heartbeat; '' when nothing), for `tessera admin cluster status`.

ALTER TABLE nodes ADD COLUMN copying TEXT NOT NULL DEFAULT '';
