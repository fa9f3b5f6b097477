//! `SimNet`: determinism and each link behaviour, statistically within bounds.

use std::sync::{Arc, Mutex};

use ghatta_sim::link::{BurstLoss, Direction, Flap, LinkModel};
use ghatta_sim::net::{Endpoint, NodeId, SimNet};
use ghatta_sim::rng::SimRng;
use ghatta_sim::time::{Epoch, runtime};
use tokio::time::{Duration, sleep};

/// (arrival ms, from, to, bytes)
type Arrival = (u64, NodeId, NodeId, Vec<u8>);
type Log = Arc<Mutex<Vec<Arrival>>>;

/// Spawns a collector per endpoint, all writing to one log in arrival order.
fn collect(epoch: Epoch, eps: Vec<Endpoint>) -> Log {
    let log: Log = Arc::default();
    for mut ep in eps {
        let log = log.clone();
        tokio::spawn(async move {
            let to = ep.node();
            while let Some((from, bytes)) = ep.recv().await {
                log.lock()
                    .expect("log")
                    .push((epoch.elapsed_ms(), from, to, bytes));
            }
        });
    }
    log
}

/// Three nodes exchanging 600 frames at seeded random times over a hostile link.
fn chatter(seed: u64) -> (Vec<Arrival>, [u8; 32]) {
    let rt = runtime().expect("runtime");
    rt.block_on(async move {
        let epoch = Epoch::now();
        let model = LinkModel {
            loss: 0.1,
            duplicate: 0.05,
            corrupt: 0.05,
            jitter_ms: 300,
            bandwidth_bps: 64_000,
            ..LinkModel::satellite()
        };
        let net = SimNet::new(seed, model);
        let log = collect(epoch, (1..=3).map(|n| net.endpoint(n)).collect());
        let mut rng = SimRng::new(99); // the workload is fixed; only the net seed varies
        for i in 0..600u32 {
            sleep(Duration::from_millis(rng.below(50))).await;
            let from = 1 + rng.below(3);
            let to = 1 + (from + rng.below(2)) % 3;
            net.send(from, to, i.to_le_bytes().repeat(1 + rng.below(20) as usize));
        }
        sleep(Duration::from_secs(5)).await;
        let entries = log.lock().expect("log").clone();
        (entries, net.trace_digest())
    })
}

#[test]
fn same_seed_same_delivery_trace_different_seed_different() {
    let (a, da) = chatter(1);
    let (b, db) = chatter(1);
    let (c, dc) = chatter(2);
    assert!(a.len() > 400, "most frames arrive: {}", a.len());
    assert_eq!(
        a, b,
        "same seed, same deliveries in the same order at the same times"
    );
    assert_eq!(da, db);
    assert_ne!(a, c, "a different seed explores a different timing");
    assert_ne!(da, dc);
}

/// Runs `f` in the sim runtime with a 2-node net using `model` both ways.
fn with_pair<F, Fut, T>(seed: u64, model: LinkModel, f: F) -> T
where
    F: FnOnce(SimNet, Epoch, Log) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let rt = runtime().expect("runtime");
    rt.block_on(async move {
        let epoch = Epoch::now();
        let net = SimNet::new(seed, model);
        let log = collect(epoch, vec![net.endpoint(1), net.endpoint(2)]);
        f(net, epoch, log).await
    })
}

/// Sends `n` numbered frames 1 -> 2 and returns which numbers were lost, in order.
fn lost_frames(seed: u64, model: LinkModel, n: u64) -> Vec<u64> {
    with_pair(seed, model, |net, _, log| async move {
        for i in 0..n {
            net.send(1, 2, i.to_le_bytes().to_vec());
            if i % 1_000 == 999 {
                sleep(Duration::from_millis(1)).await;
            }
        }
        sleep(Duration::from_millis(10)).await;
        let got: std::collections::BTreeSet<u64> = log
            .lock()
            .expect("log")
            .iter()
            .map(|e| u64::from_le_bytes(e.3[..8].try_into().expect("8 bytes")))
            .collect();
        (0..n).filter(|i| !got.contains(i)).collect()
    })
}

/// Mean length of the runs of consecutive numbers in `lost`.
fn mean_run(lost: &[u64]) -> f64 {
    let runs = 1 + lost.windows(2).filter(|w| w[1] != w[0] + 1).count();
    lost.len() as f64 / runs as f64
}

