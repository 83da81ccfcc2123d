//! The `wasi:cuda` host traits on a host without a CUDA backend: every call
//! is `no-device`.

use super::bindings::wasi::cuda::{device, kernels, memory, streams, types};
use super::{Buffer, CudaView, Event, Kernel, Module, Stream};
use crate::tensor::Tensor;
use crate::tensor::bindings::wasi::tensor::types::Dtype;
use wasmtime::component::Resource;

type WResult<T> = wasmtime::Result<Result<T, types::Error>>;

fn no_device<T>() -> WResult<T> {
    Ok(Err(types::Error::NoDevice))
}

impl types::Host for CudaView<'_> {}

impl device::Host for CudaView<'_> {
    async fn info(&mut self) -> WResult<types::DeviceInfo> {
        no_device()
    }

    async fn synchronize(&mut self) -> WResult<()> {
        no_device()
    }
}

impl streams::Host for CudaView<'_> {}

impl streams::HostStream for CudaView<'_> {
    async fn create(&mut self) -> WResult<Resource<Stream>> {
        no_device()
    }

    async fn synchronize(&mut self, _: Resource<Stream>) -> WResult<()> {
        no_device()
    }

    async fn record_event(&mut self, _: Resource<Stream>) -> WResult<Resource<Event>> {
        no_device()
    }

    async fn wait_event(&mut self, _: Resource<Stream>, _: Resource<Event>) -> WResult<()> {
        no_device()
    }

    async fn drop(&mut self, r: Resource<Stream>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl streams::HostEvent for CudaView<'_> {
    async fn synchronize(&mut self, _: Resource<Event>) -> WResult<()> {
        no_device()
    }

    async fn is_complete(&mut self, _: Resource<Event>) -> WResult<bool> {
        no_device()
    }

    async fn elapsed_ms(&mut self, _: Resource<Event>, _: Resource<Event>) -> WResult<f32> {
        no_device()
    }

    async fn drop(&mut self, r: Resource<Event>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl memory::Host for CudaView<'_> {
    async fn tensor_into_buffer(&mut self, t: Resource<Tensor>) -> WResult<Resource<Buffer>> {
        self.table.delete(t)?;
        no_device()
    }

    async fn buffer_into_tensor(
        &mut self,
        b: Resource<Buffer>,
        _: Vec<u32>,
        _: Dtype,
    ) -> WResult<Resource<Tensor>> {
        self.table.delete(b)?;
        no_device()
    }
}

impl memory::HostBuffer for CudaView<'_> {
    async fn alloc(&mut self, _: u64) -> WResult<Resource<Buffer>> {
        no_device()
    }

    async fn size(&mut self, _: Resource<Buffer>) -> wasmtime::Result<u64> {
        Ok(0)
    }

    async fn write(
        &mut self,
        _: Resource<Buffer>,
        _: u64,
        _: Vec<u8>,
        _: Option<Resource<Stream>>,
    ) -> WResult<()> {
        no_device()
    }

    async fn read(&mut self, _: Resource<Buffer>, _: u64, _: u64) -> WResult<Vec<u8>> {
        no_device()
    }

    async fn copy_from(
        &mut self,
        _: Resource<Buffer>,
        _: Resource<Buffer>,
        _: u64,
        _: u64,
        _: u64,
        _: Option<Resource<Stream>>,
    ) -> WResult<()> {
        no_device()
    }

    async fn drop(&mut self, r: Resource<Buffer>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl kernels::Host for CudaView<'_> {}

impl kernels::HostModule for CudaView<'_> {
    async fn load(&mut self, _: String) -> WResult<Resource<Module>> {
        no_device()
    }

    async fn load_digest(&mut self, _: String) -> WResult<Resource<Module>> {
        no_device()
    }

    async fn load_source(
        &mut self,
        _: String,
        _: kernels::SourceKind,
    ) -> WResult<Resource<Module>> {
        no_device()
    }

    async fn kernel(
        &mut self,
        _: Resource<Module>,
        _: String,
        _: Vec<kernels::ParamKind>,
    ) -> WResult<Resource<Kernel>> {
        no_device()
    }

    async fn drop(&mut self, r: Resource<Module>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl kernels::HostKernel for CudaView<'_> {
    async fn params(&mut self, _: Resource<Kernel>) -> wasmtime::Result<Vec<kernels::ParamKind>> {
        Ok(Vec::new())
    }

    async fn launch(
        &mut self,
        _: Resource<Kernel>,
        _: kernels::LaunchConfig,
        _: Vec<kernels::Argument>,
        _: Option<Resource<Stream>>,
    ) -> WResult<()> {
        no_device()
    }

    async fn drop(&mut self, r: Resource<Kernel>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}
