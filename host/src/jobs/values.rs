//! Component values as JSON, for the jobs API (docs/OPERATIONS.md, "Jobs"):
//! numbers, booleans and strings as themselves (a `char` is a one-character
//! string; a float may also be `"nan"`, `"inf"`, `"-inf"`), lists and tuples
//! as arrays, records as objects keyed by field name, enums as their case's
//! name, variants as `{"case": payload}` (or `"case"` without one), options
//! as `null` or the value, results as `{"ok": v}` / `{"err": e}`, flags as
//! an array of names, maps as an array of `[key, value]` pairs. Resources,
//! futures and streams have no JSON form.

use anyhow::{Result, anyhow, bail};
use serde_json::{Value, json};
use wasmtime::component::{Type, Val, types};

/// `value` as a component value of type `ty`.
pub fn from_json(value: &Value, ty: &Type) -> Result<Val> {
    let int = |min: i128, max: i128| int(value, min, max);
    Ok(match ty {
        Type::Bool => Val::Bool(
            value
                .as_bool()
                .ok_or_else(|| expected("a boolean", value))?,
        ),
        Type::S8 => Val::S8(int(i8::MIN.into(), i8::MAX.into())? as i8),
        Type::U8 => Val::U8(int(0, u8::MAX.into())? as u8),
        Type::S16 => Val::S16(int(i16::MIN.into(), i16::MAX.into())? as i16),
        Type::U16 => Val::U16(int(0, u16::MAX.into())? as u16),
        Type::S32 => Val::S32(int(i32::MIN.into(), i32::MAX.into())? as i32),
        Type::U32 => Val::U32(int(0, u32::MAX.into())? as u32),
        Type::S64 => Val::S64(int(i64::MIN.into(), i64::MAX.into())? as i64),
        Type::U64 => Val::U64(int(0, u64::MAX.into())? as u64),
        Type::Float32 => Val::Float32(float(value)? as f32),
        Type::Float64 => Val::Float64(float(value)?),
        Type::Char => {
            let mut chars = string(value)?.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Val::Char(c),
                _ => bail!("expected one character, got {value}"),
            }
        }
        Type::String => Val::String(string(value)?.to_string()),
        Type::List(l) => Val::List(items(value, |_| Ok(l.ty()))?),
        Type::FixedLengthList(l) => Val::FixedLengthList(items(value, |_| Ok(l.ty()))?),
        Type::Tuple(t) => tuple(value, t)?,
        Type::Record(r) => record(value, r)?,
        Type::Variant(v) => variant(value, v)?,
        Type::Enum(e) => {
            let name = string(value)?;
            if e.names().all(|n| n != name) {
                bail!("no case `{name}` (cases: {})", names(e.names()));
            }
            Val::Enum(name.to_string())
        }
        Type::Option(o) => match value {
            Value::Null => Val::Option(None),
            v => Val::Option(Some(Box::new(from_json(v, &o.ty())?))),
        },
        Type::Result(r) => result(value, r)?,
        Type::Flags(f) => flags(value, f)?,
        Type::Map(m) => map(value, m)?,
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            bail!("resources, futures and streams cannot be passed as JSON")
        }
    })
}

/// `value` as an integer in `min..=max`.
fn int(value: &Value, min: i128, max: i128) -> Result<i128> {
    let n = value
        .as_i64()
        .map(i128::from)
        .or_else(|| value.as_u64().map(i128::from))
        .ok_or_else(|| expected("an integer", value))?;
    if n < min || n > max {
        bail!("{n} is out of range ({min}..={max})");
    }
    Ok(n)
}

fn tuple(value: &Value, t: &types::Tuple) -> Result<Val> {
    let types: Vec<Type> = t.types().collect();
    let vals = items(value, |i| {
        types.get(i).cloned().ok_or_else(|| anyhow!("too many"))
    })?;
    if vals.len() != types.len() {
        bail!("expected a tuple of {} values, got {value}", types.len());
    }
    Ok(Val::Tuple(vals))
}

fn record(value: &Value, r: &types::Record) -> Result<Val> {
    let object = value
        .as_object()
        .ok_or_else(|| expected("an object", value))?;
    if let Some(extra) = object.keys().find(|k| r.fields().all(|f| f.name != *k)) {
        bail!("the record has no field `{extra}`");
    }
    let fields = r.fields().map(|f| {
        let v = object.get(f.name).unwrap_or(&Value::Null);
        let val = from_json(v, &f.ty).map_err(|e| anyhow!("field `{}`: {e}", f.name))?;
        Ok((f.name.to_string(), val))
    });
    Ok(Val::Record(fields.collect::<Result<_>>()?))
}

fn variant(value: &Value, v: &types::Variant) -> Result<Val> {
    let (name, payload) = case(value)?;
    let case = v.cases().find(|c| c.name == name).ok_or_else(|| {
        anyhow!(
            "no case `{name}` (cases: {})",
            names(v.cases().map(|c| c.name))
        )
    })?;
    let payload = match (case.ty, payload) {
        (Some(t), Some(p)) => Some(Box::new(from_json(p, &t)?)),
        (None, None | Some(Value::Null)) => None,
        (Some(_), None) => bail!("case `{name}` takes a value: {{\"{name}\": ...}}"),
        (None, Some(_)) => bail!("case `{name}` takes no value"),
    };
    Ok(Val::Variant(name.to_string(), payload))
}

