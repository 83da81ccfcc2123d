//! What `tensor-wasm serve` with no path serves: the gateway world
//! (`worlds/gateway.wac`) in front of `hello`, configured so that the
//! welcome page and `/hello` are public and `/echo` takes a bearer token.
//!
//! Beside it, at `/v1`, the OpenAI API (`worlds/openai.wac`) behind the same
//! gateway components and token; it waits for its models
//! ([`crate::live::Waiting`]).
//!
//! The token is made on first use and kept in the data directory
//! (`default-token`, readable only by its owner); only its hash goes into
//! the world's config, and it is never logged.

use crate::assembly::spec::Grants;
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The default world's routes (`router.routes`).
pub const ROUTES: &str = "GET,HEAD =/ welcome; GET,HEAD =/hello welcome; * /echo app";
/// The default world's rate limit (`ratelimit.default`).
pub const RATE_LIMIT: &str = "100/200";
/// Requests one instance of the default world serves: it is the operator's
/// own world, so it reuses its instances (`--max-instance-reuse-count 1`
/// turns that off).
pub const REUSE: u32 = 1000;
/// The OpenAI API's deployment name and path in the default world.
pub const OPENAI: (&str, &str) = ("openai", "/v1");
/// The models the OpenAI API serves (docs/OPENAI.md).
pub const OPENAI_MODELS: &[&str] = &["all-minilm-l6-v2", "smollm2-135m-instruct"];
/// The OpenAI API's request timeout, unless `--request-timeout` is longer.
pub const OPENAI_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The file in the data directory that holds the default world's token.
pub const TOKEN_FILE: &str = "default-token";

/// The default world's grants: its config, with the hash of the token kept
/// in `data_dir` (made now if missing). Returns the grants and the token file.
pub fn grants(data_dir: &Path) -> Result<(Grants, PathBuf)> {
    let path = data_dir.join(TOKEN_FILE);
    let token = match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => create(&path)?,
    };
    let config = BTreeMap::from([
        ("router.routes".to_string(), ROUTES.to_string()),
        (
            "auth.tokens".to_string(),
            format!("default {} admin", crate::platform::token::hash(&token)),
        ),
        ("ratelimit.default".to_string(), RATE_LIMIT.to_string()),
        ("audit.policy".to_string(), "mutating".to_string()),
    ]);
    Ok((
        Grants {
            config,
            ..Grants::default()
        },
        path,
    ))
}

/// The OpenAI API's grants, from the default world's: the same token and
/// rate limit, its own routes, its models.
pub fn openai_grants(default: &Grants) -> Grants {
    let mut grants = default.clone();
    grants
        .config
        .insert("router.routes".into(), format!("* {} app", OPENAI.1));
    grants.models = OPENAI_MODELS.iter().map(|m| m.to_string()).collect();
    grants
}

fn create(path: &Path) -> Result<String> {
    let token = crate::platform::token::generate()?;
    crate::platform::token::write_secret(path, &token)?;
    Ok(token)
}
