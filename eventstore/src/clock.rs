//! Wall-clock time as stored: microseconds since the Unix epoch.

/// Now, in microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
