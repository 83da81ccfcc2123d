//! What `tensor-wasm serve` with no path serves: the gateway world
//! (`worlds/gateway.wac`) in front of `hello`, configured so that the
//! welcome page and `/hello` are public and `/echo` takes a bearer token.
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

fn create(path: &Path) -> Result<String> {
    let token = crate::platform::token::generate()?;
    crate::platform::token::write_secret(path, &token)?;
    Ok(token)
}
