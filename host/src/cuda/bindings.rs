//! Generated bindings for `wasi:cuda@0.1.0` (tensor types shared with `wasi:tensor`).

wasmtime::component::bindgen!({
    path: ["../wit/tensor-0.1.0", "../wit/cuda-0.1.0"],
    world: "wasi:cuda/imports",
    // A launch only queues work: it runs as a plain (not async) host call,
    // the cheapest kind.
    imports: {
        "wasi:cuda/kernels.[method]kernel.launch": trappable,
        default: async | trappable,
    },
    with: {
        "wasi:tensor/types": crate::tensor::bindings::wasi::tensor::types,
        "wasi:cuda/memory.buffer": crate::cuda::Buffer,
        "wasi:cuda/streams.stream": crate::cuda::Stream,
        "wasi:cuda/streams.event": crate::cuda::Event,
        "wasi:cuda/kernels.module": crate::cuda::Module,
        "wasi:cuda/kernels.kernel": crate::cuda::Kernel,
    },
});
