//! A board's own alarms through a real cluster: a follower's raised rule reaches every
//! node's replicated list through its reporter, and clears the same way; the leader's node
//! gauges count a stopped peer as unreachable.

use std::time::Duration;

use ghatta::notify::AlarmChange;
use ghatta::notify::host::NodeGauges;
use ghatta::notify::report::{self, ReportQueue};

use crate::harness::{Cluster, run, wait_until};

fn change(raised: bool) -> AlarmChange {
    AlarmChange {
        rule: "frequency_low",
        raised,
        at_ms: 1_000,
        value: 48_500,
        text: format!(
            "frequency_low {}",
            if raised { "RAISED" } else { "cleared" }
        ),
    }
}

#[test]
fn a_boards_alarm_reaches_every_node_and_a_stopped_peer_is_unreachable_for_the_leader() {
    run(41, async {
        let mut c = Cluster::start(3).await;
        let leader = c.wait_leader(Duration::from_secs(20)).await;
        let board = (1..=3).find(|i| *i != leader).expect("a follower");
        let other = (1..=3)
            .find(|i| *i != leader && *i != board)
            .expect("another");
        let q = ReportQueue::default();
        let task = report::spawn(c.node(board).clone(), q.clone(), Duration::from_millis(100));
        q.record(&[("frequency_low", 1_000)], &[change(true)]);
        let raised_everywhere = |c: &Cluster| {
            c.nodes.values().all(|n| {
                n.state_machine().board_alarms().iter().any(|(b, rules)| {
                    *b == board && rules.iter().any(|r| r.rule == "frequency_low")
                })
            })
        };
        wait_until("the raise on every node", Duration::from_secs(20), || {
            raised_everywhere(&c)
        })
        .await;

        let gauges = NodeGauges::new(c.node(leader).clone(), c.dir(leader), false);
        assert_eq!(gauges.sample().peers_unreachable, 0);
        c.stop_node(other).await;
        wait_until(
            "the leader to count the stopped peer",
            Duration::from_secs(30),
            || gauges.sample().peers_unreachable == 1,
        )
        .await;

        q.record(&[], &[change(false)]);
        wait_until(
            "the clear on the running nodes",
            Duration::from_secs(20),
            || {
                c.nodes
                    .values()
                    .all(|n| n.state_machine().board_alarms().is_empty())
            },
        )
        .await;
        assert_eq!(q.waiting(), 0, "every change committed");
        task.abort();
        c.shutdown().await;
    });
}
