-- Version 3: which replicas of a table hold every acknowledged batch (1) and which have missed
-- some (0). A leader acknowledges a batch only once every in-sync replica has it, and takes a
-- replica out of the set (here, under its own epoch) before it acknowledges without it, so
-- leadership may move to any in-sync replica without losing an acknowledged batch.

ALTER TABLE placement ADD COLUMN in_sync BIGINT NOT NULL DEFAULT 1;
