//! A template actor: copy this crate to start a new one (`actors/README.md` says how to build,
//! test, sign and deploy it). It watches the grid's frequency in the boards' 1 Hz telemetry and
//! raises one `FrequencyOutOfBand` alarm per episode a board spends outside the band, not one
//! per report: the smallest actor that reads and writes its state, emits an output, refuses
//! what is not its own, and is tested natively.
//!
//! Everything an actor does must be deterministic: it may use only the delivery and its own
//! state (no clock but `ctx.log_time_ms`, no randomness, no floats in what it stores), because
//! every controller runs it on the same entries and must reach the same state bytes.
#![forbid(unsafe_code)]
#![no_std]

extern crate alloc;
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

use alloc::format;
use alloc::vec::Vec;

use ghatta_actor_sdk::{
    Actor, Alarm, AlarmCode, Delivery, Host, Input, Outcome, Output, RejectReason,
};

/// The band, mHz: 50 Hz +/-2.5 %, the statutory band (DOMAIN.md).
pub const BAND_MHZ: (u32, u32) = (48_750, 51_250);
/// Boards remembered at most: a grid has 3 to 5; a bound keeps a rogue report from growing
/// the state.
pub const BOARDS_MAX: u64 = 64;

/// The state key of a board's "outside the band" flag.
fn key(node: u64) -> Vec<u8> {
    let mut k = b"out/".to_vec();
    k.extend_from_slice(&node.to_be_bytes());
    k
}

/// The template.
pub struct Template;

impl Actor for Template {
    fn handle(host: &mut dyn Host, d: &Delivery) -> Outcome {
        let Input::Telemetry(t) = &d.input else {
            return Outcome::Rejected(RejectReason::NotForMe);
        };
        if t.node.0 >= BOARDS_MAX {
            return Outcome::Rejected(RejectReason::Invalid);
        }
        let outside = !(BAND_MHZ.0..=BAND_MHZ.1).contains(&t.frequency_mhz);
        let k = key(t.node.0);
        let was_outside = host.get(&k).is_some();
        match (was_outside, outside) {
            (false, true) => {
                host.set(&k, &[1]);
                host.emit(Output::Alarm(Alarm {
                    code: AlarmCode::FrequencyOutOfBand,
                    node: Some(t.node),
                    subject: 0,
                    value: i64::from(t.frequency_mhz),
                    text: format!(
                        "frequency {} mHz outside {}-{} mHz",
                        t.frequency_mhz, BAND_MHZ.0, BAND_MHZ.1
                    ),
                }));
            }
            (true, false) => host.remove(&k),
            _ => {}
        }
        Outcome::Handled
    }
}

ghatta_actor_sdk::export_actor!(Template);

#[cfg(test)]
mod tests {
    use ghatta_actor_sdk::{Context, MemHost, NodeId, Telemetry};

    use super::*;

    fn report(h: &mut MemHost, node: u64, frequency_mhz: u32) -> Outcome {
        let d = Delivery {
            ctx: Context {
                log_index: 1,
                log_time_ms: 0,
                origin: NodeId(node),
            },
            input: Input::Telemetry(Telemetry {
                node: NodeId(node),
                frequency_mhz,
                voltage_dv: 2_300,
                generation_w: 20_000,
                ballast_w: 2_000,
                ballast_capacity_w: 6_000,
                feeders: Vec::new(),
            }),
        };
        Template::handle(h, &d)
    }

    fn alarms(h: &mut MemHost) -> usize {
        h.take_outputs()
            .iter()
            .filter(|o| matches!(o, Output::Alarm(_)))
            .count()
    }

    #[test]
    fn one_alarm_per_episode_outside_the_band() {
        let mut h = MemHost::default();
        assert_eq!(report(&mut h, 1, 50_000), Outcome::Handled);
        assert_eq!(alarms(&mut h), 0);
        report(&mut h, 1, 48_000);
        report(&mut h, 1, 47_900);
        assert_eq!(alarms(&mut h), 1, "one alarm for the episode");
        report(&mut h, 1, 50_000);
        report(&mut h, 1, 51_500);
        assert_eq!(alarms(&mut h), 1, "a new episode, a new alarm");
        // Each board has its own episode.
        report(&mut h, 2, 48_000);
        assert_eq!(alarms(&mut h), 1);
    }

    #[test]
    fn what_is_not_its_own_is_refused_and_changes_nothing() {
        let mut h = MemHost::default();
        let d = Delivery {
            ctx: Context {
                log_index: 1,
                log_time_ms: 0,
                origin: NodeId(1),
            },
            input: Input::Noop,
        };
        assert_eq!(
            Template::handle(&mut h, &d),
            Outcome::Rejected(RejectReason::NotForMe)
        );
        assert_eq!(
            report(&mut h, BOARDS_MAX, 40_000),
            Outcome::Rejected(RejectReason::Invalid)
        );
        assert!(h.state.is_empty() && h.outputs.is_empty());
    }
}
