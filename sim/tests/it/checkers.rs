//! Each checker flags a hand-made violating trace and passes a clean one.

use ghatta_sim::check::{ChargeContext, CreditLimit, Suite, SuiteConfig};
use ghatta_sim::observe::{Digest, Observation as O, Role};
use ghatta_sim::report::FinishInfo;

const NODES: [u64; 3] = [1, 2, 3];
/// Flat test tariff: 10 milli-paisa per Wh.
const RATE_MPAISA_PER_WH: i64 = 10;

fn d(x: u64) -> Digest {
    let mut out = [0u8; 32];
    out[..8].copy_from_slice(&x.to_le_bytes());
    out[8] = 0xAA;
    out
}

fn applied(t_ms: u64, node: u64, index: u64) -> O {
    O::EntryApplied {
        t_ms,
        node,
        index,
        entry_digest: d(index),
        state_hash: d(1_000 + index),
    }
}

/// A clean run: one election, five entries on three nodes carrying two
/// proposals, a customer read, billed and topped up, frequency in band, one
/// partition healed and followed by a commit.
fn clean() -> Vec<O> {
    let mut v = vec![O::RoleChange {
        t_ms: 1_000,
        node: 1,
        term: 1,
        role: Role::Leader,
    }];
    for n in [2, 3] {
        v.push(O::RoleChange {
            t_ms: 1_000,
            node: n,
            term: 1,
            role: Role::Follower,
        });
    }
    for i in 1..=5u64 {
        for n in NODES {
            v.push(applied(1_000 + i * 100, n, i));
        }
    }
    for (seq, index) in [(1u64, 2u64), (2, 4)] {
        v.push(O::ProposalAcked {
            t_ms: 2_000,
            origin: 2,
            seq,
            index,
        });
        for n in NODES {
            v.push(O::ProposalApplied {
                t_ms: 2_000,
                node: n,
                origin: 2,
                seq,
                index,
            });
        }
    }
    v.push(O::MeterReadCommitted {
        t_ms: 3_000,
        customer: 7,
        total_wh: 100,
    });
    v.push(O::MeterReadCommitted {
        t_ms: 4_000,
        customer: 7,
        total_wh: 150,
    });
    v.push(O::LedgerCharge {
        t_ms: 4_000,
        customer: 7,
        energy_wh: 50,
        amount_mpaisa: 500,
        balance_after_mpaisa: 500,
        friendly: false,
    });
    v.push(O::Credit {
        t_ms: 5_000,
        customer: 7,
        amount_mpaisa: 1_000,
        balance_after_mpaisa: 1_500,
    });
    for (t, mhz) in [(0, 50_000), (10_000, 50_010), (20_000, 49_990)] {
        v.push(O::Frequency {
            t_ms: t,
            plant: 0,
            mhz,
        });
    }
    v.push(O::FaultStart {
        t_ms: 30_000,
        id: 1,
        what: "partition".into(),
    });
    v.push(O::FaultEnd {
        t_ms: 40_000,
        id: 1,
    });
    for n in NODES {
        v.push(applied(50_000, n, 6));
    }
    v.sort_by_key(O::t_ms);
    v
}

fn run(trace: &[O], end_t_ms: u64) -> Vec<(String, String)> {
    let mut cfg = SuiteConfig::new(60_000);
    cfg.credit_limit = CreditLimit {
        debt_mpaisa_max: 1_000,
    };
    cfg.tariff = Some(Box::new(|c: &ChargeContext| {
        c.energy_wh as i64 * RATE_MPAISA_PER_WH
    }));
    let mut suite = Suite::new(cfg);
    for o in trace {
        suite.observe(o);
    }
    let report = suite.finish(FinishInfo {
        end_t_ms,
        ..FinishInfo::default()
    });
    report
        .violations
        .into_iter()
        .map(|v| (v.checker, v.message))
        .collect()
}

#[test]
fn a_clean_trace_passes_every_checker() {
    let v = run(&clean(), 60_000);
    assert!(v.is_empty(), "{v:?}");
}

