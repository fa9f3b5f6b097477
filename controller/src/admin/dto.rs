//! JSON shapes of admin requests, and their conversion to actor inputs (checked on the way).

use ghatta_actor_sdk as sdk;
use serde::{Deserialize, Serialize};

/// milli-paisa per rupee (1 NPR = 100 paisa = 100,000 mpaisa).
pub const MPAISA_PER_NPR: i64 = 100_000;
/// Largest single top-up accepted, NPR: a typo guard (a household spends a few hundred a month).
pub const MAX_TOPUP_NPR: i64 = 100_000;

/// A membership change.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum MemberRequest {
    /// Add a learner.
    Add {
        /// Node id.
        id: u64,
        /// Raft address.
        addr: String,
    },
    /// Promote a learner to voter.
    Promote {
        /// Node id.
        id: u64,
    },
    /// Remove a node.
    Remove {
        /// Node id.
        id: u64,
    },
}

/// A prepaid top-up: an OpenPAYGO Token typed in for a customer (`POST /topup`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopUpRequest {
    /// Customer id.
    pub customer: u32,
    /// The 9-digit code.
    pub code: u32,
}

impl TopUpRequest {
    /// Check and convert.
    pub fn into_input(self) -> Result<sdk::Input, InvalidRequest> {
        if self.code > OPAYGO_CODE_MAX {
            return Err(InvalidRequest::TokenCode(self.code));
        }
        Ok(sdk::Input::TokenTopUp(sdk::TokenTopUp {
            customer: sdk::CustomerId(self.customer),
            code: self.code,
        }))
    }
}

/// Largest OpenPAYGO Token code of the standard form (nine digits).
pub const OPAYGO_CODE_MAX: u32 = 999_999_999;

/// An operator's credit by amount, for migration and corrections (`POST /operator-credit`, which
/// also needs the operator-credit token): no token proves it, so it is kept apart from top-ups
/// and recorded as an operator credit in the ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperatorCreditRequest {
    /// Customer id.
    pub customer: u32,
    /// The operator's reference for this credit (accepted once, ever: a retry is refused).
    pub ref_id: u64,
    /// Amount, whole rupees.
    pub amount_npr: i64,
}

/// A meter replaced (`POST /meter/replace`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeterReplaceRequest {
    /// Customer id.
    pub customer: u32,
    /// The new meter's register when installed, Wh.
    pub new_read_wh: u64,
    /// The old meter's last register, Wh, if it was read.
    #[serde(default)]
    pub old_final_wh: Option<u64>,
}

impl MeterReplaceRequest {
    /// Convert.
    pub fn into_input(self) -> sdk::Input {
        sdk::Input::MeterReplace(sdk::MeterReplace {
            customer: sdk::CustomerId(self.customer),
            new_read_wh: self.new_read_wh,
            old_final_wh: self.old_final_wh,
        })
    }
}

/// A request the node refuses before proposing anything, saying which field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    /// A top-up outside the allowed amounts.
    #[error("amount_npr {0} must be between 1 and {MAX_TOPUP_NPR}")]
    TopUpAmount(i64),
    /// A token code longer than nine digits.
    #[error(
        "code {0} is not an OpenPAYGO Token: a code has at most 9 digits; check what was typed"
    )]
    TokenCode(u32),
    /// A token key that is not 32 hex digits.
    #[error(
        "token_key_hex must be 32 hexadecimal digits (the 16-byte key the office's token generator uses)"
    )]
    TokenKey,
    /// Token settings without a key, or a unit price out of range.
    #[error(
        "token_starting_code and token_unit_paisa need token_key_hex; token_unit_paisa must be 1 or more and the starting code at most 999999999"
    )]
    TokenSettings,
    /// A plausibility margin out of range.
    #[error("plausible_margin_pct {0} must be between 100 and 10000")]
    Margin(u32),
    /// Tiered blocks that do not climb.
    #[error("tiered blocks must be non-empty with increasing up_to_wh")]
    TierBlocks,
    /// Flat bands that do not climb.
    #[error("flat bands must be non-empty with increasing up_to_w")]
    FlatBands,
}

impl OperatorCreditRequest {
    /// Check and convert.
    pub fn into_input(self) -> Result<sdk::Input, InvalidRequest> {
        if self.amount_npr <= 0 || self.amount_npr > MAX_TOPUP_NPR {
            return Err(InvalidRequest::TopUpAmount(self.amount_npr));
        }
        Ok(sdk::Input::TopUp(sdk::TopUp {
            customer: sdk::CustomerId(self.customer),
            token_id: self.ref_id,
            amount_mpaisa: self.amount_npr * MPAISA_PER_NPR,
        }))
    }
}

