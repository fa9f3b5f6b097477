//! Every OpenPAYGO token credits exactly once, grid-wide.

use std::collections::{BTreeMap, BTreeSet};

use super::{Checker, Violation, violation};
use crate::observe::Observation;

/// **Every token credits exactly once grid-wide** (issue 21): a token typed at several nodes
/// (both sides of a split, an agent retrying) is one credit. Over the committed stream of the
/// reference replica:
///
/// - no (customer, count) is credited twice;
/// - at the end, every token whose entry committed somewhere was credited (a committed entry
///   of a valid token within the count window is never refused as a replay of itself).
///
/// Memory: a word per token entered.
#[derive(Clone, Debug, Default)]
pub struct TokenOnce {
    entered: BTreeMap<(u64, u64), u64>,
    credited: BTreeSet<(u64, u64)>,
    entries: u64,
}

impl TokenOnce {
    /// A fresh checker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Distinct tokens whose entry committed.
    pub fn tokens(&self) -> u64 {
        self.entered.len() as u64
    }

    /// Committed entries of tokens (more than [`TokenOnce::tokens`] when a token was typed at
    /// several nodes).
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Tokens credited.
    pub fn credited(&self) -> u64 {
        self.credited.len() as u64
    }
}

impl Checker for TokenOnce {
    fn name(&self) -> &'static str {
        "token_once"
    }

    fn observe(&mut self, obs: &Observation, out: &mut Vec<Violation>) {
        match *obs {
            Observation::TokenEntered {
                t_ms,
                customer,
                count,
            } => {
                self.entries += 1;
                self.entered.entry((customer, count)).or_insert(t_ms);
            }
            Observation::TokenCredited {
                t_ms,
                customer,
                count,
            } if !self.credited.insert((customer, count)) => {
                out.push(violation(
                    "token_once",
                    t_ms,
                    format!("customer {customer}: the token at count {count} credited twice"),
                ));
            }
            _ => {}
        }
    }

    fn finish(&mut self, end_t_ms: u64, out: &mut Vec<Violation>) {
        for (&(customer, count), &t_ms) in &self.entered {
            if !self.credited.contains(&(customer, count)) {
                out.push(violation(
                    "token_once",
                    end_t_ms,
                    format!(
                        "customer {customer}: the token at count {count}, committed at \
                         {t_ms} ms, never credited"
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(c: &mut TokenOnce, obs: &[Observation]) -> Vec<Violation> {
        let mut out = Vec::new();
        for o in obs {
            c.observe(o, &mut out);
        }
        c.finish(99, &mut out);
        out
    }

    #[test]
    fn a_token_typed_twice_credits_once() {
        let entered = |t_ms| Observation::TokenEntered {
            t_ms,
            customer: 7,
            count: 2,
        };
        let credited = |t_ms| Observation::TokenCredited {
            t_ms,
            customer: 7,
            count: 2,
        };
        let mut c = TokenOnce::new();
        assert!(run(&mut c, &[entered(1), entered(5), credited(2)]).is_empty());
        assert_eq!((c.tokens(), c.entries(), c.credited()), (1, 2, 1));
        let v = run(
            &mut TokenOnce::new(),
            &[entered(1), credited(2), credited(6)],
        );
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].message.contains("credited twice"));
        let v = run(&mut TokenOnce::new(), &[entered(1)]);
        assert!(v[0].message.contains("never credited"), "{v:?}");
    }
}
