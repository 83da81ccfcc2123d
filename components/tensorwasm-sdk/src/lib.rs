//! Guest SDK for TensorWasm's host interfaces: `wasi:tensor`, `wasi:cuda`,
//! `wasi:scheduler` @0.1.0 and `wasi:tensor-fused` @0.1.3.
//!
//! [`Tensor`] wraps the `wasi:tensor` handle with operator-style methods that
//! chain: `x.matmul(&w)?.add(&b)?.gelu()?`. Every method returns
//! `Result<_, Error>`; bad shapes and dtypes are errors, never traps. The raw
//! generated bindings are in [`bindings`] for what the wrapper leaves out.
//!
//! ```ignore
//! use tensorwasm_sdk::{Tensor, Result};
//! fn mlp(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Vec<f32>> {
//!     x.matmul(w)?.add(b)?.relu()?.to_f32()
//! }
//! ```
#![deny(missing_docs)]

/// Generated bindings for the four packages.
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        inline: "
            package tensorwasm:sdk;
            world sdk {
                include wasi:tensor/imports@0.1.0;
                include wasi:cuda/imports@0.1.0;
                include wasi:scheduler/imports@0.1.0;
                include wasi:tensor-fused/imports@0.1.3;
            }
        ",
        path: [
            "../../wit/tensor-0.1.0",
            "../../wit/cuda-0.1.0",
            "../../wit/scheduler-0.1.0",
            "../../wit/tensor-fused-0.1.3",
        ],
        generate_all,
    });
}

mod tensor;

pub use bindings::wasi::tensor::ops::RopeLayout;
pub use bindings::wasi::tensor::types::Dtype;
pub use bindings::wasi::tensor::weights::MetadataValue;
pub use tensor::{
    Error, Result, Step, Tensor, Weights, attention, concat, decode_attention,
    decode_attention_qkv, decode_attention_update,
};

/// Deploy-time pre-initialization (the host runs a component's exported
/// `wizer-initialize: func()` once and snapshots its memory; docs/DEPLOYMENTS.md).
pub mod preinit {
    unsafe extern "C" {
        fn __wasilibc_reset_preopens();
    }

    /// Call last in `wizer-initialize`: forgets the directory handles
    /// wasi-libc cached while the initializer read files, so each instance
    /// started from the snapshot looks up its own.
    pub fn finish() {
        // SAFETY: wasi-libc's documented reset for pre-initialized programs;
        // it only drops libc's preopen table, which is rebuilt on next use.
        unsafe { __wasilibc_reset_preopens() }
    }
}

/// `wasi:scheduler`: cooperative deadlines.
pub mod scheduler {
    pub use crate::bindings::wasi::scheduler::cooperative::{YieldStatus, remaining, yield_};
}

/// `wasi:cuda`: devices, buffers, kernels (every call is `no-device` on a host without a GPU).
pub mod cuda {
    pub use crate::bindings::wasi::cuda::device::{info, synchronize};
    pub use crate::bindings::wasi::cuda::kernels::{
        Argument, Kernel, LaunchConfig, Module, ParamKind, SourceKind,
    };
    pub use crate::bindings::wasi::cuda::memory::{Buffer, buffer_into_tensor, tensor_into_buffer};
    pub use crate::bindings::wasi::cuda::streams::{Event, Stream};
    pub use crate::bindings::wasi::cuda::types::{DeviceInfo, Dim3, Error};
}
