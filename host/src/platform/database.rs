//! Opening a redb file of the data directory that other servers sharing the
//! directory may open too (the deployment history, the jobs): opened for
//! each read or write and closed after, so they wait for each other briefly
//! instead of failing.

use anyhow::{Result, anyhow};
use redb::Database;
use std::path::Path;
use std::time::Duration;

/// Opens (creating) `path`, waiting up to a second for another process to
/// close it; `what` names it in the error.
pub fn open(path: &Path, what: &str) -> Result<Database> {
    let mut tries = 0;
    loop {
        match Database::create(path) {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(anyhow!("cannot open {what} {}: {e}", path.display())),
        }
    }
}
