//! The WAN link's encryption and authentication: one Noise IK handshake per connection
//! (`Noise_IK_25519_ChaChaPoly_SHA256`, from the maintained `snow` crate, not hand-rolled),
//! then every WAN frame sealed in ChaCha20-Poly1305 records with an implicit counter per
//! direction.
//!
//! ```text
//! grid (initiator, knows the central's static public key)      central (responder)
//!   u16 len | msg1 = e, es, s, ss, payload: grid id u64 LE   -->   opens msg1 with its static
//!                                                                  key; checks the grid's
//!                                                                  static key is listed for
//!                                                                  that grid id, and that e
//!                                                                  was not seen before
//!   <--  u16 len | msg2 = e, ee, se, payload: 0 (accepted) or 1 + reason (refused)
//! then both ways: u16 len | ChaCha20-Poly1305(counter n, more-flag u8 | chunk of a frame)
//! ```
//!
//! Why a handshake here when the mesh's sealing (`net::secure`) has none: the WAN is a TCP
//! connection that either carries bytes in order or breaks, so one round trip per connection
//! (one per outage at most) costs nothing, and it buys what static keys alone cannot give an
//! uploader that moves between a grid's nodes: fresh session keys from ephemeral X25519 for
//! every connection, so no two nodes that upload for one grid can ever reuse a nonce under a
//! key (the mesh's boot epochs are per node, the grid's identity is not), and forward secrecy
//! for billing data crossing a public satellite link.
//!
//! What each side proves: the grid proves it holds a private key the central lists for its
//! grid id (`es`, `ss`); the central proves it holds the private key whose public half the
//! grid was configured with (`ee`, `se`: the grid can only open msg2 and later records if
//! it does), so a man in the middle can neither read billing data nor forge acks (a forged ack
//! would let the grid consider unsent records stored).
//!
//! Refusals, each a [`ChannelError`] the central counts: msg1 that does not open (sealed to
//! another central key, or tampered), an unknown grid id, a key not listed for the grid, a
//! replayed msg1 (its ephemeral key seen before), a record that does not open (tampered,
//! replayed, dropped or reordered bytes: the counter is implicit, so any of these breaks the
//! authentication of the next record and the connection is closed).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use snow::{Builder, HandshakeState, StatelessTransportState};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroize;

use super::MAX_WAN_FRAME_BYTES;
use crate::keys::{PublicKey, SecretKey};

/// The Noise protocol name: IK (the grid knows the central's key in advance, so the grid's
/// identity travels encrypted in the first message and the handshake is one round trip),
/// X25519 (the keys `ghatta keygen` writes), ChaCha20-Poly1305 (fast without AES hardware on
/// ARM boards), SHA-256.
pub const NOISE_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_SHA256";
/// Bound into the handshake hash: a peer speaking another protocol or version fails msg1.
pub const PROLOGUE: &[u8] = b"ghatta-wan/1";
/// Largest Noise message (the Noise specification's limit, which `snow` enforces).
pub const MAX_RECORD_BYTES: usize = 65_535;
/// Poly1305 tag bytes per record.
pub const TAG_BYTES: usize = 16;
/// Bytes each record adds: the u16 length, the continuation flag and the tag.
pub const RECORD_OVERHEAD_BYTES: usize = 2 + 1 + TAG_BYTES;
/// Frame bytes per record: the Noise limit less the tag and the continuation flag.
const CHUNK_BYTES: usize = MAX_RECORD_BYTES - TAG_BYTES - 1;
/// Largest handshake message either side accepts: msg1 is 32 (e) + 48 (s) + 24 (payload)
/// bytes, msg2 32 (e) + 16 + a refusal reason of at most [`MAX_REASON_BYTES`].
const MAX_HANDSHAKE_BYTES: usize = 1024;
/// Longest refusal reason the central sends back.
pub const MAX_REASON_BYTES: usize = 512;
/// First-message ephemeral keys the central remembers to refuse replays: 64 Ki keys of 32
/// bytes is 2 MiB, over a year of hourly reconnects from a few hundred grids. A replay older
/// than that (or after a central restart) still gets nowhere: its session keys need the
/// grid's ephemeral private key, so it cannot send one record that opens.
pub const REPLAY_CACHE_HANDSHAKES: usize = 65_536;

