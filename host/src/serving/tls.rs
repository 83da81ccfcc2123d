//! TLS on the listeners: rustls with the ring provider (the one the host's
//! other TLS, the OTLP exporter and the OCI client, already uses, so one
//! crypto library is built and audited, and it builds with no C toolchain
//! beyond what `cc` needs). ALPN offers h2 and http/1.1; TLS 1.2 and 1.3.
//!
//! The certificate and key are read from PEM files and read again when
//! either changes (checked every [`RELOAD_CHECK`]); a bad new pair is
//! logged and the old one kept. With a client CA (`--tls-client-ca`), a
//! client certificate is verified against it (mTLS) and its identity (the
//! first URI SAN, else DNS SAN, else the subject's common name) reaches the
//! world in `x-client-identity` (`super::request_id`).
//!
//! A client that speaks plain HTTP to a TLS listener gets a plain 400
//! saying so, and the connection closes.

use super::connections::Watched;
use anyhow::{Context, Result, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How often the certificate files are checked for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// Whether a client must present a certificate when a client CA is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientAuth {
    /// Every connection needs a certificate the CA signed.
    Required,
    /// A client may come without one (and use a bearer token); one it
    /// presents must verify.
    Optional,
}

/// Where the listener's certificate, key and client CA come from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates client certificates must chain to (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is required (with a client CA).
    pub client_auth: ClientAuth,
}

/// A listener's TLS settings, swapped whole when the files change.
pub struct Tls {
    files: TlsFiles,
    config: RwLock<Arc<ServerConfig>>,
    seen: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl Tls {
    /// Reads `files`; any that is missing or malformed is an error naming it.
    pub fn load(files: TlsFiles) -> Result<Arc<Tls>> {
        let seen = stamps(&files);
        let config = config(&files)?;
        Ok(Arc::new(Tls {
            files,
            config: RwLock::new(Arc::new(config)),
            seen: Mutex::new(seen),
        }))
    }

    /// The acceptor for a new connection (the settings in force now).
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.config
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    /// Reads the files again if they changed since last read; true when
    /// new settings took effect.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamps(&self.files);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == now {
            return false;
        }
        *seen = now;
        match config(&self.files) {
            Ok(c) => {
                *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(c);
                tracing::info!(
                    "TLS: {} changed; new connections use it",
                    self.files.cert.display()
                );
                true
            }
            Err(e) => {
                tracing::warn!("TLS: the changed files do not load ({e:#}); keeping the old ones");
                false
            }
        }
    }

    /// Checks the files every [`RELOAD_CHECK`], for good.
    pub async fn reload_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RELOAD_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.reload_if_changed();
        }
    }
}

/// What a completed handshake yields: the stream and the verified client
/// identity, if a client certificate was presented.
pub type Accepted = (TlsStream<Watched>, Option<http::HeaderValue>);

/// Runs the server side of a handshake on `stream`. A client that opens
/// with plain HTTP is answered with a 400 in plain HTTP before the error.
pub async fn accept(acceptor: TlsAcceptor, mut stream: Watched) -> std::io::Result<Accepted> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 1 && first[0] != TLS_HANDSHAKE {
        let body = "this port speaks HTTPS: use https://\n";
        let reply = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "plain HTTP on a TLS listener",
        ));
    }
    let tls = acceptor.accept(stream).await?;
    let identity = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| identity(certs.first()?))
        .and_then(|id| http::HeaderValue::from_str(&id).ok());
    Ok((tls, identity))
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// The identity of a (verified) client certificate: its first URI SAN
/// (a SPIFFE ID, say), else its first DNS SAN, else its subject's common
/// name. None when it has none of these in printable ASCII.
pub fn identity(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    let printable = |s: &str| !s.is_empty() && s.bytes().all(|b| (0x20..0x7f).contains(&b));
    cert.valid_uri_names()
        .find(|s| printable(s))
        .or_else(|| cert.valid_dns_names().find(|s| printable(s)))
        .map(str::to_string)
        .or_else(|| common_name(cert.subject()).filter(|s| printable(s)))
}

/// The common name (2.5.4.3) in a DER subject's contents (a sequence of
/// sets of type-and-value sequences), if a string holds one.
fn common_name(mut subject: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    while !subject.is_empty() {
        let (tag, set, rest) = tlv(subject)?;
        subject = rest;
        if tag != 0x31 {
            return None;
        }
        let mut set = set;
        while !set.is_empty() {
            let (tag, pair, rest) = tlv(set)?;
            set = rest;
            if tag != 0x30 {
                return None;
            }
            let (oid_tag, oid, value) = tlv(pair)?;
            if oid_tag == 0x06 && oid == CN {
                let (tag, text, _) = tlv(value)?;
                // UTF8String, PrintableString, IA5String, T61String.
                if [0x0c, 0x13, 0x16, 0x14].contains(&tag) {
                    return std::str::from_utf8(text).ok().map(str::to_string);
                }
            }
        }
    }
    None
}

/// One DER tag-length-value: (tag, contents, what follows), None when the
/// bytes do not hold a whole one.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |l, b| (l << 8) | usize::from(*b));
        rest = &rest[n..];
        len
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// When each file last changed, and its size (None: unreadable).
fn stamps(files: &TlsFiles) -> Vec<Option<(SystemTime, u64)>> {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    })
    .collect()
}

/// The rustls settings `files` describe.
fn config(files: &TlsFiles) -> Result<ServerConfig> {
    let certs = certificates(&files.cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        anyhow::anyhow!(
            "--tls-key {}: no private key read ({e}); expected a PEM `PRIVATE KEY`",
            files.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca, "--tls-client-ca")? {
                roots
                    .add(cert)
                    .with_context(|| format!("--tls-client-ca {}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            let verifier = match files.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .with_context(|| format!("--tls-client-ca {}", ca.display()))?,
            )
        }
    };
    let mut config = builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "--tls-cert {} with --tls-key {}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificates in the PEM file `path` (named by `flag` in errors).
fn certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))?;
    if certs.is_empty() {
        bail!(
            "{flag} {}: no certificate in it (expected PEM `-----BEGIN CERTIFICATE-----`)",
            path.display()
        );
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_the_uri_san_else_the_dns_san_else_the_common_name() {
        let key = rcgen::KeyPair::generate().unwrap();
        let make = |sans: Vec<rcgen::SanType>, cn: Option<&str>| {
            let mut p = rcgen::CertificateParams::default();
            p.subject_alt_names = sans;
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name
                .push(rcgen::DnType::OrganizationName, "TensorWasm");
            if let Some(cn) = cn {
                p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            }
            identity(p.self_signed(&key).unwrap().der())
        };
        let uri = rcgen::SanType::URI("spiffe://example.org/billing".try_into().unwrap());
        let dns = rcgen::SanType::DnsName("billing.internal".try_into().unwrap());
        assert_eq!(
            make(vec![dns.clone(), uri], Some("cn")).as_deref(),
            Some("spiffe://example.org/billing")
        );
        assert_eq!(
            make(vec![dns], Some("cn")).as_deref(),
            Some("billing.internal")
        );
        assert_eq!(
            make(vec![], Some("billing-job")).as_deref(),
            Some("billing-job")
        );
        assert_eq!(make(vec![], None), None);
        assert_eq!(make(vec![], Some("bad\nname")), None);
    }

    #[test]
    fn malformed_der_yields_no_common_name() {
        for bytes in [
            &[][..],
            &[0x31],
            &[0x31, 0x85, 1, 2, 3, 4, 5],
            &[0x31, 0x05, 0x30],
        ] {
            assert_eq!(common_name(bytes), None);
        }
    }
}
