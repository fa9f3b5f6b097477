//! The billing actor's accounts and tariffs as an operator reads them: decoded from the
//! replicated actor state with the actor's own record formats (`ghatta_billing::store`), for
//! `GET /customers`, `GET /customers/{id}`, `GET /tariffs`, the cockpit's pages and
//! `ghatta customer` / `ghatta tariff list`. Read-only; the token secrets (`o/` rows) are never
//! read here, so no route can show them.

use ghatta_actor_sdk::{AccountMode, CustomerId, Output, RelayId, Tariff, TariffKind};
use ghatta_billing::store::{self, Account};
use serde::{Deserialize, Serialize};

use crate::actors::ActorKind;
use crate::state::StateMachine;

/// Default number of customers one `GET /customers` lists.
pub const CUSTOMERS_PAGE_DEFAULT: usize = 100;
/// Most customers one `GET /customers` lists: a page of 500 rows is ~60 KiB of HTML, inside
/// the cockpit's page budget (`cockpit::PAGE_BYTES_MAX`).
pub const CUSTOMERS_PAGE_MAX: usize = 500;
/// Events a customer's page lists (relay moves and ledger lines), newest first.
pub const CUSTOMER_EVENTS_MAX: usize = 50;
/// Tariffs one `GET /tariffs` lists: tariff ids are u16, but a grid has a handful; past this
/// the answer says it stopped.
pub const TARIFFS_MAX: usize = 1_000;

/// One account as `GET /customers` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerView {
    /// Customer id.
    pub id: u32,
    /// Node whose relay board has the customer's disconnect relay.
    pub node: u64,
    /// "prepaid" or "postpaid".
    pub mode: String,
    /// Tariff id.
    pub tariff: u16,
    /// Connection size, W.
    pub connection_w: u32,
    /// Credit, mpaisa (negative is debt; 100,000 mpaisa = NPR 1).
    pub credit_mpaisa: i64,
    /// Whether billing has the customer's relay closed (supplied).
    pub connected: bool,
    /// Last accepted meter register, Wh (none before the baseline read).
    pub last_read_wh: Option<u64>,
    /// Log time of the last accepted read or meter replacement, Unix ms.
    pub last_read_at_ms: Option<u64>,
    /// A read below the baseline raised an alarm and no accepted read or replacement has
    /// ended the episode yet (a swapped or reset meter: `ghatta meter replace`).
    pub meter_backwards: bool,
}

impl CustomerView {
    fn of(id: u32, a: &Account) -> CustomerView {
        CustomerView {
            id,
            node: a.node.0,
            mode: match a.mode {
                AccountMode::Prepaid => "prepaid",
                AccountMode::Postpaid => "postpaid",
            }
            .into(),
            tariff: a.tariff,
            connection_w: a.connection_w,
            credit_mpaisa: a.credit_mpaisa,
            connected: a.connected,
            last_read_wh: a.last_read_wh,
            last_read_at_ms: a.last_read_at_ms,
            meter_backwards: a.backwards,
        }
    }
}

/// Which customers `GET /customers` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerQuery {
    /// List from the customer after this id (the previous page's `next_after`).
    pub after: Option<u32>,
    /// Only customers billing has disconnected.
    pub disconnected_only: bool,
    /// At most this many (1 to [`CUSTOMERS_PAGE_MAX`]).
    pub limit: usize,
}

impl CustomerQuery {
    /// Parses `after=C&disconnected=1&limit=N` (every part optional).
    pub fn parse(query: Option<&str>) -> Result<CustomerQuery, String> {
        let mut q = CustomerQuery {
            limit: CUSTOMERS_PAGE_DEFAULT,
            ..CustomerQuery::default()
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("after", v)) => {
                    q.after = Some(v.parse().map_err(|_| {
                        format!("after=`{v}`: give the customer id the previous page ended at")
                    })?)
                }
                Some(("disconnected", v)) => {
                    q.disconnected_only = match v {
                        "1" | "true" => true,
                        "0" | "false" | "" => false,
                        _ => return Err(format!("disconnected=`{v}`: give 1 or 0")),
                    }
                }
                Some(("limit", v)) => {
                    q.limit = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=CUSTOMERS_PAGE_MAX).contains(n))
                        .ok_or_else(|| {
                            format!("limit=`{v}`: give a number from 1 to {CUSTOMERS_PAGE_MAX}")
                        })?
                }
                _ => {
                    return Err(format!(
                        "unknown query `{pair}`; this route takes after=ID, disconnected=1 and limit=N"
                    ));
                }
            }
        }
        Ok(q)
    }
}

