//! What every entry point shares beneath the capabilities: the wasmtime
//! [`engine`], the compiled-artifact [`cache`], [`compose`] for worlds,
//! [`load`] for files, shared redb files ([`database`]), deploy-time [`preinit`], the host allocator
//! ([`alloc`]), the instance memory cap ([`limiter`]), operator
//! [`metrics`], bearer [`token`]s, [`hex`], [`units`] and the host's [`dirs`].

pub mod alloc;
pub mod cache;
pub mod compose;
pub mod database;
pub mod dirs;
pub mod engine;
pub mod hex;
pub mod limiter;
pub mod load;
pub mod metrics;
pub mod preinit;
pub mod telemetry;
pub mod token;
pub mod units;