#[test]
fn burst_loss_comes_in_runs_at_its_stated_rate_and_follows_the_seed() {
    // Bad 1 frame in 11 on average (0.01 / (0.01 + 0.1)), bursts of 10 frames on average,
    // all lost there: ~9 % loss, in runs of ~10.
    let burst = LinkModel {
        burst: Some(BurstLoss {
            loss_good: 0.0,
            loss_bad: 1.0,
            good_to_bad: 0.01,
            bad_to_good: 0.1,
        }),
        ..LinkModel::perfect()
    };
    let n = 20_000;
    let lost = lost_frames(5, burst, n);
    let rate = lost.len() as f64 / n as f64;
    assert!((0.06..=0.12).contains(&rate), "lost {rate}");
    assert!(mean_run(&lost) > 6.0, "mean run {}", mean_run(&lost));
    // Independent loss at the same rate loses frames one at a time.
    let independent = LinkModel {
        loss: rate,
        ..LinkModel::perfect()
    };
    let lone = lost_frames(5, independent, n);
    assert!(mean_run(&lone) < 1.5, "mean run {}", mean_run(&lone));
    assert_eq!(lost, lost_frames(5, burst, n), "same seed, same losses");
    assert_ne!(lost, lost_frames(6, burst, n), "another seed, other losses");
}

#[test]
fn loss_is_within_statistical_bounds() {
    let model = LinkModel {
        loss: 0.2,
        ..LinkModel::perfect()
    };
    let n = 10_000u64;
    let (delivered, c) = with_pair(5, model, |net, _, log| async move {
        for i in 0..n {
            net.send(1, 2, i.to_le_bytes().to_vec());
            // Let the receiver drain: a burst beyond INBOX_FRAMES is (rightly) dropped.
            if i % 1_000 == 999 {
                sleep(Duration::from_millis(1)).await;
            }
        }
        sleep(Duration::from_millis(10)).await;
        let d = log.lock().expect("log").len() as u64;
        (d, net.counters(1, 2))
    });
    assert_eq!(c.sent, n);
    assert_eq!(c.delivered, delivered);
    assert_eq!(c.delivered + c.dropped_loss, n);
    // 0.2 +/- 5 sigma (sigma = sqrt(n p (1-p)) = 40 frames).
    assert!(
        (1_800..=2_200).contains(&c.dropped_loss),
        "lost {}",
        c.dropped_loss
    );
}

#[test]
fn corruption_flips_one_to_three_bits() {
    let model = LinkModel {
        corrupt: 1.0,
        ..LinkModel::perfect()
    };
    let payload = vec![0u8; 64];
    let p2 = payload.clone();
    let (got, c) = with_pair(6, model, |net, _, log| async move {
        for _ in 0..200 {
            net.send(1, 2, p2.clone());
        }
        sleep(Duration::from_millis(10)).await;
        let got = log.lock().expect("log").clone();
        (got, net.counters(1, 2))
    });
    assert_eq!(got.len(), 200);
    assert_eq!(c.corrupted, 200);
    for (_, _, _, bytes) in got {
        let flipped: u32 = bytes
            .iter()
            .zip(&payload)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        assert!((1..=3).contains(&flipped), "{flipped} bits flipped");
    }
}

#[test]
fn duplication_delivers_two_copies() {
    let model = LinkModel {
        duplicate: 1.0,
        ..LinkModel::perfect()
    };
    let (n, c) = with_pair(7, model, |net, _, log| async move {
        for _ in 0..50 {
            net.send(1, 2, vec![1, 2, 3]);
        }
        sleep(Duration::from_millis(10)).await;
        let n = log.lock().expect("log").len();
        (n, net.counters(1, 2))
    });
    assert_eq!(n, 100);
    assert_eq!(c.duplicated, 50);
}

#[test]
fn frames_over_the_mtu_are_dropped_and_counted() {
    let model = LinkModel {
        mtu_bytes: 100,
        ..LinkModel::perfect()
    };
    let (sizes, c) = with_pair(8, model, |net, _, log| async move {
        net.send(1, 2, vec![0; 100]);
        net.send(1, 2, vec![0; 101]);
        net.send(1, 2, vec![0; 1_000]);
        sleep(Duration::from_millis(10)).await;
        let sizes: Vec<usize> = log.lock().expect("log").iter().map(|e| e.3.len()).collect();
        (sizes, net.counters(1, 2))
    });
    assert_eq!(sizes, vec![100]);
    assert_eq!(c.dropped_mtu, 2);
}

#[test]
fn bandwidth_serialises_frames_and_the_queue_tail_drops() {
    // 800 bytes at 64 kbit/s = 100 ms on the air each.
    let model = LinkModel {
        latency_ms: 50,
        bandwidth_bps: 64_000,
        queue_frames: 4,
        ..LinkModel::perfect()
    };
    let (times, c) = with_pair(9, model, |net, _, log| async move {
        for _ in 0..10 {
            net.send(1, 2, vec![0; 800]);
        }
        sleep(Duration::from_secs(2)).await;
        let times: Vec<u64> = log.lock().expect("log").iter().map(|e| e.0).collect();
        (times, net.counters(1, 2))
    });
    // Four fit the queue (one on the air, three waiting); six are tail-dropped.
    assert_eq!(c.dropped_queue, 6);
    assert_eq!(times, vec![150, 250, 350, 450]);
}

