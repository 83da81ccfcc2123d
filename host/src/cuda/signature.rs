//! Kernel signatures and launch-argument checks, independent of any device.
//!
//! A vetted module declares each kernel on an `@kernel` line, e.g.
//! `// @kernel saxpy(alpha: f32, x: f32[n], y: f32[n], n: u64)`: scalars by
//! kind, pointers by element type and extent (a product of scalar
//! parameters and integer literals, in elements). Before a launch the host
//! checks each argument's kind against the declaration and that each
//! pointer, from its offset, has room for its extent and is aligned for its
//! element type.

use std::fmt;

/// A parameter kind as the guest declares it (`wasi:cuda/kernels.param-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 32-bit signed integer.
    I32,
    /// 32-bit unsigned integer.
    U32,
    /// 64-bit signed integer.
    I64,
    /// 64-bit unsigned integer.
    U64,
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// A device pointer.
    Pointer,
}

impl Kind {
    fn scalar(name: &str) -> Option<Self> {
        Some(match name {
            "i32" => Kind::I32,
            "u32" => Kind::U32,
            "i64" => Kind::I64,
            "u64" => Kind::U64,
            "f32" => Kind::F32,
            "f64" => Kind::F64,
            _ => return None,
        })
    }

    /// The WIT name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::I32 => "i32",
            Kind::U32 => "u32",
            Kind::I64 => "i64",
            Kind::U64 => "u64",
            Kind::F32 => "f32",
            Kind::F64 => "f64",
            Kind::Pointer => "pointer",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One factor of a pointer's extent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Factor {
    /// The value of the scalar parameter at this position.
    Param(usize),
    /// A literal.
    Const(u64),
}

/// A declared parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Param {
    Scalar(Kind),
    /// Elements of `elem` bytes, `extent` of them.
    Pointer {
        elem: u64,
        extent: Vec<Factor>,
    },
}

/// A kernel's declared signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The `extern "C"` function name.
    pub name: String,
    names: Vec<String>,
    params: Vec<Param>,
}

fn elem_size(name: &str) -> Option<u64> {
    Some(match name {
        "u8" | "i8" => 1,
        "f16" | "bf16" | "i16" | "u16" => 2,
        "f32" | "i32" | "u32" => 4,
        "f64" | "i64" | "u64" => 8,
        _ => return None,
    })
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Parses one parameter type of function `name`: a scalar kind or
/// `elem[extent]`, whose extent factors are constants or earlier integer
/// parameters (`names`, with their types `raw`).
fn param(name: &str, ty: &str, names: &[String], raw: &[String]) -> Result<Param, String> {
    let Some((elem, extent)) = ty.split_once('[') else {
        let kind = Kind::scalar(ty).ok_or_else(|| format!("{name}: unknown type `{ty}`"))?;
        return Ok(Param::Scalar(kind));
    };
    let elem =
        elem_size(elem.trim()).ok_or_else(|| format!("{name}: unknown element type `{elem}`"))?;
    let extent = extent
        .strip_suffix(']')
        .ok_or_else(|| format!("{name}: `{ty}`: missing `]`"))?;
    let factor = |f: &str| {
        let f = f.trim();
        if let Ok(v) = f.parse() {
            return Ok(Factor::Const(v));
        }
        let i = names
            .iter()
            .position(|n| n == f)
            .ok_or_else(|| format!("{name}: extent `{f}` names no parameter"))?;
        match Kind::scalar(&raw[i]) {
            Some(Kind::F32 | Kind::F64) | None => {
                Err(format!("{name}: extent `{f}` is not an integer parameter"))
            }
            Some(_) => Ok(Factor::Param(i)),
        }
    };
    let extent = extent
        .split('*')
        .map(factor)
        .collect::<Result<_, String>>()?;
    Ok(Param::Pointer { elem, extent })
}

impl Signature {
    /// Parses `name(p: kind, q: elem[extent], ...)`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (name, rest) = text
            .split_once('(')
            .ok_or_else(|| format!("`{text}`: expected name(params)"))?;
        let inner = rest
            .strip_suffix(')')
            .ok_or_else(|| format!("`{text}`: missing `)`"))?;
        let name = name.trim();
        if !is_ident(name) {
            return Err(format!("`{name}` is not a function name"));
        }
        let mut names = Vec::new();
        let mut raw = Vec::new();
        for p in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (pname, ty) = p
                .split_once(':')
                .ok_or_else(|| format!("{name}: `{p}`: expected `name: type`"))?;
            let (pname, ty) = (pname.trim(), ty.trim());
            if !is_ident(pname) || names.iter().any(|n| n == pname) {
                return Err(format!("{name}: bad or repeated parameter name `{pname}`"));
            }
            names.push(pname.to_string());
            raw.push(ty.to_string());
        }
        let params = raw
            .iter()
            .map(|ty| param(name, ty, &names, &raw))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            name: name.to_string(),
            names,
            params,
        })
    }

    /// The parameter kinds, in order.
    pub fn kinds(&self) -> Vec<Kind> {
        self.params
            .iter()
            .map(|p| match p {
                Param::Scalar(k) => *k,
                Param::Pointer { .. } => Kind::Pointer,
            })
            .collect()
    }
}