/// A tariff.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TariffRequest {
    /// Tariff id.
    pub id: u16,
    /// Version (bump on every change).
    pub version: u32,
    /// Shape.
    #[serde(flatten)]
    pub kind: TariffKindRequest,
}

/// Tariff shapes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TariffKindRequest {
    /// paisa per kWh.
    PerKwh {
        /// Rate.
        rate_paisa_per_kwh: u32,
    },
    /// Blocks per 30-day period.
    Tiered {
        /// (up_to_wh, rate_paisa_per_kwh) blocks in order.
        blocks: Vec<(u64, u32)>,
        /// Charge per period, paisa.
        period_charge_paisa: u32,
    },
    /// Daily fee by connection size.
    Flat {
        /// (up_to_w, daily_fee_paisa) bands in order.
        bands: Vec<(u32, u32)>,
    },
}

impl TariffRequest {
    /// Check and convert.
    pub fn into_input(self) -> Result<sdk::Input, InvalidRequest> {
        let kind = match self.kind {
            TariffKindRequest::PerKwh { rate_paisa_per_kwh } => {
                sdk::TariffKind::PerKwh { rate_paisa_per_kwh }
            }
            TariffKindRequest::Tiered {
                blocks,
                period_charge_paisa,
            } => {
                if blocks.is_empty() || blocks.windows(2).any(|w| w[0].0 >= w[1].0) {
                    return Err(InvalidRequest::TierBlocks);
                }
                sdk::TariffKind::Tiered {
                    blocks: blocks
                        .into_iter()
                        .map(|(up_to_wh, rate_paisa_per_kwh)| sdk::TierBlock {
                            up_to_wh,
                            rate_paisa_per_kwh,
                        })
                        .collect(),
                    period_charge_paisa,
                }
            }
            TariffKindRequest::Flat { bands } => {
                if bands.is_empty() || bands.windows(2).any(|w| w[0].0 >= w[1].0) {
                    return Err(InvalidRequest::FlatBands);
                }
                sdk::TariffKind::Flat {
                    bands: bands
                        .into_iter()
                        .map(|(up_to_w, daily_fee_paisa)| sdk::FlatBand {
                            up_to_w,
                            daily_fee_paisa,
                        })
                        .collect(),
                }
            }
        };
        Ok(sdk::Input::SetTariff(sdk::Tariff {
            id: self.id,
            version: self.version,
            kind,
        }))
    }
}

/// A customer account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CustomerRequest {
    /// Customer id.
    pub id: u32,
    /// Node with the customer's relay.
    pub node: u64,
    /// Prepaid (true) or postpaid.
    pub prepaid: bool,
    /// Tariff id.
    pub tariff: u16,
    /// Connection size, W.
    pub connection_w: u32,
    /// Opening credit, NPR.
    #[serde(default)]
    pub opening_credit_npr: i64,
    /// The account's OpenPAYGO Token key, 32 hex digits (absent: the key stays as it is).
    /// Write-only: no route returns it.
    #[serde(default)]
    pub token_key_hex: Option<String>,
    /// The account's starting code (absent or 0: derived from the key, as the reference does).
    #[serde(default)]
    pub token_starting_code: Option<u32>,
    /// What one unit of a token's value is worth, paisa (absent: 100, one rupee).
    #[serde(default)]
    pub token_unit_paisa: Option<u32>,
}

/// A token unit's worth when a customer request gives none, paisa: one rupee.
pub const TOKEN_UNIT_PAISA_DEFAULT: u32 = 100;

/// Parse a 16-byte key from 32 hex digits.
fn parse_key(hex: &str) -> Result<[u8; 16], InvalidRequest> {
    let hex = hex.trim();
    if hex.len() != 32 || !hex.is_ascii() {
        return Err(InvalidRequest::TokenKey);
    }
    let mut key = [0u8; 16];
    for (i, b) in key.iter_mut().enumerate() {
        *b =
            u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| InvalidRequest::TokenKey)?;
    }
    Ok(key)
}