#[test]
fn latency_is_base_plus_jitter_capped() {
    let exact = LinkModel {
        latency_ms: 400,
        ..LinkModel::perfect()
    };
    let t = with_pair(10, exact, |net, _, log| async move {
        net.send(1, 2, vec![1]);
        sleep(Duration::from_secs(1)).await;
        log.lock().expect("log")[0].0
    });
    assert_eq!(t, 400);
    let wild = LinkModel {
        latency_ms: 400,
        jitter_ms: 2_000,
        latency_cap_ms: 1_000,
        ..LinkModel::perfect()
    };
    let (times, reordered) = with_pair(11, wild, |net, _, log| async move {
        for i in 0..500u32 {
            net.send(1, 2, i.to_le_bytes().to_vec());
            sleep(Duration::from_millis(2)).await;
        }
        sleep(Duration::from_secs(2)).await;
        let log = log.lock().expect("log");
        let order: Vec<u32> = log
            .iter()
            .map(|e| u32::from_le_bytes([e.3[0], e.3[1], e.3[2], e.3[3]]))
            .collect();
        let reordered = order.windows(2).filter(|w| w[1] < w[0]).count();
        // Arrival minus send time (frame i was sent at 2*i ms).
        let lat: Vec<u64> = log
            .iter()
            .zip(&order)
            .map(|(e, &i)| e.0 - 2 * u64::from(i))
            .collect();
        (lat, reordered)
    });
    assert_eq!(times.len(), 500);
    assert!(
        times.iter().all(|&l| (400..=1_001).contains(&l)),
        "latency out of range"
    );
    assert!(
        times.iter().filter(|&&l| l >= 1_000).count() > 100,
        "the cap binds often"
    );
    assert!(reordered > 50, "jitter reorders frames: {reordered}");
}

#[test]
fn partitions_one_way_and_both_ways_then_heal() {
    let (log, c12, c21) = with_pair(12, LinkModel::perfect(), |net, _, log| async move {
        net.partition(1, 2, Direction::AToB);
        net.send(1, 2, vec![1]);
        net.send(2, 1, vec![2]);
        sleep(Duration::from_millis(5)).await;
        net.heal_all();
        net.partition(1, 2, Direction::Both);
        net.send(1, 2, vec![3]);
        net.send(2, 1, vec![4]);
        sleep(Duration::from_millis(5)).await;
        net.heal(1, 2);
        net.send(1, 2, vec![5]);
        sleep(Duration::from_millis(5)).await;
        let got: Vec<u8> = log.lock().expect("log").iter().map(|e| e.3[0]).collect();
        (got, net.counters(1, 2), net.counters(2, 1))
    });
    assert_eq!(log, vec![2, 5]);
    assert_eq!(c12.dropped_partition, 2);
    assert_eq!(c21.dropped_partition, 1);
}

#[test]
fn a_partition_drops_frames_already_in_flight() {
    let model = LinkModel {
        latency_ms: 100,
        ..LinkModel::perfect()
    };
    let n = with_pair(13, model, |net, _, log| async move {
        net.send(1, 2, vec![1]);
        sleep(Duration::from_millis(50)).await;
        net.isolate(2);
        sleep(Duration::from_millis(100)).await;
        log.lock().expect("log").len()
    });
    assert_eq!(n, 0);
}

#[test]
fn a_down_node_neither_sends_nor_receives() {
    let (n, c) = with_pair(14, LinkModel::perfect(), |net, _, log| async move {
        net.set_node_down(2, true);
        net.send(1, 2, vec![1]);
        net.send(2, 1, vec![2]);
        sleep(Duration::from_millis(5)).await;
        net.set_node_down(2, false);
        net.send(1, 2, vec![3]);
        sleep(Duration::from_millis(5)).await;
        let n = log.lock().expect("log").len();
        (n, net.total_counters())
    });
    assert_eq!(n, 1);
    assert_eq!(c.dropped_partition, 2);
}

#[test]
fn a_flapping_link_is_down_about_its_down_share() {
    let model = LinkModel {
        flap: Some(Flap {
            up_ms: 3_000,
            down_ms: 1_000,
        }),
        ..LinkModel::perfect()
    };
    let c = with_pair(15, model, |net, _, _| async move {
        for _ in 0..20_000 {
            net.send(1, 2, vec![0]);
            sleep(Duration::from_millis(100)).await;
        }
        net.counters(1, 2)
    });
    let down = c.dropped_partition as f64 / c.sent as f64;
    // Expected 25 % down; ~500 cycles, so a few percent of spread.
    assert!((0.18..=0.32).contains(&down), "down share {down}");
}

