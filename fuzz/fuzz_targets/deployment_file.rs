//! Deployment files must give an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::time::Duration;
use tensor_wasm::assembly::spec::{Limits, parse};

fuzz_target!(|text: &str| {
    let defaults = Limits { timeout: Duration::from_secs(30), memory: 1 << 28, concurrency: None, body: 1 << 20, tensor_memory: 1 << 30 };
    let _ = parse(text, Path::new("/nonexistent/fuzz.toml"), &defaults);
});
