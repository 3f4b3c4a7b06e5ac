//! Default values shared by more than one table.

/// Bytes of a result or an object: 1 MiB.
pub(super) fn max_bytes() -> usize {
    1 << 20
}

/// Timeout of a database statement or a vault request.
pub(super) fn timeout_ms() -> u64 {
    5000
}

/// Timeout of a whole HTTP request, SMTP send or AWS call.
pub(super) fn http_timeout_ms() -> u64 {
    10_000
}

/// E-mails per minute, per agent and per smtp handle.
pub(super) fn sends_per_minute() -> u32 {
    10
}

/// Largest request body: 1 MiB.
pub(super) fn max_request_bytes() -> usize {
    1 << 20
}
