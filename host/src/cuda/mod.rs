//! `wasi:cuda@0.1.0`: device memory, vetted kernels and launches.
//!
//! This build has no CUDA backend yet, so every call answers `no-device`
//! (what the WIT specifies for a host without a GPU) and no `wasi:cuda`
//! resource can ever be created. Tensors moved in by `tensor-into-buffer`
//! are released.
//!
//! Lifecycle: a [`CudaView`] over the instance's resource table.

mod bindings;
mod types;
mod types_impl;

pub use types::{Buffer, Event, Kernel, Module, Stream};

use wasmtime::component::{HasData, Linker, ResourceTable};

/// What the `wasi:cuda` host functions operate on.
pub struct CudaView<'a> {
    /// The instance's resource table.
    pub table: &'a mut ResourceTable,
}

/// Types with a resource table for `wasi:cuda`.
pub trait CudaStateView: Send {
    /// The view the host functions use.
    fn cuda(&mut self) -> CudaView<'_>;
}

struct HasCuda;

impl HasData for HasCuda {
    type Data<'a> = CudaView<'a>;
}

/// Adds `wasi:cuda` to `linker`.
pub fn add_to_linker<T: CudaStateView + 'static>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    use bindings::wasi::cuda::{device, kernels, memory, streams, types};
    // Interface by interface: the world would also add `wasi:tensor/types`,
    // which the tensor capability owns.
    types::add_to_linker::<T, HasCuda>(linker, T::cuda)?;
    device::add_to_linker::<T, HasCuda>(linker, T::cuda)?;
    streams::add_to_linker::<T, HasCuda>(linker, T::cuda)?;
    memory::add_to_linker::<T, HasCuda>(linker, T::cuda)?;
    kernels::add_to_linker::<T, HasCuda>(linker, T::cuda)?;
    Ok(())
}
