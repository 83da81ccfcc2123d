//! The libFuzzer driver for every target: `FUZZ_TARGET=NAME fuzz CORPUS…
//! [libFuzzer flags]` (built and run by `fuzz/run.sh`).
//!
//! A panic that the code under test lets escape is a crash. One that code
//! catches itself (the host composes WAC under `catch_unwind`) is not:
//! libfuzzer-sys's abort-on-any-panic hook is replaced on the first input.
#![no_main]

use libfuzzer_sys as _;
use std::sync::OnceLock;

/// The entry libfuzzer-sys calls for each input (its `fuzz_target!`
/// defines the same; one binary serves every target instead).
#[unsafe(no_mangle)]
pub fn rust_fuzzer_test_input(bytes: &[u8]) -> i32 {
    static TARGET: OnceLock<&'static tensor_wasm_fuzz::Target> = OnceLock::new();
    let target = TARGET.get_or_init(|| {
        let name = std::env::var("FUZZ_TARGET").unwrap_or_default();
        let target = tensor_wasm_fuzz::target(&name).unwrap_or_else(|| {
            let names: Vec<_> = tensor_wasm_fuzz::TARGETS.iter().map(|t| t.name).collect();
            eprintln!("set FUZZ_TARGET to one of: {}", names.join(", "));
            std::process::exit(2)
        });
        // Escaping panics still reach libfuzzer-sys's catch_unwind, which aborts.
        let _ = std::panic::take_hook();
        target
    });
    (target.run)(bytes);
    0
}
