//! The suite: every checker, the trace hash and the counters behind the report.

use std::collections::BTreeMap;

use super::{
    AckedProposals, BillingBaseline, Checker, ClockTruth, CreditChecker, CreditLimit,
    ElectionSafety, FrequencyBand, FrequencyQuality, IsolatedLeader, Liveness, LogMatching,
    MeterBilling, OneCopyInLog, StateAgreement, Tariff, TokenOnce, TrueCalendar, Violation,
};
use crate::observe::{Observation, TraceHash};
use crate::report::{FinishInfo, LedgerSummary, Report};

/// Violations kept per checker; the rest are counted. One broken invariant
/// often breaks on every later event, and a report of a million identical
/// lines helps nobody.
pub const VIOLATIONS_PER_CHECKER_MAX: usize = 20;

/// What the suite holds a run to.
pub struct SuiteConfig {
    /// Liveness bound after every fault heals (the scenario's `liveness_bound_s`).
    pub liveness_bound_ms: u64,
    /// Frequency bands.
    pub frequency: FrequencyBand,
    /// Allowed debt outside friendly hours.
    pub credit_limit: CreditLimit,
    /// The accounts that limit binds (`None`: every account; see `CreditChecker::prepaid_only`).
    pub credit_prepaid: Option<fn(u64) -> bool>,
    /// Optional tariff oracle (the billing actor's tariff).
    pub tariff: Option<Tariff>,
    /// What the first committed register counts from.
    pub billing_baseline: BillingBaseline,
    /// The world's true calendar, for the clock checker (`ClockTruth`); `None`: not judged
    /// (a world that does not say what time it is).
    pub calendar: Option<TrueCalendar>,
    /// How long a leader cut off from a quorum may still append (`IsolatedLeader`: its quorum
    /// lease plus `APPEND_AFTER_LEASE_MS_MAX`); `None`: not judged.
    pub isolated_leader_bound_ms: Option<u64>,
}

impl std::fmt::Debug for SuiteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuiteConfig")
            .field("liveness_bound_ms", &self.liveness_bound_ms)
            .field("frequency", &self.frequency)
            .field("credit_limit", &self.credit_limit)
            .field("tariff", &self.tariff.is_some())
            .field("billing_baseline", &self.billing_baseline)
            .field("calendar", &self.calendar)
            .field("isolated_leader_bound_ms", &self.isolated_leader_bound_ms)
            .finish()
    }
}

impl SuiteConfig {
    /// Defaults: the statutory frequency bands, no debt, no tariff oracle,
    /// the given liveness bound.
    pub fn new(liveness_bound_ms: u64) -> Self {
        Self {
            liveness_bound_ms,
            frequency: FrequencyBand::default(),
            credit_limit: CreditLimit { debt_mpaisa_max: 0 },
            credit_prepaid: None,
            tariff: None,
            billing_baseline: BillingBaseline::FirstRead,
            calendar: None,
            isolated_leader_bound_ms: None,
        }
    }
}

impl SuiteConfig {
    /// The configuration a scenario implies: its liveness bound and its
    /// customers' debt limit (add the billing actor's tariff as `tariff`).
    pub fn for_scenario(scenario: &crate::scenario::Scenario) -> Self {
        let mut cfg = Self::new((scenario.liveness_bound_s * 1_000.0) as u64);
        cfg.credit_limit = CreditLimit {
            debt_mpaisa_max: scenario.customers.debt_limit_mpaisa,
        };
        cfg
    }
}

/// Every checker, fed together.
pub struct Suite {
    election: ElectionSafety,
    log: LogMatching,
    state: StateAgreement,
    proposals: AckedProposals,
    one_copy: OneCopyInLog,
    billing: MeterBilling,
    credit: CreditChecker,
    frequency: FrequencyQuality,
    liveness: Liveness,
    clock: Option<ClockTruth>,
    tokens: TokenOnce,
    isolated: Option<IsolatedLeader>,
    trace: TraceHash,
    violations: Vec<Violation>,
    per_checker: BTreeMap<String, usize>,
    suppressed: u64,
    scratch: Vec<Violation>,
    last_t_ms: u64,
}

impl std::fmt::Debug for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suite")
            .field("observations", &self.trace.events())
            .field("violations", &self.violations.len())
            .finish()
    }
}

