//! The clock and every date format Postern writes or reads, in one place: Unix milliseconds
//! inside (events, records), RFC 3339 in UTC at the API and in the spool, RFC 5322 in mail
//! headers (Received, DSN Date). Built on the `time` crate rather than hand-written calendar
//! arithmetic.

#![forbid(unsafe_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::format_description::well_known::{Rfc2822, Rfc3339};
use time::macros::format_description;

/// `2026-11-29T20:00:00.123Z`: fixed width, so that these sort as text in time order.
const RFC3339_MS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
/// `2026-11-29T20:00:00Z`.
const RFC3339_S: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// Milliseconds since the Unix epoch (0 for a clock set before it).
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// Seconds since the Unix epoch.
pub fn now_s() -> u64 {
    now_ms() / 1000
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn utc(ms: u64) -> OffsetDateTime {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    // Years past 9999 are not representable; such a clock is clamped rather than a panic.
    OffsetDateTime::from(t.min(UNIX_EPOCH + Duration::from_secs(253_402_300_799)))
}

/// Unix milliseconds as `2026-11-29T20:00:00.123Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    utc(ms).format(RFC3339_MS).expect("a UTC date formats")
}

/// Unix seconds as `2026-11-29T20:00:00Z`.
pub fn rfc3339_s(secs: u64) -> String {
    utc(secs.saturating_mul(1000))
        .format(RFC3339_S)
        .expect("a UTC date formats")
}

/// Unix seconds as an RFC 5322 date in UTC: `Sun, 29 Nov 2026 20:00:00 +0000`.
pub fn rfc5322(secs: u64) -> String {
    utc(secs.saturating_mul(1000))
        .format(&Rfc2822)
        .expect("a UTC date formats")
}

/// An RFC 3339 date with any offset, as Unix milliseconds (dates before 1970 are 0).
pub fn parse_rfc3339_ms(s: &str) -> Result<u64, String> {
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| e.to_string())?;
    Ok((t.unix_timestamp_nanos() / 1_000_000).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_986_061_042), "2026-11-29T21:01:01.042Z");
        assert_eq!(rfc3339_s(1_795_986_061), "2026-11-29T21:01:01Z");
        assert_eq!(rfc5322(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322(1_795_986_061), "Sun, 29 Nov 2026 21:01:01 +0000");
        // 2000-02-29, a leap day of a century year.
        assert_eq!(rfc5322(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert!(rfc3339_ms(u64::MAX).starts_with("9999-12-31T23:59:59"));
    }

    #[test]
    fn parses_any_offset() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T01:00:00+01:00"), Ok(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-29T21:01:01.042Z"),
            Ok(1_795_986_061_042)
        );
        assert_eq!(parse_rfc3339_ms("1969-12-31T00:00:00Z"), Ok(0));
        assert!(parse_rfc3339_ms("2026-11-29 20:01").is_err());
    }
}
