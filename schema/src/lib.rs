//! The Cap'n Proto schemas of the public protocol live in this crate (the tenant-node server issue). Nothing is defined yet.
