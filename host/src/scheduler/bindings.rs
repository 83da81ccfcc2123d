//! Generated bindings for `wasi:scheduler@0.1.0`.

wasmtime::component::bindgen!({
    path: "../wit/scheduler-0.1.0",
    world: "wasi:scheduler/imports",
    imports: {
        "wasi:scheduler/cooperative.yield": async | trappable,
        default: trappable,
    },
});
