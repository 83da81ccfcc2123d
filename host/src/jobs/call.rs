//! A call of one typed export of a job component: `name(args)` with
//! WAVE-encoded arguments (the syntax of `wasmtime run --invoke`), or a name
//! and JSON arguments ([`super::values`]). A name is a function exported at
//! the top level, `INTERFACE#FUNC` for one of an exported interface, or a
//! plain name found in exactly one exported interface.

use anyhow::{Context, Result, anyhow, bail};
use wasmtime::component::wasm_wave::{self, untyped::UntypedFuncCall};
use wasmtime::component::{
    Component, ComponentExportIndex, Func, Instance, Type, Val, types::ComponentItem,
};
use wasmtime::{AsContextMut, Engine};

/// The guest stopped during the call (a trap, its deadline, its memory cap).
#[derive(Debug)]
pub struct GuestStopped {
    /// Stopped at its deadline.
    pub interrupted: bool,
    /// What stopped it.
    pub cause: String,
}

impl std::fmt::Display for GuestStopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.cause)
    }
}

impl std::error::Error for GuestStopped {}

/// A parsed call, not yet typed.
#[derive(Debug, Clone)]
pub struct Call {
    name: String,
    args: Args,
}

#[derive(Debug, Clone)]
enum Args {
    /// The whole call's WAVE text.
    Wave(String),
    Json(Vec<serde_json::Value>),
}

impl Call {
    /// Parses `text` as a WAVE function call (types are checked later).
    pub fn parse(text: &str) -> Result<Self> {
        let call = UntypedFuncCall::parse(text).map_err(|e| anyhow!("invoke `{text}`: {e}"))?;
        Ok(Self {
            name: call.name().to_string(),
            args: Args::Wave(text.to_string()),
        })
    }

    /// A call of `name` with JSON arguments.
    pub fn json(name: &str, args: Vec<serde_json::Value>) -> Self {
        Self {
            name: name.to_string(),
            args: Args::Json(args),
        }
    }

