-- Version 7: each tenant's quota object (JSON, as nodes hold it; '' for none), which every node
-- applies when the routing table's version says something changed.

ALTER TABLE tenants ADD COLUMN quota_json TEXT NOT NULL DEFAULT '';
