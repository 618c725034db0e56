//! TDS sessions backed by PostgreSQL (stub: being written).
