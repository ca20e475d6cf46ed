//! Ports for servers the tests start as separate processes (SeaweedFS, the SMTP
//! server), which must be told a port before they bind it.
//!
//! Asking the kernel for one (`bind 127.0.0.1:0`, then closing it) is racy: the port
//! is free again at once, and comes from the ephemeral range, which every outgoing
//! connection and every other `bind 0` of the same moment draws from. Two SeaweedFS
//! servers started by tests running side by side were once handed the same port; the
//! one that lost died, and cleaning up after it removed the winner's unix socket named
//! after that port, which broke the winner too.
//!
//! So ports come from a band below the ephemeral range that nothing else here hands
//! out, each at most once per test process (a process-wide counter, started at an
//! offset from the PID so that processes rarely meet), and only after a bind shows
//! nothing listens on it. SeaweedFS also dials `admin port + 10000`; the band is
//! `10000..20000`, so that port is never one handed out either.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// The band ports are handed out from: below the ephemeral range (which starts at
/// 32768 by default), and its `+ 10000` images are outside it.
pub const BAND: std::ops::Range<u16> = 10_000..20_000;

/// How many ports have been handed out (or tried) in this process.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A local port nothing listens on, never handed out before in this process.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct local ports nothing listens on, none handed out before in this process.
pub fn free_ports(n: usize) -> Vec<u16> {
    let offset = std::process::id().wrapping_mul(7_919);
    take_ports(n, &NEXT, offset)
}

/// `n` ports of [`BAND`] nothing listens on, walking it from `offset` on by `counter`.
fn take_ports(n: usize, counter: &AtomicU32, offset: u32) -> Vec<u16> {
    let width = u32::from(BAND.end - BAND.start);
    let mut ports = Vec::with_capacity(n);
    let mut tried = 0;
    while ports.len() < n {
        assert!(tried < width, "no free port left in {BAND:?}");
        tried += 1;
        let step = counter.fetch_add(1, Ordering::Relaxed);
        let port = BAND.start + (offset.wrapping_add(step) % width) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ports_handed_out_at_once_on_many_threads_are_distinct_and_outside_the_ephemeral_range() {
        let ephemeral_start: u16 =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
                .ok()
                .and_then(|r| r.split_whitespace().next()?.parse().ok())
                .unwrap_or(32_768);
        let handed: Vec<u16> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..8).map(|_| s.spawn(|| free_ports(11))).collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().expect("thread"))
                .collect()
        });
        let distinct: HashSet<u16> = handed.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            handed.len(),
            "a port was handed out twice: {handed:?}"
        );
        for port in handed {
            assert!(BAND.contains(&port), "{port} is outside {BAND:?}");
            assert!(port < ephemeral_start && port + 10_000 < ephemeral_start);
        }
    }

    #[test]
    fn a_port_something_listens_on_is_never_handed_out() {
        // Ports from one walk, held by listeners: a second walk from the same start
        // must step over them.
        let counter = AtomicU32::new(0);
        let first = take_ports(3, &counter, 4_242);
        let held: Vec<TcpListener> = first
            .iter()
            .map(|&p| TcpListener::bind(("127.0.0.1", p)).expect("hold"))
            .collect();
        let again = take_ports(3, &AtomicU32::new(0), 4_242);
        assert!(
            again.iter().all(|p| !first.contains(p)),
            "{again:?} includes a port of {first:?}, which is in use"
        );
        drop(held);
    }
}
