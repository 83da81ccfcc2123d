//! Host state behind `wasi:keyvalue` handles.

/// An open bucket: the database table of one tenant's bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// The table's name ([`super::table_name`]).
    pub table: String,
    /// Whether it is a volatile (in-memory) bucket.
    pub volatile: bool,
}
