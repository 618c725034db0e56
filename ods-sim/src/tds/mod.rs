//! TDS 7.4 wire protocol, server side (stub: being written).
