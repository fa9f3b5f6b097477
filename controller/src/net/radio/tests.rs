//! Tests of the radio link layer as a whole: two drivers over a lossy pipe, priority,
//! pacing measured on tokio's paused clock, ARQ limits, addressing, and random bytes into
//! every decoder.

use std::sync::Arc;

use proptest::prelude::*;
use tokio::time::{Duration, Instant};

use super::cobs::{self, Deframed, Deframer};
use super::link::{ARQ_ROUNDS_MAX, DriverConfig, LinkDriver, LinkParams, RadioStats};
use super::packet::{self, Body, KIND_FRAME, Packet};

fn params(bitrate_bps: u64) -> LinkParams {
    LinkParams {
        mtu_bytes: 100,
        bitrate_bps,
        round_timeout: Duration::from_millis(900),
    }
}

fn driver(me: u64, bitrate_bps: u64) -> LinkDriver {
    LinkDriver::new(
        DriverConfig {
            me,
            defaults: params(bitrate_bps),
            shared_medium: true,
            cobs: true,
            first_message_id: (me as u32) << 24,
            receive_limit_bytes: 100,
        },
        Arc::new(RadioStats::default()),
    )
}

/// Strip COBS framing the way the serial reader does.
fn unframe(wire: &[u8]) -> Vec<Vec<u8>> {
    let mut d = Deframer::new(1_000);
    let mut out = Vec::new();
    d.push(wire, |x| {
        if let Deframed::Packet(p) = x {
            out.push(p);
        }
    });
    out
}

