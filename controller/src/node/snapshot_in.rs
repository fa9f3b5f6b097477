//! Snapshot chunks a leader sends this node: checked against the vote this node follows and
//! what it committed, written to a snapshot file as they come (`storage::snapshot_file`: the
//! snapshot is never whole in memory), expired when the sender goes quiet and resumed after a
//! timeout, so that nothing openraft's `install_full_snapshot` asserts against reaches it.
//!
//! openraft's follower handler `assert!`s that a snapshot's last log id is owned by the
//! installing leader's vote and, when it is newer than the local commit, lies at a greater
//! index; a chunk stream from a member that claims a higher vote would otherwise panic the
//! Raft core. The rules here, checked on every chunk before a byte is kept:
//!
//! - the chunk's vote is committed, is the vote this node follows, and names the sender as
//!   its leader: only the current leader sends snapshots, and a new leader's appends (which
//!   openraft sends first) have made its vote this node's by then;
//! - the snapshot's last log id is of a term at or below the vote's, and, when it is past
//!   what this node committed, at a greater index than that;
//! - its membership's log id is at or below its last log id.
//!
//! Logic only: time is passed in, the view of the node's vote and commit is passed in.

use std::time::Duration;

use openraft::vote::RaftLeaderId;

use super::guard::Refusal;
use crate::raft::{LogId, Snapshot, SnapshotMeta, Vote};
use crate::rpc::wire::SnapshotChunk;
use crate::storage::StoreError;
use crate::storage::snapshot_file::SnapshotWriter;

/// A partial transfer whose sender sent nothing for this long is dropped (its file is removed
/// with the next snapshot built or installed).
/// A 64 KiB chunk takes about a minute on a 9,600 bit/s radio and openraft retries a failed
/// transfer after a few heartbeats, so ten minutes keeps a transfer alive through a radio's
/// bad spell while a leader that moved on does not pin a snapshot's worth of memory.
pub const TRANSFER_IDLE_MAX: Duration = Duration::from_secs(600);

/// What this node follows and has committed, as openraft reports it.
#[derive(Debug, Clone)]
pub(crate) struct View {
    /// The vote this node holds.
    pub vote: Vote,
    /// The last log id this node knows committed.
    pub committed: Option<LogId>,
}

/// Whether a chunk from `from` may be kept, given the node's [`View`].
pub(crate) fn check_chunk(from: u64, c: &SnapshotChunk, view: &View) -> Result<(), Refusal> {
    if !c.vote.is_committed() || c.vote != view.vote || *c.vote.leader_id().node_id() != from {
        return Err(Refusal::SnapshotNotFromLeader);
    }
    check_meta(&c.meta, &c.vote, view.committed.as_ref())
}

/// The snapshot's metadata against its leader's vote and this node's commit.
fn check_meta(meta: &SnapshotMeta, vote: &Vote, committed: Option<&LogId>) -> Result<(), Refusal> {
    let Some(last) = meta.last_log_id.as_ref() else {
        return Err(Refusal::SnapshotInconsistent);
    };
    if *last.committed_leader_id() > vote.leader_id().to_committed() {
        return Err(Refusal::SnapshotBeyondVote);
    }
    if let Some(committed) = committed
        && last > committed
        && last.index() <= committed.index()
    {
        return Err(Refusal::SnapshotContradictsCommitted);
    }
    if meta.last_membership.log_id().as_ref() > Some(last) {
        return Err(Refusal::SnapshotInconsistent);
    }
    Ok(())
}

/// What became of a chunk that passed [`check_chunk`].
#[derive(Debug)]
pub(crate) enum Kept {
    /// Stored (or already held); more is to come.
    More,
    /// The last chunk: the whole snapshot, for the caller to check and install.
    Complete(Snapshot),
}

/// A chunk that does not continue the transfer in progress: the sender starts again from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChunkError {
    /// A chunk past the start with no transfer (or another snapshot's) in progress: this node
    /// restarted, or the transfer expired.
    #[error(
        "snapshot chunk at offset {offset} without its start (this node restarted or the transfer expired); restart the transfer"
    )]
    NoStart {
        /// The chunk's offset.
        offset: u64,
    },
    /// A chunk past the bytes held: one in between was lost.
    #[error("snapshot chunk at offset {offset}, but {held} bytes are held; restart the transfer")]
    Gap {
        /// The chunk's offset.
        offset: u64,
        /// Bytes held.
        held: u64,
    },
    /// More bytes than the transfer announced.
    #[error("snapshot chunk beyond the announced length of {total} bytes")]
    TooLong {
        /// Announced length.
        total: u64,
    },
    /// The snapshot file could not be written.
    #[error("{0}")]
    Store(String),
}

