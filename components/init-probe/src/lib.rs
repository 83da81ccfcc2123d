//! `init-probe`: a test guest for deploy-time pre-initialization
//! (`host/src/platform/preinit.rs`). Its `wizer-initialize` does what the environment
//! variable `INIT_MODE` (a deployment grant) says:
//! - `ok`: builds a table (the squares of 0..1000) and notes that it ran;
//! - `trap`: panics;
//! - `spin`: never returns;
//! - `oom`: allocates until the memory cap stops it;
//! - `keyvalue`: as `ok`, and opens the tenant's durable `wasi:keyvalue`
//!   bucket `probe`, noting whether the host's store was there.
//!
//! `GET /` answers `initialized=<yes|no> table=<sum> requests=<n>`: whether
//! the instance started from the initialized state, the table's sum, and how
//! many requests this instance has served, which is always 1 when every
//! request gets a fresh instance; in `keyvalue` mode ` keyvalue=<what the
//! initializer saw>` follows.

use httpkit::respond;
use std::hint::black_box;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

#[allow(missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        inline: "
            package tensorwasm:init-probe;
            world init-probe {
                export wizer-initialize: func();
            }
        ",
    });
}

/// Built by the initializer only.
static TABLE: OnceLock<Vec<u64>> = OnceLock::new();
/// What opening a durable bucket gave the initializer (`keyvalue` mode).
static KEYVALUE: OnceLock<String> = OnceLock::new();
/// Requests this instance has served.
static SERVED: AtomicU32 = AtomicU32::new(0);

struct Probe;

impl bindings::Guest for Probe {
    fn wizer_initialize() {
        match std::env::var("INIT_MODE").as_deref() {
            Ok("trap") => panic!("init-probe: told to trap"),
            Ok("spin") => loop {
                black_box(());
            },
            Ok("oom") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    black_box(&hoard);
                }
            }
            Ok("keyvalue") => {
                use gatewaykit::keyvalue::store;
                // The handle is dropped here: host resources do not survive
                // the snapshot.
                let seen = match store::open("probe") {
                    Ok(_) => "open".to_string(),
                    Err(store::Error::NoSuchStore) => "no-such-store".to_string(),
                    Err(e) => format!("{e:?}"),
                };
                let _ = KEYVALUE.set(seen);
                let _ = TABLE.set((0..1000u64).map(|i| i * i).collect());
            }
            _ => {
                let _ = TABLE.set((0..1000u64).map(|i| i * i).collect());
            }
        }
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Probe {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
        let (initialized, sum) = match TABLE.get() {
            Some(t) => ("yes", t.iter().sum::<u64>()),
            None => ("no", 0),
        };
        let keyvalue = KEYVALUE
            .get()
            .map_or(String::new(), |k| format!(" keyvalue={k}"));
        let body = format!("initialized={initialized} table={sum} requests={served}{keyvalue}\n");
        respond(out, 200, &[("content-type", "text/plain")], body.as_bytes());
    }
}

bindings::export!(Probe with_types_in bindings);
wasip2::http::proxy::export!(Probe);
