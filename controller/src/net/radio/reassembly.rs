//! Bounded reassembly of fragmented frames, per sender, with the bitmap that answers a round.
//!
//! Memory is bounded three ways: frames in progress per sender and in total, bytes held in
//! total, and a time to live. Anything over a limit abandons the oldest frame (Raft retries
//! the message; a half-received frame is worth less than the one arriving now).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tokio::time::{Duration, Instant};

/// Frames being reassembled at once from one sender. Raft keeps one or two messages in
/// flight per peer; 8 leaves room for retries without letting one noisy peer take the table.
pub const PARTIALS_PER_PEER_MAX: usize = 8;
/// Frames being reassembled at once in total: 8 peers' worth, more nodes than share a channel.
pub const PARTIALS_MAX: usize = 64;
/// Fragment bytes held in total. 1 MiB is a few dozen 512-byte appends per peer and nothing
/// for a 1 GiB board; it caps what forged fragment headers can make us keep.
pub const REASSEMBLY_BYTES_MAX: usize = 1024 * 1024;
/// A frame whose fragments have not all arrived after this long is abandoned: every RPC
/// deadline is shorter (the radio profile's longest, a snapshot chunk, is 20 heartbeats =
/// 20 s), so nobody is waiting for it any more.
pub const PARTIAL_TTL: Duration = Duration::from_secs(30);
/// Completed frames remembered per receiver, so a round repeated because its bitmap was
/// lost is answered again without delivering the frame twice.
pub const COMPLETED_REMEMBERED: usize = 256;

/// A frame whose fragments are arriving.
#[derive(Debug)]
struct Partial {
    parts: Vec<Option<Vec<u8>>>,
    missing: usize,
    bytes: usize,
    started: Instant,
}

/// What a fragment did to its frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Reassembled {
    /// More fragments are needed.
    Pending,
    /// This was the last missing fragment: the whole frame.
    Complete(Vec<u8>),
    /// The frame was completed before (a repeated round): nothing to deliver.
    Again,
}

/// Why a fragment was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragmentRefused {
    /// Its count disagrees with earlier fragments of the same message.
    Inconsistent,
    /// It would take the table over [`REASSEMBLY_BYTES_MAX`] even after abandoning others.
    NoRoom,
}

/// Reassembles fragments per sender.
#[derive(Debug, Default)]
pub struct Reassembly {
    partials: BTreeMap<(u64, u32), Partial>,
    bytes: usize,
    completed: VecDeque<(u64, u32)>,
    completed_set: BTreeSet<(u64, u32)>,
    /// Frames abandoned (TTL, caps).
    pub abandoned: u64,
}

impl Reassembly {
    /// Frames in progress.
    pub fn in_progress(&self) -> usize {
        self.partials.len()
    }

    /// Fragment bytes held.
    pub fn bytes_held(&self) -> usize {
        self.bytes
    }

    fn remove(&mut self, key: (u64, u32)) -> Option<Partial> {
        let p = self.partials.remove(&key)?;
        self.bytes -= p.bytes;
        Some(p)
    }

    /// The oldest partial among those `keep` selects (ties by key: deterministic).
    fn oldest(&self, keep: impl Fn(&(u64, u32)) -> bool) -> Option<(u64, u32)> {
        self.partials
            .iter()
            .filter(|(k, _)| keep(k))
            .min_by_key(|(k, p)| (p.started, **k))
            .map(|(k, _)| *k)
    }

    fn abandon(&mut self, key: (u64, u32)) {
        if self.remove(key).is_some() {
            self.abandoned += 1;
        }
    }

