//! OCI interop: an artifact pushed to and pulled from any OCI distribution
//! registry (`oci://HOST/REPO:TAG`) as a CNCF Wasm OCI artifact — config
//! media type `application/vnd.wasm.config.v0+json`, one `application/wasm`
//! layer — through the `oci-client` crate. The registry record (name, kind,
//! BLAKE3 digest, creation time, signatures) travels as a tagged sibling
//! artifact, `TAG.tw-record`, so a pull on another machine verifies exactly
//! as a local push would. Registries on `localhost`/`127.0.0.1` are spoken to
//! over plain HTTP (as Docker does); others over HTTPS (rustls, ring).

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::index::Record;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
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
    /// Parses `oci://HOST/REPO:TAG`.
    pub fn parse(url: &str) -> Result<Self> {
        let rest = url.strip_prefix("oci://").ok_or_else(|| {
            Error::Invalid(format!("`{url}` is not an oci://HOST/REPO:TAG reference"))
        })?;
        let reference: Reference = rest
            .parse()
            .map_err(|e| Error::Invalid(format!("`{url}`: {e}")))?;
        if reference.tag().is_none() {
            return Err(Error::Invalid(format!(
                "`{url}`: name a tag (oci://HOST/REPO:TAG)"
            )));
        }
        Ok(Self { reference })
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
            ..ClientConfig::default()
        })
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "oci://{}", self.reference.whole())
    }
}

/// Pushes `bytes` and its `record` to `remote`; returns the manifest URL.
pub fn push(remote: &Remote, bytes: &[u8], record: &Record) -> Result<String> {
    let failed = |e: oci_client::errors::OciDistributionError| {
        Error::Invalid(format!("push to {remote} failed: {e}"))
    };
    run(async {
        let client = remote.client();
        let auth = RegistryAuth::Anonymous;
        let layers = vec![ImageLayer::new(
            bytes.to_vec(),
            WASM_MEDIA_TYPE.to_string(),
            None,
        )];
        let config = Config::new(wasm_config(bytes), CONFIG_MEDIA_TYPE.to_string(), None);
        let manifest = OciImageManifest::build(&layers, &config, None);
        let pushed = client
            .push(&remote.reference, &layers, config, &auth, Some(manifest))
            .await
            .map_err(failed)?;
        let json = serde_json::to_vec_pretty(record).expect("a record serializes");
        let layers = vec![ImageLayer::new(json, RECORD_MEDIA_TYPE.to_string(), None)];
        let config = Config::new(
            b"{}".to_vec(),
            "application/vnd.oci.empty.v1+json".to_string(),
            None,
        );
        let manifest = OciImageManifest::build(&layers, &config, None);
        client
            .push(
                &remote.record_reference(),
                &layers,
                config,
                &auth,
                Some(manifest),
            )
            .await
            .map_err(failed)?;
        Ok(pushed.manifest_url)
    })
}

/// Pulls `remote`: its bytes and, when the registry has one, its record
/// (checked to name these bytes by their BLAKE3 digest).
pub fn pull(remote: &Remote) -> Result<(Vec<u8>, Option<Record>)> {
    run(async {
        let client = remote.client();
        let auth = RegistryAuth::Anonymous;
        let image = client
            .pull(&remote.reference, &auth, vec![WASM_MEDIA_TYPE])
            .await
            .map_err(|e| Error::NotFound(format!("pull of {remote} failed: {e}")))?;
        let [layer] = image.layers.as_slice() else {
            return Err(Error::Invalid(format!(
                "{remote} has {} layers; a Wasm artifact has one",
                image.layers.len()
            )));
        };
        let bytes = layer.data.to_vec();
        let record = match client
            .pull(&remote.record_reference(), &auth, vec![RECORD_MEDIA_TYPE])
            .await
        {
            Ok(r) => {
                let data = r
                    .layers
                    .first()
                    .map(|l| l.data.to_vec())
                    .unwrap_or_default();
                let record: Record = serde_json::from_slice(&data).map_err(|e| {
                    Error::Corrupt(format!("the record of {remote} does not parse: {e}"))
                })?;
                let actual = Digest::of(&bytes).to_string();
                if record.digest != actual {
                    return Err(Error::Corrupt(format!(
                        "{remote}: its record names {} but its bytes hash to {actual}",
                        record.digest
                    )));
                }
                Some(record)
            }
            Err(_) => None,
        };
        Ok((bytes, record))
    })
}

/// The Wasm OCI artifact config for a component layer.
fn wasm_config(bytes: &[u8]) -> Vec<u8> {
    let layer = format!("sha256:{:x}", sha2::Sha256::digest(bytes));
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
