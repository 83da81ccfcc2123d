//! The `wasi:cuda` host traits. On a CPU host every call is `no-device`; on
//! a GPU every resource lives in the tenant's CUDA context and work is
//! issued on the instance's stream (the one its tensor ops use) unless the
//! guest names a stream of its own.

use super::bindings::wasi::cuda::{device, kernels, memory, streams, types};
use super::error;
use super::launch;
use super::signature::Kind;
use super::{Buffer, CudaView, Event, Kernel, Module, Stream, library};
use crate::platform::telemetry::{self, Span};
use crate::tensor::bindings::wasi::tensor::types::Dtype;
use crate::tensor::cuda::CudaBackend;
use crate::tensor::ops::dims;
use crate::tensor::types::Data;
use crate::tensor::{DType, Tensor};
use cudarc::driver::{CudaStream, DevicePtr};
use std::sync::Arc;
use wasmtime::AsContext;
use wasmtime::component::{Resource, WasmList};

type WResult<T> = wasmtime::Result<Result<T, types::Error>>;

/// Returns the error value from the host function.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        }
    };
}

fn bounds(offset: u64, length: u64, size: u64) -> Result<(), types::Error> {
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(types::Error::OutOfBounds(types::BoundsError {
            offset,
            length,
            size,
        }));
    }
    Ok(())
}

/// Most streams one instance may create.
const MAX_STREAMS: usize = 64;
/// Largest guest kernel source accepted.
const MAX_SOURCE: usize = 1 << 20;

impl CudaView<'_> {
    /// The stream `on` names, or the instance's own.
    fn stream_of(
        &self,
        gpu: &CudaBackend,
        on: &Option<Resource<Stream>>,
    ) -> wasmtime::Result<Arc<CudaStream>> {
        Ok(match on {
            Some(s) => self.table.get(s)?.stream.clone(),
            None => gpu.stream().clone(),
        })
    }

    /// Every stream of this instance: its own first, then those it created.
    fn all_streams(&self, gpu: &CudaBackend) -> Vec<Arc<CudaStream>> {
        std::iter::once(gpu.stream().clone())
            .chain(self.ctx.streams.iter().cloned())
            .collect()
    }

    fn new_buffer(&mut self, gpu: &CudaBackend, size: u64) -> Result<Buffer, types::Error> {
        let charge = self
            .tensors
            .quota()
            .charge(size)
            .map_err(error::tensor_err)?;
        let bytes = launch::alloc_zeroed(gpu, size)?;
        Ok(Buffer {
            bytes: Some(bytes),
            size,
            charge: Some(charge),
            used_on: Vec::new(),
        })
    }
}

impl types::Host for CudaView<'_> {}

impl device::Host for CudaView<'_> {
    async fn info(&mut self) -> WResult<types::DeviceInfo> {
        let gpu = tri!(launch::gpu(self.tensors));
        let d = gpu.tenant().device();
        let l = d.limits();
        let dim = |v: [u32; 3]| types::Dim3 {
            x: v[0],
            y: v[1],
            z: v[2],
        };
        Ok(Ok(types::DeviceInfo {
            name: d.name().to_string(),
            compute_major: d.compute().0,
            compute_minor: d.compute().1,
            total_memory: d.memory(),
            multiprocessors: l.multiprocessors,
            warp_size: l.warp_size,
            max_threads_per_block: l.max_threads_per_block,
            max_block: dim(l.max_block),
            max_grid: dim(l.max_grid),
            max_shared_memory_per_block: l.max_shared_per_block,
            driver_version: d.driver(),
        }))
    }

    async fn synchronize(&mut self) -> WResult<()> {
        let gpu = tri!(launch::gpu(self.tensors));
        launch::wait(self.all_streams(gpu)).await
    }
}

impl streams::Host for CudaView<'_> {}

