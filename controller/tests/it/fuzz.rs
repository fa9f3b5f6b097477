//! Property-based fuzzing (proptest) of everything that reads bytes from a link: the frame
//! decoder, the wire message decoder (bincode with its size limit) and the sealed-frame
//! opener. Random and mutated inputs; none may panic, none may make the decoder allocate more
//! than the codec's limit (a length prefix of 4 GiB must not allocate 4 GiB), and no mutation
//! of a sealed frame may open. The number of cases is in each test's name and config; all of
//! them together take a few seconds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ghatta::net::secure::{BootEpoch, Opened, SecretKey, SecureLink};
use ghatta::raft::{Body, Vote};
use ghatta::rpc::wire::{Forward, MemberOp, Request, WireBody, WireMessage};
use ghatta_proto::codec;
use ghatta_proto::frame;
use proptest::prelude::*;

/// Tracks the largest single allocation on each thread, so a test can bound what a decoder
/// asked for. Wraps the system allocator for the whole test binary: one thread-local write
/// per allocation.
struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(n: usize) {
    let _ = LARGEST.try_with(|c| {
        if n > c.get() {
            c.set(n)
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; `note` only updates a
// thread-local integer and never allocates.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size());
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new);
        unsafe { System.realloc(p, l, new) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// The largest single allocation `f` made on this thread.
fn largest_alloc<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|c| c.set(0));
    let r = f();
    (r, LARGEST.with(Cell::get))
}

/// What a decoder may allocate at most for any input: the codec's limit (bincode claims a
/// container's bytes against it before allocating) plus serde's 1 MiB preallocation cap.
const DECODE_ALLOC_MAX: usize = codec::MAX_ENCODED_BYTES + (1 << 20);

/// Real wire messages of every small kind, encoded.
fn genuine_messages() -> Vec<Vec<u8>> {
    let vote = openraft::raft::VoteRequest::new(Vote::new(7, 2), None);
    let reqs = [
        Request::Vote(vote.clone()),
        Request::PreVote(vote),
        Request::Append(openraft::raft::AppendEntriesRequest {
            vote: Vote::new_committed(7, 1),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        }),
        Request::AppendProbe(openraft::raft::AppendEntriesRequest {
            vote: Vote::new_committed(7, 1),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        }),
        Request::Member(MemberOp::AddLearner {
            id: 4,
            addr: "10.0.0.4:7000".into(),
        }),
        Request::Forward(Forward {
            origin: 3,
            seq: 99,
            origin_time_ms: 0,
            body: Body::Inputs(vec![vec![1, 2, 3, 4, 5, 6, 7, 8]; 3]),
        }),
        Request::Ping,
    ];
    reqs.into_iter()
        .enumerate()
        .map(|(i, r)| {
            codec::encode(&WireMessage {
                id: i as u64 + 1,
                body: WireBody::Request(r),
            })
            .expect("encodes")
        })
        .collect()
}

/// A mutation: flip, overwrite, insert, delete or truncate at a position.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    /// A bincode varint length of 4 GiB (0xFC, then a u64) written over position.
    HugeLength(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, v)| Mutation::Set(p, v)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(p, v)| Mutation::Insert(p, v)),
        (any::<usize>(), 1usize..8).prop_map(|(p, n)| Mutation::Delete(p, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::HugeLength),
    ]
}