/// The answer of `GET /customers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomersReply {
    /// In id order.
    pub customers: Vec<CustomerView>,
    /// Ask again with `after=` this for the next page; none when this page is the last.
    pub next_after: Option<u32>,
    /// Accounts whose stored record this binary cannot read (written by a newer billing
    /// version): counted, not listed.
    pub unreadable: u64,
}

/// A page of accounts, in id order.
pub fn customers(sm: &StateMachine, q: &CustomerQuery) -> CustomersReply {
    // Accounts are read in chunks until the page is full: with `disconnected_only` most rows
    // are skipped, and one copy of every account at once would hold the lock an apply needs.
    const CHUNK_ROWS: usize = 256;
    let prefix = &store::account_key(CustomerId(0))[..2];
    let mut after = q
        .after
        .map(|id| store::account_key(CustomerId(id)).to_vec());
    let mut out = CustomersReply {
        customers: Vec::new(),
        next_after: None,
        unreadable: 0,
    };
    loop {
        let rows = sm.actor_rows(ActorKind::Billing, prefix, after.as_deref(), CHUNK_ROWS);
        let last_chunk = rows.len() < CHUNK_ROWS;
        for (key, value) in &rows {
            after = Some(key.clone());
            let Some(id) = account_id(key) else { continue };
            let Some(account) = Account::decode(value) else {
                out.unreadable += 1;
                continue;
            };
            if q.disconnected_only && account.connected {
                continue;
            }
            if out.customers.len() == q.limit {
                // A further match exists: the page ends at the one before.
                out.next_after = out.customers.last().map(|c| c.id);
                return out;
            }
            out.customers.push(CustomerView::of(id, &account));
        }
        if last_chunk {
            return out;
        }
    }
}

fn account_id(key: &[u8]) -> Option<u32> {
    let id: [u8; 4] = key.strip_prefix(b"c/")?.try_into().ok()?;
    Some(u32::from_be_bytes(id))
}

/// The answer of `GET /customers/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerReply {
    /// The account.
    pub customer: CustomerView,
    /// The customer's relay moves and ledger lines, newest first, found among the outbox's
    /// newest records (`StateMachine::recent_outputs`).
    pub events: Vec<crate::admin::dto::EventView>,
    /// Why the relay is where it is: the reason of the newest relay move found, if any.
    pub relay_reason: Option<String>,
    /// Whether every outbox record was searched for events.
    pub whole_outbox: bool,
}

/// One account, or `None` when the grid has no such customer (or its record is unreadable).
pub fn customer(sm: &StateMachine, id: u32) -> std::io::Result<Option<CustomerReply>> {
    let key = store::account_key(CustomerId(id));
    let Some((_, value)) = sm
        .actor_rows(ActorKind::Billing, &key, None, 1)
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let Some(account) = Account::decode(&value) else {
        return Ok(None);
    };
    let found = sm.recent_outputs(CUSTOMER_EVENTS_MAX, |o| concerns(o, id))?;
    let relay_reason = found.outputs.iter().find_map(|c| match &c.output {
        Output::Relay(r) => Some(format!("{:?}", r.reason)),
        _ => None,
    });
    Ok(Some(CustomerReply {
        customer: CustomerView::of(id, &account),
        events: found
            .outputs
            .iter()
            .map(crate::admin::dto::EventView::of)
            .collect(),
        relay_reason,
        whole_outbox: found.whole_outbox,
    }))
}

/// The balance an operator's `BAL <customer>` SMS gets (`notify`).
pub struct Balances(pub StateMachine);

