//! The Cap'n Proto server binding and the client library (the tenant-node server issue). Nothing is defined yet.
