//! The billing actor's state in the host key-value store: key layout, the stored records and the
//! sorted id lists that stand in for a scan (the host has none).
//!
//! Keys are short binary strings; ids are big-endian so keys sort like the ids:
//! - `cfg`: [`BillingConfig`] (absent: the default);
//! - `c/` + customer id (u32 BE): [`Account`];
//! - `t/` + tariff id (u16 BE): [`Tariff`];
//! - `k/` + token id (u64 BE): [`UsedToken`], kept forever (an operator credit's reference is
//!   accepted once, ever);
//! - `o/` + customer id (u32 BE): [`TokenAccount`], the account's OpenPAYGO Token key and count
//!   state (apart from the account, so a meter read never copies the secret around);
//! - `ix`: every customer id, sorted (the daily tick walks it);
//! - `iw`: prepaid customers left in debt by friendly hours, sorted (the friendly-end tick
//!   walks it);
//! - `tm`: [`Timers`], the durable timers this actor has asked for.
//!
//! Values use a fixed little-endian layout led by a format version byte ([`FORMAT_V1`]), not
//! bincode: bincode's derived code is monomorphised per type and twice per encode (sizing, then
//! writing), which cost about 9 KiB of the 64 KiB module budget. Id lists are bare u32
//! little-endian arrays. A value that does not parse reads as absent.

use alloc::vec::Vec;

use ghatta_actor_sdk::{
    AccountMode, BillingConfig, CustomerId, FlatBand, Host, NodeId, Tariff, TariffKind, TierBlock,
};

use crate::clock;

/// Format version of the actor's own records; bump it (and read the old one) on any change.
pub const FORMAT_V1: u8 = 1;
/// An [`Account`] with the meter's plausibility and backwards-episode fields; version 1
/// accounts read with none of them (no allowance yet, no episode open).
pub const FORMAT_V2: u8 = 2;

/// Key of the billing configuration.
pub const KEY_CONFIG: &[u8] = b"cfg";
/// Key of the list of all customer ids.
pub const KEY_INDEX: &[u8] = b"ix";
/// Key of the list of customers to re-check when friendly hours end.
pub const KEY_WATCH: &[u8] = b"iw";
/// Key of the timer bookkeeping.
pub const KEY_TIMERS: &[u8] = b"tm";

/// Most accounts one billing actor keeps. The largest interconnected cluster we know of serves
/// 1,240 households (Kalung Khola, Baglung); 3,072 leaves room to grow while the id list (4
/// bytes per id, 12 KiB) stays under the controller host's 16 KiB value limit.
pub const ACCOUNTS_MAX: usize = 3_072;

/// Key of an account.
pub fn account_key(id: CustomerId) -> [u8; 6] {
    let b = id.0.to_be_bytes();
    [b'c', b'/', b[0], b[1], b[2], b[3]]
}

/// Key of a tariff.
pub fn tariff_key(id: u16) -> [u8; 4] {
    let b = id.to_be_bytes();
    [b't', b'/', b[0], b[1]]
}

/// Key of an account's token secrets and count state.
pub fn token_account_key(id: CustomerId) -> [u8; 6] {
    let b = id.0.to_be_bytes();
    [b'o', b'/', b[0], b[1], b[2], b[3]]
}

/// Key of a used token.
pub fn token_key(token_id: u64) -> [u8; 10] {
    let b = token_id.to_be_bytes();
    [b'k', b'/', b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// One customer account as the actor keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Node whose relay board has the customer's disconnect relay.
    pub node: NodeId,
    /// Prepaid or postpaid.
    pub mode: AccountMode,
    /// Tariff id.
    pub tariff: u16,
    /// Connection size, W (selects a flat-tariff band).
    pub connection_w: u32,
    /// Credit, mpaisa (negative is debt).
    pub credit_mpaisa: i64,
    /// Last accepted meter register, Wh; `None` until the baseline read.
    pub last_read_wh: Option<u64>,
    /// Billing period (of a tiered tariff) that `period_used_wh` counts.
    pub period: u64,
    /// Energy billed in `period`, Wh (selects the tiered block).
    pub period_used_wh: u64,
    /// Last log day whose flat fee is settled (charged, or not owed because the account was
    /// created that day or was not on a flat tariff then).
    pub fee_paid_day: u64,
    /// Whether billing believes the customer's relay is closed.
    pub connected: bool,
    /// Log time of the last accepted read (or replacement), ms; `None` before it.
    pub last_read_at_ms: Option<u64>,
    /// Energy reads may still bill before the excess is held, mWh: grows with log time at the
    /// connection's plausible draw, capped, and spent by each read (down to -1 Wh: a register
    /// counts whole Wh).
    pub allowance_mwh: i64,
    /// A read below the baseline raised its alarm and the episode is not over yet (a later
    /// accepted read or a replacement ends it), so further backwards reads stay quiet.
    pub backwards: bool,
}

/// An account's OpenPAYGO Token secrets and the reference decoder's count state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAccount {
    /// The secrets the office set.
    pub key: ghatta_actor_sdk::TokenKey,
    /// The count window.
    pub counts: crate::opaygo::CountState,
}