impl CustomerRequest {
    /// Check and convert.
    pub fn into_input(self) -> Result<sdk::Input, InvalidRequest> {
        let token = match (
            &self.token_key_hex,
            self.token_starting_code,
            self.token_unit_paisa,
        ) {
            (None, None, None) => None,
            (None, _, _) => return Err(InvalidRequest::TokenSettings),
            (Some(hex), code, unit) => {
                let unit = unit.unwrap_or(TOKEN_UNIT_PAISA_DEFAULT);
                let code = code.unwrap_or(0);
                if unit == 0 || code > OPAYGO_CODE_MAX {
                    return Err(InvalidRequest::TokenSettings);
                }
                Some(sdk::TokenKey {
                    secret_key: parse_key(hex)?,
                    starting_code: code,
                    unit_mpaisa: i64::from(unit) * 1_000,
                })
            }
        };
        Ok(sdk::Input::UpsertCustomer(sdk::CustomerSpec {
            id: sdk::CustomerId(self.id),
            node: sdk::NodeId(self.node),
            mode: if self.prepaid {
                sdk::AccountMode::Prepaid
            } else {
                sdk::AccountMode::Postpaid
            },
            tariff: self.tariff,
            connection_w: self.connection_w,
            opening_credit_mpaisa: self.opening_credit_npr.saturating_mul(MPAISA_PER_NPR),
            token,
        }))
    }
}

/// Billing-wide settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BillingConfigRequest {
    /// Local offset from UTC, minutes (Nepal: 345).
    pub utc_offset_min: i32,
    /// Friendly hours start, local minute of day.
    pub friendly_start_min: u16,
    /// Friendly hours end, local minute of day.
    pub friendly_end_min: u16,
    /// Disconnect at or below this credit, NPR.
    pub disconnect_at_npr: i64,
    /// A read bills at most this percentage of what the connection could draw since the
    /// last read; the rest is held for review (absent: 300).
    #[serde(default)]
    pub plausible_margin_pct: Option<u32>,
}

impl BillingConfigRequest {
    /// Check and convert.
    pub fn into_input(self) -> Result<sdk::Input, InvalidRequest> {
        let margin = self
            .plausible_margin_pct
            .unwrap_or(sdk::PLAUSIBLE_MARGIN_PCT_DEFAULT);
        if !(100..=10_000).contains(&margin) {
            return Err(InvalidRequest::Margin(margin));
        }
        Ok(sdk::Input::SetBillingConfig(sdk::BillingConfig {
            utc_offset_min: self.utc_offset_min,
            friendly_start_min: self.friendly_start_min,
            friendly_end_min: self.friendly_end_min,
            disconnect_at_mpaisa: self.disconnect_at_npr.saturating_mul(MPAISA_PER_NPR),
            plausible_margin_pct: margin,
        }))
    }
}

/// Balancing settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BalancingConfigRequest {
    /// Shed below, mHz.
    pub shed_below_mhz: u32,
    /// Restore above, mHz.
    pub restore_above_mhz: u32,
    /// Restore margin, W.
    pub restore_margin_w: u32,
    /// Restore interval, ms.
    pub restore_interval_ms: u64,
    /// Feeder priorities, most important first: (node, feeder).
    pub priorities: Vec<(u64, u16)>,
}

impl BalancingConfigRequest {
    /// Convert.
    pub fn into_input(self) -> sdk::Input {
        sdk::Input::SetBalancingConfig(sdk::BalancingConfig {
            nominal_mhz: 50_000,
            shed_below_mhz: self.shed_below_mhz,
            restore_above_mhz: self.restore_above_mhz,
            restore_margin_w: self.restore_margin_w,
            restore_interval_ms: self.restore_interval_ms,
            priorities: self
                .priorities
                .into_iter()
                .map(|(n, f)| sdk::FeederRef {
                    node: sdk::NodeId(n),
                    feeder: f,
                })
                .collect(),
        })
    }
}

/// Alarms a request to `GET /alarms` lists when it does not say (`?limit=N`).
pub const ALARMS_LIMIT_DEFAULT: usize = 50;
/// Most alarms one answer lists.
pub const ALARMS_LIMIT_MAX: usize = 1_000;

