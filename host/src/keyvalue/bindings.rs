//! Generated bindings for `wasi:keyvalue@0.2.0-draft` (vendored in `wit/deps/keyvalue`).

wasmtime::component::bindgen!({
    path: "../wit/deps/keyvalue",
    world: "wasi:keyvalue/imports",
    imports: { default: async | trappable },
    with: {
        "wasi:keyvalue/store.bucket": crate::keyvalue::types::Bucket,
    },
});
