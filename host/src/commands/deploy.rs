//! `tensor-wasm deploy`, `undeploy` and `deployments …`: a client of a
//! running server's admin API (`crate::serving::admin_api`), through
//! [`super::admin_http`].

use super::admin_http::exchange;
use super::args::{AdminArgs, DeployArgs};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use std::path::Path;

/// Runs `tensor-wasm deploy`.
pub fn deploy(args: &DeployArgs) -> Result<()> {
    let deployments = match &args.file {
        Some(file) => from_file(file)?,
        None => vec![from_flags(args)?],
    };
    for (name, spec) in deployments {
        let path = format!("/v1/deployments/{name}");
        let reply = call(&args.admin, "PUT", &path, Some(&spec), args.if_match)?;
        if args.admin.json {
            println!("{reply}");
            continue;
        }
        let verb = if reply["replaced"] == true {
            "replaced"
        } else {
            "created"
        };
        println!(
            "deployment `{name}`: revision {} ({verb})",
            reply["revision"]
        );
    }
    Ok(())
}

/// Runs `tensor-wasm undeploy NAME`.
pub fn undeploy(name: &str, if_match: Option<u64>, admin: &AdminArgs) -> Result<()> {
    let reply = call(
        admin,
        "DELETE",
        &format!("/v1/deployments/{name}"),
        None,
        if_match,
    )?;
    match admin.json {
        true => println!("{reply}"),
        false => println!(
            "deployment `{name}`: undeployed (revision {})",
            reply["revision"]
        ),
    }
    Ok(())
}

/// Runs `tensor-wasm deployments list`.
pub fn list(admin: &AdminArgs) -> Result<()> {
    let reply = call(admin, "GET", "/v1/deployments", None, None)?;
    if admin.json {
        println!("{reply}");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = reply["deployments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            vec![
                text(&d["name"]),
                text(&d["tenant"]),
                text(&d["revision"]),
                format!(
                    "{}{}",
                    d["route"]["host"].as_str().unwrap_or("*"),
                    text(&d["route"]["path"])
                ),
                text(&d["requests"]["in_flight"]),
                text(&d["requests"]["ok"]),
                text(&d["source"]),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "TENANT",
            "REVISION",
            "ROUTE",
            "IN-FLIGHT",
            "OK",
            "SOURCE",
        ],
        &rows,
    );
    Ok(())
}

/// Runs `tensor-wasm deployments get NAME`.
pub fn get(name: &str, admin: &AdminArgs) -> Result<()> {
    let reply = call(admin, "GET", &format!("/v1/deployments/{name}"), None, None)?;
    match admin.json {
        true => println!("{reply}"),
        false => println!("{}", serde_json::to_string_pretty(&reply)?),
    }
    Ok(())
}

/// Runs `tensor-wasm deployments history NAME`.
pub fn history(name: &str, admin: &AdminArgs) -> Result<()> {
    let path = format!("/v1/deployments/{name}/revisions");
    let reply = call(admin, "GET", &path, None, None)?;
    if admin.json {
        println!("{reply}");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = reply["revisions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let when = r["time_ms"]
                .as_u64()
                .map(|ms| {
                    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
                    humantime::format_rfc3339_seconds(t).to_string()
                })
                .unwrap_or_else(|| "(start-up spec)".into());
            let what = match r["served"]["kind"].as_str() {
                Some("seed") => "the start-up spec".to_string(),
                Some("nothing") => "nothing".to_string(),
                _ => r["served"]["spec"]
                    .get("component")
                    .or_else(|| r["served"]["spec"].get("world"))
                    .map_or_else(String::new, text),
            };
            let action = match r["from"].as_u64() {
                Some(from) => format!("{} of {from}", text(&r["action"])),
                None => text(&r["action"]),
            };
            vec![text(&r["revision"]), action, when, text(&r["by"]), what]
        })
        .collect();
    table(&["REVISION", "ACTION", "TIME", "BY", "SERVES"], &rows);
    Ok(())
}

/// Runs `tensor-wasm deployments rollback NAME [--to REVISION]`.
pub fn rollback(name: &str, to: Option<u64>, admin: &AdminArgs) -> Result<()> {
    let path = format!("/v1/deployments/{name}/rollback");
    let reply = call(admin, "POST", &path, Some(&json!({ "revision": to })), None)?;
    match admin.json {
        true => println!("{reply}"),
        false => println!(
            "deployment `{name}`: revision {} (rolled back)",
            reply["revision"]
        ),
    }
    Ok(())
}

/// The deployments of a deployment file, as the API takes them: each table
/// as JSON, its relative paths made absolute against the file's folder.
fn from_file(file: &Path) -> Result<Vec<(String, Value)>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let doc: Value = toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let base = std::path::absolute(file.parent().unwrap_or(Path::new(".")))?;
    let tables = doc["deployment"]
        .as_array()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            anyhow!(
                "{}: no deployments (add a [[deployment]] table)",
                file.display()
            )
        })?;
    tables
        .iter()
        .map(|t| {
            let name = t["name"]
                .as_str()
                .ok_or_else(|| anyhow!("{}: a deployment has no `name`", file.display()))?;
            let mut t = t.clone();
            absolute_paths(&mut t, &base);
            Ok((name.to_string(), t))
        })
        .collect()
}