/// One committed alarm, as `GET /alarms` and `ghatta alarms` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmView {
    /// Outbox sequence.
    pub seq: u64,
    /// Log index of the entry that raised it.
    pub index: u64,
    /// Log time, Unix ms.
    pub time_ms: u64,
    /// "billing" or "balancing".
    pub actor: String,
    /// The alarm's kind (`MeterNotMonotonic`, `TokenReplayed`, `UnknownAccount`, ...).
    pub code: String,
    /// The node concerned, if any.
    pub node: Option<u64>,
    /// The subject as the code defines it (customer id, feeder number, ...).
    pub subject: u32,
    /// A value as the code defines it (the offending reading, ...).
    pub value: i64,
    /// The actor's words.
    pub text: String,
    /// The same alarm (actor, code, node, subject) raised again since, counted rather than
    /// stored, while its hour is open (a record of its own sums them up when it closes).
    #[serde(default)]
    pub repeats: u64,
    /// Log time of the newest of those repeats, Unix ms.
    #[serde(default)]
    pub last_repeat_ms: Option<u64>,
}

/// A board's alarm rule raised now, as committed (every node shows the same list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardAlarmView {
    /// The board.
    pub node: u64,
    /// The rule (`frequency_low`, `meter_silent`, ...).
    pub rule: String,
    /// When the board raised it, by its clock, Unix ms.
    pub since_ms: u64,
    /// What it said.
    pub text: String,
}

impl BoardAlarmView {
    /// Every board's raised rules from the replicated state, by board then rule.
    pub fn all(
        boards: Vec<(u64, Vec<crate::raft::board_alarms::ActiveRule>)>,
    ) -> Vec<BoardAlarmView> {
        boards
            .into_iter()
            .flat_map(|(node, rules)| {
                rules.into_iter().map(move |r| BoardAlarmView {
                    node,
                    rule: r.rule,
                    since_ms: r.since_ms,
                    text: r.text,
                })
            })
            .collect()
    }
}

/// The answer of `GET /alarms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmsReply {
    /// Boards' alarm rules raised now (committed), by board.
    #[serde(default)]
    pub active: Vec<BoardAlarmView>,
    /// Committed alarm records, newest first.
    pub alarms: Vec<AlarmView>,
    /// Whether the whole outbox was searched (otherwise older alarms may exist; the
    /// central keeps them all).
    pub whole_outbox: bool,
    /// Whether the list stopped at the `limit` asked for (more may follow).
    pub limited: bool,
}

/// What a `GET /alarms` or `GET /events` asks for: `limit=N` (1 to [`ALARMS_LIMIT_MAX`]) and
/// `since_ms=T` (only those at or after log time T, Unix ms), both optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentQuery {
    /// At most this many.
    pub limit: usize,
    /// None older than this log time, Unix ms.
    pub since_ms: Option<u64>,
}

/// Parses a `GET /alarms` or `GET /events` query string.
pub fn recent_query(query: Option<&str>) -> Result<RecentQuery, String> {
    let mut q = RecentQuery {
        limit: ALARMS_LIMIT_DEFAULT,
        since_ms: None,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("limit", v)) => {
                q.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=ALARMS_LIMIT_MAX).contains(n))
                    .ok_or_else(|| {
                        format!("limit=`{v}`: give a number from 1 to {ALARMS_LIMIT_MAX}")
                    })?;
            }
            Some(("since_ms", v)) => {
                q.since_ms =
                    Some(v.parse().map_err(|_| {
                        format!("since_ms=`{v}`: give a Unix time in milliseconds")
                    })?);
            }
            _ => {
                return Err(format!(
                    "unknown query `{pair}`; this route takes limit=N and since_ms=T"
                ));
            }
        }
    }
    Ok(q)
}

impl AlarmView {
    /// The view of a committed alarm.
    pub fn of(a: &crate::state::CommittedAlarm) -> AlarmView {
        AlarmView {
            seq: a.seq,
            index: a.index,
            time_ms: a.time_ms,
            actor: a.actor.name().to_string(),
            code: format!("{:?}", a.alarm.code),
            node: a.alarm.node.map(|n| n.0),
            subject: a.alarm.subject,
            value: a.alarm.value,
            text: a.alarm.text.clone(),
            repeats: a.repeats,
            last_repeat_ms: a.last_repeat_ms,
        }
    }
}

/// One committed event as `GET /events` shows it (the cockpit's event log, as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    /// Outbox sequence.
    pub seq: u64,
    /// Log index of the entry that produced it.
    pub index: u64,
    /// Log time, Unix ms.
    pub time_ms: u64,
    /// "billing" or "balancing".
    pub actor: String,
    /// "relay", "ledger" or "alarm".
    pub kind: String,
    /// The output, as text.
    pub what: String,
}

/// The answer of `GET /events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsReply {
    /// Newest first.
    pub events: Vec<EventView>,
    /// Whether every outbox record was searched.
    pub whole_outbox: bool,
    /// Whether the answer stopped at the limit asked for.
    pub limited: bool,
}

