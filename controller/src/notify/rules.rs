//! Alarm rules on this board's field gauges: each raises when its gauge crosses the raise
//! level and stays past it for a minimum time, and clears only when the gauge is back past a
//! separate clear level for its own minimum time, so a frequency hovering at a limit is one
//! alarm, not one a second (hysteresis, what operators of such grids ask for: DOMAIN.md).
//! Logic only: the gauges and the time are passed in.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::field::FieldStatsSnapshot;

/// Which side of the levels is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Bad when the gauge is at or above `raise`; good again at or below `clear`.
    Above,
    /// Bad when the gauge is at or below `raise`; good again at or above `clear`.
    Below,
}

/// One rule's levels and times (node.toml `[alarms.NAME]`, all four keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleLevels {
    /// Raise level, in the gauge's unit.
    pub raise: u64,
    /// Clear level, in the gauge's unit (on the good side of `raise`).
    pub clear: u64,
    /// The gauge must stay past `raise` this long before the alarm is raised, s.
    pub raise_after_s: u32,
    /// The gauge must stay past `clear` this long before the alarm clears, s.
    pub clear_after_s: u32,
}

/// The node's gauges beside the field loop's, sampled with them (`notify::host`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostGauges {
    /// Voters the leader has not heard from lately (0 on a follower: a cut-off follower sees
    /// `consensus_stalled` instead).
    pub peers_unreachable: u64,
    /// Age of the oldest outbox record the central has not acknowledged, s, judged on the
    /// leader (which uploads); 0 without a `[wan]` or on a follower.
    pub wan_behind_s: u64,
    /// Free space for the data directory, MiB; `u64::MAX` when it cannot be read.
    pub disk_free_mib: u64,
}

impl Default for HostGauges {
    fn default() -> Self {
        HostGauges {
            peers_unreachable: 0,
            wan_behind_s: 0,
            disk_free_mib: u64::MAX,
        }
    }
}

/// What the rules read: the field loop's gauges and the node's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// The field loop's.
    pub field: FieldStatsSnapshot,
    /// The node's.
    pub host: HostGauges,
}

impl From<FieldStatsSnapshot> for Gauges {
    fn from(field: FieldStatsSnapshot) -> Self {
        Gauges {
            field,
            host: HostGauges::default(),
        }
    }
}

/// A built-in rule: its name, the gauge it reads, its direction and default levels.
struct RuleDef {
    name: &'static str,
    what: &'static str,
    unit: &'static str,
    gauge: fn(&Gauges) -> u64,
    /// Judged only once the field loop has a grid sample (its gauges are zero before).
    needs_grid: bool,
    direction: Direction,
    levels: RuleLevels,
}

const fn levels(raise: u64, clear: u64, raise_after_s: u32, clear_after_s: u32) -> RuleLevels {
    RuleLevels {
        raise,
        clear,
        raise_after_s,
        clear_after_s,
    }
}