struct Incoming {
    from: u64,
    meta: SnapshotMeta,
    total_len: u64,
    file: SnapshotWriter,
    touched: tokio::time::Instant,
}

/// The one snapshot transfer in progress (only the current leader sends one).
#[derive(Default)]
pub(crate) struct Inbox {
    current: Option<Incoming>,
}

impl Inbox {
    /// Drops a transfer whose sender has been quiet for [`TRANSFER_IDLE_MAX`]; returns the
    /// bytes freed.
    pub(crate) fn expire(&mut self, now: tokio::time::Instant) -> usize {
        match &self.current {
            Some(inc) if now.saturating_duration_since(inc.touched) >= TRANSFER_IDLE_MAX => {
                let freed = inc.file.written() as usize;
                tracing::info!(
                    from = inc.from,
                    held = freed,
                    total = inc.total_len,
                    "a snapshot transfer went quiet and was dropped; the leader sends it again"
                );
                self.current = None;
                freed
            }
            _ => 0,
        }
    }

    /// Keeps a checked chunk, in a file `begin` makes when a transfer starts. A chunk at
    /// offset 0 of another snapshot (or another sender's) starts a new transfer, dropping the
    /// old one; a chunk that repeats bytes already held (a retry after a lost answer, or the
    /// sender beginning again) is acknowledged without keeping them twice; a sender that
    /// resumes from the last acknowledged offset after a timeout continues here.
    pub(crate) fn keep(
        &mut self,
        from: u64,
        c: SnapshotChunk,
        now: tokio::time::Instant,
        begin: impl FnOnce() -> Result<SnapshotWriter, StoreError>,
    ) -> Result<Kept, ChunkError> {
        let same =
            |inc: &Incoming| inc.from == from && inc.meta == c.meta && inc.total_len == c.total_len;
        // A start of the transfer already held (the sender began again from 0, with the same
        // bytes) continues it rather than throwing away what arrived.
        if c.offset == 0 && !self.current.as_ref().is_some_and(same) {
            self.current = None;
            self.current = Some(Incoming {
                from,
                meta: c.meta.clone(),
                total_len: c.total_len,
                file: begin().map_err(|e| ChunkError::Store(e.to_string()))?,
                touched: now,
            });
        }
        let Some(inc) = self.current.as_mut().filter(|inc| same(inc)) else {
            return Err(ChunkError::NoStart { offset: c.offset });
        };
        inc.touched = now;
        let held = inc.file.written();
        let end = c.offset.saturating_add(c.data.len() as u64);
        if end > inc.total_len {
            self.current = None;
            return Err(ChunkError::TooLong { total: c.total_len });
        }
        if c.offset > held {
            self.current = None;
            return Err(ChunkError::Gap {
                offset: c.offset,
                held,
            });
        }
        if end > held {
            let skip = (held - c.offset) as usize;
            if let Err(e) = std::io::Write::write_all(&mut inc.file, &c.data[skip..]) {
                self.current = None;
                return Err(ChunkError::Store(e.to_string()));
            }
        }
        if inc.file.written() < inc.total_len {
            return Ok(Kept::More);
        }
        let done = self.current.take().expect("checked above");
        let file = done
            .file
            .finish()
            .map_err(|e| ChunkError::Store(e.to_string()))?;
        Ok(Kept::Complete(Snapshot {
            meta: done.meta,
            snapshot: file,
        }))
    }

    /// Bytes held by the transfer in progress.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.current
            .as_ref()
            .map_or(0, |i| i.file.written() as usize)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Arc;

    use openraft::StoredMembership;

    use super::*;

    fn db() -> Arc<redb::Database> {
        crate::storage::open_backend(redb::backends::InMemoryBackend::new(), "test").expect("db")
    }

