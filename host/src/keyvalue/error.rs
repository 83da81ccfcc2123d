//! `wasi:keyvalue` errors as guests see them (`store.error`): a key, value
//! or batch over its limit, a store that is missing (`no-such-store`, a
//! server without a data directory) or could not be opened.

use super::bindings::wasi::keyvalue::store::Error;
use super::{MAX_KEY, MAX_VALUE};

/// Most keys one batch call may name.
const MAX_BATCH: usize = 10_000;

/// An `other` error with `msg`.
pub(super) fn other(msg: impl Into<String>) -> Error {
    Error::Other(msg.into())
}

/// A key over [`MAX_KEY`] bytes is refused.
pub(super) fn check_key(key: &str) -> Result<(), Error> {
    if key.len() > MAX_KEY {
        return Err(other(format!(
            "the key is {} bytes; at most {MAX_KEY} are allowed",
            key.len()
        )));
    }
    Ok(())
}

/// A value over [`MAX_VALUE`] bytes is refused.
pub(super) fn check_value(value: &[u8]) -> Result<(), Error> {
    if value.len() > MAX_VALUE {
        return Err(other(format!(
            "the value is {} bytes; at most {MAX_VALUE} are allowed",
            value.len()
        )));
    }
    Ok(())
}

/// A batch naming more than [`MAX_BATCH`] keys is refused.
pub(super) fn check_batch(n: usize) -> Result<(), Error> {
    if n > MAX_BATCH {
        return Err(other(format!(
            "{n} keys in one batch; at most {MAX_BATCH} are allowed"
        )));
    }
    Ok(())
}

/// The server's durable store: `no-such-store` without a data directory,
/// an error (logged here, cause included) when it could not be opened.
pub(super) fn durable(stores: &super::Stores) -> Result<&super::Durable, Error> {
    match stores.durable() {
        None => Err(Error::NoSuchStore),
        Some(Ok(db)) => Ok(db),
        Some(Err(e)) => {
            tracing::error!("keyvalue store unavailable: {e}");
            Err(other("the store could not be opened"))
        }
    }
}