/// A token that has been accepted (its key's presence is what matters; the value is for audit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsedToken {
    /// Account credited.
    pub customer: CustomerId,
    /// Log time of the top-up, ms.
    pub at_ms: u64,
}

/// The durable timers this actor has asked for. A [`Tick`](ghatta_actor_sdk::Tick) whose
/// `due_ms` is not the one recorded here is stale (a duplicate or a timer since replaced) and
/// is ignored, so asking for a timer twice can never double the work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timers {
    /// Due time of the pending daily (flat fee) timer.
    pub daily_at_ms: Option<u64>,
    /// The daily pass is part done: accounts up to this id are settled.
    pub daily_cursor: Option<CustomerId>,
    /// Due time of the pending friendly-hours-end timer.
    pub friendly_end_at_ms: Option<u64>,
}

/// Appends fixed-width little-endian fields.
struct Writer(Vec<u8>);

impl Writer {
    fn new() -> Self {
        Writer(alloc::vec![FORMAT_V1])
    }
    fn v2() -> Self {
        Writer(alloc::vec![FORMAT_V2])
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    fn opt_u64(&mut self, v: Option<u64>) -> &mut Self {
        self.bytes(&[u8::from(v.is_some())]).u64(v.unwrap_or(0))
    }
}

/// Reads what [`Writer`] wrote; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// A reader past the version byte, if the version is one this code knows.
    fn new(bytes: &'a [u8]) -> Option<Self> {
        match bytes.split_first() {
            Some((&FORMAT_V1, rest)) => Some(Reader(rest)),
            _ => None,
        }
    }
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    /// A reader past the version byte, and the version, for records with two versions.
    fn versioned(bytes: &'a [u8]) -> Option<(u8, Self)> {
        match bytes.split_first() {
            Some((&v, rest)) if v == FORMAT_V1 || v == FORMAT_V2 => Some((v, Reader(rest))),
            _ => None,
        }
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn bool(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn opt_u64(&mut self) -> Option<Option<u64>> {
        let present = self.bool()?;
        let v = self.u64()?;
        Some(present.then_some(v))
    }
    /// The value, if every byte was consumed.
    fn done<T>(self, v: T) -> Option<T> {
        self.0.is_empty().then_some(v)
    }
}

impl Account {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mode = match self.mode {
            AccountMode::Prepaid => 0u8,
            AccountMode::Postpaid => 1,
        };
        let mut w = Writer::v2();
        w.u64(self.node.0)
            .bytes(&[mode])
            .u16(self.tariff)
            .u32(self.connection_w)
            .u64(self.credit_mpaisa as u64)
            .opt_u64(self.last_read_wh)
            .u64(self.period)
            .u64(self.period_used_wh)
            .u64(self.fee_paid_day)
            .bytes(&[u8::from(self.connected)])
            .opt_u64(self.last_read_at_ms)
            .u64(self.allowance_mwh as u64)
            .bytes(&[u8::from(self.backwards)]);
        w.0
    }

    /// Parse the stored form (version 1 or 2).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (version, mut r) = Reader::versioned(bytes)?;
        let node = NodeId(r.u64()?);
        let mode = match r.u8()? {
            0 => AccountMode::Prepaid,
            1 => AccountMode::Postpaid,
            _ => return None,
        };
        let a = Account {
            node,
            mode,
            tariff: r.u16()?,
            connection_w: r.u32()?,
            credit_mpaisa: r.u64()? as i64,
            last_read_wh: r.opt_u64()?,
            period: r.u64()?,
            period_used_wh: r.u64()?,
            fee_paid_day: r.u64()?,
            connected: r.bool()?,
            last_read_at_ms: None,
            allowance_mwh: 0,
            backwards: false,
        };
        if version == FORMAT_V1 {
            return r.done(a);
        }
        let a = Account {
            last_read_at_ms: r.opt_u64()?,
            allowance_mwh: r.u64()? as i64,
            backwards: r.bool()?,
            ..a
        };
        r.done(a)
    }
}

