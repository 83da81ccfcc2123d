//! OCI interop: an artifact pushed to and pulled from any OCI distribution
//! registry (`oci://HOST/REPO:TAG`) as a CNCF Wasm OCI artifact — config
//! media type `application/vnd.wasm.config.v0+json`, one `application/wasm`
//! layer — through the `oci-client` crate. The registry record (name, kind,
//! BLAKE3 digest, creation time, signatures) travels as a tagged sibling
//! artifact, `TAG.tw-record`, so a pull on another machine verifies exactly
//! as a local push would. Registries on `localhost`/`127.0.0.1` are spoken to
//! over plain HTTP (as Docker does); others over HTTPS (rustls, ring).

use crate::blobs::{Packed, Packer};
use crate::error::{Error, Result};
use crate::index::Record;
use bytes::Bytes;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::Digest as _;

/// The config media type of a Wasm OCI artifact.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The layer media type of a Wasm component.
pub const WASM_MEDIA_TYPE: &str = "application/wasm";
/// The layer media type of a TensorWasm registry record.
pub const RECORD_MEDIA_TYPE: &str = "application/vnd.tensorwasm.record.v1+json";
/// The tag suffix of an artifact's record.
pub const RECORD_TAG_SUFFIX: &str = ".tw-record";

/// A remote artifact: `oci://HOST/REPO:TAG`.
#[derive(Debug, Clone)]
pub struct Remote {
    reference: Reference,
}

impl Remote {
    /// Parses `oci://HOST[:PORT]/REPO:TAG` by the distribution spec's
    /// grammar (checked here, not by `oci-client`'s reference regex, which
    /// costs ~30 ms to compile in every process).
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| Error::Invalid(format!("`{url}`: {why} (oci://HOST/REPO:TAG)"));
        let rest = url
            .strip_prefix("oci://")
            .ok_or_else(|| bad("not an oci:// reference"))?;
        let (host, path) = rest.split_once('/').ok_or_else(|| bad("no repository"))?;
        let (repo, tag) = path.rsplit_once(':').ok_or_else(|| bad("name a tag"))?;
        if !valid_host(host) {
            return Err(bad("not a registry host"));
        }
        if !repo.split('/').all(valid_component) {
            return Err(bad(
                "repository components are lowercase a-z 0-9 separated by . _ __ or -",
            ));
        }
        let tag_ok = tag.len() <= 128
            && tag.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && (b == b'.' || b == b'-'))
            });
        if tag.is_empty() || !tag_ok {
            return Err(bad("a tag is A-Z a-z 0-9 _ . - (not first), at most 128"));
        }
        Ok(Self {
            reference: Reference::with_tag(host.into(), repo.into(), tag.into()),
        })
    }

    /// The record's sibling reference.
    fn record_reference(&self) -> Reference {
        let r = &self.reference;
        Reference::with_tag(
            r.registry().to_string(),
            r.repository().to_string(),
            format!("{}{RECORD_TAG_SUFFIX}", r.tag().unwrap_or("latest")),
        )
    }

    /// `REPO:TAG`, for a local name when the remote carries no record.
    pub fn local_name(&self) -> String {
        format!(
            "{}:{}",
            self.reference.repository(),
            self.reference.tag().unwrap_or("latest")
        )
    }

    fn client(&self) -> Client {
        let host = self.reference.registry();
        let local = ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .any(|h| host == *h || host.starts_with(&format!("{h}:")));
        Client::new(ClientConfig {
            protocol: if local {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            // One PUT per blob: distribution answers each 4 MiB PATCH of a
            // chunked upload slowly enough to halve throughput.
            use_monolithic_push: true,
            ..ClientConfig::default()
        })
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "oci://{}", self.reference.whole())
    }
}

/// Pushes `bytes` to `remote` while `store` (the local registry's work,
/// which yields the record) runs beside the upload, then pushes the record;
/// returns the record and the manifest URL.
pub fn push(
    remote: &Remote,
    bytes: Bytes,
    store: impl FnOnce() -> Result<Record> + Send,
) -> Result<(Record, String)> {
    std::thread::scope(|scope| {
        let local = scope.spawn(store);
        let pushed = run(push_artifact(remote, bytes));
        let record = local
            .join()
            .map_err(|_| Error::Invalid("storing the artifact locally panicked".into()))??;
        let url = pushed?;
        run(push_record(remote, &record))?;
        Ok((record, url))
    })
}

