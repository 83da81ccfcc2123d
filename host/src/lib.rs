//! The TensorWasm host: serves `wasi:http` components and composed worlds, a
//! fresh isolated instance per request, for many tenants on one server.
//!
//! The `tensor-wasm` binary is a thin CLI over this library; the modules are
//! public so that tests, benchmarks and fuzz targets can reach the parsers.
#![deny(missing_docs)]

pub mod alloc;
pub mod audit;
pub mod body;
pub mod cache;
pub mod cli;
pub mod compose;
pub mod cuda;
pub mod default_world;
pub mod deploy;
pub mod deployment;
pub mod engine;
pub mod guest;
pub mod job;
pub mod keyvalue;
pub mod load;
pub mod metrics;
pub mod models;
pub mod preinit;
pub mod request_id;
pub mod router;
pub mod scheduler;
pub mod serve;
pub mod server;
pub mod state;
pub mod tensor;
pub mod token;
pub mod units;