/// The rules every board runs. Frequency and voltage default to the statutory bands (50 Hz
/// +/-2.5 %, 230 V +/-5 %: DOMAIN.md), with the clear level a little inside the band.
const RULES: [RuleDef; 12] = [
    RuleDef {
        name: "frequency_low",
        what: "frequency below the statutory band",
        unit: "mHz",
        gauge: |g| g.field.frequency_mhz,
        needs_grid: true,
        direction: Direction::Below,
        levels: levels(48_750, 49_000, 10, 30),
    },
    RuleDef {
        name: "frequency_high",
        what: "frequency above the statutory band",
        unit: "mHz",
        gauge: |g| g.field.frequency_mhz,
        needs_grid: true,
        direction: Direction::Above,
        levels: levels(51_250, 51_000, 10, 30),
    },
    RuleDef {
        name: "voltage_low",
        what: "voltage below the statutory band",
        unit: "dV",
        gauge: |g| g.field.voltage_dv,
        needs_grid: true,
        direction: Direction::Below,
        levels: levels(2_185, 2_200, 30, 60),
    },
    RuleDef {
        name: "voltage_high",
        what: "voltage above the statutory band",
        unit: "dV",
        gauge: |g| g.field.voltage_dv,
        needs_grid: true,
        direction: Direction::Above,
        levels: levels(2_415, 2_400, 30, 60),
    },
    RuleDef {
        name: "shedding",
        what: "under-frequency shedding holds feeders off",
        unit: "stages",
        gauge: |g| g.field.ufls_stages_tripped,
        needs_grid: true,
        direction: Direction::Above,
        levels: levels(1, 0, 0, 60),
    },
    RuleDef {
        name: "no_data",
        what: "no good grid sample (sensor or bus fault)",
        unit: "ms failing",
        gauge: |g| g.field.grid_failing_ms,
        needs_grid: false,
        direction: Direction::Above,
        levels: levels(10_000, 0, 0, 10),
    },
    RuleDef {
        name: "consensus_stalled",
        what: "proposals are not committing (islanded from the other controllers?)",
        unit: "ms stalled",
        gauge: |g| g.field.stalled_ms,
        needs_grid: true,
        direction: Direction::Above,
        levels: levels(60_000, 0, 0, 30),
    },
    RuleDef {
        name: "meter_silent",
        what: "customer meters not answering (their energy is not read or billed)",
        unit: "meters",
        gauge: |g| g.field.meters_silent,
        needs_grid: true,
        direction: Direction::Above,
        // Five minutes: longer than a Modbus line's brownout or a meter's restart, short
        // against the day a silent meter would go unbilled.
        levels: levels(1, 0, 300, 60),
    },
    RuleDef {
        name: "peer_unreachable",
        what: "controllers the leader cannot reach (down, or their link is cut)",
        unit: "peers",
        gauge: |g| g.host.peers_unreachable,
        needs_grid: false,
        direction: Direction::Above,
        // A minute: past an election and a radio's lost heartbeats, short against a trip.
        levels: levels(1, 0, 60, 30),
    },
    RuleDef {
        name: "wan_behind",
        what: "records waiting for the central data center (satellite link down?)",
        unit: "s",
        gauge: |g| g.host.wan_behind_s,
        needs_grid: false,
        direction: Direction::Above,
        // A day: satellite outages of hours are normal (DOMAIN.md); a day of silence means
        // the office bills from stale data and someone should look at the terminal. Clears
        // when the backlog is back under an hour.
        levels: levels(86_400, 3_600, 0, 60),
    },
    RuleDef {
        name: "disk_low",
        what: "free space for the data directory is low (the journal and state need room)",
        unit: "MiB",
        gauge: |g| g.host.disk_free_mib,
        needs_grid: false,
        direction: Direction::Below,
        // The state database, the journal's limits and a snapshot being received fit in a few
        // hundred MiB; under 256 MiB a write may fail soon.
        levels: levels(256, 512, 60, 60),
    },
    RuleDef {
        name: "journal_full",
        what: "the field journal is over its limits (meter reads are being downsampled)",
        unit: "over limit",
        gauge: |g| g.field.journal_over_limit,
        needs_grid: true,
        direction: Direction::Above,
        levels: levels(1, 0, 0, 60),
    },
];

/// The rule names node.toml may set levels for.
pub fn rule_names() -> impl Iterator<Item = &'static str> {
    RULES.iter().map(|r| r.name)
}

/// A rule's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Good; `since`: when the gauge went past the raise level (still waiting), if it did.
    Normal { past_raise_since: Option<u64> },
    /// Raised at `since`; `back_since`: when the gauge went back past the clear level.
    Active { since: u64, back_since: Option<u64> },
}

/// A rule raised or cleared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmChange {
    /// The rule's name.
    pub rule: &'static str,
    /// Raised (true) or cleared.
    pub raised: bool,
    /// When, Unix ms.
    pub at_ms: u64,
    /// The gauge then.
    pub value: u64,
    /// For a person: what, the value with its unit, and the level.
    pub text: String,
}

/// The rules with their state.
#[derive(Debug, Clone)]
pub struct AlarmRules {
    levels: Vec<RuleLevels>,
    states: Vec<State>,
}

/// A rule setting node.toml cannot use: which rule, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[alarms.{rule}]: {why}")]
pub struct RuleError {
    /// The rule.
    pub rule: String,
    /// What is wrong and what to write instead.
    pub why: String,
}

impl AlarmRules {
    /// The built-in rules at their default levels.
    pub fn defaults() -> AlarmRules {
        AlarmRules::with_levels(RULES.iter().map(|r| r.levels).collect())
    }

    fn with_levels(levels: Vec<RuleLevels>) -> AlarmRules {
        AlarmRules {
            states: vec![
                State::Normal {
                    past_raise_since: None
                };
                levels.len()
            ],
            levels,
        }
    }

