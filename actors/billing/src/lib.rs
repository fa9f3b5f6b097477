//! The billing actor: customer accounts, tariffs, meter reads, prepaid top-ups, disconnection at
//! zero credit with friendly hours, and a ledger record for every movement of money or relay.
//!
//! It runs inside wasmi on every replica, on the same committed entries, so it is integer-only
//! and reads time only from the delivery's `log_time_ms`. State layout: see [`store`].
//!
//! # Rules
//!
//! - **Meter reads** carry a cumulative register. The first read of an account is its baseline
//!   (no charge). A read below the last accepted one is rejected (`NotMonotonic`) and never
//!   billed; the baseline stays where it was. The first such read raises `MeterNotMonotonic`;
//!   further ones stay quiet until the episode ends: a read at or above the baseline is
//!   accepted again, or an operator enters a replacement. An equal read bills no energy.
//! - **Meter replacement** (`MeterReplace`) bills the old meter from the baseline to its final
//!   read (when given; a final read below the baseline is refused `Invalid` and changes
//!   nothing), records `MeterReplaced`, and makes the new meter's read the baseline.
//! - **Plausibility**: a read bills at most what the connection could draw. Each account has an
//!   allowance that grows with log time at `connection_w` (or [`CONNECTION_W_DEFAULT`]) x
//!   `plausible_margin_pct`, capped at [`ALLOWANCE_WINDOW_MS`] of it (full after the baseline),
//!   and each read spends it, down to [`REGISTER_RESOLUTION_MWH`] below zero. It is an
//!   allowance, not a per-read bound, because a journal drained after an outage commits an
//!   hour of reads within a second: their log times say nothing of when they were metered.
//!   Energy beyond it is held, not charged: a `Held` ledger line with the Wh, and an
//!   `ImplausibleRead` alarm. Billed plus held is always the register's advance.
//! - **Per-kWh** charges `delta_wh * rate` mpaisa. **Tiered** splits the delta across the blocks
//!   of the 30-local-day period in which the read is committed (energy is attributed to the period
//!   of the read that reports it) and charges the period charge at the first read of each new
//!   period, including an equal read, because the charge is for the connection, not the energy.
//!   The baseline's period owes no period charge. **Flat** bills no energy; the day's fee is
//!   charged when the local day starts (at local midnight under the committed
//!   `utc_offset_min`; a new offset re-arms the timer), on a durable daily timer. An account
//!   created during a day starts paying the next day. A daily pass that comes late (the
//!   controller was down) charges the missed days too, up to [`FEE_BACKFILL_DAYS_MAX`].
//! - **Prepaid** accounts are disconnected when a charge or fee leaves credit at or below
//!   `disconnect_at_mpaisa`, except during friendly hours, when usage becomes debt
//!   (`Charge { friendly: true }`). An account left in debt by friendly hours is put on a watch
//!   list and a timer is set for the end of the window: the tick disconnects every watched
//!   account still in debt. Any charge after the window ends disconnects it as well, whichever
//!   comes first. A top-up that lifts a disconnected account's credit above the threshold
//!   reconnects it. **Postpaid** accounts are never disconnected; an account switched to
//!   postpaid while disconnected is reconnected (reason `Operator`).
//! - **Top-ups** are OpenPAYGO Tokens (`TokenTopUp`), decoded against the account's key and
//!   starting code (set by `UpsertCustomer`, kept apart from the account in `o/`) exactly as the
//!   reference decoder does, count window and used counts included ([`opaygo`] says what is
//!   supported). A token's value is in units of the account's `unit_mpaisa`: an add-credit
//!   token adds `value x unit`, a set-credit token sets the balance to it, a disable-PAYG token
//!   makes the account postpaid, a counter-sync token only moves the count. Each accepted token
//!   is a `TokenCredit` ledger line (code, count, value, change of balance); a refused one
//!   changes nothing and raises `TokenReplayed` (used or too old; `Replayed`) or `TokenInvalid`
//!   (not this account's, mistyped, too far ahead, or no key; `Invalid`/`Unknown`), its value
//!   the code.
//! - **Operator credits** (`TopUp`: by amount, for migration and corrections) are accepted once
//!   per reference id, ever, across all customers; a replay is rejected (`Replayed`) and raises
//!   `TokenReplayed`. Amounts must be positive. Recorded as `OperatorCredit`, never as a token.
//! - **Tariffs** have versions from 1 that only climb: version 0 is rejected (`Invalid`), a
//!   version at or below the one in force (the same update sent twice, or an old one) is
//!   rejected (`Stale`) and changes nothing.
//! - **For an auditor**, the outbox carries what a bill is rebuilt from without trusting this
//!   code: each accepted tariff (`Output::TariffSet`, its whole schedule) and configuration
//!   (`Output::BillingConfigSet`), each account's set-up when opened or changed (an `Account`
//!   line), an account's baseline (`Baseline`), each charge's and each held read's registers
//!   (`ChargeRead`, `HeldRead`: from the baseline to the read, with the node's read time) and
//!   every refused backwards read (`ReadRejected`). A read that bills nothing (an equal
//!   register, a flat tariff) adds no line: the next charge's `from_wh` carries it.
//! - Unknown customers or tariffs are rejected (`Unknown`) and raise `UnknownAccount`; inputs for
//!   other actors are rejected (`NotForMe`). Arithmetic saturates: hostile values cannot trap.
#![forbid(unsafe_code)]
#![no_std]

