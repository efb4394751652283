//! popmaster: a population master-data entity-resolution service.
//! Start reading at `engine` (the write and read paths) and `api` (the gRPC edge);
//! docs/ARCHITECTURE.md maps the parts.

pub mod accuracy;
pub mod api;
pub mod backup;
pub mod callers;
pub mod catalog;
pub mod cleanse;
pub mod config;
pub mod crash_point;
pub mod engine;
pub mod interchange;
pub mod masking;
pub mod metrics;
pub mod model;
pub mod profile;
pub mod resolve;
pub mod server;
pub mod store;
pub mod synth;
pub mod wal;

pub use server::serve;

pub mod pb {
    //! Generated gRPC types. Only `api` and `cli` use them.
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("popmaster.v1");

    /// Encoded descriptors of the contract, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/popmaster_descriptor.bin"));
}