const ACCEPTED: u8 = 0;
const REFUSED: u8 = 1;

/// Why the channel failed or refused a peer.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Socket error (including the peer closing the connection).
    #[error("WAN socket: {0}")]
    Io(#[from] std::io::Error),
    /// A length or message shape out of range.
    #[error("malformed WAN record: {0}")]
    Malformed(String),
    /// msg1 (central side) or msg2 (grid side) did not open.
    #[error(
        "WAN handshake failed ({0}): the grid's wan.central_public_key does not match the central's --key-file, or the bytes were tampered with"
    )]
    Handshake(String),
    /// A grid id the central has no key for.
    #[error("grid {0} is not listed at the central; add `--grid {0}=<the grid's public key>`")]
    UnknownGrid(u64),
    /// The grid's key is not among the keys listed for its id.
    #[error(
        "grid {grid} authenticated with public key {key}, which the central does not list for it; add `--grid {grid}={key}` if this is the grid's new key"
    )]
    UnlistedKey {
        /// Claimed grid.
        grid: u64,
        /// The key it proved it holds.
        key: PublicKey,
    },
    /// msg1 with an ephemeral key seen before.
    #[error("replayed WAN handshake (its ephemeral key was seen before)")]
    ReplayedHandshake,
    /// The central refused this grid (grid side), with its reason.
    #[error("the central refused this grid: {0}")]
    Refused(String),
    /// A record that does not open.
    #[error(
        "WAN record {0} does not open: tampered, replayed, dropped or reordered bytes, or another session's"
    )]
    Record(u64),
    /// A frame over [`MAX_WAN_FRAME_BYTES`].
    #[error("WAN frame over {MAX_WAN_FRAME_BYTES} bytes")]
    TooLarge,
}

/// Grid ids and the public keys allowed for each (several: each node of a grid may upload
/// with its own key, or all share one grid key).
pub type AllowedGrids = BTreeMap<u64, Vec<PublicKey>>;

/// First-message ephemeral keys seen, oldest dropped first (see [`REPLAY_CACHE_HANDSHAKES`]).
#[derive(Debug, Default)]
pub struct ReplayCache {
    inner: Mutex<SeenKeys>,
}

/// The keys (for lookup) and their arrival order (for eviction).
type SeenKeys = (HashSet<[u8; 32]>, VecDeque<[u8; 32]>);

impl ReplayCache {
    /// Remember `e`; false if it was already there.
    fn insert(&self, e: [u8; 32]) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = &mut *g;
        if !set.insert(e) {
            return false;
        }
        order.push_back(e);
        if order.len() > REPLAY_CACHE_HANDSHAKES
            && let Some(old) = order.pop_front()
        {
            set.remove(&old);
        }
        true
    }
}

/// The handshake state: the grid's (initiator, knowing the central's key) or the central's.
fn handshake_state(
    secret: &SecretKey,
    central: Option<&PublicKey>,
) -> Result<HandshakeState, ChannelError> {
    let params = NOISE_PARAMS
        .parse()
        .map_err(|e| ChannelError::Handshake(format!("noise parameters: {e}")))?;
    let mut key = secret.to_bytes();
    let b = Builder::new(params)
        .local_private_key(&key)
        .and_then(|b| b.prologue(PROLOGUE));
    let hs = match central {
        Some(c) => b
            .and_then(|b| b.remote_public_key(&c.0))
            .and_then(|b| b.build_initiator()),
        None => b.and_then(|b| b.build_responder()),
    };
    key.zeroize();
    hs.map_err(noise_err("building the handshake"))
}