#[test]
fn a_replaced_endpoint_closes_the_old_one() {
    with_pair(16, LinkModel::perfect(), |net, _, _| async move {
        let mut old = net.endpoint(3);
        let mut new = net.endpoint(3);
        net.send(1, 3, vec![7]);
        sleep(Duration::from_millis(1)).await;
        assert_eq!(old.recv().await, None);
        assert_eq!(new.recv().await, Some((1, vec![7])));
    });
}

/// Lockstep: two nodes on their own paused runtimes, a world runtime making the barriers.
/// A frame sent in one window reaches the receiver's inbox at its own time in a later window,
/// the fates and the trace do not depend on the order the nodes ran in, and a link shorter
/// than the window is refused loudly rather than delivered late.
#[test]
fn lockstep_delivers_each_window_on_the_receivers_clock_in_any_node_order() {
    const WINDOW_MS: u64 = 100;
    /// (arrival ms on the receiver's clock, from, bytes)
    type Got = Vec<(u64, NodeId, Vec<u8>)>;
    fn run(reverse: bool) -> (Got, [u8; 32]) {
        let world = runtime().expect("world runtime");
        let rts: Vec<_> = (0..2).map(|_| runtime().expect("node runtime")).collect();
        let epochs: Vec<Epoch> = rts
            .iter()
            .map(|rt| rt.block_on(async { Epoch::now() }))
            .collect();
        let model = LinkModel {
            latency_ms: 400,
            jitter_ms: 100,
            loss: 0.2,
            ..LinkModel::satellite()
        };
        let net = world.block_on(async {
            SimNet::new_lockstep(7, model, [(1, epochs[0]), (2, epochs[1])].into())
        });
        let got: Arc<Mutex<Got>> = Arc::default();
        for (i, rt) in rts.iter().enumerate() {
            let node = i as u64 + 1;
            let mut ep = net.endpoint(node);
            let (net, got, epoch) = (net.clone(), got.clone(), epochs[i]);
            rt.spawn(net.delivery_task(node));
            rt.spawn(async move {
                while let Some((from, bytes)) = ep.recv().await {
                    got.lock()
                        .expect("log")
                        .push((epoch.elapsed_ms(), from, bytes));
                }
            });
            let net2 = net.clone();
            rt.spawn(async move {
                // Each node sends a numbered frame every 30 ms to the other.
                for k in 0..100u8 {
                    net2.send(node, 3 - node, vec![node as u8, k]);
                    sleep(Duration::from_millis(30)).await;
                }
            });
        }
        for t in (WINDOW_MS..=6_000).step_by(WINDOW_MS as usize) {
            let order: Vec<usize> = if reverse { vec![1, 0] } else { vec![0, 1] };
            for i in order {
                let at = epochs[i].at_ms(t);
                rts[i].block_on(async move { tokio::time::sleep_until(at).await });
            }
            net.deliver_window(t, t + WINDOW_MS);
        }
        let mut got = got.lock().expect("log").clone();
        got.sort();
        (got, net.trace_digest())
    }
    let (a, ha) = run(false);
    let (b, hb) = run(true);
    assert_eq!(a, b, "the node order within a window changes nothing");
    assert_eq!(ha, hb);
    assert!(
        a.len() > 100 && a.len() < 190,
        "200 frames at 20 % loss: {}",
        a.len()
    );
    for (t, from, bytes) in &a {
        // Sent at 30 ms * k, due at least 400 ms later, on the receiver's clock.
        let sent = 30 * u64::from(bytes[1]);
        assert!(*t >= sent + 400, "frame {bytes:?} from {from} at {t} ms");
        assert_eq!(u64::from(bytes[0]), *from);
    }
}

#[test]
#[should_panic(expected = "run this scenario on one runtime")]
fn lockstep_refuses_a_link_shorter_than_the_window() {
    let world = runtime().expect("world runtime");
    let rt = runtime().expect("node runtime");
    let epoch = rt.block_on(async { Epoch::now() });
    let net = world.block_on(async {
        SimNet::new_lockstep(1, LinkModel::lan(), [(1, epoch), (2, epoch)].into())
    });
    rt.block_on(async { net.send(1, 2, vec![1]) });
    let at = epoch.at_ms(100);
    rt.block_on(async move { tokio::time::sleep_until(at).await });
    net.deliver_window(100, 200);
}
