//! Generated bindings for `wasi:tensor@0.1.0` and `wasi:tensor-fused@0.1.3`.

wasmtime::component::bindgen!({
    path: "../wit/tensor-0.1.0",
    world: "wasi:tensor/imports",
    imports: { default: async | trappable },
    with: {
        "wasi:tensor/types.tensor": crate::tensor::Tensor,
        "wasi:tensor/weights.weights": crate::tensor::weights::WeightsHandle,
    },
});

/// `wasi:tensor-fused@0.1.3` over the same tensors.
pub mod fused {
    wasmtime::component::bindgen!({
        path: ["../wit/tensor-0.1.0", "../wit/tensor-fused-0.1.3"],
        world: "wasi:tensor-fused/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:tensor/types": super::wasi::tensor::types,
            "wasi:tensor/ops": super::wasi::tensor::ops,
        },
    });
}
