//! The `_mta-sts.<domain>` TXT record (RFC 8461 3.1): `v=STSv1; id=<1-32 alphanumerics>;`
//! with optional extension fields. Of the TXT records found, those not beginning with
//! `v=STSv1;` are discarded; anything but exactly one valid record means no policy.

/// A valid `_mta-sts` record: the id that tells a cached policy is current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsRecord {
    /// The `id`: 1 to 32 letters and digits; a new one means the policy changed.
    pub id: String,
}

/// Why there is no usable `_mta-sts` record; each means no policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// No TXT record begins with `v=STSv1;`.
    #[error("no v=STSv1 record")]
    None,
    /// More than one record begins with `v=STSv1;` (how many).
    #[error("{0} v=STSv1 records (exactly one is allowed)")]
    Several(usize),
    /// The one `v=STSv1` record is malformed (why, with the record quoted).
    #[error("invalid v=STSv1 record: {0}")]
    Invalid(String),
}

/// The policy record among `txts` (each TXT record's strings already joined).
pub fn sts_record<S: AsRef<str>>(txts: &[S]) -> Result<StsRecord, RecordError> {
    let ours: Vec<&str> = txts
        .iter()
        .map(AsRef::as_ref)
        .filter(|t| t.starts_with("v=STSv1;"))
        .collect();
    match ours.as_slice() {
        [] => Err(RecordError::None),
        [one] => parse(one),
        many => Err(RecordError::Several(many.len())),
    }
}

fn parse(text: &str) -> Result<StsRecord, RecordError> {
    let invalid = |why: &str| RecordError::Invalid(format!("{why} in {text:?}"));
    let mut id = None;
    for (i, field) in text.split(';').map(str::trim).enumerate() {
        if field.is_empty() {
            continue;
        }
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| invalid("a field without '='"))?;
        match (i, key.trim(), value.trim()) {
            (0, "v", "STSv1") => {}
            (0, _, _) => return Err(invalid("v=STSv1 is not first")),
            (_, "v", _) => return Err(invalid("a second v=")),
            (_, "id", v) => {
                let valid =
                    (1..=32).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric());
                if !valid || id.is_some() {
                    return Err(invalid(
                        "an id that is not 1 to 32 letters and digits, once",
                    ));
                }
                id = Some(v.to_string());
            }
            // Extension fields (RFC 8461 3.1: sts-ext-name = (ALPHA / DIGIT) *31(...)) are ignored.
            (_, name, _)
                if !name.is_empty()
                    && name.len() <= 32
                    && name.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'
                    }) => {}
            _ => return Err(invalid("a malformed field")),
        }
    }
    id.map(|id| StsRecord { id })
        .ok_or_else(|| invalid("no id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_record_with_an_id() {
        let r = sts_record(&["v=STSv1; id=20160831085700Z;"]).unwrap();
        assert_eq!(r.id, "20160831085700Z");
        assert_eq!(sts_record(&["v=STSv1;id=abc"]).unwrap().id, "abc");
        // Other TXT records at the name are not ours.
        let r = sts_record(&["google-site-verification=x", "v=STSv1; id=1; ext=yes"]).unwrap();
        assert_eq!(r.id, "1");
    }

    #[test]
    fn anything_but_exactly_one_valid_record_is_no_policy() {
        assert_eq!(sts_record::<&str>(&[]), Err(RecordError::None));
        assert_eq!(sts_record(&["v=spf1 -all"]), Err(RecordError::None));
        assert_eq!(
            sts_record(&["v=STSv1; id=1", "v=STSv1; id=2"]),
            Err(RecordError::Several(2))
        );
        // Not beginning with `v=STSv1;`: discarded, as if absent.
        for other in ["v=STSv1", " v=STSv1; id=1", "v=STSv1 ; id=1"] {
            assert_eq!(sts_record(&[other]), Err(RecordError::None), "{other:?}");
        }
        assert_eq!(sts_record(&["v=STSv1", "v=STSv1; id=3"]).unwrap().id, "3");
        for bad in [
            "v=STSv1;",
            "v=STSv1; id=",
            "v=STSv1; id=has space",
            "v=STSv1; id=123456789012345678901234567890123",
            "v=STSv1; id=a-b",
            "v=STSv1; id=1; id=2",
            "v=STSv1; id=1; garbage",
            "v=STSv1; v=STSv1; id=1",
        ] {
            assert!(
                matches!(sts_record(&[bad]), Err(RecordError::Invalid(_))),
                "{bad}"
            );
        }
        // Not starting with v=STSv1: not an STS record at all.
        assert_eq!(sts_record(&["id=1; v=STSv1"]), Err(RecordError::None));
        assert_eq!(sts_record(&["v=STSv10; id=1"]), Err(RecordError::None));
    }
}
