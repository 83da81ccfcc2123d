//! GGUF (llama.cpp's model format, versions 2 and 3): metadata and tensors,
//! with quantized blocks dequantized to f32 on load. Every length, count and
//! offset is checked against the file, so a malformed file is an error, never
//! a panic.

use super::loaded::MetaValue;
use super::storage::CpuData;
use anyhow::{Context, Result, bail, ensure};
use half::{bf16, f16};

use super::loaded::{LoadedFile, LoadedTensor};

/// The most tensors or metadata entries accepted.
const MAX_ENTRIES: u64 = 1 << 20;

/// Parses a whole GGUF file: its tensors (in file order) and metadata.
pub fn parse(bytes: &[u8]) -> Result<LoadedFile> {
    let mut r = Reader { bytes, at: 0 };
    ensure!(r.take(4)? == b"GGUF", "not a GGUF file (bad magic)");
    let version = r.u32()?;
    ensure!(
        version == 2 || version == 3,
        "unsupported GGUF version {version} (2 and 3 are)"
    );
    let tensors = r.u64()?;
    let entries = r.u64()?;
    ensure!(
        tensors <= MAX_ENTRIES && entries <= MAX_ENTRIES,
        "implausible GGUF header ({tensors} tensors, {entries} metadata entries)"
    );
    let (metadata, alignment) = r.metadata(entries)?;
    let mut infos = Vec::with_capacity(tensors as usize);
    for _ in 0..tensors {
        infos.push(r.tensor_info()?);
    }
    let start = (r.at as u64).div_ceil(alignment) * alignment;
    let out = infos
        .into_iter()
        .map(|info| info.read(bytes, start))
        .collect::<Result<_>>()?;
    Ok((out, metadata))
}

/// A tensor's entry in the header: where its data lies, relative to the
/// data section.
struct TensorInfo {
    name: String,
    dims: Vec<u64>,
    ty: u32,
    offset: u64,
}

impl TensorInfo {
    /// Decodes the tensor's data from `bytes` (the data section at `start`).
    fn read(self, bytes: &[u8], start: u64) -> Result<LoadedTensor> {
        let Self {
            name,
            dims,
            ty,
            offset,
        } = self;
        let n = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= 1 << 40)
            .with_context(|| format!("tensor `{name}`: implausible dimensions {dims:?}"))?;
        let (block, block_bytes) = block_size(ty).with_context(|| {
            format!(
                "tensor `{name}`: unsupported GGUF tensor type {}",
                type_name(ty)
            )
        })?;
        ensure!(
            n % block == 0,
            "tensor `{name}`: {n} elements is not a multiple of the {}-element block",
            block
        );
        let len = n / block * block_bytes;
        let begin = start
            .checked_add(offset)
            .filter(|b| b.checked_add(len).is_some_and(|e| e <= bytes.len() as u64));
        let Some(begin) = begin else {
            bail!("tensor `{name}`: data at {offset} (+{len} bytes) lies outside the file");
        };
        let data = &bytes[begin as usize..(begin + len) as usize];
        // GGUF lists the innermost dimension first.
        let shape: Vec<usize> = dims.iter().rev().map(|&d| d as usize).collect();
        Ok((name, shape, decode(ty, data)))
    }
}

/// Elements per block and bytes per block of a GGML type.
fn block_size(ty: u32) -> Option<(u64, u64)> {
    Some(match ty {
        0 => (1, 4),   // F32
        1 => (1, 2),   // F16
        2 => (32, 18), // Q4_0
        3 => (32, 20), // Q4_1
        8 => (32, 34), // Q8_0
        24 => (1, 1),  // I8
        25 => (1, 2),  // I16
        26 => (1, 4),  // I32
        27 => (1, 8),  // I64
        28 => (1, 8),  // F64
        30 => (1, 2),  // BF16
        _ => return None,
    })
}

fn type_name(ty: u32) -> String {
    let known = [
        (6, "Q5_0"),
        (7, "Q5_1"),
        (9, "Q8_1"),
        (10, "Q2_K"),
        (11, "Q3_K"),
        (12, "Q4_K"),
        (13, "Q5_K"),
        (14, "Q6_K"),
        (15, "Q8_K"),
    ];
    known
        .iter()
        .find(|(t, _)| *t == ty)
        .map_or(format!("#{ty}"), |(_, n)| n.to_string())
}