impl streams::HostStream for CudaView<'_> {
    async fn create(&mut self) -> WResult<Resource<Stream>> {
        let gpu = tri!(launch::gpu(self.tensors));
        if self.ctx.streams.len() >= MAX_STREAMS {
            return Ok(Err(types::Error::InvalidArgument(format!(
                "an instance may create at most {MAX_STREAMS} streams"
            ))));
        }
        let stream = tri!(launch::new_stream(gpu));
        self.ctx.streams.push(stream.clone());
        Ok(Ok(self.table.push(Stream { stream })?))
    }

    async fn synchronize(&mut self, s: Resource<Stream>) -> WResult<()> {
        let stream = self.table.get(&s)?.stream.clone();
        launch::wait(vec![stream]).await
    }

    async fn record_event(&mut self, s: Resource<Stream>) -> WResult<Resource<Event>> {
        let stream = self.table.get(&s)?.stream.clone();
        let event = tri!(launch::record(&stream));
        Ok(Ok(self.table.push(Event { event })?))
    }

    async fn wait_event(&mut self, s: Resource<Stream>, e: Resource<Event>) -> WResult<()> {
        let stream = &self.table.get(&s)?.stream;
        let event = &self.table.get(&e)?.event;
        Ok(stream
            .wait(event)
            .map_err(error::driver("waiting for an event")))
    }

    async fn drop(&mut self, r: Resource<Stream>) -> wasmtime::Result<()> {
        // The stream itself lives on with the instance (buffers it touched
        // are ordered after it when they are freed).
        self.table.delete(r)?;
        Ok(())
    }
}

impl streams::HostEvent for CudaView<'_> {
    async fn synchronize(&mut self, e: Resource<Event>) -> WResult<()> {
        let event = self.table.get(&e)?.event.clone();
        launch::blocking(move || {
            event
                .synchronize()
                .map_err(error::driver("waiting for an event"))
        })
        .await
    }

    async fn is_complete(&mut self, e: Resource<Event>) -> WResult<bool> {
        let event = &self.table.get(&e)?.event;
        Ok(event
            .try_is_complete()
            .map_err(error::driver("querying an event")))
    }

    async fn elapsed_ms(&mut self, start: Resource<Event>, end: Resource<Event>) -> WResult<f32> {
        let a = self.table.get(&start)?.event.clone();
        let b = self.table.get(&end)?.event.clone();
        launch::blocking(move || a.elapsed_ms(&b).map_err(error::driver("timing events"))).await
    }

    async fn drop(&mut self, r: Resource<Event>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl memory::Host for CudaView<'_> {
    async fn tensor_into_buffer(&mut self, t: Resource<Tensor>) -> WResult<Resource<Buffer>> {
        let tensor = self.table.delete(t)?;
        let gpu = tri!(launch::gpu(self.tensors));
        let size = tensor.byte_size();
        if size == 0 {
            return Ok(Err(types::Error::InvalidArgument(
                "a tensor with no elements has no bytes to hold".into(),
            )));
        }
        let buffer = match tensor.into_parts() {
            Ok((Data::Cuda(g), Some(charge))) => Buffer {
                bytes: Some(g.into_slice()),
                size,
                charge: Some(charge),
                used_on: Vec::new(),
            },
            Ok((Data::Cpu(_), _)) => {
                return Ok(Err(types::Error::Backend(
                    "a host tensor reached the GPU".into(),
                )));
            }
            // Shared with other handles, or weights (read-only): a copy.
            Ok((data, None)) => {
                let t = Tensor::new(vec![size as usize], DType::U8, data, None);
                tri!(self.copy_tensor(gpu, &t, size))
            }
            Err(t) => tri!(self.copy_tensor(gpu, &t, size)),
        };
        Ok(Ok(self.table.push(buffer)?))
    }

    async fn buffer_into_tensor(
        &mut self,
        b: Resource<Buffer>,
        shape: Vec<u32>,
        dtype: Dtype,
    ) -> WResult<Resource<Tensor>> {
        let mut buffer = self.table.delete(b)?;
        let dtype: DType = dtype.into();
        let shape = tri!(dims(&shape).map_err(error::tensor_err));
        let bytes = shape.iter().product::<usize>() as u64 * dtype.size() as u64;
        if bytes != buffer.size {
            return Ok(Err(types::Error::InvalidArgument(format!(
                "a {dtype} tensor of shape {shape:?} holds {bytes} bytes; the buffer has {}",
                buffer.size
            ))));
        }
        let gpu = tri!(launch::gpu(self.tensors));
        buffer.settle();
        let (Some(slice), charge) = (buffer.bytes.take(), buffer.charge.take()) else {
            return Ok(Err(types::Error::Backend("the buffer has no bytes".into())));
        };
        let tensor = Tensor::new(shape, dtype, Data::Cuda(gpu.adopt(slice)), charge);
        Ok(Ok(self.table.push(tensor)?))
    }
}