/// Every `@kernel` signature in a module's source.
pub fn declared(source: &str) -> Result<Vec<Signature>, String> {
    source
        .lines()
        .filter_map(|l| {
            l.trim_start()
                .strip_prefix("//")?
                .trim()
                .strip_prefix("@kernel ")
        })
        .map(Signature::parse)
        .collect()
}

/// One launch argument as the checks see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    /// A 32-bit signed integer.
    I32(i32),
    /// A 32-bit unsigned integer.
    U32(u32),
    /// A 64-bit signed integer.
    I64(i64),
    /// A 64-bit unsigned integer.
    U64(u64),
    /// A 32-bit float.
    F32(f32),
    /// A 64-bit float.
    F64(f64),
    /// A pointer `offset` bytes into a buffer of `size` bytes.
    Pointer {
        /// Bytes from the buffer's start.
        offset: u64,
        /// The buffer's size.
        size: u64,
    },
}

impl Arg {
    fn kind(&self) -> Kind {
        match self {
            Arg::I32(_) => Kind::I32,
            Arg::U32(_) => Kind::U32,
            Arg::I64(_) => Kind::I64,
            Arg::U64(_) => Kind::U64,
            Arg::F32(_) => Kind::F32,
            Arg::F64(_) => Kind::F64,
            Arg::Pointer { .. } => Kind::Pointer,
        }
    }

    /// The integer value, when it is one and not negative.
    fn count(&self) -> Option<u64> {
        match *self {
            Arg::I32(v) => u64::try_from(v).ok(),
            Arg::U32(v) => Some(v as u64),
            Arg::I64(v) => u64::try_from(v).ok(),
            Arg::U64(v) => Some(v),
            _ => None,
        }
    }

    /// The argument's bytes as `cuLaunchKernel` reads them (`pointer` is the
    /// device address the pointer argument resolves to).
    pub fn bytes(&self, pointer: u64) -> [u8; 8] {
        let mut b = [0u8; 8];
        match *self {
            Arg::I32(v) => b[..4].copy_from_slice(&v.to_le_bytes()),
            Arg::U32(v) => b[..4].copy_from_slice(&v.to_le_bytes()),
            Arg::F32(v) => b[..4].copy_from_slice(&v.to_le_bytes()),
            Arg::I64(v) => b = v.to_le_bytes(),
            Arg::U64(v) => b = v.to_le_bytes(),
            Arg::F64(v) => b = v.to_le_bytes(),
            Arg::Pointer { .. } => b = pointer.to_le_bytes(),
        }
        b
    }
}

/// Why a launch's arguments were refused.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgError {
    /// Wrong number or kind of arguments.
    Signature(String),
    /// A pointer without room for its extent.
    OutOfBounds {
        /// Offset of the access.
        offset: u64,
        /// Bytes the kernel may touch.
        length: u64,
        /// The buffer's size.
        size: u64,
    },
    /// A negative extent, an overflowing one, a misaligned pointer.
    Invalid(String),
}

/// Checks `args` against the `declared` kinds and, for a vetted kernel,
/// its signature's extents.
pub fn check(declared: &[Kind], sig: Option<&Signature>, args: &[Arg]) -> Result<(), ArgError> {
    if args.len() != declared.len() {
        return Err(ArgError::Signature(format!(
            "the kernel takes {} arguments, {} were given",
            declared.len(),
            args.len()
        )));
    }
    for (i, (a, k)) in args.iter().zip(declared).enumerate() {
        if a.kind() != *k {
            return Err(ArgError::Signature(format!(
                "argument {i} is {}, the kernel declares {k}",
                a.kind()
            )));
        }
        if let Arg::Pointer { offset, size } = *a
            && offset > size
        {
            return Err(ArgError::OutOfBounds {
                offset,
                length: 0,
                size,
            });
        }
    }
    let Some(sig) = sig else { return Ok(()) };
    for (i, p) in sig.params.iter().enumerate() {
        if let (Param::Pointer { elem, extent }, Arg::Pointer { offset, size }) = (p, &args[i]) {
            check_extent(sig, i, *elem, extent, args, *offset, *size)?;
        }
    }
    Ok(())
}

