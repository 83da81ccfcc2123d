//! How the CLI talks to a running server's admin listener: one HTTP/1.1
//! exchange over a plain TCP connection (the admin listener is loopback
//! unless the operator says otherwise; TLS is not built).

use anyhow::{Context, Result, anyhow};
use std::io::{Read, Write};
use std::time::Duration;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `host:port` of an admin address given as `http://host:port` or `host:port`.
pub fn authority(admin: &str) -> Result<&str> {
    if admin.starts_with("https://") {
        return Err(anyhow!(
            "--admin `{admin}`: only http:// (the admin listener has no TLS yet)"
        ));
    }
    let a = admin.strip_prefix("http://").unwrap_or(admin);
    let a = a.trim_end_matches('/');
    if a.is_empty() || a.contains('/') {
        return Err(anyhow!(
            "--admin `{admin}`: expected HOST:PORT or http://HOST:PORT"
        ));
    }
    Ok(a)
}

/// Sends `method path` with `headers` and `body` to the admin listener at
/// `admin`, waiting at most `timeout` for the answer (`None`: as long as it
/// takes, e.g. a deployment being built); returns its status and body.
pub fn exchange(
    admin: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Option<Duration>,
) -> Result<(u16, String)> {
    let authority = authority(admin)?;
    let reach = || {
        format!(
            "cannot reach the admin listener at {admin} (is `tensor-wasm serve` running, \
             with --admin-listen there?)"
        )
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .with_context(reach)?
        .next()
        .ok_or_else(|| anyhow!("`{authority}` names no address"))?;
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).with_context(reach)?;
    stream.set_read_timeout(timeout)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    stream.write_all(format!("{head}\r\n{body}").as_bytes())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("{admin}{path}: reading the answer"))?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{admin}{path}: no complete response"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_addresses_with_or_without_a_scheme() {
        assert_eq!(
            authority("http://127.0.0.1:9090/").unwrap(),
            "127.0.0.1:9090"
        );
        assert_eq!(authority("localhost:9").unwrap(), "localhost:9");
        assert!(authority("https://h:1").is_err());
        assert!(authority("http://h:1/metrics").is_err());
    }
}
