//! Wall-clock helpers: timestamps are milliseconds since the Unix epoch inside, RFC 3339
//! strings in the API.

use std::time::{Duration, UNIX_EPOCH};

pub use wedge_proto::now_ms;

/// 9999-12-31T23:59:59.999Z, the last instant RFC 3339 can write (four-digit years).
pub const MAX_RFC3339_MS: u64 = 253_402_300_799_999;

/// The time `ms` in RFC 3339. Total: a timestamp past the year 9999 (a node may send any
/// `u64`) is shown as the last instant RFC 3339 can write, never a panic.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.min(MAX_RFC3339_MS)))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_timestamp_formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(MAX_RFC3339_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(MAX_RFC3339_MS + 1), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
