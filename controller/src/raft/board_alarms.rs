//! What a board reports of its own alarm rules through the log (`Body::BoardAlarms`): its
//! whole set of rules raised now and the raises and clears since its last committed report.
//! Committed, so every node's cockpit shows the same list; the whole set in every report, so a
//! board that restarted (its rules start cleared) clears what it no longer sees with its first
//! report. The limits bound what a member can make every replica store; a report past them is
//! refused on apply, the same way everywhere.

use serde::{Deserialize, Serialize};

/// Rules raised at once on one board, at most: the built-in rules number under a dozen
/// (`notify::rules`); the rest is room for rules added later.
pub const ACTIVE_PER_BOARD_MAX: usize = 32;
/// Raises and clears in one report, at most: a board reports after each evaluation (about a
/// second); a backlog longer than this while it cannot commit keeps its newest changes.
pub const CHANGES_PER_REPORT_MAX: usize = 64;
/// A rule's name, bytes (`notify::rules` names are under 20).
pub const RULE_NAME_BYTES_MAX: usize = 32;
/// A rule's text for a person, bytes: one SMS (160 characters) with room for UTF-8.
pub const TEXT_BYTES_MAX: usize = 240;

/// One board's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardAlarms {
    /// Every rule raised on the board now (its whole set).
    pub active: Vec<ActiveRule>,
    /// Raises and clears since its last committed report, oldest first.
    pub changes: Vec<RuleChange>,
    /// Changes the board dropped from its backlog since its last committed report (over
    /// [`CHANGES_PER_REPORT_MAX`]): the history has a gap there.
    pub dropped: u32,
}

/// A rule raised now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveRule {
    /// The rule's name (`frequency_low`...).
    pub rule: String,
    /// When the board raised it, by its clock, Unix ms.
    pub since_ms: u64,
    /// What it said when raised.
    pub text: String,
}

/// A raise or a clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleChange {
    /// The rule's name.
    pub rule: String,
    /// Raised (true) or cleared.
    pub raised: bool,
    /// When, by the board's clock, Unix ms.
    pub at_ms: u64,
    /// The gauge then, in the rule's unit.
    pub value: u64,
    /// For a person: what, the value with its unit, and the level.
    pub text: String,
}

impl BoardAlarms {
    /// Why the report cannot be stored, if it cannot: checked by the leader before it writes
    /// one and by every replica on apply (where a refusal is the same everywhere).
    pub fn check(&self) -> Result<(), String> {
        if self.active.len() > ACTIVE_PER_BOARD_MAX {
            return Err(format!(
                "{} active rules in one board's report; at most {ACTIVE_PER_BOARD_MAX}",
                self.active.len()
            ));
        }
        if self.changes.len() > CHANGES_PER_REPORT_MAX {
            return Err(format!(
                "{} changes in one board's report; at most {CHANGES_PER_REPORT_MAX}",
                self.changes.len()
            ));
        }
        let names = self.active.iter().map(|a| (&a.rule, &a.text));
        let changes = self.changes.iter().map(|c| (&c.rule, &c.text));
        for (rule, text) in names.chain(changes) {
            if rule.is_empty() || rule.len() > RULE_NAME_BYTES_MAX {
                return Err(format!(
                    "a rule name of {} bytes; 1 to {RULE_NAME_BYTES_MAX}",
                    rule.len()
                ));
            }
            if text.len() > TEXT_BYTES_MAX {
                return Err(format!(
                    "rule {rule}: a text of {} bytes; at most {TEXT_BYTES_MAX}",
                    text.len()
                ));
            }
        }
        let mut seen: Vec<&str> = self.active.iter().map(|a| a.rule.as_str()).collect();
        seen.sort_unstable();
        if seen.windows(2).any(|w| w[0] == w[1]) {
            return Err("a rule is listed twice among the active ones".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(rule: &str) -> ActiveRule {
        ActiveRule {
            rule: rule.into(),
            since_ms: 1,
            text: "t".into(),
        }
    }

    #[test]
    fn reports_within_the_limits_pass_and_others_say_which_limit() {
        let ok = BoardAlarms {
            active: vec![active("frequency_low")],
            ..BoardAlarms::default()
        };
        assert_eq!(ok.check(), Ok(()));
        let too_many = BoardAlarms {
            active: (0..=ACTIVE_PER_BOARD_MAX)
                .map(|i| active(&format!("r{i}")))
                .collect(),
            ..BoardAlarms::default()
        };
        assert!(too_many.check().unwrap_err().contains("at most 32"));
        let twice = BoardAlarms {
            active: vec![active("a"), active("a")],
            ..BoardAlarms::default()
        };
        assert!(twice.check().unwrap_err().contains("twice"));
        let long = BoardAlarms {
            changes: vec![RuleChange {
                rule: "a".into(),
                raised: true,
                at_ms: 0,
                value: 0,
                text: "x".repeat(TEXT_BYTES_MAX + 1),
            }],
            ..BoardAlarms::default()
        };
        assert!(long.check().unwrap_err().contains("rule a"));
        let nameless = BoardAlarms {
            active: vec![active("")],
            ..BoardAlarms::default()
        };
        assert!(nameless.check().is_err());
    }
}
