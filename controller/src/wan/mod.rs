//! WAN resync: committed outbox records, store-and-forward over the satellite link to the
//! central data center (`ghatta central`), idempotent and resumable.
//!
//! ```text
//! outbox (replicated, dense seq) --Stream filter--> Uploader (leader only, one per stream)
//!    --[deflate batch, HMAC-SHA256, frame+CRC, u32 length] TCP--> Central (redb, fsync)
//!    <--[Ack: next expected seq per (grid, stream), HMAC]--
//! Uploader --Body::OutboxAck through Raft--> committed cursor (any node resumes there)
//! ```
//!
//! **Streams.** Two streams are filters over the outbox: [`Stream::Ledger`] (billing ledger
//! records) and [`Stream::Events`] (alarms and relay commands with their reasons). A record
//! keeps its outbox sequence number as its stream sequence; gaps are the outbox records of
//! other kinds (and ballast set-points, which are control traffic the data center does not
//! need). Every batch states the range `[first_seq, end_seq)` of outbox sequences it covers,
//! so the central can still acknowledge "everything below N" without knowing the filter. Why
//! not a dense per-stream sequence: it would need a replicated stream-seq -> outbox-seq index
//! (more state in the state machine); the outbox sequence is already dense, deterministic on
//! every replica and committed, so any node can resume from a committed cursor by itself.
//!
//! **Security.** Each grid has a pre-shared 32-byte key; every batch and every ack carries an
//! HMAC-SHA256 over the grid id and the body. There is NO encryption yet (the link carries
//! billing data in clear): TLS or the mesh's own Noise handshake is a separate issue.

pub mod central;
pub mod client;
pub mod config;
pub mod emulator;
pub mod proto;

pub use self::central::{Central, CentralConfig};
pub use self::client::{Uploader, UploaderConfig};
pub use self::config::WanConfig;
pub use self::proto::{GridKey, Stream};