extern crate alloc;
// Natively the cdylib half of this crate needs a panic handler and a global allocator: linking
// std provides both (on wasm32 the SDK's `export_actor!` does). The code uses only core and alloc.
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

pub mod clock;
pub mod opaygo;
pub mod store;
pub mod tariff;

use alloc::string::String;

use ghatta_actor_sdk::{
    AccountMode, AccountSetup, Actor, Alarm, AlarmCode, BillingConfig, CustomerId, CustomerSpec,
    Delivery, Host, Input, LedgerKind, LedgerRecord, MeterRead, MeterReplace, MeterSpan, NodeId,
    Outcome, Output, RejectReason, RelayCommand, RelayId, RelayReason, Tariff, TariffKind, Tick,
    TokenKey, TopUp,
};

use crate::opaygo::{CountState, Refusal, TokenKind};
use crate::store::{Account, KEY_INDEX, KEY_WATCH, Store, Timers, TokenAccount, UsedToken};

/// Tag of the daily timer that charges flat-tariff fees.
pub const TAG_DAILY: u32 = 1;
/// Tag of the timer that re-checks accounts left in debt when friendly hours end.
pub const TAG_FRIENDLY_END: u32 = 2;

/// Most accounts one tick visits. Each visit writes one account and emits at most three outputs
/// (fee, disconnect record, relay), so a tick stays around a hundred outputs whatever the host's
/// per-delivery limits; a longer pass continues on a timer due at once.
pub const ACCOUNTS_PER_TICK_MAX: usize = 32;
/// Most days of flat fee one daily pass charges at once. It covers a week-long controller
/// outage while bounding what a forward jump of log time (a leader with a bad clock) can cost a
/// customer; longer gaps are for an operator to settle.
pub const FEE_BACKFILL_DAYS_MAX: u64 = 7;
/// A timer this far overdue is taken as lost (a leader proposes a due timer within seconds, and
/// even a satellite outage lasts hours) and is asked for again; stale ticks are ignored, so a
/// late original does no harm.
pub const TIMER_LOST_AFTER_MS: u64 = clock::DAY_MS;
/// Connection size assumed for plausibility when an account gives none (0 W), W: a household
/// averages 85-100 W (AEPC's micro-hydro programme).
pub const CONNECTION_W_DEFAULT: u32 = 100;
/// Most log time a read's allowance accumulates, ms: an islanded node's journal drains a day of
/// reads in one burst after a day-long outage, and its first read may bill that day. A longer
/// gap bills at most a day's plausible draw; the rest is held for an operator to settle.
pub const ALLOWANCE_WINDOW_MS: u64 = clock::DAY_MS;
/// A register counts whole Wh, so two reads may differ by 1 Wh more than was drawn between
/// them: the allowance may be overdrawn by this much, mWh.
pub const REGISTER_RESOLUTION_MWH: i64 = 1_000;

/// The billing actor.
pub struct Billing;

impl Actor for Billing {
    fn handle(host: &mut dyn Host, d: &Delivery) -> Outcome {
        let mut b = Biller {
            st: Store::new(host),
            now_ms: d.ctx.log_time_ms,
            origin: d.ctx.origin,
        };
        match &d.input {
            Input::Tick(t) => return b.tick(t),
            Input::UpsertCustomer(_)
            | Input::SetTariff(_)
            | Input::SetBillingConfig(_)
            | Input::MeterRead(_)
            | Input::MeterReplace(_)
            | Input::TokenTopUp(_)
            | Input::TopUp(_) => b.rearm_lost_timers(),
            _ => return Outcome::Rejected(RejectReason::NotForMe),
        }
        match &d.input {
            Input::UpsertCustomer(spec) => b.upsert_customer(spec),
            Input::SetTariff(t) => b.set_tariff(t),
            Input::SetBillingConfig(c) => b.set_config(c),
            Input::MeterRead(r) => b.meter_read(r),
            Input::TopUp(t) => b.top_up(t),
            Input::TokenTopUp(t) => b.token_top_up(t.customer, t.code),
            Input::MeterReplace(r) => b.meter_replace(r),
            _ => Outcome::Rejected(RejectReason::NotForMe),
        }
    }
}

// A full path: the macro expands inside a module of its own, where a bare `Billing` is not in
// scope.
ghatta_actor_sdk::export_actor!(crate::Billing);

/// One delivery's worth of billing.
struct Biller<'a> {
    st: Store<'a>,
    now_ms: u64,
    origin: NodeId,
}

