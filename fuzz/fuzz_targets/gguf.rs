//! GGUF weights files: any bytes must parse or fail cleanly, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tensor_wasm::tensor::gguf::parse(data);
});
