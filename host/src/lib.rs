//! The TensorWasm host: serves `wasi:http` components and composed worlds
//! for many tenants on one server (a fresh isolated instance per request).
//!
//! The tree is the map (docs/ARCHITECTURE.md):
//! - [`commands`]: the `tensor-wasm` CLI verbs, thin over the rest;
//! - [`serving`]: a request's path — listener, router, deployment, guest run;
//! - [`assembly`]: from a deployment spec to a ready deployment, in one place;
//! - [`live`]: the deployments a server serves, changed while it runs;
//! - [`jobs`]: headless jobs, from `tensor-wasm run` and the jobs API;
//! - [`platform`]: engine, artifact cache, composition, loading, metrics;
//! - one module per host capability: [`wasi`], [`outgoing`], [`config`],
//!   [`keyvalue`], [`tensor`], [`cuda`], [`scheduler`], [`inference`].
//!
//! The modules are public so that tests, benchmarks and fuzz targets can
//! reach the parsers.
#![deny(missing_docs)]

pub mod assembly;
pub mod commands;
pub mod config;
pub mod cuda;
pub mod inference;
pub mod jobs;
pub mod keyvalue;
pub mod live;
pub mod outgoing;
pub mod platform;
pub mod scheduler;
pub mod serving;
pub mod tensor;
pub mod wasi;
