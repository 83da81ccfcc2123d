//! Generated bindings for `wasi:tensor@0.1.0`.

wasmtime::component::bindgen!({
    path: "../wit/tensor-0.1.0",
    world: "wasi:tensor/imports",
    imports: { default: async | trappable },
    with: {
        "wasi:tensor/types.tensor": crate::tensor::Tensor,
        "wasi:tensor/weights.weights": crate::tensor::weights::WeightsHandle,
    },
});
