//! WAC worlds (with the built-in packages available) must give an error,
//! never a panic. Note: the host also guards composition with catch_unwind
//! because wac-parser asserts on some inputs; this target finds those.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tensor_wasm::platform::compose::{PackageSources, compose};

fuzz_target!(|text: &str| {
    let _ = compose("fuzz.wac", text, &PackageSources::default());
});