    /// Take fragment `index` of `count` of `from`'s message `id`.
    pub fn push(
        &mut self,
        from: u64,
        id: u32,
        index: usize,
        count: usize,
        data: &[u8],
        now: Instant,
    ) -> Result<Reassembled, FragmentRefused> {
        if index >= count || count > super::packet::FRAGMENTS_PER_FRAME_MAX {
            return Err(FragmentRefused::Inconsistent);
        }
        let key = (from, id);
        if self.completed_set.contains(&key) {
            return Ok(Reassembled::Again);
        }
        let expired: Vec<_> = self
            .partials
            .iter()
            .filter(|(_, p)| now.duration_since(p.started) >= PARTIAL_TTL)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            self.abandon(k);
        }
        if !self.partials.contains_key(&key) {
            let of_peer = self.partials.range((from, 0)..=(from, u32::MAX)).count();
            if of_peer >= PARTIALS_PER_PEER_MAX
                && let Some(k) = self.oldest(|k| k.0 == from)
            {
                self.abandon(k);
            }
            if self.partials.len() >= PARTIALS_MAX
                && let Some(k) = self.oldest(|_| true)
            {
                self.abandon(k);
            }
            self.partials.insert(
                key,
                Partial {
                    parts: vec![None; count],
                    missing: count,
                    bytes: 0,
                    started: now,
                },
            );
        }
        while self.bytes + data.len() > REASSEMBLY_BYTES_MAX {
            match self.oldest(|k| *k != key) {
                Some(k) => self.abandon(k),
                None => return Err(FragmentRefused::NoRoom),
            }
        }
        let Some(p) = self.partials.get_mut(&key) else {
            return Err(FragmentRefused::Inconsistent);
        };
        if p.parts.len() != count {
            return Err(FragmentRefused::Inconsistent);
        }
        if p.parts[index].is_none() {
            p.parts[index] = Some(data.to_vec());
            p.missing -= 1;
            p.bytes += data.len();
            self.bytes += data.len();
        }
        if p.missing > 0 {
            return Ok(Reassembled::Pending);
        }
        let Some(p) = self.remove(key) else {
            return Err(FragmentRefused::Inconsistent);
        };
        self.completed.push_back(key);
        self.completed_set.insert(key);
        if self.completed.len() > COMPLETED_REMEMBERED
            && let Some(old) = self.completed.pop_front()
        {
            self.completed_set.remove(&old);
        }
        Ok(Reassembled::Complete(
            p.parts.into_iter().flatten().flatten().collect(),
        ))
    }

    /// Which fragments of `from`'s message `id` (of `count`) are held, one bit each.
    pub fn bitmap(&self, from: u64, id: u32, count: usize) -> Option<Vec<u8>> {
        let key = (from, id);
        let mut bits = vec![0u8; count.div_ceil(8)];
        if self.completed_set.contains(&key) {
            for i in 0..count {
                bits[i / 8] |= 1 << (i % 8);
            }
        } else {
            let p = self.partials.get(&key)?;
            for (i, part) in p.parts.iter().enumerate() {
                if part.is_some() {
                    bits[i / 8] |= 1 << (i % 8);
                }
            }
        }
        Some(bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(frame: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        frame.chunks(chunk).map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn fragments_reassemble_in_any_order_with_duplicates_and_once() {
        let frame: Vec<u8> = (0..1_000u32).map(|i| i as u8).collect();
        let parts = split(&frame, 84);
        let n = parts.len();
        let mut order: Vec<usize> = (0..n).rev().collect();
        order.insert(5, 3);
        let now = Instant::now();
        let mut r = Reassembly::default();
        let mut out = Vec::new();
        for i in order {
            if let Reassembled::Complete(done) = r.push(1, 7, i, n, &parts[i], now).unwrap() {
                out.push(done);
            }
        }
        assert_eq!(out, vec![frame]);
        assert_eq!((r.in_progress(), r.bytes_held()), (0, 0));
        assert_eq!(r.push(1, 7, 0, n, &parts[0], now), Ok(Reassembled::Again));
        assert_eq!(r.bitmap(1, 7, n).unwrap()[0], 0xFF);
    }

    #[test]
    fn a_bitmap_names_exactly_the_fragments_held() {
        let now = Instant::now();
        let mut r = Reassembly::default();
        for i in [0, 2, 5] {
            assert_eq!(r.push(2, 1, i, 6, b"x", now), Ok(Reassembled::Pending));
        }
        assert_eq!(r.bitmap(2, 1, 6), Some(vec![0b0010_0101]));
        assert_eq!(r.bitmap(2, 99, 6), None);
        assert_eq!(
            r.push(2, 1, 0, 7, b"x", now),
            Err(FragmentRefused::Inconsistent)
        );
    }

    #[test]
    fn memory_is_bounded_per_peer_in_total_in_bytes_and_in_time() {
        let now = Instant::now();
        let mut r = Reassembly::default();
        for id in 0..(PARTIALS_PER_PEER_MAX as u32 * 3) {
            r.push(1, id, 0, 2, b"a", now).unwrap();
        }
        assert_eq!(r.in_progress(), PARTIALS_PER_PEER_MAX);
        for peer in 2..40u64 {
            for id in 0..4 {
                r.push(peer, id, 0, 2, b"b", now).unwrap();
            }
        }
        assert_eq!(r.in_progress(), PARTIALS_MAX);
        let big = vec![7u8; 200_000];
        for id in 0..10 {
            r.push(100, id, 0, 1_000, &big, now).unwrap();
        }
        assert!(r.bytes_held() <= REASSEMBLY_BYTES_MAX);
        r.push(200, 0, 0, 2, b"c", now + PARTIAL_TTL).unwrap();
        assert_eq!(r.in_progress(), 1, "everything older than the TTL is gone");
        assert!(r.abandoned > 0);
    }
}
