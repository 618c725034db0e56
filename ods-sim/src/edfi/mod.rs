//! Ed-Fi 3.3 tables, sample data and change workload (stub: being written).
