//! How records are kept in a column: their JSON (serde, so a field added later reads from an
//! older record by its default), compressed by zstd with a dictionary of our own field names
//! and common values. A message's record is mostly those names and values (TLS versions,
//! ciphers, statuses, replies), so each shrinks to a few hundred bytes; the same JSON would
//! be about 1.4 KB. The first byte says how the rest is packed, so the dictionary can change
//! in a later version without rewriting what is stored.

use std::cell::RefCell;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::tracking::{TrackingError, corrupt};

/// Never changes: records packed with it are read with it. A new dictionary gets a new format
/// byte. It is a message record and a connection record as this release writes them (made from
/// events by the fold), after the other values of their fields: zstd finds in it the names and
/// values each record repeats.
const DICTIONARY_1: &[u8] = include_bytes!("dictionary-1.json");
const RAW: u8 = 0;
const ZSTD_1: u8 = 1;
const LEVEL: i32 = 6;
/// No record is larger (a message's inline timeline and attempts are bounded).
const MAX_UNPACKED: usize = 16 << 20;

thread_local! {
    static COMPRESSOR: RefCell<zstd::bulk::Compressor<'static>> = RefCell::new(
        zstd::bulk::Compressor::with_dictionary(LEVEL, DICTIONARY_1).expect("zstd dictionary")
    );
    static DECOMPRESSOR: RefCell<zstd::bulk::Decompressor<'static>> = RefCell::new(
        zstd::bulk::Decompressor::with_dictionary(DICTIONARY_1).expect("zstd dictionary")
    );
}

pub fn pack<T: Serialize>(value: &T) -> Vec<u8> {
    let json = serde_json::to_vec(value).expect("records serialise");
    let packed = COMPRESSOR.with(|c| c.borrow_mut().compress(&json));
    match packed {
        Ok(z) if z.len() < json.len() => {
            let mut out = Vec::with_capacity(z.len() + 1);
            out.push(ZSTD_1);
            out.extend_from_slice(&z);
            out
        }
        _ => {
            let mut out = Vec::with_capacity(json.len() + 1);
            out.push(RAW);
            out.extend_from_slice(&json);
            out
        }
    }
}

pub fn unpack<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, TrackingError> {
    match bytes.split_first() {
        Some((&RAW, json)) => serde_json::from_slice(json).map_err(corrupt),
        Some((&ZSTD_1, z)) => {
            // The frame says how large it unpacks (pack's compressor writes the size).
            let size = match zstd::zstd_safe::get_frame_content_size(z) {
                Ok(Some(n)) if n as usize <= MAX_UNPACKED => n as usize,
                _ => return Err(TrackingError::Corrupt("a packed record's size".into())),
            };
            let json = DECOMPRESSOR
                .with(|d| d.borrow_mut().decompress(z, size))
                .map_err(corrupt)?;
            serde_json::from_slice(&json).map_err(corrupt)
        }
        _ => Err(TrackingError::Corrupt(
            "a record packed in an unknown format".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_shrink() {
        let value = serde_json::json!({"tls": {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"},
            "reply": "250 2.0.0 Ok: queued as 4XyZ", "status": "delivered"});
        let packed = pack(&value);
        assert_eq!(packed[0], ZSTD_1);
        assert!(packed.len() < serde_json::to_vec(&value).unwrap().len() / 2);
        assert_eq!(unpack::<serde_json::Value>(&packed).unwrap(), value);
        // What does not compress is kept as it is.
        assert_eq!(pack(&1)[0], RAW);
        assert_eq!(unpack::<u32>(&pack(&1)).unwrap(), 1);
        assert!(unpack::<u32>(&[9, 1, 2]).is_err());
        assert!(unpack::<u32>(&[ZSTD_1, 1, 2]).is_err());
    }
}