fn push_failed(remote: &Remote) -> impl Fn(oci_client::errors::OciDistributionError) -> Error + '_ {
    move |e| Error::Invalid(format!("push to {remote} failed: {e}"))
}

/// The layer in one PUT (monolithic upload), SHA-256-hashed once for both
/// its descriptor and the config's `layerDigests`; then config and manifest.
async fn push_artifact(remote: &Remote, bytes: Bytes) -> Result<String> {
    let layer = format!("sha256:{:x}", sha2::Sha256::digest(&bytes));
    let size = bytes.len() as i64;
    let layers = vec![ImageLayer::new(bytes, WASM_MEDIA_TYPE.to_string(), None)];
    let config = Config::new(wasm_config(&layer), CONFIG_MEDIA_TYPE.to_string(), None);
    let mut manifest = OciImageManifest::build(&[], &config, None);
    manifest.layers.push(OciDescriptor {
        media_type: WASM_MEDIA_TYPE.to_string(),
        digest: layer,
        size,
        ..OciDescriptor::default()
    });
    let auth = RegistryAuth::Anonymous;
    let pushed = remote
        .client()
        .push(&remote.reference, &layers, config, &auth, Some(manifest))
        .await
        .map_err(push_failed(remote))?;
    Ok(pushed.manifest_url)
}

/// The record as the sibling artifact `TAG.tw-record`.
async fn push_record(remote: &Remote, record: &Record) -> Result<()> {
    let json = serde_json::to_vec_pretty(record).expect("a record serializes");
    let layers = vec![ImageLayer::new(json, RECORD_MEDIA_TYPE.to_string(), None)];
    let config = Config::new(
        b"{}".to_vec(),
        "application/vnd.oci.empty.v1+json".to_string(),
        None,
    );
    let manifest = OciImageManifest::build(&layers, &config, None);
    let reference = remote.record_reference();
    let auth = RegistryAuth::Anonymous;
    remote
        .client()
        .push(&reference, &layers, config, &auth, Some(manifest))
        .await
        .map_err(push_failed(remote))?;
    Ok(())
}