impl Suite {
    /// A suite for one run.
    pub fn new(cfg: SuiteConfig) -> Self {
        Self {
            election: ElectionSafety::new(),
            log: LogMatching::new(),
            state: StateAgreement::new(),
            proposals: AckedProposals::new(),
            one_copy: OneCopyInLog::new(),
            billing: MeterBilling::new(cfg.billing_baseline),
            credit: match cfg.credit_prepaid {
                Some(p) => CreditChecker::new(cfg.credit_limit, cfg.tariff).prepaid_only(p),
                None => CreditChecker::new(cfg.credit_limit, cfg.tariff),
            },
            frequency: FrequencyQuality::new(cfg.frequency),
            liveness: Liveness::new(cfg.liveness_bound_ms),
            clock: cfg.calendar.map(ClockTruth::new),
            tokens: TokenOnce::new(),
            isolated: cfg.isolated_leader_bound_ms.map(IsolatedLeader::new),
            trace: TraceHash::new(),
            violations: Vec::new(),
            per_checker: BTreeMap::new(),
            suppressed: 0,
            scratch: Vec::new(),
            last_t_ms: 0,
        }
    }

    fn checkers(&mut self) -> impl Iterator<Item = &mut dyn Checker> {
        let always: [&mut dyn Checker; 9] = [
            &mut self.election,
            &mut self.log,
            &mut self.state,
            &mut self.proposals,
            &mut self.one_copy,
            &mut self.billing,
            &mut self.credit,
            &mut self.frequency,
            &mut self.liveness,
        ];
        let clock = self.clock.as_mut().map(|c| c as &mut dyn Checker);
        let tokens: &mut dyn Checker = &mut self.tokens;
        let isolated = self.isolated.as_mut().map(|c| c as &mut dyn Checker);
        always
            .into_iter()
            .chain(clock)
            .chain(std::iter::once(tokens))
            .chain(isolated)
    }

    fn keep(&mut self) {
        for v in std::mem::take(&mut self.scratch) {
            let n = self.per_checker.entry(v.checker.clone()).or_default();
            if *n < VIOLATIONS_PER_CHECKER_MAX {
                *n += 1;
                tracing::warn!(checker = %v.checker, t_ms = v.t_ms, "{}", v.message);
                self.violations.push(v);
            } else {
                self.suppressed += 1;
            }
        }
    }

    /// Feeds one observation to every checker and to the trace hash.
    pub fn observe(&mut self, obs: &Observation) {
        self.trace.observe(obs);
        self.last_t_ms = self.last_t_ms.max(obs.t_ms());
        let mut scratch = std::mem::take(&mut self.scratch);
        for c in self.checkers() {
            c.observe(obs, &mut scratch);
        }
        self.scratch = scratch;
        self.keep();
    }

    /// Violations found so far (capped per checker).
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Whether no violation has been found so far.
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.suppressed == 0
    }

    /// The observation trace hash so far (without the network's).
    pub fn trace_hex(&self) -> String {
        self.trace.hex()
    }

    /// Observations fed so far.
    pub fn observations(&self) -> u64 {
        self.trace.events()
    }

    /// Highest committed index seen.
    pub fn commits(&self) -> u64 {
        self.log.max_index()
    }

    /// Terms that had a leader.
    pub fn elections(&self) -> u64 {
        self.election.elections()
    }

    /// Ends the run: end-of-run checks, then the report. The network's trace
    /// digest (if given) is folded into the trace hash.
    pub fn finish(mut self, info: FinishInfo) -> Report {
        let end = info.end_t_ms.max(self.last_t_ms);
        let mut scratch = std::mem::take(&mut self.scratch);
        for c in self.checkers() {
            c.finish(end, &mut scratch);
        }
        self.scratch = scratch;
        self.keep();
        if let Some(d) = info.net_trace_digest {
            self.trace.update(&d);
        }
        Report {
            scenario: info.scenario,
            seed: info.seed,
            trace_hash: self.trace.hex(),
            sim_seconds: end as f64 / 1_000.0,
            wall_seconds: info.wall_seconds,
            passed: self.violations.is_empty() && self.suppressed == 0,
            violations: self.violations,
            violations_suppressed: self.suppressed,
            commits: self.log.max_index(),
            elections: self.election.elections(),
            observations: self.trace.events(),
            frequency: self.frequency.stats(),
            ledger: LedgerSummary {
                metered_wh: info.metered_wh,
                billed_wh: self.billing.billed_wh(),
                held_wh: self.billing.held_wh(),
                reads: self.billing.reads(),
                charges: self.billing.charges(),
                tokens_entered: self.tokens.tokens(),
                tokens_credited: self.tokens.credited(),
                tokens_typed: self.tokens.entries(),
            },
            net: info.net_counters.unwrap_or_default(),
            last_heal_s: self.liveness.last_heal_ms() as f64 / 1_000.0,
            field: None,
            security: None,
            engine: None,
            deploys: Vec::new(),
            notes: Vec::new(),
            outbox: None,
            wan: None,
        }
    }
}
