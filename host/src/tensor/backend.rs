//! The one trait every tensor backend implements. The op layer (`ops.rs`)
//! validates shapes and dtypes and charges the quota before it calls a
//! backend, so a backend method may assume well-formed arguments (it still
//! checks what only the data can tell, such as ids out of range).

use super::dtype::DType;
use super::error::TResult;
use super::storage::CpuData;
use super::types::{Data, Tensor};

/// Elementwise binary operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a * b
    Mul,
    /// a / b
    Div,
    /// silu(a) · b (`wasi:tensor-fused`'s `swiglu`; floats only)
    Swiglu,
}

impl BinaryOp {
    /// The WIT function's name.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Swiglu => "swiglu",
        }
    }
}

/// Elementwise unary operations on floats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    /// x · factor
    Scale(f32),
    /// exact GELU
    Gelu,
    /// tanh-approximated GELU
    GeluTanh,
    /// x · sigmoid(x)
    Silu,
    /// max(x, 0)
    Relu,
    /// tanh(x)
    Tanh,
    /// e^x
    Exp,
}

impl UnaryOp {
    /// The WIT function's name.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Scale(_) => "scale",
            UnaryOp::Gelu => "gelu",
            UnaryOp::GeluTanh => "gelu-tanh",
            UnaryOp::Silu => "silu",
            UnaryOp::Relu => "relu",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Exp => "exp",
        }
    }
}

/// Which normalization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// (x - mean) / sqrt(var + eps)
    Layer,
    /// x / sqrt(mean(x²) + eps)
    Rms,
}

/// Rotary embedding pair layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// (x[2i], x[2i+1])
    Interleaved,
    /// (x[i], x[i + d/2])
    HalfSplit,
}

/// A validated batched matrix product.
#[derive(Debug, Clone)]
pub struct MatmulPlan {
    /// Output batch dimensions (broadcast of both operands').
    pub batch: Vec<usize>,
    /// Rows of the output.
    pub m: usize,
    /// Columns of the output.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Whether `a` is stored [.., k, m].
    pub transpose_a: bool,
    /// Whether `b` is stored [.., n, k].
    pub transpose_b: bool,
}

/// How the guest passed a `decode-attention`'s new queries, keys and values.
#[derive(Debug, Clone, Copy)]
pub enum Operands<'a> {
    /// `decode-attention`: q [rows, heads · dim], k and v [rows, kv_heads · dim].
    Separate {
        /// New queries.
        q: &'a Tensor,
        /// New keys.
        k: &'a Tensor,
        /// New values.
        v: &'a Tensor,
    },
    /// `decode-attention-qkv`: [rows, (heads + 2 · kv_heads) · dim], q then k then v.
    Packed(&'a Tensor),
}

/// The inputs of one `decode-attention` (`wasi:tensor-fused`), as the guest
/// passed them.
#[derive(Debug)]
pub struct DecodeArgs<'a> {
    /// New queries, keys and values.
    pub operands: Operands<'a>,
    /// Key cache [rows, kv_heads, capacity, dim].
    pub keys: &'a Tensor,
    /// Value cache [rows, kv_heads, capacity, dim].
    pub values: &'a Tensor,
    /// Each row's position, below `capacity`.
    pub positions: &'a [u32],
    /// Rotary base.
    pub theta: f32,
    /// Rotary pair layout.
    pub layout: RopeLayout,
    /// Score scale.
    pub scale: f32,
    /// Whether the guest gave the caches over (`decode-attention-update`):
    /// the op layer may then let the backend write into them.
    pub owned: bool,
}

/// Columns `at..` of each row of a 2-d tensor: one of `decode-attention`'s
/// operands, alone (`at` 0) or beside the others in a packed tensor.
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    /// The tensor [rows, stride].
    pub tensor: &'a Tensor,
    /// The first column.
    pub at: usize,
}

impl Columns<'_> {
    /// Elements from one row to the next.
    pub fn stride(&self) -> usize {
        self.tensor.shape()[1]
    }
}

/// A validated `decode-attention` (checked in `fused.rs`): per row r, the
/// query and key rotated at `positions[r]`, the key and value written there
/// (in copies of the caches, or in the caches when `in_place`), attention
/// over positions `0..=positions[r]`.
#[derive(Debug)]
pub struct DecodeAttention<'a> {
    /// The inputs.
    pub args: &'a DecodeArgs<'a>,
    /// Each row's query heads, side by side.
    pub q: Columns<'a>,
    /// Each row's key heads.
    pub k: Columns<'a>,
    /// Each row's value heads.
    pub v: Columns<'a>,
    /// Rows (sequences).
    pub rows: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (`heads` is a multiple).
    pub kv_heads: usize,
    /// Cache positions per row.
    pub capacity: usize,
    /// Head width (even).
    pub dim: usize,
    /// Write the new keys and values into the caches' own memory: set by
    /// the op layer only for caches the guest gave over, that nothing else
    /// shares, and that the backend called them [`Backend::writable`].
    pub in_place: bool,
}

