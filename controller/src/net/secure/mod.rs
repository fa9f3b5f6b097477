//! Sealed frames: authentication and encryption on every link (TCP, serial radio, simulator),
//! as a layer between the RPC endpoint and whatever carries the bytes.
//!
//! Handshake-free on purpose: a radio that drops a third of its packets and takes 800 ms per
//! round trip would spend seconds on a handshake after every restart and every loss of one
//! of its messages. Instead each pair of nodes shares static keys derived once, at start:
//!
//! - every node has an X25519 key pair ([`keys`], `ghatta keygen`); node.toml lists the
//!   public key of every member;
//! - for each ordered pair (A, B) a ChaCha20-Poly1305 key is derived from the static-static
//!   Diffie-Hellman secret with HKDF-SHA256, bound to the cluster name and both node ids;
//!   A to B and B to A use different keys;
//! - every frame carries (sender, receiver, sender's boot epoch, the receiver's boot epoch as
//!   the sender last saw it, counter) as authenticated data, and the nonce is (sender epoch,
//!   counter); the boot epoch ([`epoch`]) is a durable counter incremented with an fsync at
//!   each start, so a nonce never repeats under a key, across restarts too;
//! - the receiver keeps, per peer, the highest epoch seen and a [`REPLAY_WINDOW`] of
//!   counters; echoing the receiver's own epoch makes frames captured before the receiver
//!   restarted (when its window was lost) useless: they name an older receiver epoch.
//!
//! A frame that fails any check is dropped and counted in [`SealStats`], never answered,
//! except that an authentic frame naming a stale epoch is answered with a *hello* (an empty
//! sealed frame, at most one per peer per [`HELLO_INTERVAL`]) so the peer learns our epoch
//! within one frame instead of one election timeout; and the few frames sent to a peer
//! before its epoch was known ([`RESEND_FRAMES`]) are sealed again and resent once it is, so
//! a cold cluster's first votes are not lost.
//!
//! [`SealedTransport`] wraps any [`Transport`](super::transport::Transport): it seals what
//! the RPC layer sends and opens what arrives before the RPC dispatcher sees it, so a node
//! whose key is not listed can neither vote, append nor forward anything: its frames do not
//! open. (openraft's `install_full_snapshot` trusts the snapshot it is given; with sealing
//! only members can send one.)

pub mod epoch;
mod seal;
mod sealed;

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

pub use self::epoch::{BootEpoch, EPOCH_FILE, EpochError};
pub use self::seal::{
    HELLO_INTERVAL, MAX_SEALED_FRAME_BYTES, Opened, REPLAY_WINDOW, RESEND_FRAMES,
    RESEND_PAYLOAD_BYTES_MAX, Rejected, SEAL_OVERHEAD_BYTES, SEALED_VERSION, SealError, SecureLink,
    SecureLinkError, claimed_route,
};
pub use self::sealed::SealedTransport;
pub use ghatta_proto::keys::{KeyError, PublicKey, SecretKey};

/// Counters of the sealing layer (monotonic; shown by `ghatta status` and `/status`).
#[derive(Debug, Default)]
pub struct SealStats {
    /// Frames sealed and handed to the link.
    pub sealed: AtomicU64,
    /// Frames that could not be sealed (unknown peer, over the size limit).
    pub seal_failed: AtomicU64,
    /// Frames opened and passed to the RPC layer.
    pub opened: AtomicU64,
    /// Shorter than a sealed header and tag, over the size limit, or a malformed header.
    pub truncated: AtomicU64,
    /// Plain (unsealed) frames: a node without keys, or an old version.
    pub unsealed: AtomicU64,
    /// From a node whose key is not listed.
    pub unknown_sender: AtomicU64,
    /// Addressed to another node.
    pub not_for_me: AtomicU64,
    /// The tag did not verify: forged, corrupted, or sealed with another key.
    pub forged: AtomicU64,
    /// A counter already seen in the sender's current epoch.
    pub replayed: AtomicU64,
    /// A counter older than the replay window.
    pub out_of_window: AtomicU64,
    /// Authentic, from an older boot of the sender.
    pub older_epoch: AtomicU64,
    /// Authentic, addressed to an older boot of this node.
    pub stale_receiver_epoch: AtomicU64,
    /// Authentic, sent before the sender had heard this node's boot epoch (it names epoch
    /// 0): a peer's first frames after either of them started. Dropped, answered with a
    /// hello, and sent again by the peer once it knows the epoch; part of setting up, not a
    /// fault, so not in [`SealStatsSnapshot::rejected`].
    pub before_introduction: AtomicU64,
    /// Hellos sent (answers to stale epochs).
    pub hellos_sent: AtomicU64,
    /// Hellos received.
    pub hellos_received: AtomicU64,
    /// Times this node moved its boot epoch forward because a peer had seen a higher one
    /// (the epoch file was lost or restored from a backup).
    pub epoch_raised: AtomicU64,
    /// Raises refused as too far ahead (`seal::EPOCH_RAISE_STEP_MAX`): a member claiming to
    /// have seen an epoch this node cannot have used.
    pub epoch_raise_refused: AtomicU64,
}

