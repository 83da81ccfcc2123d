//! The [`Tensor`] wrapper.

use crate::bindings::wasi::tensor::{ops, types, weights};
use crate::bindings::wasi::tensor_fused::ops as fused;
use crate::bindings::wasi::tensor_fused::steps;
use std::fmt;

pub use types::Dtype;

/// A `wasi:tensor` error.
#[derive(Debug, Clone)]
pub struct Error(pub types::Error);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            types::Error::InvalidShape(e) => {
                write!(f, "invalid shape: {} {:?}", e.message, e.shapes)
            }
            types::Error::DtypeMismatch(e) => {
                write!(f, "dtype mismatch: {} {:?}", e.message, e.dtypes)
            }
            types::Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            types::Error::QuotaExceeded(q) => write!(
                f,
                "tensor quota exceeded: {} bytes requested, {} of {} in use",
                q.requested, q.in_use, q.limit
            ),
            types::Error::NotGranted(m) => write!(f, "not granted: {m}"),
            types::Error::NotFound(m) => write!(f, "not found: {m}"),
            types::Error::Backend(m) => write!(f, "backend: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// The error's kind as a short kebab-case word (the WIT case name).
    pub fn kind(&self) -> &'static str {
        match &self.0 {
            types::Error::InvalidShape(_) => "invalid-shape",
            types::Error::DtypeMismatch(_) => "dtype-mismatch",
            types::Error::InvalidArgument(_) => "invalid-argument",
            types::Error::QuotaExceeded(_) => "quota-exceeded",
            types::Error::NotGranted(_) => "not-granted",
            types::Error::NotFound(_) => "not-found",
            types::Error::Backend(_) => "backend",
        }
    }
}

/// Result of a tensor call.
pub type Result<T> = std::result::Result<T, Error>;

/// An immutable tensor held by the host.
#[derive(Debug)]
pub struct Tensor(pub types::Tensor);

fn wrap(r: std::result::Result<types::Tensor, types::Error>) -> Result<Tensor> {
    r.map(Tensor).map_err(Error)
}

impl Tensor {
    /// An f32 tensor of `shape` from `data`.
    pub fn from_f32(data: &[f32], shape: &[u32]) -> Result<Self> {
        wrap(types::Tensor::from_f32(data, shape))
    }

    /// An i64 tensor of `shape` from `data`.
    pub fn from_i64(data: &[i64], shape: &[u32]) -> Result<Self> {
        wrap(types::Tensor::from_i64(data, shape))
    }

    /// A tensor from little-endian bytes.
    pub fn from_bytes(data: &[u8], shape: &[u32], dtype: Dtype) -> Result<Self> {
        wrap(types::Tensor::from_bytes(data, shape, dtype))
    }

    /// A tensor of `shape` filled with `value`.
    pub fn full(shape: &[u32], dtype: Dtype, value: f64) -> Result<Self> {
        wrap(types::Tensor::full(shape, dtype, value))
    }

    /// Dimensions.
    pub fn shape(&self) -> Vec<u32> {
        self.0.shape()
    }

    /// Element type.
    pub fn dtype(&self) -> Dtype {
        self.0.dtype()
    }

    /// Number of elements.
    pub fn element_count(&self) -> u64 {
        self.0.element_count()
    }