/// Checks that pointer argument `i` (at `offset` into a buffer of `size`
/// bytes) covers its declared extent of `elem`-byte elements.
fn check_extent(
    sig: &Signature,
    i: usize,
    elem: u64,
    extent: &[Factor],
    args: &[Arg],
    offset: u64,
    size: u64,
) -> Result<(), ArgError> {
    let overflow = || {
        ArgError::Invalid(format!(
            "{}: the extent of `{}` overflows",
            sig.name, sig.names[i]
        ))
    };
    let mut count: u64 = 1;
    for f in extent {
        let v = match f {
            Factor::Const(c) => *c,
            Factor::Param(j) => args[*j].count().ok_or_else(|| {
                ArgError::Invalid(format!("{}: `{}` is negative", sig.name, sig.names[*j]))
            })?,
        };
        count = count.checked_mul(v).ok_or_else(overflow)?;
    }
    let length = count.checked_mul(elem).ok_or_else(overflow)?;
    if !offset.is_multiple_of(elem) {
        return Err(ArgError::Invalid(format!(
            "{}: `{}` at byte offset {offset} is not aligned to its {elem}-byte elements",
            sig.name, sig.names[i]
        )));
    }
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(ArgError::OutOfBounds {
            offset,
            length,
            size,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saxpy() -> Signature {
        Signature::parse("saxpy(alpha: f32, x: f32[n], y: f32[n], n: u64)").unwrap()
    }

    #[test]
    fn parses_kinds_and_rejects_bad_declarations() {
        let s = saxpy();
        assert_eq!(
            s.kinds(),
            [Kind::F32, Kind::Pointer, Kind::Pointer, Kind::U64]
        );
        let t = Signature::parse("t(a: f32[r*c*2], r: u32, c: i32)").unwrap();
        assert_eq!(t.kinds(), [Kind::Pointer, Kind::U32, Kind::I32]);
        assert!(Signature::parse("empty()").unwrap().kinds().is_empty());
        for bad in [
            "k(a: f32[m], n: u32)",
            "k(a: f32[x], x: f32)",
            "k(a: q32)",
            "k(a: f32[n, n: u32)",
            "k a: u32",
            "k(a: u32, a: u32)",
            "1k()",
        ] {
            assert!(Signature::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_vetted_declaration_parses() {
        for m in super::super::vetted::MODULES {
            let sigs = declared(m.source).unwrap();
            assert!(!sigs.is_empty(), "{}", m.name);
            for s in sigs {
                assert!(
                    m.source.contains(&format!("void {}(", s.name)),
                    "{}: {} not defined",
                    m.name,
                    s.name
                );
            }
        }
    }

    #[test]
    fn checks_kinds_extents_offsets_and_alignment() {
        let s = saxpy();
        let k = s.kinds();
        let ptr = |offset, size| Arg::Pointer { offset, size };
        let ok = [Arg::F32(2.0), ptr(0, 40), ptr(8, 48), Arg::U64(10)];
        assert_eq!(check(&k, Some(&s), &ok), Ok(()));
        // n = 11 needs 44 bytes from x's offset 0 in a 40-byte buffer.
        let long = [Arg::F32(2.0), ptr(0, 40), ptr(0, 48), Arg::U64(11)];
        assert_eq!(
            check(&k, Some(&s), &long),
            Err(ArgError::OutOfBounds {
                offset: 0,
                length: 44,
                size: 40
            })
        );
        let offset = [Arg::F32(2.0), ptr(0, 40), ptr(12, 48), Arg::U64(10)];
        assert!(matches!(
            check(&k, Some(&s), &offset),
            Err(ArgError::OutOfBounds { offset: 12, .. })
        ));
        let misaligned = [Arg::F32(2.0), ptr(2, 40), ptr(0, 48), Arg::U64(1)];
        assert!(matches!(
            check(&k, Some(&s), &misaligned),
            Err(ArgError::Invalid(_))
        ));
        let huge = [Arg::F32(2.0), ptr(0, 40), ptr(0, 48), Arg::U64(u64::MAX)];
        assert!(matches!(
            check(&k, Some(&s), &huge),
            Err(ArgError::Invalid(_))
        ));
        let wrong_kind = [Arg::F64(2.0), ptr(0, 40), ptr(0, 48), Arg::U64(1)];
        assert!(matches!(
            check(&k, Some(&s), &wrong_kind),
            Err(ArgError::Signature(_))
        ));
        assert!(matches!(
            check(&k, Some(&s), &ok[..3]),
            Err(ArgError::Signature(_))
        ));
        let t = Signature::parse("s(x: i64[n], f: i64, n: i32)").unwrap();
        let neg = [ptr(0, 8), Arg::I64(3), Arg::I32(-1)];
        assert!(matches!(
            check(&t.kinds(), Some(&t), &neg),
            Err(ArgError::Invalid(_))
        ));
        // An unvetted kernel: kinds and in-buffer offsets only.
        let past = [ptr(9, 8), Arg::I64(3), Arg::I32(1)];
        assert!(matches!(
            check(&t.kinds(), None, &past),
            Err(ArgError::OutOfBounds { offset: 9, .. })
        ));
        assert_eq!(
            check(&t.kinds(), None, &[ptr(8, 8), Arg::I64(3), Arg::I32(1000)]),
            Ok(())
        );
    }

    #[test]
    fn arguments_marshal_little_endian() {
        assert_eq!(Arg::I32(-2).bytes(0)[..4], (-2i32).to_le_bytes());
        assert_eq!(Arg::F64(1.5).bytes(0), 1.5f64.to_le_bytes());
        assert_eq!(
            Arg::Pointer { offset: 4, size: 8 }.bytes(0xdead),
            0xdeadu64.to_le_bytes()
        );
    }
}
