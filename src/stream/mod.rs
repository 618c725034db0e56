//! Streams carry messages from the poller to the sinks, in order. One today: `embedded`, an
//! in-process bounded channel — nothing to run besides the binary.

pub mod embedded;