impl CudaView<'_> {
    /// A new buffer holding a copy of `t`'s `size` bytes.
    fn copy_tensor(
        &mut self,
        gpu: &CudaBackend,
        t: &Tensor,
        size: u64,
    ) -> Result<Buffer, types::Error> {
        let Data::Cuda(g) = t.data() else {
            return Err(types::Error::Backend(
                "a host tensor reached the GPU".into(),
            ));
        };
        let mut b = self.new_buffer(gpu, size)?;
        let stream = gpu.stream();
        let (src, _g1) = g.slice().device_ptr(stream);
        let dst = b
            .bytes
            .as_mut()
            .map(|x| x.device_ptr(stream).0)
            .unwrap_or(0);
        launch::copy(stream, dst, src, size)?;
        Ok(b)
    }
}

impl CudaView<'_> {
    /// Checks a write of `len` bytes at `offset` into `b` and orders it on
    /// its stream: the stream and device address to copy to, or `None` for
    /// an empty write.
    fn write_target(
        &mut self,
        b: &Resource<Buffer>,
        offset: u64,
        len: u64,
        on: &Option<Resource<Stream>>,
    ) -> WResult<Option<(Arc<CudaStream>, u64)>> {
        let gpu = tri!(launch::gpu(self.tensors));
        let stream = self.stream_of(gpu, on)?;
        let buffer = self.table.get_mut(b)?;
        tri!(bounds(offset, len, buffer.size));
        if len == 0 {
            return Ok(Ok(None));
        }
        tri!(
            buffer
                .touch(&stream)
                .map_err(error::driver("ordering streams"))
        );
        let Some(bytes) = buffer.bytes.as_mut() else {
            return Ok(Err(types::Error::Backend("the buffer has no bytes".into())));
        };
        let dst = bytes.device_ptr(&stream).0 + offset;
        Ok(Ok(Some((stream, dst))))
    }
}

