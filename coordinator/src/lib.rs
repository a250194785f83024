//! The cluster coordinator: catalog, routing, replication (the cluster issue). Nothing is defined yet.