    /// Reads the elements back as f32 (waits for pending work).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        self.0.to_f32().map_err(Error)
    }

    /// Reads the elements back as little-endian bytes (waits for pending work).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.0.to_bytes().map_err(Error)
    }

    /// `self · other` (batched, broadcasting batch dimensions).
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        wrap(ops::matmul(&self.0, &other.0, false, false))
    }

    /// `self · otherᵀ` (e.g. activations times a [out, in] weight).
    pub fn matmul_t(&self, other: &Tensor) -> Result<Tensor> {
        wrap(ops::matmul(&self.0, &other.0, false, true))
    }

    /// Matrix product with explicit transpose flags.
    pub fn matmul_with(
        &self,
        other: &Tensor,
        transpose_a: bool,
        transpose_b: bool,
    ) -> Result<Tensor> {
        wrap(ops::matmul(&self.0, &other.0, transpose_a, transpose_b))
    }

    /// `self + other`, broadcasting.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        wrap(ops::add(&self.0, &other.0))
    }

    /// `self - other`, broadcasting.
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        wrap(ops::sub(&self.0, &other.0))
    }

    /// `self * other`, broadcasting.
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        wrap(ops::mul(&self.0, &other.0))
    }

    /// `self / other`, broadcasting.
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        wrap(ops::div(&self.0, &other.0))
    }

    /// `self * factor`.
    pub fn scale(&self, factor: f32) -> Result<Tensor> {
        wrap(ops::scale(&self.0, factor))
    }

    /// Exact (erf) GELU.
    pub fn gelu(&self) -> Result<Tensor> {
        wrap(ops::gelu(&self.0))
    }

    /// tanh-approximated GELU.
    pub fn gelu_tanh(&self) -> Result<Tensor> {
        wrap(ops::gelu_tanh(&self.0))
    }

    /// SiLU.
    pub fn silu(&self) -> Result<Tensor> {
        wrap(ops::silu(&self.0))
    }

    /// `self + y` and its RMS norm over the last axis (`wasi:tensor-fused`'s
    /// `add-rms-norm`): a residual step and the next normalization in one
    /// call. Returns (sum, normed).
    pub fn add_rms_norm(
        &self,
        y: &Tensor,
        weight: Option<&Tensor>,
        eps: f32,
    ) -> Result<(Tensor, Tensor)> {
        fused::add_rms_norm(&self.0, &y.0, weight.map(|w| &w.0), eps)
            .map(|(s, n)| (Tensor(s), Tensor(n)))
            .map_err(Error)
    }

    /// silu(self) · `up` (`wasi:tensor-fused`): one call for a SwiGLU gate.
    pub fn swiglu(&self, up: &Tensor) -> Result<Tensor> {
        wrap(fused::swiglu(&self.0, &up.0))
    }

    /// ReLU.
    pub fn relu(&self) -> Result<Tensor> {
        wrap(ops::relu(&self.0))
    }

    /// tanh.
    pub fn tanh(&self) -> Result<Tensor> {
        wrap(ops::tanh(&self.0))
    }

    /// e^x.
    pub fn exp(&self) -> Result<Tensor> {
        wrap(ops::exp(&self.0))
    }

    /// Softmax over `axis`.
    pub fn softmax(&self, axis: i32) -> Result<Tensor> {
        wrap(ops::softmax(&self.0, axis, false))
    }

    /// Causal softmax over the last axis of [..., q, k].
    pub fn causal_softmax(&self) -> Result<Tensor> {
        wrap(ops::softmax(&self.0, -1, true))
    }

    /// Layer norm over the last axis.
    pub fn layer_norm(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> Result<Tensor> {
        wrap(ops::layer_norm(
            &self.0,
            weight.map(|t| &t.0),
            bias.map(|t| &t.0),
            eps,
        ))
    }

    /// RMS norm over the last axis.
    pub fn rms_norm(&self, weight: Option<&Tensor>, eps: f32) -> Result<Tensor> {
        wrap(ops::rms_norm(&self.0, weight.map(|t| &t.0), eps))
    }

    /// Rows of this [rows, dim] table picked by `ids`.
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        wrap(ops::embedding(&self.0, &ids.0))
    }

    /// Same elements, new shape.
    pub fn reshape(&self, shape: &[u32]) -> Result<Tensor> {
        wrap(ops::reshape(&self.0, shape))
    }

    /// Axes reordered.
    pub fn permute(&self, dims: &[u32]) -> Result<Tensor> {
        wrap(ops::permute(&self.0, dims))
    }

    /// Two axes swapped.
    pub fn transpose(&self, axis0: i32, axis1: i32) -> Result<Tensor> {
        wrap(ops::transpose(&self.0, axis0, axis1))
    }

    /// `length` entries of `axis` from `start`.
    pub fn narrow(&self, axis: i32, start: u32, length: u32) -> Result<Tensor> {
        wrap(ops::narrow(&self.0, axis, start, length))
    }

    /// Rotary embedding with positions from `offset`.
    pub fn rope(&self, offset: u32, theta: f32, layout: ops::RopeLayout) -> Result<Tensor> {
        wrap(ops::rope(&self.0, offset, theta, layout))
    }

    /// Index of the maximum along `axis` (i64).
    pub fn argmax(&self, axis: i32) -> Result<Tensor> {
        wrap(ops::argmax(&self.0, axis))
    }

    /// The `k` largest along the last axis and their indices.
    pub fn top_k(&self, k: u32) -> Result<(Tensor, Tensor)> {
        ops::top_k(&self.0, k)
            .map(|(v, i)| (Tensor(v), Tensor(i)))
            .map_err(Error)
    }

    /// Mean along `axis`, counting only entries whose `mask` is nonzero.
    pub fn mean(&self, axis: i32, mask: Option<&Tensor>) -> Result<Tensor> {
        wrap(ops::mean(&self.0, axis, mask.map(|t| &t.0)))
    }

    /// L2-normalized along `axis`.
    pub fn l2_normalize(&self, axis: i32, eps: f32) -> Result<Tensor> {
        wrap(ops::l2_normalize(&self.0, axis, eps))
    }

    /// Converted to `dtype`.
    pub fn cast(&self, dtype: Dtype) -> Result<Tensor> {
        wrap(ops::cast(&self.0, dtype))
    }
}