impl TokenAccount {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(&self.key.secret_key)
            .u32(self.key.starting_code)
            .u64(self.key.unit_mpaisa as u64)
            .u32(self.counts.last_count)
            .u32(self.counts.highest_used)
            .u32(self.counts.used_mask);
        w.0
    }

    /// Parse the stored form.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes)?;
        let t = TokenAccount {
            key: ghatta_actor_sdk::TokenKey {
                secret_key: r.take::<16>()?,
                starting_code: r.u32()?,
                unit_mpaisa: r.u64()? as i64,
            },
            counts: crate::opaygo::CountState {
                last_count: r.u32()?,
                highest_used: r.u32()?,
                used_mask: r.u32()?,
            },
        };
        r.done(t)
    }
}

impl UsedToken {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.customer.0).u64(self.at_ms);
        w.0
    }

    /// Parse the stored form.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes)?;
        let t = UsedToken {
            customer: CustomerId(r.u32()?),
            at_ms: r.u64()?,
        };
        r.done(t)
    }
}

impl Timers {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.opt_u64(self.daily_at_ms)
            .opt_u64(self.daily_cursor.map(|c| u64::from(c.0)))
            .opt_u64(self.friendly_end_at_ms);
        w.0
    }

    /// Parse the stored form.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes)?;
        let daily_at_ms = r.opt_u64()?;
        let cursor = r.opt_u64()?;
        let t = Timers {
            daily_at_ms,
            daily_cursor: match cursor {
                Some(c) => Some(CustomerId(u32::try_from(c).ok()?)),
                None => None,
            },
            friendly_end_at_ms: r.opt_u64()?,
        };
        r.done(t)
    }
}

/// Most bands or blocks a stored tariff may have, so the count fits its one-byte field;
/// [`tariff::is_valid`](crate::tariff::is_valid) bounds them much lower.
const TARIFF_PARTS_MAX: usize = u8::MAX as usize;

/// A tariff's stored form.
pub fn encode_tariff(t: &Tariff) -> Vec<u8> {
    let mut w = Writer::new();
    w.u16(t.id).u32(t.version);
    match &t.kind {
        TariffKind::Flat { bands } => {
            w.bytes(&[0, bands.len().min(TARIFF_PARTS_MAX) as u8]);
            for b in bands.iter().take(TARIFF_PARTS_MAX) {
                w.u32(b.up_to_w).u32(b.daily_fee_paisa);
            }
        }
        TariffKind::PerKwh { rate_paisa_per_kwh } => {
            w.bytes(&[1]).u32(*rate_paisa_per_kwh);
        }
        TariffKind::Tiered {
            blocks,
            period_charge_paisa,
        } => {
            w.bytes(&[2]).u32(*period_charge_paisa);
            w.bytes(&[blocks.len().min(TARIFF_PARTS_MAX) as u8]);
            for b in blocks.iter().take(TARIFF_PARTS_MAX) {
                w.u64(b.up_to_wh).u32(b.rate_paisa_per_kwh);
            }
        }
    }
    w.0
}

/// Parse a tariff's stored form.
pub fn decode_tariff(bytes: &[u8]) -> Option<Tariff> {
    let mut r = Reader::new(bytes)?;
    let id = r.u16()?;
    let version = r.u32()?;
    let kind = match r.u8()? {
        0 => {
            let n = r.u8()?;
            let mut bands = Vec::new();
            for _ in 0..n {
                bands.push(FlatBand {
                    up_to_w: r.u32()?,
                    daily_fee_paisa: r.u32()?,
                });
            }
            TariffKind::Flat { bands }
        }
        1 => TariffKind::PerKwh {
            rate_paisa_per_kwh: r.u32()?,
        },
        2 => {
            let period_charge_paisa = r.u32()?;
            let n = r.u8()?;
            let mut blocks = Vec::new();
            for _ in 0..n {
                blocks.push(TierBlock {
                    up_to_wh: r.u64()?,
                    rate_paisa_per_kwh: r.u32()?,
                });
            }
            TariffKind::Tiered {
                blocks,
                period_charge_paisa,
            }
        }
        _ => return None,
    };
    r.done(Tariff { id, version, kind })
}