impl Biller<'_> {
    fn emit(&mut self, output: Output) {
        self.st.host().emit(output);
    }

    fn alarm(
        &mut self,
        code: AlarmCode,
        node: Option<NodeId>,
        subject: u32,
        value: i64,
        text: &str,
    ) {
        self.emit(Output::Alarm(Alarm {
            code,
            node,
            subject,
            value,
            text: String::from(text),
        }));
    }

    fn ledger(&mut self, customer: CustomerId, account: &Account, kind: LedgerKind, version: u32) {
        self.emit(Output::Ledger(LedgerRecord {
            customer,
            at_ms: self.now_ms,
            kind,
            balance_after_mpaisa: account.credit_mpaisa,
            tariff_version: version,
        }));
    }

    fn relay(&mut self, customer: CustomerId, node: NodeId, closed: bool, reason: RelayReason) {
        self.emit(Output::Relay(RelayCommand {
            node,
            relay: RelayId::Customer(customer),
            closed,
            reason,
        }));
    }

    fn unknown_customer(&mut self, id: CustomerId) -> Outcome {
        self.alarm(
            AlarmCode::UnknownAccount,
            Some(self.origin),
            id.0,
            0,
            "unknown customer",
        );
        Outcome::Rejected(RejectReason::Unknown)
    }

    /// Alarm `UnknownAccount` with the customer as subject and the tariff id as value.
    fn unknown_tariff(&mut self, id: CustomerId, tariff: u16) -> Outcome {
        let text = "unknown tariff";
        self.alarm(
            AlarmCode::UnknownAccount,
            Some(self.origin),
            id.0,
            i64::from(tariff),
            text,
        );
        Outcome::Rejected(RejectReason::Unknown)
    }

    fn tariff_version(&self, tariff: u16) -> u32 {
        self.st.tariff(tariff).map_or(0, |t| t.version)
    }

    // ---- timers ----

    /// Ask for a timer and record it, so that only its tick is acted upon.
    fn arm(&mut self, timers: &mut Timers, tag: u32, at_ms: u64) {
        match tag {
            TAG_DAILY => timers.daily_at_ms = Some(at_ms),
            _ => timers.friendly_end_at_ms = Some(at_ms),
        }
        self.emit(Output::Timer { at_ms, tag });
    }

    /// Ask again for any timer so overdue that it must have been lost.
    fn rearm_lost_timers(&mut self) {
        let mut timers = self.st.timers();
        let lost = |at: Option<u64>| {
            at.is_some_and(|a| self.now_ms > a.saturating_add(TIMER_LOST_AFTER_MS))
        };
        let daily_lost = lost(timers.daily_at_ms);
        let friendly_lost = lost(timers.friendly_end_at_ms);
        if daily_lost {
            self.arm(
                &mut timers,
                TAG_DAILY,
                clock::next_day_start_ms(self.now_ms, self.st.config().utc_offset_min),
            );
        }
        if friendly_lost {
            let at = self.friendly_check_at_ms(&self.st.config());
            self.arm(&mut timers, TAG_FRIENDLY_END, at);
        }
        if daily_lost || friendly_lost {
            self.st.put_timers(&timers);
        }
    }

    /// When to re-check accounts in debt: the end of friendly hours, or at once if they are over.
    fn friendly_check_at_ms(&self, cfg: &BillingConfig) -> u64 {
        if clock::in_friendly_hours(self.now_ms, cfg) {
            clock::next_friendly_end_ms(self.now_ms, cfg)
        } else {
            self.now_ms.saturating_add(1)
        }
    }

    // ---- operator inputs ----

    fn set_tariff(&mut self, t: &Tariff) -> Outcome {
        // Version 0 is what `tariff_version` reports for "no tariff": a ledger record
        // naming it could not be told from one made without a tariff.
        if !tariff::is_valid(t) || t.version == 0 {
            return Outcome::Rejected(RejectReason::Invalid);
        }
        // Versions only climb, so a ledger record's `tariff_version` names one tariff: a
        // second, different tariff under the same version would make the bill ambiguous.
        if self
            .st
            .tariff(t.id)
            .is_some_and(|cur| t.version <= cur.version)
        {
            return Outcome::Rejected(RejectReason::Stale);
        }
        self.st.put_tariff(t);
        self.emit(Output::TariffSet(t.clone()));
        Outcome::Handled
    }

    fn set_config(&mut self, cfg: &BillingConfig) -> Outcome {
        if !clock::config_is_valid(cfg) {
            return Outcome::Rejected(RejectReason::Invalid);
        }
        let old = self.st.config();
        self.st.set_config(cfg);
        self.emit(Output::BillingConfigSet(cfg.clone()));
        let mut timers = self.st.timers();
        if old.utc_offset_min != cfg.utc_offset_min && timers.daily_at_ms.is_some() {
            // Days now start at the new local midnight: the old timer's tick becomes stale.
            let at = clock::next_day_start_ms(self.now_ms, cfg.utc_offset_min);
            self.arm(&mut timers, TAG_DAILY, at);
            self.st.put_timers(&timers);
        }
        Outcome::Handled
    }

    /// Store an account's token secrets: a new key or starting code starts a new count; the same
    /// ones keep the count (an upsert that only changes the unit price).
    fn set_token_key(&mut self, id: CustomerId, key: &TokenKey) {
        let starting_code = if key.starting_code == 0 {
            // As the reference: no starting code means the one derived from the key.
            opaygo::starting_code_of(&key.secret_key)
        } else {
            key.starting_code
        };
        let key = TokenKey {
            starting_code,
            ..*key
        };
        let counts = match self.st.token_account(id) {
            Some(t)
                if t.key.secret_key == key.secret_key
                    && t.key.starting_code == key.starting_code =>
            {
                t.counts
            }
            _ => CountState::default(),
        };
        self.st.put_token_account(id, &TokenAccount { key, counts });
    }

    fn upsert_customer(&mut self, spec: &CustomerSpec) -> Outcome {
        if self.st.tariff(spec.tariff).is_none() {
            return self.unknown_tariff(spec.id, spec.tariff);
        }
        if let Some(key) = &spec.token {
            if key.unit_mpaisa <= 0 || key.starting_code > opaygo::CODE_MAX {
                return Outcome::Rejected(RejectReason::Invalid);
            }
            // Before the account: a full index refuses the whole upsert below, and a key
            // without an account is never read.
            self.set_token_key(spec.id, key);
        }
        let Some(mut account) = self.st.account(spec.id) else {
            if !self.st.insert_id(KEY_INDEX, spec.id) {
                // Full: refusing is safer than an account the daily pass would never visit.
                return Outcome::Rejected(RejectReason::Invalid);
            }
            let offset = self.st.config().utc_offset_min;
            let account = Account {
                node: spec.node,
                mode: spec.mode,
                tariff: spec.tariff,
                connection_w: spec.connection_w,
                credit_mpaisa: spec.opening_credit_mpaisa,
                last_read_wh: None,
                period: clock::period(self.now_ms, offset),
                period_used_wh: 0,
                fee_paid_day: clock::log_day(self.now_ms, offset),
                connected: true,
                last_read_at_ms: None,
                allowance_mwh: 0,
                backwards: false,
            };
            self.st.put_account(spec.id, &account);
            self.account_line(spec.id, &account, true);
            let mut timers = self.st.timers();
            if timers.daily_at_ms.is_none() {
                self.arm(
                    &mut timers,
                    TAG_DAILY,
                    clock::next_day_start_ms(self.now_ms, offset),
                );
                self.st.put_timers(&timers);
            }
            return Outcome::Handled;
        };
        let relay_moved = account.node != spec.node;
        account.node = spec.node;
        account.mode = spec.mode;
        account.tariff = spec.tariff;
        account.connection_w = spec.connection_w;
        self.account_line(spec.id, &account, false);
        if !account.connected {
            if spec.mode == AccountMode::Postpaid {
                account.connected = true;
                self.relay(spec.id, account.node, true, RelayReason::Operator);
                let kind = LedgerKind::Reconnect {
                    reason: RelayReason::Operator,
                };
                let version = self.tariff_version(account.tariff);
                self.ledger(spec.id, &account, kind, version);
            } else if relay_moved {
                // The relay is now on another board, which has never been told to cut.
                self.relay(spec.id, account.node, false, RelayReason::ZeroCredit);
            }
        }
        self.st.put_account(spec.id, &account);
        Outcome::Handled
    }

    /// The account's set-up as a ledger line (what an auditor bills the lines after it by).
    fn account_line(&mut self, id: CustomerId, a: &Account, opened: bool) {
        let kind = LedgerKind::Account(AccountSetup {
            opened,
            mode: a.mode,
            tariff: a.tariff,
            connection_w: a.connection_w,
            token_unit_mpaisa: self.st.token_account(id).map(|t| t.key.unit_mpaisa),
        });
        let version = self.tariff_version(a.tariff);
        self.ledger(id, a, kind, version);
    }

    // ---- money ----

    fn charge(
        &mut self,
        id: CustomerId,
        a: &mut Account,
        energy_wh: u64,
        amount: i64,
        t: &Tariff,
        read: MeterSpan,
    ) {
        let friendly = a.mode == AccountMode::Prepaid
            && clock::in_friendly_hours(self.now_ms, &self.st.config());
        a.credit_mpaisa = a.credit_mpaisa.saturating_sub(amount);
        let kind = LedgerKind::ChargeRead {
            energy_wh,
            amount_mpaisa: amount,
            friendly,
            read,
        };
        self.ledger(id, a, kind, t.version);
    }

    fn fee(&mut self, id: CustomerId, a: &mut Account, amount: i64, version: u32) {
        a.credit_mpaisa = a.credit_mpaisa.saturating_sub(amount);
        self.ledger(
            id,
            a,
            LedgerKind::Fee {
                amount_mpaisa: amount,
            },
            version,
        );
    }

    /// After a charge or fee: disconnect a prepaid account at or below the threshold, or, during
    /// friendly hours, watch it until they end.
    fn enforce(&mut self, id: CustomerId, a: &mut Account, cfg: &BillingConfig, version: u32) {
        if a.mode != AccountMode::Prepaid
            || !a.connected
            || a.credit_mpaisa > cfg.disconnect_at_mpaisa
        {
            return;
        }
        if !clock::in_friendly_hours(self.now_ms, cfg) {
            self.disconnect(id, a, version);
            return;
        }
        // A full list only loses the timer's re-check; the next charge still disconnects.
        let _ = self.st.insert_id(KEY_WATCH, id);
        let at = clock::next_friendly_end_ms(self.now_ms, cfg);
        let mut timers = self.st.timers();
        if timers.friendly_end_at_ms.is_none_or(|pending| pending > at) {
            self.arm(&mut timers, TAG_FRIENDLY_END, at);
            self.st.put_timers(&timers);
        }
    }

    fn disconnect(&mut self, id: CustomerId, a: &mut Account, version: u32) {
        a.connected = false;
        self.relay(id, a.node, false, RelayReason::ZeroCredit);
        self.ledger(
            id,
            a,
            LedgerKind::Disconnect {
                reason: RelayReason::ZeroCredit,
            },
            version,
        );
    }

    /// How much of `delta_wh` the connection could have drawn since the last read: the
    /// allowance grows at `connection_w x margin` with log time (capped at
    /// [`ALLOWANCE_WINDOW_MS`] of it) and each read spends it. Spends the allowance and returns
    /// the Wh to bill; the rest is to be held. An account with no read time yet (a baseline,
    /// a version 1 record) starts with a full allowance: its first reads may come from a
    /// journal drained in a burst.
    fn plausible_wh(&self, a: &mut Account, cfg: &BillingConfig, delta_wh: u64) -> u64 {
        let connection_w = if a.connection_w == 0 {
            CONNECTION_W_DEFAULT
        } else {
            a.connection_w
        };
        // u64, saturating, not u128: wasm has no 128-bit division, and its library call
        // costs more fuel than the rest of a read. Only a connection of over 200 MW at the
        // largest margin could saturate, which bills no less than a real one.
        let rate_w =
            u64::from(connection_w).saturating_mul(u64::from(cfg.plausible_margin_pct)) / 100;
        // W x ms / 3,600 = mWh.
        let mwh = |ms: u64| i64::try_from(rate_w.saturating_mul(ms) / 3_600).unwrap_or(i64::MAX);
        let cap = mwh(ALLOWANCE_WINDOW_MS);
        let allowance = match a.last_read_at_ms {
            None => cap,
            Some(at) => {
                let elapsed_ms = self.now_ms.saturating_sub(at).min(ALLOWANCE_WINDOW_MS);
                a.allowance_mwh.saturating_add(mwh(elapsed_ms)).min(cap)
            }
        };
        let allowed_wh =
            u64::try_from(allowance.saturating_add(REGISTER_RESOLUTION_MWH) / 1_000).unwrap_or(0);
        let billed_wh = delta_wh.min(allowed_wh);
        let spent = i64::try_from(billed_wh)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000);
        a.allowance_mwh = allowance
            .saturating_sub(spent)
            .max(-REGISTER_RESOLUTION_MWH);
        a.last_read_at_ms = Some(self.now_ms);
        billed_wh
    }

    /// Bill `delta_wh` of energy (0 allowed: a tiered period's first read still owes its
    /// charge) of `read` by the account's tariff; returns whether anything was charged.
    fn bill_energy(
        &mut self,
        id: CustomerId,
        a: &mut Account,
        t: &Tariff,
        delta_wh: u64,
        read: MeterSpan,
    ) -> bool {
        let mut billed = false;
        match &t.kind {
            TariffKind::PerKwh { rate_paisa_per_kwh } => {
                if delta_wh > 0 {
                    let amount = tariff::energy_charge_mpaisa(delta_wh, *rate_paisa_per_kwh);
                    self.charge(id, a, delta_wh, amount, t, read);
                    billed = true;
                }
            }
            TariffKind::Tiered {
                blocks,
                period_charge_paisa,
            } => {
                let period = clock::period(self.now_ms, self.st.config().utc_offset_min);
                if period != a.period {
                    a.period = period;
                    a.period_used_wh = 0;
                    if *period_charge_paisa > 0 {
                        let amount = tariff::paisa_to_mpaisa(*period_charge_paisa);
                        self.fee(id, a, amount, t.version);
                    }
                    billed = true;
                }
                if delta_wh > 0 {
                    let amount = tariff::tiered_charge_mpaisa(blocks, a.period_used_wh, delta_wh);
                    a.period_used_wh = a.period_used_wh.saturating_add(delta_wh);
                    self.charge(id, a, delta_wh, amount, t, read);
                    billed = true;
                }
            }
            TariffKind::Flat { .. } => {}
        }
        billed
    }

    /// Bill the energy from the baseline up to `total_wh` (at or above it), read at
    /// `read_at_ms`: what is plausible is charged, the excess held with a ledger line and an
    /// alarm. The caller stores `a`.
    fn advance(
        &mut self,
        id: CustomerId,
        a: &mut Account,
        t: &Tariff,
        total_wh: u64,
        read_at_ms: u64,
    ) {
        let last_wh = a.last_read_wh.unwrap_or(total_wh);
        let read = MeterSpan {
            from_wh: last_wh,
            to_wh: total_wh,
            read_at_ms,
        };
        let delta_wh = total_wh.saturating_sub(last_wh);
        let cfg = self.st.config();
        let billable_wh = self.plausible_wh(a, &cfg, delta_wh);
        let held_wh = delta_wh - billable_wh;
        a.last_read_wh = Some(total_wh);
        a.backwards = false;
        let billed = self.bill_energy(id, a, t, billable_wh, read);
        if held_wh > 0 {
            let kind = LedgerKind::HeldRead {
                energy_wh: held_wh,
                allowed_wh: billable_wh,
                read,
            };
            self.ledger(id, a, kind, t.version);
            let text = "read beyond what the connection could draw: excess held, not charged; \
                        check the meter and settle by operator credit";
            let value = i64::try_from(held_wh).unwrap_or(i64::MAX);
            self.alarm(AlarmCode::ImplausibleRead, Some(a.node), id.0, value, text);
        }
        if billed {
            self.enforce(id, a, &cfg, t.version);
        }
    }

    fn meter_read(&mut self, r: &MeterRead) -> Outcome {
        let Some(mut a) = self.st.account(r.customer) else {
            return self.unknown_customer(r.customer);
        };
        let Some(t) = self.st.tariff(a.tariff) else {
            return self.unknown_tariff(r.customer, a.tariff);
        };
        let Some(last_wh) = a.last_read_wh else {
            // The read time stays unset: the next read starts with a full allowance.
            a.last_read_wh = Some(r.total_wh);
            a.period = clock::period(self.now_ms, self.st.config().utc_offset_min);
            a.period_used_wh = 0;
            self.st.put_account(r.customer, &a);
            let kind = LedgerKind::Baseline {
                read_wh: r.total_wh,
                read_at_ms: r.read_at_ms,
            };
            self.ledger(r.customer, &a, kind, t.version);
            return Outcome::Handled;
        };
        if r.total_wh < last_wh {
            // Every refused read is a line (an auditor sees what was not billed), but one
            // alarm per episode: a swapped or reset meter reads low on every read until an
            // operator enters the replacement, and an alarm per read would bury the rest.
            let kind = LedgerKind::ReadRejected {
                read: MeterSpan {
                    from_wh: last_wh,
                    to_wh: r.total_wh,
                    read_at_ms: r.read_at_ms,
                },
            };
            self.ledger(r.customer, &a, kind, t.version);
            if !a.backwards {
                a.backwards = true;
                self.st.put_account(r.customer, &a);
                let value = i64::try_from(r.total_wh).unwrap_or(i64::MAX);
                let text = "meter register went backwards; reads not billed until it passes the \
                            baseline again or `ghatta meter replace` re-baselines it";
                self.alarm(
                    AlarmCode::MeterNotMonotonic,
                    Some(a.node),
                    r.customer.0,
                    value,
                    text,
                );
            }
            return Outcome::Rejected(RejectReason::NotMonotonic);
        }
        self.advance(r.customer, &mut a, &t, r.total_wh, r.read_at_ms);
        self.st.put_account(r.customer, &a);
        Outcome::Handled
    }

    fn meter_replace(&mut self, r: &MeterReplace) -> Outcome {
        let Some(mut a) = self.st.account(r.customer) else {
            return self.unknown_customer(r.customer);
        };
        let Some(t) = self.st.tariff(a.tariff) else {
            return self.unknown_tariff(r.customer, a.tariff);
        };
        let old_final_wh = match (a.last_read_wh, r.old_final_wh) {
            (Some(last), Some(fin)) if fin < last => {
                // The old meter cannot have ended below a read already billed: a typo, or the
                // wrong customer. Nothing changes; the operator re-enters it.
                let value = i64::try_from(fin).unwrap_or(i64::MAX);
                let text = "meter replacement refused: the old meter's final read is below its \
                            last billed read; check the customer and the figure";
                self.alarm(
                    AlarmCode::MeterNotMonotonic,
                    Some(a.node),
                    r.customer.0,
                    value,
                    text,
                );
                return Outcome::Rejected(RejectReason::Invalid);
            }
            (Some(_), Some(fin)) => {
                self.advance(r.customer, &mut a, &t, fin, self.now_ms);
                fin
            }
            (Some(last), None) => last,
            // No baseline yet: the old meter was never read, so nothing of it can be billed.
            (None, fin) => fin.unwrap_or(0),
        };
        a.last_read_wh = Some(r.new_read_wh);
        a.last_read_at_ms = Some(self.now_ms);
        a.backwards = false;
        let kind = LedgerKind::MeterReplaced {
            old_final_wh,
            new_read_wh: r.new_read_wh,
        };
        self.ledger(r.customer, &a, kind, t.version);
        self.st.put_account(r.customer, &a);
        Outcome::Handled
    }

    /// After credit was added: reconnect a prepaid account lifted above the threshold.
    fn restore_if_credited(&mut self, id: CustomerId, a: &mut Account, version: u32) {
        let cfg = self.st.config();
        if a.mode == AccountMode::Prepaid
            && !a.connected
            && a.credit_mpaisa > cfg.disconnect_at_mpaisa
        {
            a.connected = true;
            self.relay(id, a.node, true, RelayReason::CreditRestored);
            let kind = LedgerKind::Reconnect {
                reason: RelayReason::CreditRestored,
            };
            self.ledger(id, a, kind, version);
        }
    }

    /// An OpenPAYGO Token: decoded against the account's key and count window as the
    /// reference decoder does ([`opaygo`]); refused ones raise an alarm with the reason and
    /// change nothing, accepted ones move the window and are a `TokenCredit` ledger line.
    fn token_top_up(&mut self, id: CustomerId, code: u32) -> Outcome {
        let Some(mut a) = self.st.account(id) else {
            return self.unknown_customer(id);
        };
        let value = i64::from(code);
        let Some(mut ta) = self.st.token_account(id) else {
            let text = "token refused: the account has no OpenPAYGO key; the office sets one \
                        with the customer's record";
            self.alarm(AlarmCode::TokenInvalid, Some(a.node), id.0, value, text);
            return Outcome::Rejected(RejectReason::Unknown);
        };
        let d = match opaygo::decode(code, &ta.key.secret_key, ta.key.starting_code, &ta.counts) {
            Ok(d) => d,
            Err(why) => {
                let (alarm, reason, text) = match why {
                    Refusal::AlreadyUsed => (
                        AlarmCode::TokenReplayed,
                        RejectReason::Replayed,
                        "token refused: already used, or older than the count window; no credit given",
                    ),
                    Refusal::CountExhausted => (
                        AlarmCode::TokenInvalid,
                        RejectReason::Invalid,
                        "token refused: the account's token count is exhausted; the office must set a new key",
                    ),
                    Refusal::Invalid | Refusal::TooLong => (
                        AlarmCode::TokenInvalid,
                        RejectReason::Invalid,
                        "token refused: not a valid token for this account (mistyped, another customer's, or too far ahead); no credit given",
                    ),
                };
                self.alarm(alarm, Some(a.node), id.0, value, text);
                return Outcome::Rejected(reason);
            }
        };
        ta.counts = ta.counts.accept(&d);
        self.st.put_token_account(id, &ta);
        let before = a.credit_mpaisa;
        let worth = ta.key.unit_mpaisa.saturating_mul(i64::from(d.value));
        let version = self.tariff_version(a.tariff);
        match d.kind {
            TokenKind::AddCredit => a.credit_mpaisa = a.credit_mpaisa.saturating_add(worth),
            TokenKind::SetCredit => a.credit_mpaisa = worth,
            TokenKind::CounterSync => {}
            TokenKind::DisablePayg => a.mode = AccountMode::Postpaid,
        }
        let kind = LedgerKind::TokenCredit {
            code,
            count: d.count,
            value: d.value,
            set: d.kind == TokenKind::SetCredit,
            amount_mpaisa: a.credit_mpaisa.saturating_sub(before),
        };
        self.ledger(id, &a, kind, version);
        if d.kind == TokenKind::DisablePayg && !a.connected {
            // Pay-as-you-go is over for this account: as an operator's switch to postpaid.
            a.connected = true;
            self.relay(id, a.node, true, RelayReason::Operator);
            let kind = LedgerKind::Reconnect {
                reason: RelayReason::Operator,
            };
            self.ledger(id, &a, kind, version);
        }
        self.restore_if_credited(id, &mut a, version);
        self.st.put_account(id, &a);
        Outcome::Handled
    }

    fn top_up(&mut self, t: &TopUp) -> Outcome {
        if t.amount_mpaisa <= 0 {
            return Outcome::Rejected(RejectReason::Invalid);
        }
        let Some(mut a) = self.st.account(t.customer) else {
            return self.unknown_customer(t.customer);
        };
        if self.st.token_used(t.token_id) {
            // The value carries the token id's bits; ids above i64::MAX read as negative.
            let value = t.token_id as i64;
            let text = "top-up token already used; no credit given";
            self.alarm(
                AlarmCode::TokenReplayed,
                Some(a.node),
                t.customer.0,
                value,
                text,
            );
            return Outcome::Rejected(RejectReason::Replayed);
        }
        self.st.use_token(
            t.token_id,
            &UsedToken {
                customer: t.customer,
                at_ms: self.now_ms,
            },
        );
        a.credit_mpaisa = a.credit_mpaisa.saturating_add(t.amount_mpaisa);
        let version = self.tariff_version(a.tariff);
        let kind = LedgerKind::OperatorCredit {
            ref_id: t.token_id,
            amount_mpaisa: t.amount_mpaisa,
        };
        self.ledger(t.customer, &a, kind, version);
        self.restore_if_credited(t.customer, &mut a, version);
        self.st.put_account(t.customer, &a);
        Outcome::Handled
    }

    // ---- timers coming due ----

    fn tick(&mut self, t: &Tick) -> Outcome {
        match t.tag {
            TAG_DAILY => self.daily(t.due_ms),
            TAG_FRIENDLY_END => self.friendly_end(t.due_ms),
            _ => Outcome::Rejected(RejectReason::Invalid),
        }
    }

    /// The daily pass: settle the flat fee of every account up to today, a batch at a time.
    fn daily(&mut self, due_ms: u64) -> Outcome {
        let timers = self.st.timers();
        if timers.daily_at_ms != Some(due_ms) {
            return Outcome::Handled; // stale: a duplicate or a replaced timer
        }
        let cfg = self.st.config();
        let today = clock::log_day(self.now_ms, cfg.utc_offset_min);
        let ids = self.st.ids(KEY_INDEX);
        let start = timers
            .daily_cursor
            .map_or(0, |c| ids.partition_point(|&id| id <= c.0));
        let end = start.saturating_add(ACCOUNTS_PER_TICK_MAX).min(ids.len());
        for &id in ids.iter().skip(start).take(end - start) {
            let id = CustomerId(id);
            let Some(mut a) = self.st.account(id) else {
                continue;
            };
            if a.fee_paid_day >= today {
                continue;
            }
            if let Some(Tariff {
                version,
                kind: TariffKind::Flat { bands },
                ..
            }) = &self.st.tariff(a.tariff)
            {
                let days = (today - a.fee_paid_day).min(FEE_BACKFILL_DAYS_MAX);
                let per_day = tariff::flat_daily_fee_mpaisa(bands, a.connection_w);
                let amount = per_day.saturating_mul(days as i64);
                if amount > 0 {
                    self.fee(id, &mut a, amount, *version);
                    self.enforce(id, &mut a, &cfg, *version);
                }
            }
            // Non-flat accounts are settled too, so a later switch to a flat tariff does not
            // charge the days before it.
            a.fee_paid_day = today;
            self.st.put_account(id, &a);
        }
        // Re-read: `enforce` may have asked for the friendly-end timer meanwhile.
        let mut timers = self.st.timers();
        if end < ids.len() {
            timers.daily_cursor = ids.get(end.wrapping_sub(1)).map(|&id| CustomerId(id));
            self.arm(&mut timers, TAG_DAILY, self.now_ms.saturating_add(1));
        } else {
            timers.daily_cursor = None;
            self.arm(
                &mut timers,
                TAG_DAILY,
                clock::next_day_start_ms(self.now_ms, cfg.utc_offset_min),
            );
        }
        self.st.put_timers(&timers);
        Outcome::Handled
    }

    /// Friendly hours are over: disconnect the watched accounts still at or below the threshold.
    fn friendly_end(&mut self, due_ms: u64) -> Outcome {
        let mut timers = self.st.timers();
        if timers.friendly_end_at_ms != Some(due_ms) {
            return Outcome::Handled; // stale
        }
        let cfg = self.st.config();
        if clock::in_friendly_hours(self.now_ms, &cfg) {
            // The window moved (new configuration): wait for its new end.
            let at = clock::next_friendly_end_ms(self.now_ms, &cfg);
            self.arm(&mut timers, TAG_FRIENDLY_END, at);
            self.st.put_timers(&timers);
            return Outcome::Handled;
        }
        let mut ids = self.st.ids(KEY_WATCH);
        let batch = ids.len().min(ACCOUNTS_PER_TICK_MAX);
        for id in ids.drain(..batch) {
            let id = CustomerId(id);
            let Some(mut a) = self.st.account(id) else {
                continue;
            };
            if a.mode == AccountMode::Prepaid
                && a.connected
                && a.credit_mpaisa <= cfg.disconnect_at_mpaisa
            {
                let version = self.tariff_version(a.tariff);
                self.disconnect(id, &mut a, version);
                self.st.put_account(id, &a);
            }
        }
        self.st.put_ids(KEY_WATCH, &ids);
        if ids.is_empty() {
            timers.friendly_end_at_ms = None;
        } else {
            self.arm(&mut timers, TAG_FRIENDLY_END, self.now_ms.saturating_add(1));
        }
        self.st.put_timers(&timers);
        Outcome::Handled
    }
}
