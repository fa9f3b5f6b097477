//! The node's own gauges for the alarm rules (`rules::HostGauges`): peers the leader cannot
//! reach, how far the central is behind, and free disk space. Read from the node's Raft
//! metrics, its replicated outbox cursors and the file system, once per evaluation.

use std::path::PathBuf;
use std::time::Duration;

use openraft_rt::{Instant as _, WatchReceiver};

use super::rules::HostGauges;
use crate::node::Node;

/// A voter the leader has not heard from for this long counts as unreachable: four heartbeats
/// on the slowest link profile's timing are a few seconds, and a radio loses some; ten seconds
/// of silence is a peer that is down or cut off (the rule then waits its own minute).
pub const PEER_SILENT_AFTER: Duration = Duration::from_secs(10);

/// Samples a running node's gauges.
pub struct NodeGauges {
    node: Node,
    data_dir: PathBuf,
    /// A `[wan]` is configured: the central's backlog is judged.
    wan: bool,
}

impl NodeGauges {
    /// The gauges of `node`, whose data lives in `data_dir`.
    pub fn new(node: Node, data_dir: PathBuf, wan: bool) -> NodeGauges {
        NodeGauges {
            node,
            data_dir,
            wan,
        }
    }

    /// Reads them now.
    pub fn sample(&self) -> HostGauges {
        let leads = self.node.is_leader();
        HostGauges {
            peers_unreachable: if leads { self.peers_unreachable() } else { 0 },
            wan_behind_s: if leads && self.wan {
                self.wan_behind_s()
            } else {
                0
            },
            disk_free_mib: disk_free_mib(&self.data_dir).unwrap_or(u64::MAX),
        }
    }

    fn peers_unreachable(&self) -> u64 {
        let m = self.node.raft().metrics().borrow_watched().clone();
        let me = self.node.id();
        m.membership_config
            .membership()
            .voter_ids()
            .filter(|v| *v != me)
            .filter(|v| {
                let heard = m
                    .heartbeat
                    .as_ref()
                    .and_then(|h| h.get(v).cloned().flatten())
                    .map(|at| at.elapsed());
                heard.is_none_or(|ago| ago > PEER_SILENT_AFTER)
            })
            .count() as u64
    }

    /// The age, in log time, of the oldest outbox record some WAN stream has not had
    /// acknowledged (what the prune rule waits for too).
    fn wan_behind_s(&self) -> u64 {
        let sm = self.node.state_machine();
        let now_ms = sm.status().borrow().log_time_ms;
        match sm.oldest_unacknowledged_ms() {
            Ok(oldest) => oldest.map_or(0, |t| now_ms.saturating_sub(t) / 1_000),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the outbox for the WAN gauge");
                0
            }
        }
    }
}

/// Space an unprivileged process may still write where `dir` lives, MiB.
// The counts are 32 bits wide on armv7 boards and 64 on aarch64 and x86_64.
#[allow(clippy::useless_conversion)]
fn disk_free_mib(dir: &std::path::Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let bytes = u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size()));
    Some(bytes / (1024 * 1024))
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_space_is_read_for_a_real_directory_and_unknown_for_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(super::disk_free_mib(dir.path()).is_some());
        assert_eq!(
            super::disk_free_mib(std::path::Path::new("/no/such/dir")),
            None
        );
    }
}
