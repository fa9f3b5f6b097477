//! WAN resync: committed outbox records, store-and-forward over the satellite link to the
//! central data center (`ghatta-central`, the `central/` crate), idempotent and resumable.
//!
//! ```text
//! outbox (replicated, dense seq) --Stream filter--> Uploader (leader only, one per stream)
//!    --byte stream from a Connector (TCP; the simulator's WAN link model in tests): Noise IK
//!      handshake, then [deflate batch in a frame+CRC] sealed in ChaCha20-Poly1305
//!      records--> Central (redb, fsync; CentralStore::serve behind the TCP accept loop)
//!    <--[Ack: next expected seq per (grid, stream)], sealed--
//! Uploader --Body::OutboxAck through Raft--> committed cursor (any node resumes there)
//! ```
//!
//! **Streams.** Three streams are filters over the outbox: [`Stream::Ledger`] (billing ledger
//! records), [`Stream::Events`] (alarms and relay commands with their reasons) and
//! [`Stream::Energy`] (hourly energy per customer, feeder and plant, which the state machine
//! writes when log time leaves an hour: `state::energy`). A record
//! keeps its outbox sequence number as its stream sequence; gaps are the outbox records of
//! other kinds (and ballast set-points, which are control traffic the data center does not
//! need). Every batch states the range `[first_seq, end_seq)` of outbox sequences it covers,
//! so the central can still acknowledge "everything below N" without knowing the filter. Why
//! not a dense per-stream sequence: it would need a replicated stream-seq -> outbox-seq index
//! (more state in the state machine); the outbox sequence is already dense, deterministic on
//! every replica and committed, so any node can resume from a committed cursor by itself.
//!
//! **Pruning.** Once every stream's committed cursor is past a record and it is older than a
//! day of log time, the state machine deletes it (`state::prune`: the newest relay command,
//! set-point and ledger line per key stay), so the outbox and snapshots stay bounded while the
//! central keeps the history.
//!
//! **Security** (`ghatta_proto::wan::channel`). Every connection starts with a Noise IK handshake (X25519 keys as
//! `ghatta keygen` writes them, ChaCha20-Poly1305, SHA-256; the `snow` crate): the grid proves
//! it holds a private key the central lists for its grid id (`ghatta-central --grid
//! GRID=PUBLIC_KEY`, several keys per grid allowed), the central proves it holds the private
//! key of the grid's `wan.central_public_key`. Everything after is encrypted and
//! authenticated with fresh keys per connection and a counter per direction, so tampered,
//! replayed, dropped or reordered bytes end the connection. The central refuses, logs and
//! counts (`/v1/status`) handshakes that do not open, unknown grids, unlisted keys, replayed
//! handshakes and records that do not open; a frame naming another grid than the handshake
//! authenticated is refused too.

pub mod client;
pub mod config;
pub mod connector;

pub use self::client::{Uploader, UploaderConfig};
pub use self::config::WanConfig;
pub use self::connector::{Connector, TcpConnector};
pub use ghatta_proto::outbox::Stream;