/// Attention: softmax(q·kᵀ·scale + mask)·v over [batch, heads, seq, dim].
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f32,
    causal: bool,
) -> Result<Tensor> {
    wrap(ops::attention(
        &q.0,
        &k.0,
        &v.0,
        mask.map(|t| &t.0),
        scale,
        causal,
    ))
}

/// Joins tensors along `axis`.
pub fn concat(xs: &[&Tensor], axis: i32) -> Result<Tensor> {
    let raw: Vec<&types::Tensor> = xs.iter().map(|t| &t.0).collect();
    wrap(ops::concat(&raw, axis))
}

/// One decoding step of grouped-query attention over a key/value cache for
/// a batch of rows (`wasi:tensor-fused`'s `decode-attention`): `q` [b,
/// hq·d], `k`, `v` [b, hk·d] rotated and written at each row's position in
/// copies of `keys`, `values` [b, hk, capacity, d]; returns the attended
/// values [b, hq·d] and the updated caches.
#[allow(clippy::too_many_arguments)]
pub fn decode_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    positions: &[u32],
    theta: f32,
    layout: ops::RopeLayout,
    scale: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    fused::decode_attention(
        &q.0, &k.0, &v.0, &keys.0, &values.0, positions, theta, layout, scale,
    )
    .map(|(o, k, v)| (Tensor(o), Tensor(k), Tensor(v)))
    .map_err(Error)
}

/// [`decode_attention`] with each row's query, key and value side by side
/// in one tensor (`wasi:tensor-fused`'s `decode-attention-qkv`): `qkv` [b,
/// (hq + 2·hk)·d], as one product with the three projections stacked gives
/// it. One call and no copies to split the product.
pub fn decode_attention_qkv(
    qkv: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    positions: &[u32],
    theta: f32,
    layout: ops::RopeLayout,
    scale: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    fused::decode_attention_qkv(&qkv.0, &keys.0, &values.0, positions, theta, layout, scale)
        .map(|(o, k, v)| (Tensor(o), Tensor(k), Tensor(v)))
        .map_err(Error)
}

/// [`decode_attention_qkv`] that takes the caches over and returns them
/// updated (`wasi:tensor-fused`'s `decode-attention-update`, 0.1.2): when
/// nothing else shares their memory (no [`Tensor::reshape`] of them is
/// alive) the host writes each row's new key and value into it instead of
/// copying the caches. On an error the caches are gone.
pub fn decode_attention_update(
    qkv: &Tensor,
    keys: Tensor,
    values: Tensor,
    positions: &[u32],
    theta: f32,
    layout: ops::RopeLayout,
    scale: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    fused::decode_attention_update(&qkv.0, keys.0, values.0, positions, theta, layout, scale)
        .map(|(o, k, v)| (Tensor(o), Tensor(k), Tensor(v)))
        .map_err(Error)
}

/// A recorded step (`wasi:tensor-fused`'s `steps`, 0.1.3): the ops issued
/// while it lives go to the device together when it [`Step::run`]s (on a
/// GPU, one CUDA graph instead of a launch per op), with the same results.
/// `shape_key` names the step's shape (a batch's row count): steps of one
/// key reuse what the host built. Dropped without `run` (an error in
/// between), what was recorded is issued then.
///
/// ```ignore
/// let step = Step::record(rows as u64)?;
/// let logits = model.forward(&x)?;
/// step.run()?;
/// ```
#[derive(Debug)]
pub struct Step(());

impl Step {
    /// Starts recording.
    pub fn record(shape_key: u64) -> Result<Step> {
        steps::record_step(shape_key).map_err(Error)?;
        Ok(Step(()))
    }

    /// Issues what was recorded and stops recording.
    pub fn run(self) -> Result<()> {
        std::mem::forget(self);
        steps::run_step().map_err(Error)
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        // The error, if any, comes back from the next read-back too.
        let _ = steps::run_step();
    }
}

/// Weights granted to the deployment.
#[derive(Debug)]
pub struct Weights(pub weights::Weights);

impl Weights {
    /// Opens the weights granted under `name`.
    pub fn open(name: &str) -> Result<Self> {
        weights::Weights::open(name).map(Weights).map_err(Error)
    }

    /// The named tensor (shared, read-only).
    pub fn get(&self, name: &str) -> Result<Tensor> {
        wrap(self.0.get(name))
    }

    /// Every tensor's name, shape and dtype.
    pub fn tensors(&self) -> Vec<weights::TensorInfo> {
        self.0.tensors()
    }

    /// The file's metadata value under `key` (GGUF key-value pairs).
    pub fn metadata(&self, key: &str) -> Option<weights::MetadataValue> {
        self.0.metadata(key)
    }
}
