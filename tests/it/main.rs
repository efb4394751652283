//! Integration tests: they start the real server (in-process on an ephemeral port, or as a
//! child process for crash and shutdown tests) and talk gRPC to it.

mod accuracy;
mod common;
mod crash;
mod ingest;
mod matching;
mod operations;
mod profiles;
mod quality;
mod reads;
mod shutdown;
mod stewardship;