/// The configuration's stored form.
pub fn encode_config(c: &BillingConfig) -> Vec<u8> {
    let mut w = Writer::v2();
    w.u32(c.utc_offset_min as u32)
        .u16(c.friendly_start_min)
        .u16(c.friendly_end_min)
        .u64(c.disconnect_at_mpaisa as u64)
        .u32(c.plausible_margin_pct);
    w.0
}

/// Parse the configuration's stored form.
/// A version 1 configuration (written before the plausibility margin existed) reads with the
/// default margin.
pub fn decode_config(bytes: &[u8]) -> Option<BillingConfig> {
    let (version, mut r) = Reader::versioned(bytes)?;
    let c = BillingConfig {
        utc_offset_min: r.u32()? as i32,
        friendly_start_min: r.u16()?,
        friendly_end_min: r.u16()?,
        disconnect_at_mpaisa: r.u64()? as i64,
        plausible_margin_pct: clock::PLAUSIBLE_MARGIN_PCT_DEFAULT,
    };
    if version == FORMAT_V1 {
        return r.done(c);
    }
    let c = BillingConfig {
        plausible_margin_pct: r.u32()?,
        ..c
    };
    r.done(c)
}

/// An id list's stored form: bare little-endian u32s.
fn encode_ids(ids: &[u32]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_le_bytes()).collect()
}

/// Parse an id list; a torn tail is dropped.
fn decode_ids(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .filter_map(|c| c.try_into().ok())
        .map(u32::from_le_bytes)
        .collect()
}

/// Typed access to the state.
pub struct Store<'a> {
    host: &'a mut dyn Host,
}

impl<'a> Store<'a> {
    /// Wrap the host.
    pub fn new(host: &'a mut dyn Host) -> Self {
        Store { host }
    }

    /// The host (for emitting outputs).
    pub fn host(&mut self) -> &mut dyn Host {
        self.host
    }

    /// The configuration in force.
    pub fn config(&self) -> BillingConfig {
        self.host
            .get(KEY_CONFIG)
            .and_then(|v| decode_config(&v))
            .unwrap_or_else(clock::default_config)
    }

    /// Replace the configuration.
    pub fn set_config(&mut self, cfg: &BillingConfig) {
        self.host.set(KEY_CONFIG, &encode_config(cfg));
    }

    /// An account.
    pub fn account(&self, id: CustomerId) -> Option<Account> {
        read_account(&*self.host, id)
    }

    /// Store an account.
    pub fn put_account(&mut self, id: CustomerId, account: &Account) {
        self.host.set(&account_key(id), &account.encode());
    }

    /// A tariff.
    pub fn tariff(&self, id: u16) -> Option<Tariff> {
        self.host
            .get(&tariff_key(id))
            .and_then(|v| decode_tariff(&v))
    }

    /// Store a tariff.
    pub fn put_tariff(&mut self, tariff: &Tariff) {
        self.host
            .set(&tariff_key(tariff.id), &encode_tariff(tariff));
    }

    /// An account's token secrets and count state.
    pub fn token_account(&self, id: CustomerId) -> Option<TokenAccount> {
        self.host
            .get(&token_account_key(id))
            .and_then(|v| TokenAccount::decode(&v))
    }

    /// Store an account's token secrets and count state.
    pub fn put_token_account(&mut self, id: CustomerId, t: &TokenAccount) {
        self.host.set(&token_account_key(id), &t.encode());
    }

    /// Whether a token has been accepted before.
    pub fn token_used(&self, token_id: u64) -> bool {
        self.host.get(&token_key(token_id)).is_some()
    }

    /// Record an accepted token.
    pub fn use_token(&mut self, token_id: u64, used: &UsedToken) {
        self.host.set(&token_key(token_id), &used.encode());
    }

    /// A sorted id list (absent reads as empty).
    pub fn ids(&self, key: &[u8]) -> Vec<u32> {
        self.host
            .get(key)
            .map(|v| decode_ids(&v))
            .unwrap_or_default()
    }

    /// Store a sorted id list, removing the key when empty.
    pub fn put_ids(&mut self, key: &[u8], ids: &[u32]) {
        if ids.is_empty() {
            self.host.remove(key);
        } else {
            self.host.set(key, &encode_ids(ids));
        }
    }