fn noise_err(what: &str) -> impl Fn(snow::Error) -> ChannelError + '_ {
    move |e| ChannelError::Handshake(format!("{what}: {e}"))
}

/// Sends frames on an established channel.
pub struct Sealer {
    state: Arc<StatelessTransportState>,
    nonce: u64,
    buf: Vec<u8>,
}

/// Receives frames on an established channel.
pub struct Opener {
    state: Arc<StatelessTransportState>,
    nonce: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer(nonce {})", self.nonce)
    }
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Opener(nonce {})", self.nonce)
    }
}

/// Bytes a frame of `len` bytes takes on the wire.
pub fn sealed_len(len: usize) -> usize {
    let records = len.div_ceil(CHUNK_BYTES).max(1);
    len + records * RECORD_OVERHEAD_BYTES
}

impl Sealer {
    /// Seal `frame` into records (no IO): the bytes to write.
    pub fn seal(&mut self, frame: &[u8]) -> Result<Vec<u8>, ChannelError> {
        if frame.len() > MAX_WAN_FRAME_BYTES {
            return Err(ChannelError::TooLarge);
        }
        if frame.is_empty() {
            return Err(ChannelError::Malformed("empty frame".into()));
        }
        let mut out = Vec::with_capacity(sealed_len(frame.len()));
        let mut chunks = frame.chunks(CHUNK_BYTES).peekable();
        while let Some(chunk) = chunks.next() {
            let more = chunks.peek().is_some();
            self.buf.clear();
            self.buf.push(u8::from(more));
            self.buf.extend_from_slice(chunk);
            let mut rec = vec![0u8; self.buf.len() + TAG_BYTES];
            let n = self
                .state
                .write_message(self.nonce, &self.buf, &mut rec)
                .map_err(noise_err("sealing a record"))?;
            self.nonce += 1;
            out.extend_from_slice(&(n as u16).to_be_bytes());
            out.extend_from_slice(&rec[..n]);
        }
        Ok(out)
    }

    /// Seal and write one frame; returns the bytes written.
    pub async fn write_frame<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        frame: &[u8],
    ) -> Result<usize, ChannelError> {
        let bytes = self.seal(frame)?;
        w.write_all(&bytes).await?;
        w.flush().await?;
        Ok(bytes.len())
    }
}

