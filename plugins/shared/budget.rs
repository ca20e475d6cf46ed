//! What one call into the provider has spent of the host's per-call limits
//! (1,000 requests, 64 MiB of response bodies, 16 MiB of returned text), so that
//! a page of pull requests or issues ends early, with a cursor, before a limit
//! is reached. Each call runs
//! in a fresh instance, so the counters start at zero with every call.

use core::sync::atomic::{AtomicU64, Ordering};

static REQUESTS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// Requests after which a page stops taking more items (of the host's 1,000).
const REQUEST_BUDGET: u64 = 500;
/// Response bytes after which a page stops taking more items (of the host's 64 MiB).
const BYTE_BUDGET: u64 = 32 << 20;

/// Returned text after which a page stops taking more items (of the host's 16 MiB).
const RETURN_BUDGET: usize = 8 << 20;

/// Counts one request whose response body had `bytes` bytes.
pub fn record(bytes: usize) {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
}

/// Whether this call, about to return `returned` bytes of text, has spent half
/// the host's limits: it takes no further item.
pub fn spent(returned: usize) -> bool {
    returned >= RETURN_BUDGET
        || REQUESTS.load(Ordering::Relaxed) >= REQUEST_BUDGET
        || BYTES.load(Ordering::Relaxed) >= BYTE_BUDGET
}

/// The text of `documents` (what the host counts against its return limit).
pub fn returned(documents: &[crate::reposafe::provider::types::Document]) -> usize {
    documents.iter().map(|d| d.json.len() + d.id.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_the_limits() {
        assert!(!spent(0));
        assert!(spent(RETURN_BUDGET));
        record(BYTE_BUDGET as usize);
        assert!(spent(0));
        BYTES.store(0, Ordering::Relaxed);
        for _ in 0..REQUEST_BUDGET {
            record(10);
        }
        assert!(spent(0));
    }
}