/// A tensor backend: computes validated operations.
pub trait Backend: Send + Sync + 'static {
    /// Short name for logs ("cpu", "cuda:0").
    fn name(&self) -> String;
    /// Whether ops only enqueue work and return at once (so the host runs
    /// them on the serving thread); `download` is then the waiting call.
    fn enqueues(&self) -> bool {
        false
    }
    /// The most axes a broadcasting binary op takes here; past it the op
    /// layer computes on the CPU over a copy.
    fn max_broadcast_rank(&self) -> usize {
        usize::MAX
    }
    /// Starts recording this instance's ops as the step `key`, to be
    /// issued together ([`Backend::run_recorded`]); results are the same.
    /// By default nothing is recorded: each op runs when called.
    fn record(&self, _key: u64) -> TResult<()> {
        Ok(())
    }
    /// Issues what was recorded since [`Backend::record`] and stops
    /// recording.
    fn run_recorded(&self) -> TResult<()> {
        Ok(())
    }
    /// Waits until all work issued through this backend has finished.
    fn synchronize(&self) -> TResult<()> {
        Ok(())
    }
    /// Moves host elements into backend storage.
    fn upload(&self, data: CpuData) -> TResult<Data>;
    /// Copies little-endian bytes (a whole number of `dtype` elements) into
    /// backend storage.
    fn upload_bytes(&self, bytes: &[u8], dtype: DType) -> TResult<Data> {
        self.upload(CpuData::from_le_bytes(bytes, dtype))
    }
    /// Copies a tensor's elements back to the host (waits for pending work).
    fn download(&self, x: &Tensor) -> TResult<CpuData>;
    /// Batched matrix product.
    fn matmul(&self, a: &Tensor, b: &Tensor, plan: &MatmulPlan) -> TResult<Data>;
    /// Broadcasting elementwise binary operation producing `out_shape`.
    fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor, out_shape: &[usize]) -> TResult<Data>;
    /// Elementwise unary operation (floats).
    fn unary(&self, op: UnaryOp, x: &Tensor) -> TResult<Data>;
    /// Softmax over `axis` (causal only over the last axis).
    fn softmax(&self, x: &Tensor, axis: usize, causal: bool) -> TResult<Data>;
    /// Layer or RMS normalization over the last axis.
    fn norm(
        &self,
        kind: NormKind,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> TResult<Data>;
    /// Scaled dot-product attention, [b, h, s, d] layout.
    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        scale: f32,
        causal: bool,
    ) -> TResult<Data>;
    /// Rows of `table` picked by `ids`.
    fn embedding(&self, table: &Tensor, ids: &Tensor) -> TResult<Data>;
    /// Axis reordering.
    fn permute(&self, x: &Tensor, dims: &[usize]) -> TResult<Data>;
    /// A slice along one axis.
    fn narrow(&self, x: &Tensor, axis: usize, start: usize, len: usize) -> TResult<Data>;
    /// Joins along `axis`.
    fn concat(&self, xs: &[&Tensor], axis: usize) -> TResult<Data>;
    /// Rotary position embedding.
    fn rope(&self, x: &Tensor, offset: usize, theta: f32, layout: RopeLayout) -> TResult<Data>;
    /// Indices (i64) of the maxima along `axis`.
    fn argmax(&self, x: &Tensor, axis: usize) -> TResult<Data>;
    /// The `k` largest along the last axis and their indices (i64).
    fn top_k(&self, x: &Tensor, k: usize) -> TResult<(Data, Data)>;
    /// (Masked) mean along `axis`.
    fn mean(&self, x: &Tensor, axis: usize, mask: Option<&Tensor>) -> TResult<Data>;
    /// L2 normalization along `axis`.
    fn l2_normalize(&self, x: &Tensor, axis: usize, eps: f32) -> TResult<Data>;
    /// Element type conversion.
    fn cast(&self, x: &Tensor, dtype: DType) -> TResult<Data>;
    /// `decode-attention`: the attended values [rows, heads · dim] and the
    /// updated key and value caches, or `None` for them when `a.in_place`
    /// (written where they are).
    fn decode_attention(&self, a: &DecodeAttention<'_>) -> TResult<(Data, Option<(Data, Data)>)>;
    /// Whether this backend may write into `x`'s memory in order with the
    /// rest of its work (see [`DecodeAttention::in_place`]). By default no:
    /// the caches are copied.
    fn writable(&self, _x: &Tensor) -> bool {
        false
    }
    /// `add-rms-norm`: `x + y` and its RMS norm over the last axis (`x` and
    /// `y` of one shape). By default the two ops one after the other; a
    /// backend that launches kernels does both in one.
    fn add_rms_norm(
        &self,
        x: &Tensor,
        y: &Tensor,
        weight: Option<&Tensor>,
        eps: f32,
    ) -> TResult<(Data, Data)> {
        let sum = self.binary(BinaryOp::Add, x, y, x.shape())?;
        let sum = Tensor::new(x.shape().to_vec(), x.dtype(), sum, None);
        let normed = self.norm(NormKind::Rms, &sum, weight, None, eps)?;
        let (sum, _) = sum.into_parts().map_err(|_| {
            super::error::TensorError::Backend("add-rms-norm: the sum is shared".into())
        })?;
        Ok((sum, normed))
    }
}
