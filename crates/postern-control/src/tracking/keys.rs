//! Key layouts. Times are inverted (u64::MAX - ms, big-endian) so ascending key order is
//! newest first; ids follow so that keys are unique.

pub fn inverted(ms: u64) -> [u8; 8] {
    (u64::MAX - ms).to_be_bytes()
}

pub fn ms_of_inverted(bytes: &[u8]) -> u64 {
    u64::MAX - u64_of(bytes)
}

pub fn u64_of(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(b)
}

/// inverted time ++ id.
pub fn timed(ms: u64, id: &str) -> Vec<u8> {
    let mut k = inverted(ms).to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

/// value ++ 0 ++ inverted time ++ id.
pub fn indexed(value: &str, ms: u64, id: &str) -> Vec<u8> {
    let mut k = prefix(value);
    k.extend_from_slice(&timed(ms, id));
    k
}

/// value ++ 0: every index entry of one value.
pub fn prefix(value: &str) -> Vec<u8> {
    let mut k = value.as_bytes().to_vec();
    k.push(0);
    k
}

/// The (time, id) part of an index key whose value part is `prefix_len` long.
pub fn split_timed(key: &[u8], prefix_len: usize) -> Option<(u64, String)> {
    let rest = key.get(prefix_len..)?;
    let (time, id) = rest.split_at_checked(8)?;
    Some((
        ms_of_inverted(time),
        String::from_utf8_lossy(id).into_owned(),
    ))
}

/// value ++ 0 ++ n (big-endian): the `n`th entry under `value`, in order.
pub fn numbered(value: &str, n: u64) -> Vec<u8> {
    let mut k = prefix(value);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

pub fn cursor(worker: &str, epoch: &str) -> Vec<u8> {
    format!("{worker}\0{epoch}").into_bytes()
}

/// The facet index values of a message: its status, its worker and each mark it has.
pub fn facets(m: &super::record::SummaryRecord) -> Vec<String> {
    let mut f = vec![
        format!("status={}", m.status.as_str()),
        format!("worker={}", m.worker),
    ];
    for (mark, on) in [
        ("tls", m.marks.tls),
        ("plaintext", m.marks.plaintext),
        ("violation", m.marks.violation),
        ("tls_fallback", m.marks.tls_fallback),
    ] {
        if on {
            f.push(format!("mark={mark}"));
        }
    }
    f
}
