//! The leader proposes a tick for every actor timer whose log time has come.
//!
//! Only the leader proposes ticks; a tick names its timer id, so a tick proposed twice (leader
//! change, retry) is applied once. A timer is due by the log time its tick would be given
//! (`StateMachine::log_time_for`, the bound of `state::logtime`), not by the leader's wall
//! clock: a leader running a day fast fires no daily fee and no end of friendly hours early.

use std::collections::HashMap;
use std::time::Duration;

use openraft_rt::WatchReceiver;

use super::Node;
use crate::raft::Body;
use crate::rpc::wire::Forward;

/// How often the leader looks for due timers. Actor timers are coarse (daily fees, the end of
/// friendly hours), so a second of lateness is harmless.
pub const TIMER_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Ticks proposed per poll at most, so a backlog after a long outage drains in bounded bites.
pub const MAX_TICKS_PER_POLL: usize = 16;
/// A tick not yet applied is proposed again after this long.
pub const TICK_RETRY_AFTER: Duration = Duration::from_secs(10);

pub(crate) async fn run(node: Node) {
    let mut proposed: HashMap<u64, tokio::time::Instant> = HashMap::new();
    loop {
        tokio::time::sleep(TIMER_POLL_INTERVAL).await;
        if !node.raft().is_leader() {
            proposed.clear();
            continue;
        }
        let now = tokio::time::Instant::now();
        let term = node.raft().metrics().borrow_watched().current_term;
        let (wall_ms, clock) = node.inner.proposer.stamp(&node, None);
        let sm = node.state_machine();
        let due = sm.due_timers(sm.log_time_for(term, wall_ms, &clock), MAX_TICKS_PER_POLL);
        proposed.retain(|id, _| due.iter().any(|(d, _)| d == id));
        for (id, _) in due {
            if proposed
                .get(&id)
                .is_some_and(|t| now.duration_since(*t) < TICK_RETRY_AFTER)
            {
                continue;
            }
            proposed.insert(id, now);
            let n = node.clone();
            tokio::spawn(async move {
                let f = Forward {
                    origin: n.id(),
                    seq: 0,
                    origin_time_ms: n.clock().now_ms(),
                    body: Body::Tick { timer_id: id },
                };
                if let Err(e) = n.inner.proposer.write_local(&n, f).await {
                    tracing::debug!(timer = id, error = %e, "tick not committed; will retry");
                }
            });
        }
    }
}