fn apply(buf: &[u8], muts: &[Mutation]) -> Vec<u8> {
    let mut b = buf.to_vec();
    for m in muts {
        let at = |p: usize, len: usize| if len == 0 { 0 } else { p % len };
        match m {
            Mutation::Flip(p, bit) if !b.is_empty() => {
                let i = at(*p, b.len());
                b[i] ^= 1 << bit;
            }
            Mutation::Set(p, v) if !b.is_empty() => {
                let i = at(*p, b.len());
                b[i] = *v;
            }
            Mutation::Insert(p, v) => {
                let i = at(*p, b.len() + 1);
                b.splice(i..i, v.iter().copied());
            }
            Mutation::Delete(p, n) if !b.is_empty() => {
                let i = at(*p, b.len());
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Mutation::Truncate(p) => {
                let n = at(*p, b.len() + 1);
                b.truncate(n);
            }
            Mutation::HugeLength(p) => {
                let i = at(*p, b.len() + 1);
                let mut huge = vec![0xFC];
                huge.extend_from_slice(&(4u64 << 30).to_le_bytes());
                b.splice(i..(i + 9).min(b.len()), huge);
            }
            _ => {}
        }
    }
    b
}

fn pair() -> (SecureLink, SecureLink) {
    let k1 = SecretKey::from_bytes([1; 32]);
    let k2 = SecretKey::from_bytes([2; 32]);
    let pubs = [(1, k1.public()), (2, k2.public())];
    let a = SecureLink::new(1, "fuzz", &k1, pubs, BootEpoch::in_memory(3)).unwrap();
    let b = SecureLink::new(2, "fuzz", &k2, pubs, BootEpoch::in_memory(5)).unwrap();
    // Introduce them: one frame each way, so later frames carry the right epochs.
    let _ = b.open(&a.seal(2, b"x").unwrap());
    let _ = a.open(&b.seal(1, &[]).unwrap());
    (a, b)
}

#[test]
fn a_4_gib_length_prefix_does_not_allocate_4_gib() {
    // A Vec<u8> claiming 4 GiB, and a forwarded proposal whose inputs claim 4 GiB each.
    let mut claim = vec![0xFC];
    claim.extend_from_slice(&(4u64 << 30).to_le_bytes());
    let (r, big) = largest_alloc(|| codec::decode::<Vec<u8>>(&claim));
    assert!(r.is_err());
    assert!(big < 1 << 20, "allocated {big} bytes for a 9-byte input");
    for msg in genuine_messages() {
        for at in 0..msg.len() {
            let m = apply(&msg, &[Mutation::HugeLength(at)]);
            let (_, big) = largest_alloc(|| codec::decode::<WireMessage>(&m));
            assert!(big <= DECODE_ALLOC_MAX, "{big} bytes at offset {at}");
        }
    }
    // The TCP reader refuses such a length prefix before allocating (tcp.rs), and the frame
    // decoder refuses anything over MAX_FRAME_BYTES without reading it.
    assert_eq!(
        frame::decode(&vec![0u8; frame::MAX_FRAME_BYTES + 1]),
        Err(frame::FrameError::TooLarge)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, failure_persistence: None, ..ProptestConfig::default() })]

    /// 4,096 random buffers into the frame decoder: no panic, no allocation beyond the input.
    #[test]
    fn frame_decoder_4096_random_inputs(buf in prop::collection::vec(any::<u8>(), 0..2048)) {
        let (r, big) = largest_alloc(|| frame::decode(&buf));
        prop_assert!(big <= buf.len());
        if let Ok(f) = r {
            prop_assert_eq!(frame::encode(f.from, f.to, &f.payload), buf);
        }
    }

    /// 4,096 mutated genuine frames: any change is refused (CRC-32 catches every mutation
    /// proptest makes here with overwhelming probability; an accepted one must be the original).
    #[test]
    fn frame_decoder_4096_mutated_frames(
        which in 0usize..5,
        muts in prop::collection::vec(mutation(), 1..4),
    ) {
        let msgs = genuine_messages();
        let f = frame::encode(1, 2, &msgs[which]);
        let m = apply(&f, &muts);
        if let Ok(d) = frame::decode(&m) {
            prop_assert_eq!(m, frame::encode(d.from, d.to, &d.payload));
            prop_assert_eq!(d.payload, msgs[which].clone());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

    /// 2,048 random buffers into the wire decoder: no panic, allocation within the limit.
    #[test]
    fn wire_decoder_2048_random_inputs(buf in prop::collection::vec(any::<u8>(), 0..1024)) {
        let (_, big) = largest_alloc(|| codec::decode::<WireMessage>(&buf));
        prop_assert!(big <= DECODE_ALLOC_MAX, "{} bytes", big);
    }

    /// 2,048 mutated genuine messages (votes, appends, membership, forwarded proposals),
    /// including 4 GiB length prefixes: no panic, allocation within the limit.
    #[test]
    fn wire_decoder_2048_mutated_messages(
        which in 0usize..5,
        muts in prop::collection::vec(mutation(), 1..4),
    ) {
        let msgs = genuine_messages();
        let m = apply(&msgs[which], &muts);
        let (_, big) = largest_alloc(|| codec::decode::<WireMessage>(&m));
        prop_assert!(big <= DECODE_ALLOC_MAX, "{} bytes", big);
    }

    /// 2,048 random buffers into the sealed-frame opener (with a valid sealed header in front
    /// half of the time, so the tag check runs): no panic, nothing opens, allocation within
    /// the input.
    #[test]
    fn opener_2048_random_inputs(
        body in prop::collection::vec(any::<u8>(), 0..512),
        with_header in any::<bool>(),
        counter in any::<u8>(),
    ) {
        let (_, b) = pair();
        let mut buf = Vec::new();
        if with_header {
            buf.extend_from_slice(&[frame::FRAME_MAGIC, 2, 1, 2, 3, 5, counter & 0x7f]);
        }
        buf.extend_from_slice(&body);
        let (r, big) = largest_alloc(|| b.open(&buf));
        prop_assert!(r.is_err(), "random bytes opened: {:?}", r);
        prop_assert!(big <= buf.len().max(64));
    }

    /// 2,048 mutated genuine sealed frames: a mutated frame never opens; the genuine one does.
    #[test]
    fn opener_2048_mutated_sealed_frames(
        which in 0usize..5,
        muts in prop::collection::vec(mutation(), 1..4),
    ) {
        let (a, b) = pair();
        let msgs = genuine_messages();
        let sealed = a.seal(2, &msgs[which]).unwrap();
        let m = apply(&sealed, &muts);
        let (r, big) = largest_alloc(|| b.open(&m));
        prop_assert!(big <= m.len().max(64));
        if m == sealed {
            let opened = matches!(r, Ok(Opened::Message { .. }));
            prop_assert!(opened);
        } else {
            prop_assert!(r.is_err(), "a mutated frame opened: {:?}", r);
            // The genuine frame still opens after the mutant was refused.
            let ok = matches!(b.open(&sealed), Ok(Opened::Message { .. }));
            prop_assert!(ok);
        }
    }
}