impl crate::notify::BalanceLookup for Balances {
    fn balance(&self, customer: u32) -> Option<String> {
        let key = store::account_key(CustomerId(customer));
        let (_, value) = self
            .0
            .actor_rows(ActorKind::Billing, &key, None, 1)
            .into_iter()
            .next()?;
        let a = Account::decode(&value)?;
        Some(format!(
            "credit {}, supply {}",
            crate::admin::cockpit::accounts::npr(a.credit_mpaisa),
            if a.connected { "on" } else { "cut" }
        ))
    }
}

/// Whether an output is about customer `id`: a move of their relay or a line of their ledger.
fn concerns(o: &Output, id: u32) -> bool {
    match o {
        Output::Relay(r) => r.relay == RelayId::Customer(CustomerId(id)),
        Output::Ledger(l) => l.customer == CustomerId(id),
        _ => false,
    }
}

/// One tariff as `GET /tariffs` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TariffView {
    /// Tariff id.
    pub id: u16,
    /// Version in force.
    pub version: u32,
    /// "flat", "per_kwh" or "tiered".
    pub kind: String,
    /// The rates, as an operator would write them to `ghatta tariff set`.
    pub rates: String,
}

impl TariffView {
    fn of(t: &Tariff) -> TariffView {
        let pairs = |p: &mut dyn Iterator<Item = (u64, u32)>| {
            p.map(|(a, b)| format!("{a}:{b}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let (kind, rates) = match &t.kind {
            TariffKind::Flat { bands } => (
                "flat",
                format!(
                    "up_to_w:daily_fee_paisa {}",
                    pairs(&mut bands.iter().map(|b| (b.up_to_w.into(), b.daily_fee_paisa)))
                ),
            ),
            TariffKind::PerKwh { rate_paisa_per_kwh } => {
                ("per_kwh", format!("{rate_paisa_per_kwh} paisa/kWh"))
            }
            TariffKind::Tiered {
                blocks,
                period_charge_paisa,
            } => (
                "tiered",
                format!(
                    "up_to_wh:paisa_per_kwh {}; period charge {period_charge_paisa} paisa",
                    pairs(&mut blocks.iter().map(|b| (b.up_to_wh, b.rate_paisa_per_kwh)))
                ),
            ),
        };
        TariffView {
            id: t.id,
            version: t.version,
            kind: kind.into(),
            rates,
        }
    }
}

/// The answer of `GET /tariffs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TariffsReply {
    /// In id order.
    pub tariffs: Vec<TariffView>,
    /// Tariffs whose stored record this binary cannot read.
    pub unreadable: u64,
    /// Whether the list stopped at [`TARIFFS_MAX`].
    pub limited: bool,
}

/// Every tariff, in id order.
pub fn tariffs(sm: &StateMachine) -> TariffsReply {
    let prefix = &store::tariff_key(0)[..2];
    let rows = sm.actor_rows(ActorKind::Billing, prefix, None, TARIFFS_MAX + 1);
    let limited = rows.len() > TARIFFS_MAX;
    let mut out = TariffsReply {
        tariffs: Vec::new(),
        unreadable: 0,
        limited,
    };
    for (_, value) in rows.iter().take(TARIFFS_MAX) {
        match store::decode_tariff(value) {
            Some(t) => out.tariffs.push(TariffView::of(&t)),
            None => out.unreadable += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_customer_query_takes_its_three_keys_and_refuses_the_rest() {
        assert_eq!(
            CustomerQuery::parse(None).unwrap().limit,
            CUSTOMERS_PAGE_DEFAULT
        );
        let q = CustomerQuery::parse(Some("after=17&disconnected=1&limit=20")).unwrap();
        assert_eq!(
            q,
            CustomerQuery {
                after: Some(17),
                disconnected_only: true,
                limit: 20
            }
        );
        for bad in [
            "limit=0",
            "limit=501",
            "after=x",
            "disconnected=maybe",
            "q=3",
        ] {
            let e = CustomerQuery::parse(Some(bad)).unwrap_err();
            assert!(e.contains('`'), "{bad}: {e}");
        }
    }

    #[test]
    fn pages_of_customers_cover_the_grid_once_and_the_filter_keeps_the_cut_ones() {
        use ghatta_actor_sdk as sdk;
        // More accounts than one read of the state takes, so the pages cross chunks; the odd
        // ones with no credit, cut by billing at their first charge.
        let n = 700;
        let read = |wh| {
            (1..=n)
                .map(|id| {
                    sdk::Input::MeterRead(sdk::MeterRead {
                        customer: sdk::CustomerId(id),
                        total_wh: wh,
                        read_at_ms: 0,
                    })
                })
                .collect()
        };
        // 06:00 UTC, 11:45 in Nepal: outside the default friendly hours (18:00-06:00 local).
        let (_dir, sm) = crate::state::tests::applied(
            1_700_028_000_000,
            vec![
                (1..=n)
                    .map(|id| crate::state::tests::prepaid(id, i64::from(id % 2 == 0) * 1_000_000))
                    .collect(),
                read(1_000),
                read(1_010),
            ],
        );
        let mut q = CustomerQuery {
            limit: CUSTOMERS_PAGE_MAX,
            ..CustomerQuery::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = customers(&sm, &q);
            assert!(page.customers.len() <= q.limit);
            seen.extend(page.customers.iter().map(|c| c.id));
            match page.next_after {
                Some(after) => q.after = Some(after),
                None => break,
            }
        }
        assert_eq!(seen, (1..=n).collect::<Vec<_>>());
        let one = customer(&sm, 42).expect("read").expect("customer 42");
        assert_eq!(one.customer.last_read_wh, Some(1_010));
        assert!(one.customer.connected && one.customer.credit_mpaisa < 1_000_000);
        assert!(
            one.events.iter().any(|e| e.kind == "ledger"),
            "its charge: {:?}",
            one.events
        );
        assert!(customer(&sm, n + 1).expect("read").is_none());
        let cut = customers(
            &sm,
            &CustomerQuery {
                disconnected_only: true,
                limit: 10,
                after: None,
            },
        );
        assert_eq!(
            cut.customers.iter().map(|c| c.id).collect::<Vec<_>>(),
            (1..=19).step_by(2).collect::<Vec<_>>(),
            "the first ten cut, in id order"
        );
        assert_eq!(cut.next_after, Some(19));
        let one = customer(&sm, 43).expect("read").expect("customer 43");
        assert_eq!(one.relay_reason.as_deref(), Some("ZeroCredit"));
    }

    #[test]
    fn an_account_key_gives_its_id_and_nothing_else_does() {
        assert_eq!(
            account_id(&store::account_key(CustomerId(70_000))),
            Some(70_000)
        );
        assert_eq!(account_id(b"c/12"), None);
        assert_eq!(account_id(&store::token_account_key(CustomerId(1))), None);
    }

    #[test]
    fn a_customers_events_are_their_relay_and_their_ledger_only() {
        use ghatta_actor_sdk::{LedgerKind, LedgerRecord, NodeId, RelayCommand, RelayReason};
        let relay = |c: u32| {
            Output::Relay(RelayCommand {
                node: NodeId(1),
                relay: RelayId::Customer(CustomerId(c)),
                closed: false,
                reason: RelayReason::ZeroCredit,
            })
        };
        let ledger = Output::Ledger(LedgerRecord {
            customer: CustomerId(5),
            at_ms: 0,
            kind: LedgerKind::Disconnect {
                reason: RelayReason::ZeroCredit,
            },
            balance_after_mpaisa: -1,
            tariff_version: 1,
        });
        assert!(concerns(&relay(5), 5) && !concerns(&relay(6), 5));
        assert!(concerns(&ledger, 5) && !concerns(&ledger, 6));
        let feeder = Output::Relay(RelayCommand {
            node: NodeId(1),
            relay: RelayId::Feeder(5),
            closed: false,
            reason: RelayReason::Balancing,
        });
        assert!(!concerns(&feeder, 5), "feeder 5 is not customer 5");
    }
}
