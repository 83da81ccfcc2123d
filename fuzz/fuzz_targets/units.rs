//! Sizes and durations from flags and deployment files never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tensor_wasm::platform::units::{parse_duration, parse_size};

fuzz_target!(|text: &str| {
    let _ = parse_size(text);
    let _ = parse_duration(text);
});