/// `buffer.write` copying the guest's bytes to the device from where they
/// lie in its linear memory (no host copy first); [`super::add_to_linker`]
/// installs it over the generated binding.
#[allow(clippy::type_complexity)]
pub(super) fn write_guest_bytes<T: super::CudaStateView + 'static>(
    mut store: wasmtime::StoreContextMut<'_, T>,
    (b, offset, data, on): (
        Resource<Buffer>,
        u64,
        WasmList<u8>,
        Option<Resource<Stream>>,
    ),
) -> wasmtime::Result<(Result<(), types::Error>,)> {
    let target = store
        .data_mut()
        .cuda()
        .write_target(&b, offset, data.len() as u64, &on)?;
    Ok((match target {
        Ok(Some((stream, dst))) => {
            launch::upload(&stream, dst, data.as_le_slice(store.as_context()))
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    },))
}

impl memory::HostBuffer for CudaView<'_> {
    async fn alloc(&mut self, size: u64) -> WResult<Resource<Buffer>> {
        let gpu = tri!(launch::gpu(self.tensors));
        if size == 0 {
            return Ok(Err(types::Error::InvalidArgument(
                "a buffer needs at least one byte".into(),
            )));
        }
        let b = tri!(self.new_buffer(gpu, size));
        Ok(Ok(self.table.push(b)?))
    }

    async fn size(&mut self, b: Resource<Buffer>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&b)?.size)
    }

    async fn write(
        &mut self,
        b: Resource<Buffer>,
        offset: u64,
        data: Vec<u8>,
        on: Option<Resource<Stream>>,
    ) -> WResult<()> {
        let (stream, dst) = match tri!(self.write_target(&b, offset, data.len() as u64, &on)?) {
            Some(target) => target,
            None => return Ok(Ok(())),
        };
        Ok(launch::upload(&stream, dst, &data))
    }

    async fn read(&mut self, b: Resource<Buffer>, offset: u64, length: u64) -> WResult<Vec<u8>> {
        let gpu = tri!(launch::gpu(self.tensors));
        let buffer = self.table.get(&b)?;
        tri!(bounds(offset, length, buffer.size));
        let mut streams = self.all_streams(gpu);
        streams.extend(buffer.used_on.iter().cloned());
        tri!(launch::wait(streams).await?);
        let buffer = self.table.get(&b)?;
        let Some(bytes) = buffer.bytes.as_ref() else {
            return Ok(Err(types::Error::Backend("the buffer has no bytes".into())));
        };
        let stream = gpu.stream();
        let src = bytes.device_ptr(stream).0 + offset;
        Ok(launch::download(stream, src, length as usize))
    }

    async fn copy_from(
        &mut self,
        dst: Resource<Buffer>,
        src: Resource<Buffer>,
        src_offset: u64,
        offset: u64,
        length: u64,
        on: Option<Resource<Stream>>,
    ) -> WResult<()> {
        let gpu = tri!(launch::gpu(self.tensors));
        let stream = self.stream_of(gpu, &on)?;
        let (s, d) = (self.table.get(&src)?, self.table.get(&dst)?);
        tri!(bounds(src_offset, length, s.size));
        tri!(bounds(offset, length, d.size));
        if src.rep() == dst.rep() && src_offset < offset + length && offset < src_offset + length {
            return Ok(Err(types::Error::InvalidArgument(
                "source and destination overlap within one buffer".into(),
            )));
        }
        if length == 0 {
            return Ok(Ok(()));
        }
        for b in [&src, &dst] {
            let touched = self.table.get_mut(b)?.touch(&stream);
            tri!(touched.map_err(error::driver("ordering streams")));
        }
        let (s, d) = (self.table.get(&src)?, self.table.get(&dst)?);
        let ptr = |b: &Buffer| b.bytes.as_ref().map(|x| x.device_ptr(&stream).0);
        let (Some(sp), Some(dp)) = (ptr(s), ptr(d)) else {
            return Ok(Err(types::Error::Backend("the buffer has no bytes".into())));
        };
        Ok(launch::copy(&stream, dp + offset, sp + src_offset, length))
    }

    async fn drop(&mut self, r: Resource<Buffer>) -> wasmtime::Result<()> {
        // Its free must not enter a recorded tensor step (`launch::gpu`
        // launches the step first); failing that, freed all the same.
        let _ = launch::gpu(self.tensors);
        self.table.delete(r)?;
        Ok(())
    }
}

impl From<kernels::ParamKind> for Kind {
    fn from(k: kernels::ParamKind) -> Self {
        use kernels::ParamKind as P;
        match k {
            P::I32 => Kind::I32,
            P::U32 => Kind::U32,
            P::I64 => Kind::I64,
            P::U64 => Kind::U64,
            P::F32 => Kind::F32,
            P::F64 => Kind::F64,
            P::Pointer => Kind::Pointer,
        }
    }
}