/// A point-in-time copy of [`SealStats`], with this node's boot epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealStatsSnapshot {
    /// This node's current boot epoch.
    pub boot_epoch: u32,
    /// Frames sealed.
    pub sealed: u64,
    /// Frames not sealed.
    pub seal_failed: u64,
    /// Frames opened.
    pub opened: u64,
    /// Truncated or malformed.
    pub truncated: u64,
    /// Plain frames on a sealed link.
    pub unsealed: u64,
    /// From unlisted nodes.
    pub unknown_sender: u64,
    /// Not addressed to this node.
    pub not_for_me: u64,
    /// Tag did not verify.
    pub forged: u64,
    /// Replays.
    pub replayed: u64,
    /// Older than the replay window.
    pub out_of_window: u64,
    /// From an older boot of the sender.
    pub older_epoch: u64,
    /// To an older boot of this node.
    pub stale_receiver_epoch: u64,
    /// Sent before the sender knew this node's epoch (its first frames; sent again).
    #[serde(default)]
    pub before_introduction: u64,
    /// Hellos sent.
    pub hellos_sent: u64,
    /// Hellos received.
    pub hellos_received: u64,
    /// Boot epoch raised at a peer's word.
    pub epoch_raised: u64,
    /// Raises refused as too far ahead.
    #[serde(default)]
    pub epoch_raise_refused: u64,
}

impl SealStatsSnapshot {
    /// Every frame dropped by the opener for a fault or an attack: all but the first
    /// frames of a peer that had not heard this node yet (`before_introduction`).
    pub fn rejected(&self) -> u64 {
        self.truncated
            + self.unsealed
            + self.unknown_sender
            + self.not_for_me
            + self.forged
            + self.replayed
            + self.out_of_window
            + self.older_epoch
            + self.stale_receiver_epoch
    }
}

impl SealStats {
    /// Copy the counters.
    pub fn snapshot(&self, boot_epoch: u32) -> SealStatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SealStatsSnapshot {
            boot_epoch,
            sealed: g(&self.sealed),
            seal_failed: g(&self.seal_failed),
            opened: g(&self.opened),
            truncated: g(&self.truncated),
            unsealed: g(&self.unsealed),
            unknown_sender: g(&self.unknown_sender),
            not_for_me: g(&self.not_for_me),
            forged: g(&self.forged),
            replayed: g(&self.replayed),
            out_of_window: g(&self.out_of_window),
            older_epoch: g(&self.older_epoch),
            stale_receiver_epoch: g(&self.stale_receiver_epoch),
            before_introduction: g(&self.before_introduction),
            hellos_sent: g(&self.hellos_sent),
            hellos_received: g(&self.hellos_received),
            epoch_raised: g(&self.epoch_raised),
            epoch_raise_refused: g(&self.epoch_raise_refused),
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why sealing could not be set up at start; each names the config key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum SealSetupError {
    /// The node's private key did not load.
    #[error("config key key_file: {0}")]
    Key(#[from] KeyError),
    /// The boot epoch could not be advanced (it must be, before any frame is sealed).
    #[error("cannot advance the boot epoch (sealed links need it): {0}")]
    Epoch(EpochError),
    /// The peers' keys do not make a link.
    #[error("config key peers: {0}")]
    Peers(#[from] SecureLinkError),
}

/// Set up sealing for a node from its config values: read `key_file`, advance the boot epoch
/// in `data_dir` and beside `key_file`, derive the pair keys for `peers`. Errors name the config key and the fix.
pub fn link_from_files(
    me: u64,
    cluster: &str,
    key_file: &std::path::Path,
    data_dir: &std::path::Path,
    peers: Vec<(u64, PublicKey)>,
) -> Result<SecureLink, SealSetupError> {
    let secret = SecretKey::load(key_file)?;
    if !peers.iter().any(|(id, _)| *id == me) {
        tracing::info!("peers does not list this node's own public key; nothing to cross-check");
    }
    let epoch = BootEpoch::advance_with(data_dir, Some(key_file)).map_err(SealSetupError::Epoch)?;
    Ok(SecureLink::new(me, cluster, &secret, peers, epoch)?)
}