impl EventView {
    /// The view of a committed output.
    pub fn of(c: &crate::state::CommittedOutput) -> EventView {
        use ghatta_actor_sdk::Output;
        let (kind, what) = match &c.output {
            Output::Relay(r) => ("relay", format!("{r:?}")),
            Output::Ledger(l) => ("ledger", format!("{l:?}")),
            Output::Alarm(a) => ("alarm", format!("{a:?}")),
            other => ("other", format!("{other:?}")),
        };
        EventView {
            seq: c.seq,
            index: c.index,
            time_ms: c.time_ms,
            actor: c.actor.name().to_string(),
            kind: kind.into(),
            what,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(json: serde_json::Value) -> Result<sdk::Input, InvalidRequest> {
        serde_json::from_value::<CustomerRequest>(json)
            .expect("shape")
            .into_input()
    }

    #[test]
    fn a_customers_token_settings_are_checked_and_converted() {
        let base = serde_json::json!({ "id": 1, "node": 1, "prepaid": true, "tariff": 1, "connection_w": 250 });
        let Ok(sdk::Input::UpsertCustomer(spec)) = customer(base.clone()) else {
            panic!("plain customer");
        };
        assert_eq!(spec.token, None, "no key given: the account's stays");
        let mut with_key = base.clone();
        with_key["token_key_hex"] = "000102030405060708090a0b0c0d0e0f".into();
        with_key["token_starting_code"] = 123_456_789.into();
        let Ok(sdk::Input::UpsertCustomer(spec)) = customer(with_key.clone()) else {
            panic!("customer with a key");
        };
        let key = spec.token.expect("key");
        assert_eq!(key.secret_key[15], 15);
        assert_eq!(key.starting_code, 123_456_789);
        assert_eq!(key.unit_mpaisa, 100_000, "one unit is a rupee by default");
        assert!(
            !format!("{spec:?}").contains("123456789"),
            "Debug hides the secrets"
        );
        for (field, value, err) in [
            (
                "token_key_hex",
                serde_json::json!("00"),
                InvalidRequest::TokenKey,
            ),
            (
                "token_key_hex",
                "zz0102030405060708090a0b0c0d0e0f".into(),
                InvalidRequest::TokenKey,
            ),
            ("token_unit_paisa", 0.into(), InvalidRequest::TokenSettings),
            (
                "token_starting_code",
                1_000_000_000.into(),
                InvalidRequest::TokenSettings,
            ),
        ] {
            let mut bad = with_key.clone();
            bad[field] = value;
            assert_eq!(customer(bad).unwrap_err(), err, "{field}");
        }
        let mut no_key = base;
        no_key["token_unit_paisa"] = 100.into();
        assert_eq!(customer(no_key).unwrap_err(), InvalidRequest::TokenSettings);
    }

    #[test]
    fn the_recent_query_takes_a_limit_and_a_start_time() {
        assert_eq!(
            recent_query(None).unwrap(),
            RecentQuery {
                limit: ALARMS_LIMIT_DEFAULT,
                since_ms: None
            }
        );
        assert_eq!(
            recent_query(Some("since_ms=1700000000000&limit=5")).unwrap(),
            RecentQuery {
                limit: 5,
                since_ms: Some(1_700_000_000_000)
            }
        );
        for bad in ["limit=0", "since_ms=yesterday", "from=3"] {
            assert!(recent_query(Some(bad)).unwrap_err().contains('`'), "{bad}");
        }
    }

    #[test]
    fn a_token_code_has_at_most_nine_digits() {
        let ok = TopUpRequest {
            customer: 3,
            code: OPAYGO_CODE_MAX,
        };
        assert!(matches!(
            ok.into_input(),
            Ok(sdk::Input::TokenTopUp(sdk::TokenTopUp {
                code: OPAYGO_CODE_MAX,
                ..
            }))
        ));
        let long = TopUpRequest {
            customer: 3,
            code: OPAYGO_CODE_MAX + 1,
        };
        assert_eq!(
            long.into_input().unwrap_err(),
            InvalidRequest::TokenCode(OPAYGO_CODE_MAX + 1)
        );
        let credit = OperatorCreditRequest {
            customer: 3,
            ref_id: 9,
            amount_npr: 0,
        };
        assert_eq!(
            credit.into_input().unwrap_err(),
            InvalidRequest::TopUpAmount(0)
        );
    }
}
