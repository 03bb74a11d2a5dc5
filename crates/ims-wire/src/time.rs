//! Times on the wire are RFC 3339 in UTC; inside ims they are unix milliseconds.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Formats unix milliseconds as RFC 3339 UTC, such as `2026-11-28T07:07:55.123Z`.
pub fn rfc3339(unix_ms: u64) -> String {
    let nanos = i128::from(unix_ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix_ms.to_string())
}

/// Parses an RFC 3339 time into unix milliseconds, or says what is expected.
pub fn parse_rfc3339(value: &str) -> Result<u64, String> {
    let parsed = OffsetDateTime::parse(value, &Rfc3339).map_err(|e| {
        format!("invalid time {value:?} ({e}); expected RFC 3339 such as 2026-11-28T07:07:55Z")
    })?;
    let ms = parsed.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).map_err(|_| format!("time {value:?} is before 1970"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_read_back_what_they_print() {
        let text = super::rfc3339(1_700_000_000_123);
        assert_eq!(text, "2023-11-14T22:13:20.123Z");
        assert_eq!(super::parse_rfc3339(&text), Ok(1_700_000_000_123));
        assert!(super::parse_rfc3339("yesterday")
            .unwrap_err()
            .contains("RFC 3339"));
    }
}
