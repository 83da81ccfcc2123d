//! What a weights file parses into, whatever its format (safetensors in
//! `weights.rs`, GGUF in `gguf.rs`): tensors in host memory and metadata.

use super::storage::CpuData;

/// A metadata value (mirrors `wasi:tensor/weights.metadata-value`).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// A string.
    Text(String),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Boolean(bool),
    /// Strings.
    TextList(Vec<String>),
    /// Integers.
    IntegerList(Vec<i64>),
    /// Floats.
    FloatList(Vec<f64>),
}

/// One tensor read from a file: name, row-major shape (outermost first), elements.
pub type LoadedTensor = (String, Vec<usize>, CpuData);

/// A file's tensors (in file order) and metadata.
pub type LoadedFile = (Vec<LoadedTensor>, Vec<(String, MetaValue)>);