/// `name[:port]` of letters, digits, `.` and `-`, or `[v6]:port`.
fn valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !n.ends_with(':') => (n, Some(p)),
        _ => (host, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let name_ok = if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        !v6.is_empty() && v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
    } else {
        !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    port_ok && name_ok
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or `-`s.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// An artifact pulled from an OCI registry.
#[derive(Debug)]
pub struct Pulled {
    /// Its bytes, checked against the manifest's SHA-256 (empty unless
    /// asked for).
    pub bytes: Vec<u8>,
    /// The same bytes hashed and compressed for the store, while they
    /// downloaded.
    pub packed: Packed,
    /// Its record, when the registry has one. Whether it names these bytes
    /// is for [`crate::Registry::import`] to check.
    pub record: Option<Record>,
}

/// Pulls `remote`: its bytes packed for the store as they arrive (and kept
/// as they are too with `keep_bytes`), and its record if it has one.
pub fn pull(remote: &Remote, keep_bytes: bool) -> Result<Pulled> {
    std::thread::scope(|scope| {
        // The layer's size first (sizes the packer's buffer), then its bytes.
        let (chunks, arrived) = std::sync::mpsc::channel::<Chunk>();
        let packer = scope.spawn(move || {
            let mut packer = Packer::new(0);
            for chunk in arrived {
                match chunk {
                    Chunk::Size(size) => packer = Packer::new(size),
                    Chunk::Bytes(bytes) => packer.update(&bytes)?,
                }
            }
            packer.finish()
        });
        let fetched = run(fetch(remote, &chunks, keep_bytes));
        drop(chunks);
        let packed = packer
            .join()
            .map_err(|_| Error::Invalid("packing the pulled artifact panicked".into()))??;
        let (bytes, record) = fetched?;
        Ok(Pulled {
            bytes,
            packed,
            record,
        })
    })
}

/// What a pull hands its packer.
enum Chunk {
    /// The layer's size, before its bytes.
    Size(u64),
    /// Bytes as they arrived.
    Bytes(Bytes),
}

/// The artifact's bytes (each chunk also sent to `chunks`) and its record.
async fn fetch(
    remote: &Remote,
    chunks: &std::sync::mpsc::Sender<Chunk>,
    keep_bytes: bool,
) -> Result<(Vec<u8>, Option<Record>)> {
    let client = remote.client();
    let failed = |e: String| Error::NotFound(format!("pull of {remote} failed: {e}"));
    let (layer, _) = one_layer(&client, &remote.reference, WASM_MEDIA_TYPE)
        .await
        .map_err(failed)?;
    let bytes = blob(&client, &remote.reference, &layer, Some(chunks), keep_bytes)
        .await
        .map_err(failed)?;
    let reference = &remote.record_reference();
    let Ok((layer, _)) = one_layer(&client, reference, RECORD_MEDIA_TYPE).await else {
        return Ok((bytes, None));
    };
    let data = blob(&client, reference, &layer, None, true)
        .await
        .map_err(|e| Error::NotFound(format!("pull of {remote}'s record failed: {e}")))?;
    let record: Record = serde_json::from_slice(&data)
        .map_err(|e| Error::Corrupt(format!("the record of {remote} does not parse: {e}")))?;
    Ok((bytes, Some(record)))
}

/// The single layer of `reference`'s manifest, which must be of `media_type`.
async fn one_layer(
    client: &Client,
    reference: &Reference,
    media_type: &str,
) -> std::result::Result<(OciDescriptor, String), String> {
    let (manifest, digest) = client
        .pull_image_manifest(reference, &RegistryAuth::Anonymous)
        .await
        .map_err(|e| e.to_string())?;
    match manifest.layers.as_slice() {
        [layer] if layer.media_type == media_type => Ok((layer.clone(), digest)),
        [layer] => Err(format!(
            "its layer is {}, not {media_type}",
            layer.media_type
        )),
        layers => Err(format!(
            "it has {} layers; a Wasm artifact has one",
            layers.len()
        )),
    }
}

/// Most bytes one layer may have (the store's own cap).
const MAX_LAYER: i64 = 1 << 30;

/// The layer's bytes as they arrive, to `chunks` and (with `keep`) into one
/// buffer; `oci-client` checks them against the descriptor's SHA-256 (an
/// error at the end of the stream), and the length is checked here.
async fn blob(
    client: &Client,
    reference: &Reference,
    layer: &OciDescriptor,
    chunks: Option<&std::sync::mpsc::Sender<Chunk>>,
    keep: bool,
) -> std::result::Result<Vec<u8>, String> {
    use futures_util::StreamExt;
    if !(0..=MAX_LAYER).contains(&layer.size) {
        return Err(format!("its layer claims {} bytes", layer.size));
    }
    let mut stream = client
        .pull_blob_stream(reference, layer)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(chunks) = chunks {
        let _ = chunks.send(Chunk::Size(layer.size as u64));
    }
    let mut bytes = Vec::with_capacity(if keep { layer.size as usize } else { 0 });
    let mut size = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        size += chunk.len() as i64;
        if size > layer.size {
            return Err(format!(
                "its layer is longer than the {} bytes it claims",
                layer.size
            ));
        }
        if keep {
            bytes.extend_from_slice(&chunk);
        }
        if let Some(chunks) = chunks {
            let _ = chunks.send(Chunk::Bytes(chunk));
        }
    }
    if size != layer.size {
        return Err(format!(
            "its layer should have {} bytes but has {size}",
            layer.size
        ));
    }
    Ok(bytes)
}

/// The Wasm OCI artifact config for a component layer of digest `layer`.
fn wasm_config(layer: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer],
    }))
    .expect("json")
}

/// Runs `future` on a small runtime of its own (the CLI is synchronous).
fn run<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(crate::error::io("cannot start a runtime for OCI"))?
        .block_on(future)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_follow_the_distribution_grammar() {
        for good in [
            "oci://127.0.0.1:5000/acme/shop:1.2.0",
            "oci://localhost/a:latest",
            "oci://ghcr.io/acme/my_app.v2/x-y:v1_2-rc.1",
            "oci://[::1]:5000/a/b:t",
        ] {
            assert!(Remote::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "http://h/a:1",
            "oci://h/a",
            "oci://h/a:",
            "oci://h/A:1",
            "oci://h/a//b:1",
            "oci://h/-a:1",
            "oci://h/a:.t",
            "oci://h/a:t/x",
            "oci://h_x/a:1",
            "oci://h:port/a:1",
            "oci://h/a..b:1",
            "oci:///a:1",
        ] {
            assert!(Remote::parse(bad).is_err(), "{bad}");
        }
        let r = Remote::parse("oci://127.0.0.1:5000/acme/shop:1.2.0").unwrap();
        assert_eq!(r.local_name(), "acme/shop:1.2.0");
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/acme/shop:1.2.0");
    }
}
