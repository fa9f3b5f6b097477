//! A member gone rogue (`kind = "rogue"` in a scenario's faults): keeping its key and its
//! honest node running, it also sends, through its own sealed link, what a stolen board or a
//! buggy one could: proposals forwarded in another member's name (a top-up), the WAN cursor
//! pushed to the end of the outbox, a timer tick, and a snapshot under a higher vote of its
//! own with a made-up image. Every peer must refuse each (`node::guard`, `node::snapshot_in`)
//! and the checkers must stay green.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ghatta::net::transport::Transport;
use ghatta::node::Node;
use ghatta::raft::{Body, LogId, SnapshotMeta, Vote};
use ghatta::rpc::wire::{Forward, Request, SnapshotChunk, WireBody, WireMessage};
use ghatta_actor_sdk as sdk;
use ghatta_proto::{codec, frame};
use openraft::vote::RaftLeaderId;
use openraft_rt::WatchReceiver;
use tokio::time::Duration;

/// How often the rogue sends its forgeries to each peer: often enough that every kind lands
/// in every phase of a run (elections, partitions), rarely enough not to be a flood (a
/// flood's cost is `tcp.rs`'s concern, tested apart).
pub const ROGUE_INTERVAL: Duration = Duration::from_secs(1);
/// Request ids the rogue uses, far above any the node's RPC layer hands out, so its own
/// pending calls never match an answer to a forgery.
const ROGUE_ID_BASE: u64 = 1 << 62;
/// The customer the forged top-up credits (every scenario's set-up has customer 1).
const FORGED_CUSTOMER: u32 = 1;
/// The wall clock the forgeries claim: a year past the end of 2026, which a refused request
/// must not bring into the members' time (`node::clockwatch`).
const FORGED_TIME_MS: u64 = 1_830_000_000_000;
/// What the forged top-up credits: a billion rupees, which no checker could miss.
const FORGED_AMOUNT_MPAISA: i64 = 1_000_000_000_000;

/// Sends the forgeries to every other member every [`ROGUE_INTERVAL`] until aborted; counts
/// the frames in `sent`.
pub async fn run(
    me: u64,
    members: Vec<u64>,
    transport: Arc<dyn Transport>,
    node: Node,
    sent: Arc<AtomicU64>,
) {
    let mut id = ROGUE_ID_BASE;
    let mut round = 0u64;
    loop {
        tokio::time::sleep(ROGUE_INTERVAL).await;
        round += 1;
        let term = node.raft().metrics().borrow_watched().current_term;
        for &victim in members.iter().filter(|&&m| m != me) {
            for req in forgeries(me, victim, term, round) {
                let Ok(payload) = codec::encode(&WireMessage {
                    id,
                    body: WireBody::Request(req),
                }) else {
                    continue;
                };
                id += 1;
                transport.send(victim, frame::encode(me, victim, &payload));
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One round of forgeries from `me` to `victim`, at the rogue's view of the `term`.
fn forgeries(me: u64, victim: u64, term: u64, round: u64) -> Vec<Request> {
    let top_up = sdk::codec::encode(&sdk::Input::TopUp(sdk::TopUp {
        customer: sdk::CustomerId(FORGED_CUSTOMER),
        token_id: ROGUE_ID_BASE + round,
        amount_mpaisa: FORGED_AMOUNT_MPAISA,
    }));
    let vote = Vote::new_committed(term + 10, me);
    vec![
        Request::Forward(Forward {
            origin: victim,
            seq: ROGUE_ID_BASE + round,
            body: Body::Inputs(vec![top_up]),
            origin_time_ms: FORGED_TIME_MS,
        }),
        Request::Forward(Forward {
            origin: me,
            seq: ROGUE_ID_BASE + round,
            body: Body::OutboxAck {
                stream: 0,
                upto_seq: u64::MAX,
            },
            origin_time_ms: FORGED_TIME_MS,
        }),
        Request::Forward(Forward {
            origin: me,
            seq: ROGUE_ID_BASE + round,
            body: Body::Tick { timer_id: 1 },
            origin_time_ms: FORGED_TIME_MS,
        }),
        Request::Snapshot(SnapshotChunk {
            vote,
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(vote.leader_id().to_committed(), 1 << 40)),
                last_membership: Default::default(),
            },
            total_len: 16,
            offset: 0,
            data: vec![0xA5; 16],
        }),
    ]
}

/// Requests `node` refused as not the sender's to make, every reason.
pub fn refused_total(node: &Node) -> u64 {
    let r = node.status().refused;
    r.forged_origin
        + r.forwarded_outbox_ack
        + r.forwarded_tick
        + r.member_op_from_non_voter
        + r.snapshot_refused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_forges_four_kinds_in_the_victims_name_or_beyond_the_vote() {
        let f = forgeries(3, 1, 5, 1);
        assert_eq!(f.len(), 4);
        assert!(matches!(&f[0], Request::Forward(x) if x.origin == 1));
        assert!(matches!(&f[3], Request::Snapshot(c) if c.vote.leader_id().term == 15));
    }
}