    fn vote(term: u64, node: u64, committed: bool) -> Vote {
        if committed {
            Vote::new_committed(term, node)
        } else {
            Vote::new(term, node)
        }
    }

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(
            openraft::impls::leader_id_adv::LeaderId::new(term, node).to_committed(),
            index,
        )
    }

    fn meta(last: LogId) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(last),
            last_membership: StoredMembership::default(),
        }
    }

    fn chunk(v: Vote, last: LogId, total: u64, offset: u64, data: &[u8]) -> SnapshotChunk {
        SnapshotChunk {
            vote: v,
            meta: meta(last),
            total_len: total,
            offset,
            data: data.to_vec(),
        }
    }

    #[test]
    fn only_the_leader_this_node_follows_may_send_a_snapshot_openraft_accepts() {
        let leader = vote(5, 1, true);
        let view = View {
            vote: leader,
            committed: Some(log_id(5, 1, 100)),
        };
        let good = chunk(leader, log_id(5, 1, 200), 10, 0, b"x");
        assert_eq!(check_chunk(1, &good, &view), Ok(()));
        // Another member sending in the leader's name, or under its own higher vote (the
        // forged snapshot that panics openraft's follower handler).
        assert_eq!(
            check_chunk(2, &good, &view),
            Err(Refusal::SnapshotNotFromLeader)
        );
        let forged = chunk(vote(9, 2, true), log_id(9, 2, 300), 10, 0, b"x");
        assert_eq!(
            check_chunk(2, &forged, &view),
            Err(Refusal::SnapshotNotFromLeader)
        );
        let uncommitted = chunk(vote(5, 1, false), log_id(5, 1, 200), 10, 0, b"x");
        assert_eq!(
            check_chunk(1, &uncommitted, &view),
            Err(Refusal::SnapshotNotFromLeader)
        );
        // The current leader's chunk with a last log id of a later term than its own.
        let beyond = chunk(leader, log_id(6, 1, 200), 10, 0, b"x");
        assert_eq!(
            check_chunk(1, &beyond, &view),
            Err(Refusal::SnapshotBeyondVote)
        );
        // Newer than the commit (a higher term) but not at a greater index.
        let contradicts = chunk(leader, log_id(5, 1, 100), 10, 0, b"x");
        let view_lower_term = View {
            vote: leader,
            committed: Some(log_id(4, 3, 100)),
        };
        assert_eq!(
            check_chunk(1, &contradicts, &view_lower_term),
            Err(Refusal::SnapshotContradictsCommitted)
        );
        // An older snapshot is openraft's to ignore, not a refusal.
        let older = chunk(leader, log_id(4, 3, 50), 10, 0, b"x");
        assert_eq!(check_chunk(1, &older, &view_lower_term), Ok(()));
        let mut empty = good.clone();
        empty.meta.last_log_id = None;
        assert_eq!(
            check_chunk(1, &empty, &view),
            Err(Refusal::SnapshotInconsistent)
        );
    }

    #[test]
    fn a_transfer_resumes_after_a_repeat_expires_when_quiet_and_restarts_on_a_gap() {
        let leader = vote(5, 1, true);
        let last = log_id(5, 1, 200);
        let t0 = tokio::time::Instant::now();
        let db = db();
        let mut inbox = Inbox::default();
        let keep = |inbox: &mut Inbox, c| inbox.keep(1, c, t0, || SnapshotWriter::create(&db));
        assert!(matches!(
            keep(&mut inbox, chunk(leader, last, 6, 0, b"ab")),
            Ok(Kept::More)
        ));
        // The answer to the next chunk was lost: the sender resends it, then goes on.
        assert!(matches!(
            keep(&mut inbox, chunk(leader, last, 6, 2, b"cd")),
            Ok(Kept::More)
        ));
        assert!(matches!(
            keep(&mut inbox, chunk(leader, last, 6, 2, b"cd")),
            Ok(Kept::More)
        ));
        assert_eq!(inbox.held(), 4);
        // A sender that resumes from what was acknowledged continues the transfer.
        match keep(&mut inbox, chunk(leader, last, 6, 4, b"ef")) {
            Ok(Kept::Complete(s)) => {
                let mut back = Vec::new();
                s.snapshot.reader().read_to_end(&mut back).expect("read");
                assert_eq!(back, b"abcdef");
            }
            other => panic!("expected the whole snapshot, got {other:?}"),
        }
        assert_eq!(inbox.held(), 0);

        // A chunk past what is held drops the transfer; so does a quiet sender.
        keep(&mut inbox, chunk(leader, last, 6, 0, b"ab")).unwrap();
        assert_eq!(
            keep(&mut inbox, chunk(leader, last, 6, 4, b"ef")).unwrap_err(),
            ChunkError::Gap { offset: 4, held: 2 }
        );
        assert_eq!(
            keep(&mut inbox, chunk(leader, last, 6, 2, b"cd")).unwrap_err(),
            ChunkError::NoStart { offset: 2 }
        );
        keep(&mut inbox, chunk(leader, last, 6, 0, b"ab")).unwrap();
        assert_eq!(inbox.expire(t0 + TRANSFER_IDLE_MAX / 2), 0);
        assert_eq!(inbox.expire(t0 + TRANSFER_IDLE_MAX), 2);
        assert_eq!(inbox.held(), 0);
        // More than announced.
        keep(&mut inbox, chunk(leader, last, 3, 0, b"ab")).unwrap();
        assert_eq!(
            keep(&mut inbox, chunk(leader, last, 3, 2, b"cd")).unwrap_err(),
            ChunkError::TooLong { total: 3 }
        );
    }
}
