//! Village agents selling OpenPAYGO tokens (the scenario's `[tokens]`, issue 21): each round an
//! agent mints the next add-credit token of a served account, as the office's generator would,
//! and types it at a random running node, or at every running node (both sides of any split).
//! Each typing is its own proposal through that node, retried until it commits or the node
//! dies; a committed typing is reported as `Observation::TokenEntered`, and the `token_once`
//! checker holds the grid to one credit per token.

use std::collections::BTreeMap;
use std::sync::Arc;

use ghatta_actor_sdk as sdk;
use ghatta_billing::opaygo;
use ghatta_sim::observe::Observation;
use ghatta_sim::rng::SimRng;
use ghatta_sim::scenario::TokenAgents;
use ghatta_sim::time::Epoch;
use tokio::time::Duration;

use super::lock;
use super::lockstep::Engine;
use super::observer::Shared;
use super::setup;
use super::world::{Running, propose_through};

/// The agents' loop; runs on the world's runtime until the world aborts it.
pub(crate) async fn token_agents(
    engine: Engine,
    running: Running,
    shared: Arc<Shared>,
    epoch: Epoch,
    cfg: TokenAgents,
    customers: Vec<u32>,
    seed: u64,
) {
    if customers.is_empty() {
        return;
    }
    let mut rng = SimRng::derive(seed, "token-agents", 0);
    // The last count minted per account: add-credit tokens take the even counts.
    let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
    let interval = Duration::from_secs_f64(cfg.interval_s);
    loop {
        tokio::time::sleep(interval).await;
        let c = customers[rng.below(customers.len() as u64) as usize];
        let count = counts.entry(c).or_insert(0);
        *count += 2;
        let count = *count;
        let key = setup::token_key(c);
        let code = opaygo::encode(
            &key,
            opaygo::starting_code_of(&key),
            setup::TOKEN_VALUE_UNITS,
            count,
        );
        let input = sdk::codec::encode(&sdk::Input::TokenTopUp(sdk::TokenTopUp {
            customer: sdk::CustomerId(c),
            code,
        }));
        let nodes: Vec<_> = lock(&running).values().cloned().collect();
        if nodes.is_empty() {
            continue;
        }
        let targets = if rng.chance(cfg.everywhere_share) {
            nodes
        } else {
            vec![nodes[rng.below(nodes.len() as u64) as usize].clone()]
        };
        for (slot, incarnation, node) in targets {
            let engine = engine.clone();
            let running = running.clone();
            let shared = shared.clone();
            let input = input.clone();
            tokio::spawn(async move {
                let typed = propose_through(running, incarnation, node, vec![input]);
                if let Ok(true) = engine.spawn_on(slot, typed).await {
                    shared.push_world(Observation::TokenEntered {
                        t_ms: epoch.elapsed_ms(),
                        customer: u64::from(c),
                        count: u64::from(count),
                    });
                }
            });
        }
    }
}
