//! `tensor-wasm token`: make a bearer token for the gateway's `auth`
//! component, or hash one.

use crate::platform::token::{check_id, generate, hash};
use anyhow::{Context, Result, bail};
use std::io::Read;

/// `tensor-wasm token new`: prints a new token and its `auth.tokens` line.
pub fn new_command(id: &str, scopes: &str) -> Result<()> {
    check_id(id)?;
    let token = generate()?;
    println!("token: {token}");
    println!("auth.tokens entry: {id} {} {}", hash(&token), scopes.trim());
    eprintln!(
        "The token is shown only now: give it to the client (Authorization: Bearer TOKEN) and \
         put the entry (which holds only its hash) in the deployment's `auth.tokens` config."
    );
    Ok(())
}

/// `tensor-wasm token hash`: the hash of the token on standard input.
pub fn hash_command() -> Result<()> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the token from standard input")?;
    let token = text.trim();
    if token.is_empty() {
        bail!("no token on standard input");
    }
    println!("{}", hash(token));
    Ok(())
}
