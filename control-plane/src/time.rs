//! Wall-clock helpers: timestamps are milliseconds since the Unix epoch inside, RFC 3339
//! strings in the API.

use std::time::{Duration, UNIX_EPOCH};

pub use wedge_shared::now_ms;

pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