/// Run `a` and `b` against each other for `span`, one-way delay `delay`, losing every
/// packet `lose` says; returns the frames each delivered.
async fn exchange(
    a: &mut LinkDriver,
    b: &mut LinkDriver,
    span: Duration,
    delay: Duration,
    mut lose: impl FnMut(usize) -> bool,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let end = Instant::now() + span;
    let mut in_flight: Vec<(Instant, bool, Vec<u8>)> = Vec::new();
    let (mut at_a, mut at_b) = (Vec::new(), Vec::new());
    let mut n = 0;
    while Instant::now() < end {
        let now = Instant::now();
        for (to_b, d) in [(true, &mut *a), (false, &mut *b)] {
            while let Some(o) = d.poll_transmit(now) {
                n += 1;
                if !lose(n) {
                    in_flight.push((now + delay, to_b, o.bytes));
                }
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = in_flight.into_iter().partition(|x| x.0 <= now);
        in_flight = later;
        for (_, to_b, wire) in due {
            for p in unframe(&wire) {
                if to_b {
                    at_b.extend(b.receive(&p, now).map(|x| x.1));
                } else {
                    at_a.extend(a.receive(&p, now).map(|x| x.1));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (at_a, at_b)
}

#[tokio::test(start_paused = true)]
async fn a_fragmented_frame_survives_loss_through_selective_repeat() {
    let mut a = driver(1, 9_600);
    let mut b = driver(2, 9_600);
    let frame: Vec<u8> = (0..1_500u32).map(|i| (i * 7) as u8).collect();
    a.send(2, frame.clone(), Instant::now());
    // A quarter of the packets in either direction are lost, bitmaps included (a fixed
    // pseudo-random pattern: a periodic one can hit the same fragment every round).
    let (_, got) = exchange(
        &mut a,
        &mut b,
        Duration::from_secs(30),
        Duration::from_millis(400),
        |n| (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 62 == 0,
    )
    .await;
    let s = a.stats().snapshot();
    assert!(
        got == vec![frame],
        "not delivered once, intact: a {s:?}, b {:?}",
        b.stats().snapshot()
    );
    assert!(s.fragments_repeated > 0, "{s:?}");
    assert_eq!(s.frames_acked, 1, "{s:?}");
    assert!(a.is_idle());
}

#[tokio::test(start_paused = true)]
async fn arq_gives_up_after_its_rounds_when_nothing_answers() {
    let mut a = driver(1, 64_000);
    let mut b = driver(2, 64_000);
    a.send(2, vec![5u8; 500], Instant::now());
    // Every packet is lost, bitmaps included: a can only time out, repeat whole rounds, and
    // give up. Fragment data per packet: MTU minus kind and two one-byte ids, the fragment
    // header and the CRC.
    let count = 500usize.div_ceil(100 - 3 - 9 - 4);
    let (_, got) = exchange(
        &mut a,
        &mut b,
        Duration::from_secs(60),
        Duration::from_millis(400),
        |_| true,
    )
    .await;
    assert!(got.is_empty());
    let s = a.stats().snapshot();
    assert_eq!(s.frames_dropped, 1, "{s:?}");
    assert_eq!(
        s.fragments_repeated,
        u64::from(ARQ_ROUNDS_MAX - 1) * count as u64,
        "{s:?}"
    );
    assert!(a.is_idle());
}

#[tokio::test(start_paused = true)]
async fn small_frames_go_before_queued_bulk_data() {
    let mut a = driver(1, 9_600);
    let now = Instant::now();
    a.send(2, vec![1u8; 2_000], now);
    let first = a.poll_transmit(now).expect("a fragment goes at once");
    assert_eq!(unframe(&first.bytes)[0][0], packet::KIND_FRAGMENT);
    // A heartbeat queued behind 23 fragments goes next, as soon as the pacer allows.
    a.send(3, b"heartbeat".to_vec(), now);
    let mut t = now;
    let next = loop {
        if let Some(o) = a.poll_transmit(t) {
            break o;
        }
        t = a.next_wake(t).expect("work queued");
    };
    let p = packet::decode(&unframe(&next.bytes)[0], 100).expect("valid packet");
    assert_eq!((next.to, p.body), (3, Body::Frame(b"heartbeat".to_vec())));
    assert_eq!(unframe(&next.bytes)[0][0], KIND_FRAME);
}

#[tokio::test(start_paused = true)]
async fn pacing_holds_the_configured_bit_rate() {
    const RATE_BPS: u64 = 9_600;
    let mut a = driver(1, RATE_BPS);
    let start = Instant::now();
    for i in 0..40u8 {
        a.send(2 + u64::from(i % 2), vec![i; 1_000], start);
        a.send(2, vec![i; 40], start);
    }
    let span = Duration::from_secs(20);
    let mut sent: Vec<(Duration, usize)> = Vec::new();
    loop {
        let now = Instant::now();
        if now - start >= span {
            break;
        }
        while let Some(o) = a.poll_transmit(now) {
            sent.push((now - start, o.bytes.len()));
        }
        match a.next_wake(now) {
            Some(at) => tokio::time::sleep_until(at.min(start + span)).await,
            None => break,
        }
    }
    let total: usize = sent.iter().map(|x| x.1).sum();
    let rate_bytes = RATE_BPS as f64 / 8.0;
    let measured = total as f64 / span.as_secs_f64();
    eprintln!("paced {total} bytes in {span:?}: {measured:.0} B/s against {rate_bytes:.0} B/s");
    // Never above the rate plus the burst, in any window starting at 0 ...
    let burst = (cobs::framed_len_max(100) * super::link::BURST_PACKETS) as f64;
    let mut cum = 0usize;
    for &(t, n) in &sent {
        cum += n;
        assert!(
            cum as f64 <= burst + rate_bytes * t.as_secs_f64() + 1.0,
            "{cum} bytes by {t:?}"
        );
    }
    // ... and the link is kept busy: at least 95 % of the rate while work is queued.
    assert!(measured >= 0.95 * rate_bytes, "{measured:.0} B/s");
    assert!(measured <= rate_bytes * 1.0 + burst / span.as_secs_f64());
}

#[test]
fn packets_for_others_and_our_own_echo_are_dropped_and_counted() {
    let mut b = driver(2, 0);
    let now = Instant::now();
    let for_3 = packet::encode(&Packet {
        dst: 3,
        src: 1,
        body: Body::Frame(b"x".to_vec()),
    });
    let echo = packet::encode(&Packet {
        dst: 1,
        src: 2,
        body: Body::Frame(b"x".to_vec()),
    });
    let broadcast = packet::encode(&Packet {
        dst: packet::BROADCAST,
        src: 1,
        body: Body::Frame(b"hello all".to_vec()),
    });
    assert_eq!(b.receive(&for_3, now), None);
    assert_eq!(b.receive(&echo, now), None);
    assert_eq!(b.receive(&broadcast, now), Some((1, b"hello all".to_vec())));
    let mut bad = broadcast.clone();
    bad[4] ^= 0x10;
    assert_eq!(b.receive(&bad, now), None);
    let s = b.stats().snapshot();
    assert_eq!(
        (s.not_for_us, s.crc_rejected, s.packets_received),
        (2, 1, 1)
    );
}

/// Inputs the property tests run per property.
const PROPTEST_CASES: u32 = 4_096;

proptest! {
    #![proptest_config(ProptestConfig { cases: PROPTEST_CASES, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_any_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = cobs::decode(&bytes, 300);
        let _ = packet::decode(&bytes, 300);
        let mut d = Deframer::new(100);
        let mut n = 0usize;
        d.push(&bytes, |x| {
            if let Deframed::Packet(p) = x {
                assert!(p.len() <= 100);
            }
            n += 1;
        });
        let mut drv = driver(2, 9_600);
        let now = Instant::now();
        let delivered = drv.receive(&bytes, now);
        // Random bytes pass a CRC-32 with probability 2^-32: nothing gets through.
        prop_assert!(delivered.is_none());
    }

    #[test]
    fn corrupted_valid_packets_are_refused(
        data in proptest::collection::vec(any::<u8>(), 1..80),
        flips in proptest::collection::vec((any::<usize>(), 0u8..8), 1..4),
    ) {
        let p = packet::encode(&Packet { dst: 2, src: 1, body: Body::Frame(data.clone()) });
        let mut wire = cobs::frame(&p);
        for (i, bit) in &flips {
            let i = i % wire.len();
            wire[i] ^= 1 << bit;
        }
        let mut drv = driver(2, 9_600);
        let now = Instant::now();
        let mut got = Vec::new();
        for pkt in unframe(&wire) {
            got.extend(drv.receive(&pkt, now));
        }
        // Either the flips cancelled out, or nothing was accepted.
        if wire != cobs::frame(&p) {
            prop_assert!(got.is_empty(), "accepted {got:?}");
        }
    }

    #[test]
    fn cobs_round_trips(data in proptest::collection::vec(any::<u8>(), 0..700)) {
        let framed = cobs::frame(&data);
        prop_assert!(!framed[1..framed.len() - 1].contains(&0));
        prop_assert_eq!(cobs::decode(&framed[1..framed.len() - 1], 700), Ok(data));
    }
}