    /// The call as text: its WAVE source, or `name(JSON, ...)`.
    pub fn text(&self) -> String {
        match &self.args {
            Args::Wave(source) => source.clone(),
            Args::Json(args) => format!(
                "{}({})",
                self.name,
                args.iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// The export this call names, in `component`.
    pub fn export(
        &self,
        engine: &Engine,
        component: &Component,
    ) -> Result<(Option<String>, String)> {
        let name = self.name.clone();
        if let Some((iface, func)) = name.rsplit_once('#') {
            return Ok((Some(iface.to_string()), func.to_string()));
        }
        let ty = component.component_type();
        if ty
            .exports(engine)
            .any(|(n, item)| n == name && matches!(item.ty, ComponentItem::ComponentFunc(_)))
        {
            return Ok((None, name));
        }
        let holders: Vec<String> = ty
            .exports(engine)
            .filter_map(|(n, item)| match item.ty {
                ComponentItem::ComponentInstance(i) => i
                    .exports(engine)
                    .any(|(f, _)| f == name)
                    .then(|| n.to_string()),
                _ => None,
            })
            .collect();
        match holders.as_slice() {
            [one] => Ok((Some(one.clone()), name)),
            [] => bail!(
                "invoke: the component exports no function `{name}` ({})",
                exported_functions(engine, component)
            ),
            many => bail!(
                "invoke: `{name}` is exported by {}; name one as INTERFACE#{name}",
                many.join(", ")
            ),
        }
    }

    /// The arguments as values of `types` (named `names`), or the error
    /// naming the parameter that does not fit.
    fn params(&self, names: &[String], types: &[Type]) -> Result<Vec<Val>> {
        let fail = |which: Option<usize>, e: &dyn std::fmt::Display| {
            let which = which
                .and_then(|i| names.get(i))
                .map_or(String::new(), |n| format!("parameter `{n}`: "));
            anyhow!(
                "invoke `{}`: {which}{e} (parameters: {})",
                self.text(),
                signature(names, types)
            )
        };
        match &self.args {
            Args::Wave(source) => {
                let call = UntypedFuncCall::parse(source).map_err(|e| fail(None, &e))?;
                call.to_wasm_params(types).map_err(|e| {
                    let at = e.span().start;
                    let which =
                        call.params_node()
                            .and_then(|p| p.as_tuple().ok())
                            .and_then(|args| {
                                args.enumerate()
                                    .find(|(_, n)| n.span().start <= at && at <= n.span().end)
                                    .map(|(i, _)| i)
                            });
                    fail(which, &e)
                })
            }
            Args::Json(args) => {
                if args.len() != types.len() {
                    let e = format!("{} arguments given, {} expected", args.len(), types.len());
                    return Err(fail(None, &e));
                }
                args.iter()
                    .zip(types)
                    .enumerate()
                    .map(|(i, (a, t))| {
                        super::values::from_json(a, t).map_err(|e| fail(Some(i), &e))
                    })
                    .collect()
            }
        }
    }

    /// Calls it on `instance`: its results.
    pub async fn call<S: AsContextMut<Data: Send>>(
        &self,
        mut store: S,
        instance: &Instance,
        (iface, func): &(Option<String>, String),
    ) -> Result<Vec<Val>> {
        let f = lookup(&mut store, instance, iface.as_deref(), func)?;
        let ty = f.ty(&store);
        let types: Vec<_> = ty.params().map(|(_, t)| t).collect();
        let names: Vec<String> = ty.params().map(|(n, _)| n.to_string()).collect();
        let params = self.params(&names, &types)?;
        let mut results = vec![Val::Bool(false); ty.results().len()];
        f.call_async(&mut store, &params, &mut results)
            .await
            .map_err(|e| GuestStopped {
                interrupted: matches!(
                    e.downcast_ref::<wasmtime::Trap>(),
                    Some(wasmtime::Trap::Interrupt)
                ),
                cause: e.root_cause().to_string(),
            })?;
        Ok(results)
    }
}

/// `val` as WAVE text.
pub fn wave(val: &Val) -> String {
    wasm_wave::to_string(val).unwrap_or_else(|e| format!("<cannot print: {e}>"))
}

fn lookup<S: AsContextMut>(
    store: &mut S,
    instance: &Instance,
    iface: Option<&str>,
    func: &str,
) -> Result<Func> {
    let parent: Option<ComponentExportIndex> = match iface {
        Some(i) => Some(
            instance
                .get_export_index(&mut *store, None, i)
                .with_context(|| format!("invoke: the component exports no interface `{i}`"))?,
        ),
        None => None,
    };
    let index = instance
        .get_export_index(&mut *store, parent.as_ref(), func)
        .with_context(|| {
            format!(
                "invoke: no function `{func}`{}",
                iface.map_or(String::new(), |i| format!(" in `{i}`"))
            )
        })?;
    instance
        .get_func(&mut *store, index)
        .with_context(|| format!("invoke: `{func}` is not a function"))
}

/// `name: type, ...` for an error message.
fn signature(names: &[String], types: &[Type]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    names
        .iter()
        .zip(types)
        .map(|(n, t)| format!("{n}: {}", type_name(t)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn type_name(t: &Type) -> String {
    use wasm_wave::wasm::WasmType;
    format!("{:?}", t.kind()).to_lowercase()
}

/// The component's exported functions, for an error message.
fn exported_functions(engine: &Engine, component: &Component) -> String {
    let mut names = Vec::new();
    for (n, item) in component.component_type().exports(engine) {
        match item.ty {
            ComponentItem::ComponentFunc(_) => names.push(n.to_string()),
            ComponentItem::ComponentInstance(i) => names.extend(
                i.exports(engine)
                    .filter(|(_, f)| matches!(f.ty, ComponentItem::ComponentFunc(_)))
                    .map(|(f, _)| format!("{n}#{f}")),
            ),
            _ => {}
        }
    }
    match names.is_empty() {
        true => "it exports no functions".into(),
        false => format!("it exports {}", names.join(", ")),
    }
}
