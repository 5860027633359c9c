//! What `GET /v1/messages` and `GET /v1/connections` filter on (docs/src/interfaces.md); the
//! database answers each from an index (`sql/messages.rs`).

/// A message search: every field given must hold.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// Exact address, any case.
    pub sender: Option<String>,
    /// Exact address, any case.
    pub recipient: Option<String>,
    /// Substring of the decoded subject, any case.
    pub subject: Option<String>,
    pub queue_id: Option<String>,
    pub message_id: Option<String>,
    /// Unix ms, inclusive.
    pub since: Option<u64>,
    pub until: Option<u64>,
    pub status: Option<super::record::Status>,
    pub worker: Option<String>,
    pub tls: Option<bool>,
    pub plaintext: Option<bool>,
    pub violation: Option<bool>,
}

#[derive(Debug, Clone, Default)]
pub struct ConnectionFilter {
    pub ip: Option<String>,
    pub since: Option<u64>,
    pub until: Option<u64>,
    pub tls_failed: Option<bool>,
    pub starttls_leftovers: Option<bool>,
}

/// A cursor this store did not make.
#[derive(Debug, thiserror::Error)]
#[error("not a cursor this list gave")]
pub struct BadCursor;

/// A page's cursor: the key of the last row of the page before, in hex.
pub fn decode_cursor(cursor: &str) -> Result<Vec<u8>, BadCursor> {
    let bytes = hex::decode(cursor).map_err(|_| BadCursor)?;
    if bytes.len() != 8 {
        return Err(BadCursor);
    }
    Ok(bytes)
}