/// Makes the file paths of deployment table `t` absolute against `base`
/// (registry references and package names stay as they are).
fn absolute_paths(t: &mut Value, base: &Path) {
    let fix = |v: &mut Value| {
        if let Some(p) = v.as_str()
            && !p.starts_with("registry:")
            && Path::new(p).is_relative()
        {
            *v = base.join(p).display().to_string().into();
        }
    };
    for key in ["component", "world"] {
        t.get_mut(key).map(fix);
    }
    for dep in t
        .get_mut("deps")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flatten()
    {
        fix(dep.1);
    }
    let grants = t.get_mut("grants");
    if let Some(g) = grants {
        for dir in g
            .get_mut("dirs")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            dir.get_mut("host").map(fix);
        }
        for secret in g
            .get_mut("secrets")
            .and_then(Value::as_object_mut)
            .into_iter()
            .flatten()
        {
            secret.1.get_mut("file").map(fix);
        }
    }
    if let Some(i) = t.get_mut("inference") {
        for key in ["embeddings", "generation"] {
            // A package name (`ns:name`) is not a path.
            if i.get(key)
                .and_then(Value::as_str)
                .is_some_and(|v| v.contains('/') || !v.contains(':'))
            {
                i.get_mut(key).map(fix);
            }
        }
    }
}

/// The deployment `deploy --name …` describes.
fn from_flags(args: &DeployArgs) -> Result<(String, Value)> {
    let Some(name) = &args.name else {
        bail!("give a deployment file, or --name, --tenant and --component or --world");
    };
    let absolute = |p: &String| -> Result<String> {
        Ok(match p.starts_with("registry:") {
            true => p.clone(),
            false => std::path::absolute(p)?.display().to_string(),
        })
    };
    let mut spec = json!({ "tenant": args.tenant });
    match (&args.component, &args.world) {
        (Some(c), None) => spec["component"] = absolute(c)?.into(),
        (None, Some(w)) => spec["world"] = absolute(w)?.into(),
        _ => bail!("--name needs --component or --world"),
    }
    if args.path.is_some() || args.host.is_some() {
        spec["route"] = json!({ "path": args.path, "host": args.host });
        if args.host.is_none() {
            spec["route"].as_object_mut().map(|r| r.remove("host"));
        }
        if args.path.is_none() {
            spec["route"].as_object_mut().map(|r| r.remove("path"));
        }
    }
    Ok((name.clone(), spec))
}

/// One admin API call; a non-2xx answer is an error carrying the API's message.
fn call(
    admin: &AdminArgs,
    method: &str,
    path: &str,
    body: Option<&Value>,
    if_match: Option<u64>,
) -> Result<Value> {
    let token = format!("Bearer {}", token(admin)?);
    let body = body.map(Value::to_string).unwrap_or_default();
    let revision = if_match.map(|rev| format!("\"{rev}\""));
    let mut headers = vec![
        ("authorization", token.as_str()),
        ("content-type", "application/json"),
    ];
    if let Some(rev) = &revision {
        headers.push(("if-match", rev));
    }
    let (status, body) = exchange(&admin.admin, method, path, &headers, &body, None)?;
    let body = body.as_str();
    let value: Value =
        serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.trim().into()));
    if (200..300).contains(&status) {
        return Ok(value);
    }
    let message = value["error"]["message"]
        .as_str()
        .map_or_else(|| body.trim().to_string(), str::to_string);
    match value["current_revision"].as_u64() {
        Some(rev) => bail!("{status}: {message} (current revision {rev})"),
        None => bail!("{status}: {message}"),
    }
}

/// The admin token: --token-file, $TENSOR_WASM_ADMIN_TOKEN, or the data directory's.
fn token(admin: &AdminArgs) -> Result<String> {
    if let Some(file) = &admin.token_file {
        return read_token(file);
    }
    if let Ok(t) = std::env::var("TENSOR_WASM_ADMIN_TOKEN") {
        return Ok(t.trim().to_string());
    }
    let dir = crate::platform::dirs::data_dir(admin.data_dir.as_ref())?;
    read_token(&dir.join(crate::serving::admin_tokens::TOKEN_FILE))
}

fn read_token(file: &Path) -> Result<String> {
    let t = std::fs::read_to_string(file).with_context(|| {
        format!(
            "cannot read the admin token {} (--token-file, or $TENSOR_WASM_ADMIN_TOKEN)",
            file.display()
        )
    })?;
    Ok(t.trim().to_string())
}

/// A JSON value as table text (strings without quotes, null as `-`).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

/// Prints `rows` under `head`, columns padded.
fn table(head: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(head.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