    /// Add an id to a sorted list; false when the list is full ([`ACCOUNTS_MAX`]).
    pub fn insert_id(&mut self, key: &[u8], id: CustomerId) -> bool {
        let mut ids = self.ids(key);
        match ids.binary_search(&id.0) {
            Ok(_) => true,
            Err(_) if ids.len() >= ACCOUNTS_MAX => false,
            Err(at) => {
                ids.insert(at, id.0);
                self.put_ids(key, &ids);
                true
            }
        }
    }

    /// The timer bookkeeping.
    pub fn timers(&self) -> Timers {
        self.host
            .get(KEY_TIMERS)
            .and_then(|v| Timers::decode(&v))
            .unwrap_or_default()
    }

    /// Store the timer bookkeeping.
    pub fn put_timers(&mut self, timers: &Timers) {
        self.host.set(KEY_TIMERS, &timers.encode());
    }
}

/// Read an account without building a [`Store`] (for operators' queries and tests).
pub fn read_account(host: &dyn Host, id: CustomerId) -> Option<Account> {
    host.get(&account_key(id)).and_then(|v| Account::decode(&v))
}

/// Read a used token's record (for audits and tests).
pub fn read_token(host: &dyn Host, token_id: u64) -> Option<UsedToken> {
    host.get(&token_key(token_id))
        .and_then(|v| UsedToken::decode(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let a = Account {
            node: NodeId(7),
            mode: AccountMode::Postpaid,
            tariff: 3,
            connection_w: 250,
            credit_mpaisa: -12_345,
            last_read_wh: Some(u64::MAX),
            period: 2,
            period_used_wh: 9,
            fee_paid_day: 400,
            connected: false,
            last_read_at_ms: Some(9),
            allowance_mwh: -1_000,
            backwards: true,
        };
        assert_eq!(Account::decode(&a.encode()), Some(a.clone()));
        let t = Timers {
            daily_at_ms: Some(5),
            daily_cursor: Some(CustomerId(9)),
            friendly_end_at_ms: None,
        };
        assert_eq!(Timers::decode(&t.encode()), Some(t));
        let u = UsedToken {
            customer: CustomerId(1),
            at_ms: 2,
        };
        assert_eq!(UsedToken::decode(&u.encode()), Some(u));
        assert_eq!(
            decode_ids(&encode_ids(&[1, 2, u32::MAX])),
            alloc::vec![1, 2, u32::MAX]
        );
        let c = BillingConfig {
            utc_offset_min: -600,
            friendly_start_min: 1,
            friendly_end_min: 2,
            disconnect_at_mpaisa: -5,
            plausible_margin_pct: 250,
        };
        assert_eq!(decode_config(&encode_config(&c)), Some(c));
        for kind in [
            TariffKind::Flat {
                bands: alloc::vec![FlatBand {
                    up_to_w: 100,
                    daily_fee_paisa: 5
                }],
            },
            TariffKind::PerKwh {
                rate_paisa_per_kwh: 1_234,
            },
            TariffKind::Tiered {
                blocks: alloc::vec![
                    TierBlock {
                        up_to_wh: 10,
                        rate_paisa_per_kwh: 0
                    },
                    TierBlock {
                        up_to_wh: u64::MAX,
                        rate_paisa_per_kwh: u32::MAX
                    },
                ],
                period_charge_paisa: 7,
            },
        ] {
            let t = Tariff {
                id: 9,
                version: 3,
                kind,
            };
            assert_eq!(decode_tariff(&encode_tariff(&t)), Some(t));
        }
    }

    #[test]
    fn corrupt_records_read_as_absent() {
        let bytes = Account {
            node: NodeId(1),
            mode: AccountMode::Prepaid,
            tariff: 1,
            connection_w: 1,
            credit_mpaisa: 1,
            last_read_wh: None,
            period: 0,
            period_used_wh: 0,
            fee_paid_day: 0,
            connected: true,
            last_read_at_ms: None,
            allowance_mwh: 0,
            backwards: false,
        }
        .encode();
        assert!(
            Account::decode(&bytes[..bytes.len() - 1]).is_none(),
            "truncated"
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Account::decode(&longer).is_none(), "trailing bytes");
        let mut version = bytes.clone();
        version[0] = 99;
        assert!(Account::decode(&version).is_none(), "unknown version");
        let mut mode = bytes;
        mode[9] = 7;
        assert!(Account::decode(&mode).is_none(), "bad mode");
        assert!(Account::decode(&[]).is_none());
    }
}