fn half_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Decodes checked-length data of type `ty` (see `block_size`).
fn decode(ty: u32, data: &[u8]) -> CpuData {
    match ty {
        0 => CpuData::from_le_bytes(data, super::DType::F32),
        1 => CpuData::from_le_bytes(data, super::DType::F16),
        30 => CpuData::BF16(
            data.chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        26 => CpuData::from_le_bytes(data, super::DType::I32),
        27 => CpuData::from_le_bytes(data, super::DType::I64),
        24 => CpuData::I32(data.iter().map(|&b| b as i8 as i32).collect()),
        25 => CpuData::I32(
            data.chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i32)
                .collect(),
        ),
        28 => CpuData::F32(
            data.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
        ),
        2 | 3 => {
            // 32 4-bit values per block: low nibbles are elements 0..16, high 16..32.
            let with_min = ty == 3;
            let bytes = if with_min { 20 } else { 18 };
            let mut out = Vec::with_capacity(data.len() / bytes * 32);
            for b in data.chunks_exact(bytes) {
                let d = half_at(b, 0);
                let (m, qs) = if with_min {
                    (half_at(b, 2), &b[4..])
                } else {
                    (-8.0 * d, &b[2..])
                };
                out.extend(qs.iter().map(|&q| (q & 0x0f) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
            CpuData::F32(out)
        }
        8 => {
            let mut out = Vec::with_capacity(data.len() / 34 * 32);
            for b in data.chunks_exact(34) {
                let d = half_at(b, 0);
                out.extend(b[2..].iter().map(|&q| q as i8 as f32 * d));
            }
            CpuData::F32(out)
        }
        _ => unreachable!("checked by block_size"),
    }
}

/// A bounds-checked cursor over the file.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// `entries` metadata entries, and the data alignment they set.
    fn metadata(&mut self, entries: u64) -> Result<(Vec<(String, MetaValue)>, u64)> {
        let mut metadata = Vec::with_capacity(entries as usize);
        let mut alignment = 32u64;
        for _ in 0..entries {
            let key = self.string()?;
            let ty = self.u32()?;
            let value = self
                .value(ty)
                .with_context(|| format!("metadata `{key}`"))?;
            if key == "general.alignment"
                && let MetaValue::Integer(a) = value
            {
                ensure!(
                    a > 0 && (a as u64).is_power_of_two(),
                    "general.alignment {a} is not a power of two"
                );
                alignment = a as u64;
            }
            metadata.push((key, value));
        }
        Ok((metadata, alignment))
    }

    /// One tensor's header entry.
    fn tensor_info(&mut self) -> Result<TensorInfo> {
        let name = self.string()?;
        let rank = self.u32()?;
        ensure!(rank <= 8, "tensor `{name}`: rank {rank} is too large");
        let mut dims = Vec::with_capacity(rank as usize);
        for _ in 0..rank {
            dims.push(self.u64()?);
        }
        let ty = self.u32()?;
        let offset = self.u64()?;
        Ok(TensorInfo {
            name,
            dims,
            ty,
            offset,
        })
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let end = (self.at as u64)
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len() as u64)
            .with_context(|| {
                format!(
                    "truncated GGUF file (needed {n} bytes at offset {})",
                    self.at
                )
            })?;
        let s = &self.bytes[self.at..end as usize];
        self.at = end as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N as u64)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u64()?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).context("a GGUF string is not UTF-8")
    }

    /// A scalar of GGUF value type `ty` (not string or array).
    fn scalar(&mut self, ty: u32) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::Integer(self.array::<1>()?[0] as i64),
            1 => MetaValue::Integer(self.array::<1>()?[0] as i8 as i64),
            2 => MetaValue::Integer(u16::from_le_bytes(self.array()?) as i64),
            3 => MetaValue::Integer(i16::from_le_bytes(self.array()?) as i64),
            4 => MetaValue::Integer(self.u32()? as i64),
            5 => MetaValue::Integer(i32::from_le_bytes(self.array()?) as i64),
            6 => MetaValue::Float(f32::from_le_bytes(self.array()?) as f64),
            7 => MetaValue::Boolean(self.array::<1>()?[0] != 0),
            10 => MetaValue::Integer(self.u64()? as i64),
            11 => MetaValue::Integer(i64::from_le_bytes(self.array()?)),
            12 => MetaValue::Float(f64::from_le_bytes(self.array()?)),
            8 => MetaValue::Text(self.string()?),
            other => bail!("unknown GGUF value type {other}"),
        })
    }

    fn value(&mut self, ty: u32) -> Result<MetaValue> {
        if ty != 9 {
            return self.scalar(ty);
        }
        let elem = self.u32()?;
        let count = self.u64()?;
        // Each element takes at least one byte: bound the count by what is left.
        ensure!(
            count <= (self.bytes.len() - self.at) as u64,
            "GGUF array of {count} elements is longer than the file"
        );
        let mut texts = Vec::new();
        let mut ints = Vec::new();
        let mut floats = Vec::new();
        for _ in 0..count {
            match self.scalar(elem)? {
                MetaValue::Text(s) => texts.push(s),
                MetaValue::Integer(i) => ints.push(i),
                MetaValue::Boolean(b) => ints.push(b as i64),
                MetaValue::Float(f) => floats.push(f),
                _ => unreachable!("scalars only"),
            }
        }
        Ok(match elem {
            8 => MetaValue::TextList(texts),
            6 | 12 => MetaValue::FloatList(floats),
            _ => MetaValue::IntegerList(ints),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_files_are_errors() {
        for bytes in [
            &b""[..],
            b"GGUF",
            b"GGML\x03\0\0\0",
            b"GGUF\x09\0\0\0",
            b"GGUF\x03\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff\0\0\0\0\0\0\0\0",
            b"GGUF\x03\0\0\0\0\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff",
        ] {
            assert!(parse(bytes).is_err());
        }
    }
}
