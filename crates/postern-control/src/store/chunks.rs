//! Large values split across keys. sled stores values over ~128 KiB in blob files it never
//! fsyncs (docs/src/design.md "Traps"), so no value we write approaches that: a value is stored as
//! `prefix -> chunk count` plus `prefix ++ index -> chunk` of at most 64 KiB each.

use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::StoreError;

const CHUNK: usize = 64 * 1024;

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn chunk_key(prefix: &[u8], index: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 4);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn count(header: &[u8]) -> u32 {
    header.try_into().map(u32::from_be_bytes).unwrap_or(0)
}

/// Writes `value` under `prefix`, removing chunks an older, longer value left behind.
pub(super) fn write(tx: &TransactionalTree, prefix: &[u8], value: &[u8]) -> TxResult<()> {
    let old = tx.get(prefix)?.map_or(0, |h| count(&h));
    let mut n = 0u32;
    for (i, chunk) in value.chunks(CHUNK).enumerate() {
        n = i as u32 + 1;
        tx.insert(chunk_key(prefix, i as u32), chunk)?;
    }
    for i in n..old {
        tx.remove(chunk_key(prefix, i))?;
    }
    tx.insert(prefix, &n.to_be_bytes())?;
    Ok(())
}

/// Reads a value written by `write`; `None` when there is none.
pub(super) fn read(tree: &sled::Tree, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(header) = tree.get(prefix)? else {
        return Ok(None);
    };
    let n = count(&header);
    let mut value = Vec::new();
    for i in 0..n {
        let chunk = tree
            .get(chunk_key(prefix, i))?
            .ok_or_else(|| StoreError::Corrupt {
                what: String::from_utf8_lossy(prefix).into_owned(),
                detail: format!("chunk {i} of {n} is missing"),
            })?;
        value.extend_from_slice(&chunk);
    }
    Ok(Some(value))
}