    /// The built-in rules, with node.toml's levels where it sets them.
    pub fn new(overrides: &BTreeMap<String, RuleLevels>) -> Result<AlarmRules, RuleError> {
        for name in overrides.keys() {
            if !RULES.iter().any(|r| r.name == name) {
                return Err(RuleError {
                    rule: name.clone(),
                    why: format!(
                        "no such rule; the rules are {}",
                        rule_names().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        }
        let mut lv = Vec::new();
        for r in &RULES {
            let l = overrides.get(r.name).copied().unwrap_or(r.levels);
            let ordered = match r.direction {
                Direction::Above => l.clear < l.raise,
                Direction::Below => l.clear > l.raise,
            };
            if !ordered {
                return Err(RuleError {
                    rule: r.name.into(),
                    why: format!(
                        "clear = {} must be on the good side of raise = {} ({} the raise level), or the alarm could never clear or would flap",
                        l.clear,
                        l.raise,
                        match r.direction {
                            Direction::Above => "below",
                            Direction::Below => "above",
                        }
                    ),
                });
            }
            lv.push(l);
        }
        Ok(AlarmRules::with_levels(lv))
    }

    /// Evaluates every rule on the gauges sampled at `now_ms`. Before the field loop's first
    /// grid sample (`samples == 0`) the rules on grid gauges judge nothing.
    pub fn evaluate(&mut self, s: &Gauges, now_ms: u64) -> Vec<AlarmChange> {
        let mut out = Vec::new();
        for (i, r) in RULES.iter().enumerate() {
            let sampled = s.field.samples > 0 || !r.needs_grid;
            let v = (r.gauge)(s);
            let l = self.levels[i];
            let (bad, good) = match r.direction {
                Direction::Above => (v >= l.raise, v <= l.clear),
                Direction::Below => (v <= l.raise, v >= l.clear),
            };
            let (bad, good) = if sampled { (bad, good) } else { (false, true) };
            let change = |raised: bool| AlarmChange {
                rule: r.name,
                raised,
                at_ms: now_ms,
                value: v,
                text: format!(
                    "{} {}: {} ({v} {}, {} {} {})",
                    r.name,
                    if raised { "RAISED" } else { "cleared" },
                    r.what,
                    r.unit,
                    if raised { "raise level" } else { "clear level" },
                    if raised { l.raise } else { l.clear },
                    r.unit
                ),
            };
            self.states[i] = match self.states[i] {
                State::Normal { past_raise_since } if bad => {
                    let since = past_raise_since.unwrap_or(now_ms);
                    if now_ms.saturating_sub(since) >= u64::from(l.raise_after_s) * 1_000 {
                        out.push(change(true));
                        State::Active {
                            since: now_ms,
                            back_since: None,
                        }
                    } else {
                        State::Normal {
                            past_raise_since: Some(since),
                        }
                    }
                }
                State::Normal { .. } => State::Normal {
                    past_raise_since: None,
                },
                State::Active { since, back_since } if good => {
                    let back = back_since.unwrap_or(now_ms);
                    if now_ms.saturating_sub(back) >= u64::from(l.clear_after_s) * 1_000 {
                        out.push(change(false));
                        State::Normal {
                            past_raise_since: None,
                        }
                    } else {
                        State::Active {
                            since,
                            back_since: Some(back),
                        }
                    }
                }
                State::Active { since, .. } => State::Active {
                    since,
                    back_since: None,
                },
            };
        }
        out
    }

    /// The rules raised now: (name, since Unix ms).
    pub fn active(&self) -> Vec<(&'static str, u64)> {
        RULES
            .iter()
            .zip(&self.states)
            .filter_map(|(r, s)| match s {
                State::Active { since, .. } => Some((r.name, *since)),
                State::Normal { .. } => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(f_mhz: u64) -> FieldStatsSnapshot {
        FieldStatsSnapshot {
            samples: 1,
            frequency_mhz: f_mhz,
            voltage_dv: 2_300,
            ..FieldStatsSnapshot::default()
        }
    }

    fn run(rules: &mut AlarmRules, secs: std::ops::Range<u64>, f: u64) -> Vec<AlarmChange> {
        secs.flat_map(|t| rules.evaluate(&snap(f).into(), t * 1_000))
            .collect()
    }

    #[test]
    fn a_low_frequency_raises_after_its_time_and_clears_only_past_the_clear_level() {
        let mut r = AlarmRules::new(&BTreeMap::new()).unwrap();
        assert!(run(&mut r, 0..5, 50_000).is_empty());
        // A 5-second dip is not an alarm.
        assert!(run(&mut r, 5..10, 48_500).is_empty());
        assert!(run(&mut r, 10..11, 50_000).is_empty());
        // A sustained one is, once, after 10 s.
        let c = run(&mut r, 11..40, 48_500);
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(c[0].raised && c[0].rule == "frequency_low" && c[0].at_ms == 21_000);
        assert!(c[0].text.contains("48500 mHz"), "{}", c[0].text);
        assert_eq!(r.active(), vec![("frequency_low", 21_000)]);
        // Hovering between the raise and the clear level keeps it raised, quietly.
        assert!(run(&mut r, 40..200, 48_900).is_empty());
        // Back in the band for less than 30 s, then out: still the same alarm.
        assert!(run(&mut r, 200..220, 49_500).is_empty());
        assert!(run(&mut r, 220..221, 48_800).is_empty());
        let c = run(&mut r, 221..260, 49_500);
        assert_eq!(c.len(), 1);
        assert!(!c[0].raised && c[0].at_ms == 251_000, "{c:?}");
        assert!(r.active().is_empty());
    }

    #[test]
    fn no_sample_yet_judges_only_the_no_data_rule() {
        let mut r = AlarmRules::defaults();
        let empty = FieldStatsSnapshot {
            grid_failing_ms: 12_000,
            ..FieldStatsSnapshot::default()
        };
        let c = r.evaluate(&empty.into(), 0);
        assert_eq!(c.iter().map(|c| c.rule).collect::<Vec<_>>(), ["no_data"]);
    }

    #[test]
    fn the_nodes_own_gauges_raise_without_a_grid_sample() {
        let mut r = AlarmRules::defaults();
        let at = |host: HostGauges| Gauges {
            field: FieldStatsSnapshot::default(),
            host,
        };
        let cut_off = at(HostGauges {
            peers_unreachable: 1,
            ..HostGauges::default()
        });
        assert!(r.evaluate(&cut_off, 0).is_empty());
        assert!(r.evaluate(&cut_off, 59_000).is_empty(), "waits its minute");
        let c = r.evaluate(&cut_off, 60_000);
        assert_eq!((c[0].rule, c[0].raised), ("peer_unreachable", true));
        let behind = at(HostGauges {
            wan_behind_s: 86_400,
            ..HostGauges::default()
        });
        let c = r.evaluate(&behind, 61_000);
        let names: Vec<_> = c.iter().map(|c| (c.rule, c.raised)).collect();
        assert!(names.contains(&("wan_behind", true)), "{names:?}");
        assert!(
            c.iter()
                .any(|c| c.rule == "wan_behind" && c.text.contains("86400 s")),
            "{c:?}"
        );
        let low = at(HostGauges {
            disk_free_mib: 100,
            ..HostGauges::default()
        });
        assert!(
            r.evaluate(&low, 100_000)
                .iter()
                .all(|c| c.rule != "disk_low")
        );
        assert!(
            r.evaluate(&low, 160_000)
                .iter()
                .any(|c| c.rule == "disk_low" && c.raised)
        );
        // Unknown free space (u64::MAX) is not low.
        let mut r = AlarmRules::defaults();
        assert!(r.evaluate(&at(HostGauges::default()), 0).is_empty());
        assert!(r.evaluate(&at(HostGauges::default()), 1_000_000).is_empty());
    }

    #[test]
    fn node_toml_levels_are_checked() {
        let mut o = BTreeMap::new();
        o.insert("frequency_low".to_string(), levels(49_000, 48_000, 1, 1));
        let e = AlarmRules::new(&o).unwrap_err();
        assert!(e.to_string().contains("above the raise level"), "{e}");
        let mut o = BTreeMap::new();
        o.insert("freq_low".to_string(), levels(1, 2, 1, 1));
        let e = AlarmRules::new(&o).unwrap_err();
        assert!(e.to_string().contains("frequency_low"), "{e}");
        let mut o = BTreeMap::new();
        o.insert("frequency_low".to_string(), levels(49_500, 49_800, 0, 0));
        let mut r = AlarmRules::new(&o).unwrap();
        assert_eq!(
            r.evaluate(&snap(49_400).into(), 0).len(),
            1,
            "an override applies"
        );
    }
}