/// (what the mutation does, the checker that must catch it, the mutation)
type Case = (&'static str, &'static str, fn(&mut Vec<O>));

const CASES: &[Case] = &[
    // A node's term is persisted and only grows: seen going back, a vote was lost.
    ("a node's term going back", "election_safety", |v| {
        for (t_ms, term) in [(1_500, 9), (1_600, 8)] {
            v.push(O::RoleChange {
                t_ms,
                node: 2,
                term,
                role: Role::Follower,
            })
        }
    }),
    ("different entry at an index", "log_matching", |v| {
        v.push(O::EntryApplied {
            t_ms: 55_000,
            node: 2,
            index: 7,
            entry_digest: d(99),
            state_hash: d(1_007),
        });
        v.push(applied(55_000, 3, 7));
    }),
    ("skipped entries", "log_matching", |v| {
        v.push(applied(55_000, 1, 9))
    }),
    ("re-applied without restart", "log_matching", |v| {
        v.push(applied(55_000, 1, 6))
    }),
    ("diverged state", "state_agreement", |v| {
        v.push(O::EntryApplied {
            t_ms: 55_000,
            node: 1,
            index: 7,
            entry_digest: d(7),
            state_hash: d(5),
        });
        v.push(applied(55_000, 2, 7));
    }),
    ("acked proposal never applied", "acked_proposals", |v| {
        v.push(O::ProposalAcked {
            t_ms: 55_000,
            origin: 3,
            seq: 1,
            index: 6,
        })
    }),
    ("proposal applied twice", "acked_proposals", |v| {
        v.push(O::ProposalApplied {
            t_ms: 55_000,
            node: 1,
            origin: 2,
            seq: 1,
            index: 6,
        })
    }),
    (
        "acked entry lost, only a retry landed",
        "acked_proposals",
        |v| {
            v.push(O::ProposalAcked {
                t_ms: 50_000,
                origin: 3,
                seq: 9,
                index: 5,
            });
            v.push(O::ProposalApplied {
                t_ms: 50_000,
                node: 1,
                origin: 3,
                seq: 9,
                index: 6,
            });
        },
    ),
    ("an up node never caught up", "acked_proposals", |v| {
        v.retain(|o| !matches!(o, O::EntryApplied { node: 3, index, .. } if *index >= 4))
    }),
    ("charge without a read", "meter_billing", |v| {
        v.push(O::LedgerCharge {
            t_ms: 55_000,
            customer: 8,
            energy_wh: 5,
            amount_mpaisa: 50,
            balance_after_mpaisa: 0,
            friendly: false,
        })
    }),
    ("read billed twice", "meter_billing", |v| {
        v.push(O::LedgerCharge {
            t_ms: 55_000,
            customer: 7,
            energy_wh: 50,
            amount_mpaisa: 500,
            balance_after_mpaisa: 1_000,
            friendly: false,
        })
    }),
    ("read never billed", "meter_billing", |v| {
        v.push(O::MeterReadCommitted {
            t_ms: 55_000,
            customer: 7,
            total_wh: 170,
        })
    }),
    ("register went backwards", "meter_billing", |v| {
        v.push(O::MeterReadCommitted {
            t_ms: 55_000,
            customer: 7,
            total_wh: 120,
        })
    }),
    ("balance arithmetic wrong", "credit", |v| {
        v.push(O::Credit {
            t_ms: 55_000,
            customer: 7,
            amount_mpaisa: 100,
            balance_after_mpaisa: 9_999,
        })
    }),
    ("charge off the tariff", "credit", |v| {
        v.push(O::MeterReadCommitted {
            t_ms: 55_000,
            customer: 7,
            total_wh: 160,
        });
        v.push(O::LedgerCharge {
            t_ms: 55_000,
            customer: 7,
            energy_wh: 10,
            amount_mpaisa: 101,
            balance_after_mpaisa: 1_399,
            friendly: false,
        });
    }),
    (
        "debt beyond the limit outside friendly hours",
        "credit",
        |v| {
            v.push(O::MeterReadCommitted {
                t_ms: 55_000,
                customer: 7,
                total_wh: 450,
            });
            v.push(O::LedgerCharge {
                t_ms: 55_000,
                customer: 7,
                energy_wh: 300,
                amount_mpaisa: 3_000,
                balance_after_mpaisa: -1_500,
                friendly: false,
            });
        },
    ),
    ("outside the hard band", "frequency", |v| {
        v.push(O::Frequency {
            t_ms: 20_500,
            plant: 0,
            mhz: 42_000,
        });
        v.push(O::Frequency {
            t_ms: 20_600,
            plant: 0,
            mhz: 50_000,
        });
    }),
    ("out of the statutory band too long", "frequency", |v| {
        // 0.1 % of 60 s is 60 ms; 200 ms at 48.5 Hz is too much.
        v.push(O::Frequency {
            t_ms: 20_500,
            plant: 0,
            mhz: 48_500,
        });
        v.push(O::Frequency {
            t_ms: 20_700,
            plant: 0,
            mhz: 50_000,
        });
    }),
    ("no commit after healing", "liveness", |v| {
        v.retain(|o| !matches!(o, O::EntryApplied { index: 6, .. }))
    }),
];

