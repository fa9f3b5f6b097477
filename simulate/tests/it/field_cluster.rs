//! The field loop on a real node of a 3-node cluster with the real billing actor: meter reads
//! commit and are billed; cut off from its peers (an island) the node cuts a prepaid customer
//! whose local estimate reaches zero; when the peers return the backlog drains, billing
//! charges the island's energy once and cuts the customer itself, and the local cut is
//! handed back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ghatta::field::FieldConfig;
use ghatta::field::credit::CreditConfig;
use ghatta::field::{self, CustomerMap, FieldStats};
use ghatta::journal::{Cause, Journal, JournalLimits, ReasonCode};
use ghatta_actor_sdk as sdk;
use ghatta_hal::{RelayLine, SimBoard, SimBoardState};

use crate::harness::{Cluster, run, wait_until};

fn setup() -> Vec<Vec<u8>> {
    let customer = |id: u32, credit: i64| {
        sdk::Input::UpsertCustomer(sdk::CustomerSpec {
            id: sdk::CustomerId(id),
            node: sdk::NodeId(1),
            mode: sdk::AccountMode::Prepaid,
            tariff: 1,
            connection_w: 250,
            opening_credit_mpaisa: credit,
            token: None,
        })
    };
    [
        // NPR 10/kWh: 1,000 mpaisa per Wh.
        sdk::Input::SetTariff(sdk::Tariff {
            id: 1,
            version: 1,
            kind: sdk::TariffKind::PerKwh {
                rate_paisa_per_kwh: 1_000,
            },
        }),
        sdk::Input::SetBillingConfig(sdk::BillingConfig {
            utc_offset_min: 345,
            friendly_start_min: 0,
            friendly_end_min: 0,
            disconnect_at_mpaisa: 0,
            plausible_margin_pct: sdk::PLAUSIBLE_MARGIN_PCT_DEFAULT,
        }),
        customer(1, 50_000),
        customer(2, 1_000_000),
    ]
    .iter()
    .map(sdk::codec::encode)
    .collect()
}

#[test]
fn island_credit_with_the_real_billing_actor() {
    run(23, async {
        let mut c = Cluster::start(3).await;
        c.wait_leader(Duration::from_secs(20)).await;
        c.node(1)
            .propose_inputs(setup())
            .await
            .expect("setup commits");
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = FieldConfig {
            meter_journal_interval_ms: 1_000,
            journal: JournalLimits {
                fsync: false,
                ..JournalLimits::default()
            },
            credit: CreditConfig {
                // Short enough for a test. No friendly hours here: the island rule follows the
                // billing configuration committed above (none), at any hour the test runs.
                grace_ms: 5_000,
                ..CreditConfig::default()
            },
            ..FieldConfig::default()
        };
        let journal = Journal::open_dir(dir.path(), cfg.journal.clone()).expect("journal");
        let b = SimBoard::new(SimBoardState::bench());
        let meter = |customer: u32, wh: u64| {
            b.with_state(|s| {
                if let Some(m) = s.meters.get_mut(&customer) {
                    m.total_wh = wh;
                }
            })
        };
        meter(1, 100);
        meter(2, 100);
        let stats = Arc::new(FieldStats::default());
        let task = tokio::spawn(field::run_with(
            c.node(1).clone(),
            b.clone(),
            journal.clone(),
            cfg,
            CustomerMap::identity(),
            stats.clone(),
        ));
        let committed = |s: &FieldStats| s.reads_committed.load(Ordering::Relaxed);
        wait_until("the baseline reads", Duration::from_secs(20), || {
            committed(&stats) >= 2
        })
        .await;
        // 10 Wh billed: 40,000 mpaisa left for customer 1.
        meter(1, 110);
        wait_until("the charge", Duration::from_secs(20), || {
            committed(&stats) >= 3
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;

        // Island: the other two nodes go away; node 1 cannot commit.
        c.stop_node(2).await;
        c.stop_node(3).await;
        meter(1, 145);
        meter(2, 150);
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(
            b.lock().is_closed(RelayLine::Customer(1)),
            "35 Wh of 40: still in credit"
        );
        meter(1, 160);
        wait_until("the local cut", Duration::from_secs(20), || {
            !b.lock().is_closed(RelayLine::Customer(1))
        })
        .await;
        assert!(b.lock().is_closed(RelayLine::Customer(2)));
        let events = journal.recent_events(10).expect("events");
        let cut = events.last().expect("an event");
        assert_eq!(
            (cut.line, cut.closed, cut.reason, cut.local),
            (RelayLine::Customer(1), false, ReasonCode::Billing, true)
        );
        assert!(
            matches!(cut.cause, Cause::IslandCredit { estimated_mpaisa } if estimated_mpaisa == -10_000),
            "{cut:?}"
        );

        // Rejoin: the backlog drains, billing charges the 50 Wh once and cuts customer 1.
        c.start_node(2).await;
        c.start_node(3).await;
        wait_until(
            "the drain and reconciliation",
            Duration::from_secs(60),
            || {
                journal.stats().map(|s| s.reads == 0).unwrap_or(false)
                    && stats.island_credit_cut_now.load(Ordering::Relaxed) == 0
            },
        )
        .await;
        let status = c.node(1).status();
        assert_eq!(status.disconnected, 1, "billing cut customer 1: {status:?}");
        assert!(
            !b.lock().is_closed(RelayLine::Customer(1)),
            "billing's cut holds it open"
        );
        assert!(b.lock().is_closed(RelayLine::Customer(2)));
        task.abort();
        c.shutdown().await;
    });
}