async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Vec<u8>, ChannelError> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len).await?;
    let len = u16::from_be_bytes(len) as usize;
    if len <= TAG_BYTES || len > max {
        return Err(ChannelError::Malformed(format!(
            "message length {len} outside {}..={max}: not a ghatta WAN peer, or a corrupted stream",
            TAG_BYTES + 1
        )));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_message<W: AsyncWrite + Unpin>(w: &mut W, msg: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(2 + msg.len());
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
    w.write_all(&out).await?;
    w.flush().await
}

impl Opener {
    /// Open one record (no IO); returns the frame when this record completes one.
    pub fn open(&mut self, record: &[u8]) -> Result<Option<Vec<u8>>, ChannelError> {
        let mut plain = vec![0u8; record.len()];
        let n = self
            .state
            .read_message(self.nonce, record, &mut plain)
            .map_err(|_| ChannelError::Record(self.nonce))?;
        self.nonce += 1;
        let Some((&more, chunk)) = plain[..n].split_first() else {
            return Err(ChannelError::Malformed(
                "record without its flag byte".into(),
            ));
        };
        if self.buf.len() + chunk.len() > MAX_WAN_FRAME_BYTES {
            return Err(ChannelError::TooLarge);
        }
        self.buf.extend_from_slice(chunk);
        match more {
            0 => Ok(Some(std::mem::take(&mut self.buf))),
            1 => Ok(None),
            f => Err(ChannelError::Malformed(format!("record flag {f}"))),
        }
    }

    /// Read records until one frame is complete. Not cancel-safe (a partial read is lost):
    /// run it in a task of its own, not inside a `select!`.
    pub async fn read_frame<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> Result<Vec<u8>, ChannelError> {
        loop {
            let rec = read_message(r, MAX_RECORD_BYTES).await?;
            if let Some(frame) = self.open(&rec)? {
                return Ok(frame);
            }
        }
    }
}

fn split(hs: HandshakeState) -> Result<(Sealer, Opener), ChannelError> {
    let state = Arc::new(
        hs.into_stateless_transport_mode()
            .map_err(noise_err("entering transport mode"))?,
    );
    Ok((
        Sealer {
            state: state.clone(),
            nonce: 0,
            buf: Vec::new(),
        },
        Opener {
            state,
            nonce: 0,
            buf: Vec::new(),
        },
    ))
}

/// The grid's side: handshake as `grid` with `secret`, expecting the central to hold the
/// private half of `central`.
pub async fn connect<R, W>(
    r: &mut R,
    w: &mut W,
    secret: &SecretKey,
    central: &PublicKey,
    grid: u64,
) -> Result<(Sealer, Opener), ChannelError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut hs = handshake_state(secret, Some(central))?;
    let mut msg = vec![0u8; MAX_HANDSHAKE_BYTES];
    let n = hs
        .write_message(&grid.to_le_bytes(), &mut msg)
        .map_err(noise_err("writing msg1"))?;
    write_message(w, &msg[..n]).await?;
    let reply = read_message(r, MAX_HANDSHAKE_BYTES).await?;
    let mut payload = vec![0u8; reply.len()];
    let n = hs.read_message(&reply, &mut payload).map_err(|e| {
        ChannelError::Handshake(format!("msg2 from the central does not open ({e})"))
    })?;
    match payload[..n].split_first() {
        Some((&ACCEPTED, [])) => split(hs),
        Some((&REFUSED, reason)) => Err(ChannelError::Refused(
            String::from_utf8_lossy(reason).into_owned(),
        )),
        _ => Err(ChannelError::Malformed("msg2 payload".into())),
    }
}

/// What the central learned from an accepted handshake.
#[derive(Debug)]
pub struct Accepted {
    /// The authenticated grid id.
    pub grid: u64,
    /// The key it authenticated with.
    pub key: PublicKey,
    /// Sends acks.
    pub sealer: Sealer,
    /// Receives batches.
    pub opener: Opener,
}

