//! Integration tests: they start the real server (in-process on an ephemeral port, or as a
//! child process for crash and shutdown tests) and talk gRPC to it.

mod accuracy;
mod common;
mod crash;
mod edge;
mod index_rebuild;
mod ingest;
mod matching;
mod observability;
mod operations;
mod profiles;
mod quality;
mod reads;
mod reevaluate;
mod security;
mod shutdown;
mod stewardship;