impl From<Kind> for kernels::ParamKind {
    fn from(k: Kind) -> Self {
        use kernels::ParamKind as P;
        match k {
            Kind::I32 => P::I32,
            Kind::U32 => P::U32,
            Kind::I64 => P::I64,
            Kind::U64 => P::U64,
            Kind::F32 => P::F32,
            Kind::F64 => P::F64,
            Kind::Pointer => P::Pointer,
        }
    }
}

impl kernels::Host for CudaView<'_> {}

impl CudaView<'_> {
    /// Compiles (once per device) and loads a resolved module.
    async fn load_checked(
        &mut self,
        found: Result<Arc<library::Source>, library::Error>,
    ) -> WResult<Resource<Module>> {
        let m = tri!(found.map_err(error::library));
        let tenant = tri!(launch::gpu(self.tensors)).tenant().clone();
        let name = m.name.clone();
        let declared = m.declared.clone();
        // NVRTC takes a while the first time: not on the serving thread.
        let module = tri!(
            launch::blocking(move || {
                tenant
                    .module(&m.source, false, &m.name)
                    .map_err(types::Error::Backend)
            })
            .await?
        );
        Ok(Ok(self.table.push(Module {
            module,
            declared: Some(declared),
            name,
        })?))
    }
}

impl kernels::HostModule for CudaView<'_> {
    async fn load(&mut self, name: String) -> WResult<Resource<Module>> {
        // A host without a GPU answers `no-device` to every call (the WIT's
        // contract), so the GPU is asked for first.
        tri!(launch::gpu(self.tensors));
        let k = &self.ctx.kernels;
        let found = k.library.by_name(&name, k.require_signed);
        self.load_checked(found).await
    }

    async fn load_digest(&mut self, digest: String) -> WResult<Resource<Module>> {
        tri!(launch::gpu(self.tensors));
        let k = &self.ctx.kernels;
        let found = k.library.by_digest(&digest, k.require_signed);
        self.load_checked(found).await
    }

    async fn load_source(
        &mut self,
        source: String,
        kind: kernels::SourceKind,
    ) -> WResult<Resource<Module>> {
        let gpu = tri!(launch::gpu(self.tensors));
        if !self.ctx.kernels.allow_source {
            return Ok(Err(types::Error::NotPermitted(
                "this deployment loads vetted kernels only (grant `cuda-source = true` to allow \
                 a guest's own)"
                    .into(),
            )));
        }
        if source.len() > MAX_SOURCE {
            return Ok(Err(types::Error::InvalidArgument(format!(
                "kernel source over {MAX_SOURCE} bytes"
            ))));
        }
        let is_ptx = matches!(kind, kernels::SourceKind::Ptx);
        let tenant = gpu.tenant().clone();
        // The compile's span (if any) belongs to this request's trace.
        let cx = telemetry::current();
        let module = tri!(
            launch::blocking(move || {
                telemetry::with_current(cx, || tenant.module(&source, is_ptx, "guest source"))
                    .map_err(types::Error::InvalidArgument)
            })
            .await?
        );
        Ok(Ok(self.table.push(Module {
            module,
            declared: None,
            name: "guest source".into(),
        })?))
    }

    async fn kernel(
        &mut self,
        m: Resource<Module>,
        name: String,
        params: Vec<kernels::ParamKind>,
    ) -> WResult<Resource<Kernel>> {
        let module = self.table.get(&m)?;
        let kinds: Vec<Kind> = params.into_iter().map(Kind::from).collect();
        let signature = match &module.declared {
            None => None,
            Some(declared) => {
                let Some(sig) = declared.iter().find(|s| s.name == name) else {
                    return Ok(Err(types::Error::NotFound(format!(
                        "`{name}` is not a kernel of vetted module {}",
                        module.name
                    ))));
                };
                if sig.kinds() != kinds {
                    let list =
                        |k: &[Kind]| k.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ");
                    return Ok(Err(types::Error::SignatureMismatch(format!(
                        "{name} takes ({}), declared ({})",
                        list(&sig.kinds()),
                        list(&kinds)
                    ))));
                }
                Some(sig.clone())
            }
        };
        let function = tri!(module.module.load_function(&name).map_err(
            |e| types::Error::NotFound(format!("no kernel `{name}` in {}: {e:?}", module.name))
        ));
        let attr = |v: Result<i32, _>| v.map(|v: i32| v.max(0) as u32);
        let max_threads = tri!(
            attr(function.max_threads_per_block()).map_err(error::driver("kernel attributes"))
        );
        let static_shared =
            tri!(attr(function.shared_size_bytes()).map_err(error::driver("kernel attributes")));
        Ok(Ok(self.table.push(Kernel {
            name,
            function,
            kinds,
            signature,
            max_threads,
            static_shared,
        })?))
    }

    async fn drop(&mut self, r: Resource<Module>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl kernels::HostKernel for CudaView<'_> {
    async fn params(&mut self, k: Resource<Kernel>) -> wasmtime::Result<Vec<kernels::ParamKind>> {
        Ok(self
            .table
            .get(&k)?
            .kinds
            .iter()
            .map(|&k| k.into())
            .collect())
    }

    fn launch(
        &mut self,
        k: Resource<Kernel>,
        config: kernels::LaunchConfig,
        args: Vec<kernels::Argument>,
        on: Option<Resource<Stream>>,
    ) -> WResult<()> {
        let gpu = tri!(launch::gpu(self.tensors));
        let kernel = self.table.get(&k)?;
        let mut _span = Span::child("cuda-launch");
        if _span.is_recording() {
            _span.rename(format!("launch {}", kernel.name));
            let (g, b) = (config.grid, config.block);
            _span.set("grid", format!("({}, {}, {})", g.x, g.y, g.z));
            _span.set("block", format!("({}, {}, {})", b.x, b.y, b.z));
        }
        let stream = self.stream_of(gpu, &on)?;
        if !Arc::ptr_eq(&stream, gpu.stream()) {
            for a in &args {
                if let kernels::Argument::Buffer(b) | kernels::Argument::BufferAt((b, _)) = a {
                    let touched = self.table.get_mut(b)?.touch(&stream);
                    tri!(touched.map_err(error::driver("ordering streams")));
                }
            }
        }
        let kernel = self.table.get(&k)?;
        tri!(launch::check_config(&config, gpu, kernel));
        let mut checked = Vec::with_capacity(args.len());
        let mut pointers = Vec::with_capacity(args.len());
        for a in &args {
            use super::signature::Arg;
            use kernels::Argument as A;
            let (arg, ptr) = match a {
                A::I32(v) => (Arg::I32(*v), 0),
                A::U32(v) => (Arg::U32(*v), 0),
                A::I64(v) => (Arg::I64(*v), 0),
                A::U64(v) => (Arg::U64(*v), 0),
                A::F32(v) => (Arg::F32(*v), 0),
                A::F64(v) => (Arg::F64(*v), 0),
                A::Buffer(b) | A::BufferAt((b, _)) => {
                    let offset = if let A::BufferAt((_, o)) = a { *o } else { 0 };
                    let buffer = self.table.get(b)?;
                    let base = buffer.bytes.as_ref().map_or(0, |x| x.device_ptr(&stream).0);
                    (
                        Arg::Pointer {
                            offset,
                            size: buffer.size,
                        },
                        base.wrapping_add(offset),
                    )
                }
            };
            checked.push(arg);
            pointers.push(ptr);
        }
        tri!(launch::check_args(kernel, &checked));
        let launched = launch::launch(gpu, &stream, kernel, &config, &checked, &pointers);
        if launched.is_ok() {
            self.ctx.kernels.launches.inc();
        }
        Ok(launched)
    }

    async fn drop(&mut self, r: Resource<Kernel>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}