/// The central's side: open msg1 with `secret`, check the grid against `allowed` and the
/// replay cache, answer msg2 (with the reason when refused, so the grid's log says what to
/// fix; the refusal is itself authenticated, so it cannot be forged).
pub async fn accept<R, W>(
    r: &mut R,
    w: &mut W,
    secret: &SecretKey,
    allowed: &AllowedGrids,
    replays: &ReplayCache,
) -> Result<Accepted, ChannelError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut hs = handshake_state(secret, None)?;
    let msg1 = read_message(r, MAX_HANDSHAKE_BYTES).await?;
    let mut payload = vec![0u8; msg1.len()];
    let n = hs
        .read_message(&msg1, &mut payload)
        .map_err(|e| ChannelError::Handshake(format!("msg1 does not open ({e})")))?;
    let grid = <[u8; 8]>::try_from(&payload[..n])
        .map(u64::from_le_bytes)
        .map_err(|_| ChannelError::Malformed(format!("msg1 payload of {n} bytes")))?;
    let remote = hs
        .get_remote_static()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .map(PublicKey)
        .ok_or_else(|| ChannelError::Handshake("msg1 carries no static key".into()))?;
    // msg1 opened, so its first 32 bytes are an authentic ephemeral key: remember it.
    let ephemeral: [u8; 32] = msg1[..32].try_into().expect("msg1 opened, so it is longer");
    let verdict = if !replays.insert(ephemeral) {
        Err(ChannelError::ReplayedHandshake)
    } else {
        match allowed.get(&grid) {
            None => Err(ChannelError::UnknownGrid(grid)),
            Some(keys) if !keys.contains(&remote) => {
                Err(ChannelError::UnlistedKey { grid, key: remote })
            }
            Some(_) => Ok(()),
        }
    };
    let mut reply_payload = Vec::new();
    match &verdict {
        Ok(()) => reply_payload.push(ACCEPTED),
        Err(e) => {
            reply_payload.push(REFUSED);
            let reason = e.to_string();
            let mut cut = reason.len().min(MAX_REASON_BYTES);
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reply_payload.extend_from_slice(&reason.as_bytes()[..cut]);
        }
    }
    let mut msg2 = vec![0u8; MAX_HANDSHAKE_BYTES];
    let n = hs
        .write_message(&reply_payload, &mut msg2)
        .map_err(noise_err("writing msg2"))?;
    // A replay is not answered: whoever sent it cannot use the answer, and silence tells
    // them nothing.
    if !matches!(verdict, Err(ChannelError::ReplayedHandshake)) {
        write_message(w, &msg2[..n]).await?;
    }
    verdict?;
    let (sealer, opener) = split(hs)?;
    Ok(Accepted {
        grid,
        key: remote,
        sealer,
        opener,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(b: u8) -> (SecretKey, PublicKey) {
        let s = SecretKey::from_bytes([b; 32]);
        let p = s.public();
        (s, p)
    }

    /// Run both handshake sides over an in-memory pipe; returns what each side got.
    async fn pair(
        grid_secret: &SecretKey,
        central_pub: &PublicKey,
        central_secret: &SecretKey,
        allowed: &AllowedGrids,
        replays: &ReplayCache,
    ) -> (
        Result<(Sealer, Opener), ChannelError>,
        Result<Accepted, ChannelError>,
    ) {
        let (a, b) = tokio::io::duplex(1 << 20);
        // Each side owns its end and drops it when done: a side that fails closes the pipe,
        // so the other sees EOF instead of waiting forever.
        let server = async move {
            let (mut br, mut bw) = tokio::io::split(b);
            accept(&mut br, &mut bw, central_secret, allowed, replays).await
        };
        let client = async move {
            let (mut ar, mut aw) = tokio::io::split(a);
            connect(&mut ar, &mut aw, grid_secret, central_pub, 7).await
        };
        let (c, s) = tokio::join!(client, server);
        (c, s)
    }

    #[tokio::test]
    async fn frames_cross_encrypted_and_tampered_replayed_or_reordered_records_are_refused() {
        let (gs, gp) = keys(1);
        let (cs, cp) = keys(2);
        let allowed = AllowedGrids::from([(7, vec![gp])]);
        let replays = ReplayCache::default();
        let (c, s) = pair(&gs, &cp, &cs, &allowed, &replays).await;
        let (mut sealer, _) = c.expect("grid side");
        let acc = s.expect("central side");
        assert_eq!((acc.grid, acc.key), (7, gp));
        let mut opener = acc.opener;
        // A known plaintext (a customer id as a ledger line would show it) never appears on
        // the wire, and frames over one record's size are split and rejoined.
        let secret_text = b"customer-000042 balance 1234";
        let mut frame = secret_text.repeat(3000);
        frame.truncate(80_000.min(MAX_WAN_FRAME_BYTES));
        let wire = sealer.seal(&frame).expect("seal");
        assert_eq!(wire.len(), sealed_len(frame.len()));
        assert!(
            !wire.windows(secret_text.len()).any(|w| w == secret_text),
            "plaintext visible on the wire"
        );
        let records = split_records(&wire);
        assert_eq!(records.len(), 2, "a frame over 64 KiB takes two records");
        assert_eq!(opener.open(&records[0]).unwrap(), None);
        assert_eq!(opener.open(&records[1]).unwrap(), Some(frame.clone()));
        // Replay of the last record: refused.
        assert!(matches!(
            opener.open(&records[1]),
            Err(ChannelError::Record(2))
        ));
        // Tampered: one flipped bit.
        let (_, mut opener2) = {
            let acc = pair(&gs, &cp, &cs, &allowed, &replays).await;
            let (sl, _) = acc.0.unwrap();
            (sl, acc.1.unwrap().opener)
        };
        let mut bad = records[0].clone();
        bad[5] ^= 1;
        assert!(matches!(opener2.open(&bad), Err(ChannelError::Record(0))));
        // Reordered: the second record of a fresh session first.
        let (mut s3, mut o3) = {
            let acc = pair(&gs, &cp, &cs, &allowed, &replays).await;
            (acc.0.unwrap().0, acc.1.unwrap().opener)
        };
        let _first = s3.seal(b"first").unwrap(); // Sealed, held back.
        let second = split_records(&s3.seal(b"second").unwrap());
        assert!(matches!(o3.open(&second[0]), Err(ChannelError::Record(0))));
    }

    fn split_records(wire: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = wire;
        while rest.len() >= 2 {
            let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            out.push(rest[2..2 + n].to_vec());
            rest = &rest[2 + n..];
        }
        out
    }

    #[tokio::test]
    async fn unlisted_keys_unknown_grids_wrong_central_keys_and_replays_are_refused() {
        let (gs, gp) = keys(1);
        let (cs, cp) = keys(2);
        let (other, other_pub) = keys(3);
        let replays = ReplayCache::default();
        // The grid's key is not listed for grid 7: refused with the key named, on both sides.
        let allowed = AllowedGrids::from([(7, vec![other_pub])]);
        let (c, s) = pair(&gs, &cp, &cs, &allowed, &replays).await;
        assert!(matches!(s, Err(ChannelError::UnlistedKey { grid: 7, key }) if key == gp));
        let e = c.unwrap_err().to_string();
        assert!(e.contains("refused") && e.contains(&gp.to_string()), "{e}");
        // Unknown grid id.
        let allowed = AllowedGrids::from([(8, vec![gp])]);
        let (c, s) = pair(&gs, &cp, &cs, &allowed, &replays).await;
        assert!(matches!(s, Err(ChannelError::UnknownGrid(7))));
        assert!(matches!(c, Err(ChannelError::Refused(_))));
        // The grid holds a wrong central key: msg1 does not open at the central.
        let allowed = AllowedGrids::from([(7, vec![gp])]);
        let (c, s) = pair(&gs, &other_pub, &cs, &allowed, &replays).await;
        assert!(matches!(s, Err(ChannelError::Handshake(_))), "{s:?}");
        assert!(c.is_err());
        // A central with another private key than the grid expects cannot answer either.
        let (c, s) = pair(&gs, &cp, &other, &allowed, &replays).await;
        assert!(matches!(s, Err(ChannelError::Handshake(_))));
        assert!(c.is_err());
        // A replayed msg1: capture one, feed it again.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let (mut ar, mut aw) = tokio::io::split(&mut a);
        let (mut br, mut bw) = tokio::io::split(&mut b);
        let (c, s) = tokio::join!(
            connect(&mut ar, &mut aw, &gs, &cp, 7),
            accept(&mut br, &mut bw, &cs, &allowed, &replays)
        );
        assert!(c.is_ok() && s.is_ok());
        let mut hs = handshake_state(&gs, Some(&cp)).unwrap();
        let mut msg1 = vec![0u8; 256];
        let n = hs.write_message(&7u64.to_le_bytes(), &mut msg1).unwrap();
        let mut wire = (n as u16).to_be_bytes().to_vec();
        wire.extend_from_slice(&msg1[..n]);
        for (i, want_replay) in [(0, false), (1, true)] {
            let mut rd: &[u8] = &wire;
            let mut sink = Vec::new();
            let r = accept(&mut rd, &mut sink, &cs, &allowed, &replays).await;
            assert_eq!(
                matches!(r, Err(ChannelError::ReplayedHandshake)),
                want_replay,
                "attempt {i}: {r:?}"
            );
            assert_eq!(sink.is_empty(), want_replay, "a replay is not answered");
        }
    }
}