fn result(value: &Value, r: &types::ResultType) -> Result<Val> {
    let (name, payload) = case(value)?;
    let side = match name {
        "ok" => r.ok(),
        "err" => r.err(),
        _ => bail!("expected {{\"ok\": ...}} or {{\"err\": ...}}, got {value}"),
    };
    let payload = match (side, payload) {
        (Some(t), Some(p)) => Some(Box::new(from_json(p, &t)?)),
        (Some(_), None) => bail!("`{name}` takes a value"),
        (None, _) => None,
    };
    Ok(Val::Result(if name == "ok" {
        Ok(payload)
    } else {
        Err(payload)
    }))
}

fn flags(value: &Value, f: &types::Flags) -> Result<Val> {
    let set = items(value, |_| Ok(Type::String))?;
    let mut out = Vec::new();
    for v in set {
        let Val::String(n) = v else { unreachable!() };
        if f.names().all(|x| x != n) {
            bail!("no flag `{n}` (flags: {})", names(f.names()));
        }
        out.push(n);
    }
    Ok(Val::Flags(out))
}

fn map(value: &Value, m: &types::Map) -> Result<Val> {
    let pairs = value
        .as_array()
        .ok_or_else(|| expected("an array of [key, value] pairs", value))?;
    let mut out = Vec::new();
    for p in pairs {
        match p.as_array().map(Vec::as_slice) {
            Some([k, v]) => out.push((from_json(k, &m.key())?, from_json(v, &m.value())?)),
            _ => bail!("expected a [key, value] pair, got {p}"),
        }
    }
    Ok(Val::Map(out))
}

/// `val` as JSON (the inverse of [`from_json`]).
pub fn to_json(val: &Val) -> Value {
    match val {
        Val::Bool(b) => json!(b),
        Val::S8(n) => json!(n),
        Val::U8(n) => json!(n),
        Val::S16(n) => json!(n),
        Val::U16(n) => json!(n),
        Val::S32(n) => json!(n),
        Val::U32(n) => json!(n),
        Val::S64(n) => json!(n),
        Val::U64(n) => json!(n),
        Val::Float32(f) => float_json(f64::from(*f)),
        Val::Float64(f) => float_json(*f),
        Val::Char(c) => json!(c.to_string()),
        Val::String(s) => json!(s),
        Val::List(v) | Val::Tuple(v) | Val::FixedLengthList(v) => {
            Value::Array(v.iter().map(to_json).collect())
        }
        Val::Map(pairs) => Value::Array(
            pairs
                .iter()
                .map(|(k, v)| json!([to_json(k), to_json(v)]))
                .collect(),
        ),
        Val::Record(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
        Val::Variant(name, None) | Val::Enum(name) => json!(name),
        Val::Variant(name, Some(p)) => json!({ name: to_json(p) }),
        Val::Option(o) => o.as_deref().map_or(Value::Null, to_json),
        Val::Result(Ok(p)) => json!({ "ok": p.as_deref().map_or(Value::Null, to_json) }),
        Val::Result(Err(p)) => json!({ "err": p.as_deref().map_or(Value::Null, to_json) }),
        Val::Flags(names) => json!(names),
        Val::Resource(_) | Val::Future(_) | Val::Stream(_) | Val::ErrorContext(_) => {
            json!(format!("{val:?}"))
        }
    }
}

fn float(value: &Value) -> Result<f64> {
    match value {
        Value::Number(n) => n.as_f64().ok_or_else(|| expected("a number", value)),
        Value::String(s) if s == "nan" => Ok(f64::NAN),
        Value::String(s) if s == "inf" => Ok(f64::INFINITY),
        Value::String(s) if s == "-inf" => Ok(f64::NEG_INFINITY),
        _ => Err(expected("a number", value)),
    }
}

fn float_json(f: f64) -> Value {
    match f {
        f if f.is_nan() => json!("nan"),
        f if f.is_infinite() => json!(if f > 0.0 { "inf" } else { "-inf" }),
        f => json!(f),
    }
}

fn string(value: &Value) -> Result<&str> {
    value.as_str().ok_or_else(|| expected("a string", value))
}

/// An array's items, the `i`th as type `ty(i)`.
fn items(value: &Value, ty: impl Fn(usize) -> Result<Type>) -> Result<Vec<Val>> {
    let array = value
        .as_array()
        .ok_or_else(|| expected("an array", value))?;
    array
        .iter()
        .enumerate()
        .map(|(i, v)| from_json(v, &ty(i)?).map_err(|e| anyhow!("item {i}: {e}")))
        .collect()
}

/// A variant-like value: `"name"` or `{"name": payload}`.
fn case(value: &Value) -> Result<(&str, Option<&Value>)> {
    match value {
        Value::String(s) => Ok((s, None)),
        Value::Object(o) if o.len() == 1 => {
            let (k, v) = o.iter().next().expect("one entry");
            Ok((k, Some(v)))
        }
        _ => Err(expected("\"case\" or {\"case\": value}", value)),
    }
}

fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

fn expected(what: &str, value: &Value) -> anyhow::Error {
    anyhow!("expected {what}, got {value}")
}