#[test]
fn each_checker_flags_its_violating_trace() {
    for (what, checker, mutate) in CASES {
        let mut trace = clean();
        mutate(&mut trace);
        trace.sort_by_key(O::t_ms);
        let v = run(&trace, 120_000);
        assert!(
            v.iter().any(|(c, _)| c == checker),
            "{what}: expected a {checker} violation, got {v:?}"
        );
    }
}

#[test]
fn legitimate_variations_pass() {
    // A restarted node re-applies from its durable state; friendly-hours debt
    // is allowed; a crash counts as a fault for liveness until the restart.
    let mut trace = clean();
    trace.push(O::NodeCrash {
        t_ms: 51_000,
        node: 3,
    });
    trace.push(O::NodeRestart {
        t_ms: 52_000,
        node: 3,
    });
    trace.push(applied(52_500, 3, 4));
    trace.push(applied(52_600, 3, 5));
    trace.push(applied(52_700, 3, 6));
    for n in NODES {
        trace.push(applied(53_000, n, 7));
    }
    trace.push(O::MeterReadCommitted {
        t_ms: 53_000,
        customer: 7,
        total_wh: 450,
    });
    trace.push(O::LedgerCharge {
        t_ms: 53_000,
        customer: 7,
        energy_wh: 300,
        amount_mpaisa: 3_000,
        balance_after_mpaisa: -1_500,
        friendly: true,
    });
    trace.sort_by_key(O::t_ms);
    let v = run(&trace, 60_000);
    assert!(v.is_empty(), "{v:?}");
}

/// Regression: openraft's log starts at index 0 (the initial membership entry), and the log
/// checker took a node's first apply at 0 for a re-apply of "last applied 0".
#[test]
fn a_log_starting_at_index_zero_is_not_a_double_application() {
    let mut trace = Vec::new();
    for n in NODES {
        trace.push(applied(500, n, 0));
    }
    trace.extend(clean());
    let v = run(&trace, 60_000);
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn the_suite_report_counts_and_hashes_deterministically() {
    let finish = |trace: &[O]| {
        let mut suite = Suite::new(SuiteConfig::new(60_000));
        for o in trace {
            suite.observe(o);
        }
        suite.finish(FinishInfo {
            scenario: "t".into(),
            seed: 9,
            end_t_ms: 60_000,
            metered_wh: 55,
            net_trace_digest: Some([1; 32]),
            ..FinishInfo::default()
        })
    };
    let a = finish(&clean());
    let b = finish(&clean());
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.commits, 6);
    assert_eq!(a.elections, 1);
    assert_eq!(a.ledger.billed_wh, 50);
    assert_eq!(a.ledger.metered_wh, 55);
    assert!(a.passed);
    let mut other = clean();
    other.pop();
    assert_ne!(finish(&other).trace_hash, a.trace_hash);
}
