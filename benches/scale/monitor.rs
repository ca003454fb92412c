//! The bench's clock: the kernel's nf_tables notifications in the calling
//! thread's network namespace, decoded by the shared test helpers.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cgtproxy::netlink::NlSocket;

use crate::common::{nft_events, nft_monitor, wait_readable};

pub struct Monitor {
    sock: NlSocket,
}

impl Monitor {
    pub fn open() -> Self {
        let sock = nft_monitor();
        // 100,000 elements are 100,000 notifications at startup: more than
        // the daemon's own 32 MiB.
        sock.force_recv_buffer(1 << 30).expect("SO_RCVBUFFORCE");
        Monitor { sock }
    }

    /// Wait (blocking in poll(2), no busy loop) until every id in `want`
    /// was announced as a new element, or `timeout`; returns the moment the
    /// last one arrived. Ids announced meanwhile are removed from `want`.
    pub fn wait(&mut self, want: &mut HashSet<u64>, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while !want.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            if wait_readable(&self.sock, left) {
                last = self.read(want);
            }
        }
        last.or(Some(Instant::now()))
    }

    /// Process what is queued without waiting.
    pub fn drain(&mut self, want: &mut HashSet<u64>) {
        self.read(want);
    }

    /// Remove the ids announced in the queued datagrams from `want`; the
    /// moment the datagram that emptied it (or else the last one) was read.
    fn read(&mut self, want: &mut HashSet<u64>) -> Option<Instant> {
        let (mut last, mut emptied) = (None, None);
        // An overrun (ENOBUFS) loses notifications: the ids they carried
        // stay in `want`, and the wait says so by timing out.
        let _ = self.sock.each_queued(|datagram| {
            let at = Instant::now();
            for event in nft_events(datagram) {
                for key in event.new_element_keys() {
                    want.remove(&key);
                }
            }
            last = Some(at);
            if want.is_empty() && emptied.is_none() {
                emptied = Some(at);
            }
        });
        emptied.or(last)
    }
}
