//! Message types shared by the host and the actors: what an actor receives ([`Delivery`],
//! [`Input`]) and what it emits ([`Output`]).
//!
//! Units are integers and sit last in names (`frequency_mhz`, `load_w`, `energy_wh`,
//! `amount_mpaisa`): no floats cross this boundary, so native and wasm runs agree bit for bit.
//! Money is in milli-paisa (1 NPR = 100 paisa = 100,000 mpaisa) so a per-kWh rate in paisa
//! applied to watt-hours is exact: `energy_wh * rate_paisa_per_kwh` mpaisa.

use alloc::string::String;
use alloc::vec::Vec;

use bincode::{Decode, Encode};

/// A controller in the Raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct NodeId(pub u64);

/// A customer (household or business) account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct CustomerId(pub u32);

/// A relay or contactor, numbered per node by the node's hardware configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub enum RelayId {
    /// A feeder contactor (sheds a whole feeder).
    Feeder(u16),
    /// A customer's disconnect relay.
    Customer(CustomerId),
    /// A ballast (dump load) stage.
    Ballast(u8),
}

/// Why a relay moved. Recorded with every relay action (field loop, ledger, outbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub enum RelayReason {
    /// Local protection on the board (under/over-frequency, voltage); never from an actor.
    Protection,
    /// The balancing actor shed or restored a feeder.
    Balancing,
    /// Prepaid credit ran out.
    ZeroCredit,
    /// Credit restored after a top-up.
    CreditRestored,
    /// An operator command.
    Operator,
    /// The demand-response actor started or stopped a deferrable load.
    DemandResponse,
}

/// The context of one delivery, taken from the committed log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct Context {
    /// Raft log index of the entry that carries this input.
    pub log_index: u64,
    /// Log time: the leader-assigned timestamp of the entry (Unix ms), made monotonic by the
    /// host. Actors use this, never a clock.
    pub log_time_ms: u64,
    /// The node that proposed the entry.
    pub origin: NodeId,
}

/// One input to one actor.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Delivery {
    /// Where and when.
    pub ctx: Context,
    /// What.
    pub input: Input,
}

/// Everything an actor can be told.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Input {
    /// Does nothing; used by tests and health checks.
    Noop,
    /// Periodic grid telemetry from one node (to `balancing`).
    Telemetry(Telemetry),
    /// Set the balancing configuration (to `balancing`).
    SetBalancingConfig(BalancingConfig),
    /// A cumulative meter reading (to `billing`).
    MeterRead(MeterRead),
    /// An operator's credit by amount, for migration and corrections (to `billing`); recorded
    /// as [`LedgerKind::OperatorCredit`]. Customers' credit comes as [`Input::TokenTopUp`].
    TopUp(TopUp),
    /// Add or change a tariff (to `billing`).
    SetTariff(Tariff),
    /// Add or change a customer account (to `billing`).
    UpsertCustomer(CustomerSpec),
    /// Set billing-wide settings such as friendly hours (to `billing`).
    SetBillingConfig(BillingConfig),
    /// A durable timer the actor asked for has come due.
    Tick(Tick),
    /// An OpenPAYGO Token typed in for a customer (to `billing`).
    TokenTopUp(TokenTopUp),
    /// An operator replaced a customer's meter (to `billing`).
    MeterReplace(MeterReplace),
    /// A deferrable load asks to run when spare generation covers it (to `demand-response`,
    /// an actor shipped by deployment).
    DeferrableLoad(LoadRequest),
}

/// A deferrable load's request to run (the rice mill, the welding shop).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct LoadRequest {
    /// The load's id (one request per load at a time).
    pub load: u16,
    /// The node whose relay switches it.
    pub node: NodeId,
    /// Its contactor: a feeder relay of its own on that node.
    pub feeder: u16,
    /// Its power when running, W.
    pub load_w: u32,
    /// How long it runs once started, ms.
    pub run_ms: u64,
}

/// Telemetry from one node, as sampled by its field loop.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Telemetry {
    /// Reporting node.
    pub node: NodeId,
    /// Grid frequency in millihertz (50 Hz = 50_000).
    pub frequency_mhz: u32,
    /// Line voltage in decivolts (230 V = 2_300).
    pub voltage_dv: u32,
    /// Generator output at this node's plant, W (0 for a feeder-only node).
    pub generation_w: u32,
    /// Power now going to this node's ballast (dump) loads, W.
    pub ballast_w: u32,
    /// Ballast this node can absorb at most, W.
    pub ballast_capacity_w: u32,
    /// Per-feeder load and contactor state.
    pub feeders: Vec<FeederLoad>,
}

/// One feeder's load as measured by the node that owns its contactor.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct FeederLoad {
    /// Feeder number on the reporting node.
    pub feeder: u16,
    /// Active power on the feeder, W (0 when open).
    pub load_w: u32,
    /// Whether the feeder contactor is closed (supplying).
    pub closed: bool,
}

/// Balancing settings, committed through Raft like any other input.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BalancingConfig {
    /// Nominal frequency, mHz (50_000).
    pub nominal_mhz: u32,
    /// Below this (with no ballast left to give) the lowest-priority closed feeder is shed, mHz.
    pub shed_below_mhz: u32,
    /// A shed feeder is restored only when frequency is at least this, mHz.
    pub restore_above_mhz: u32,
    /// Headroom kept in ballast when restoring a feeder, W.
    pub restore_margin_w: u32,
    /// Minimum log time between two restores, ms (avoid hunting).
    pub restore_interval_ms: u64,
    /// Feeders by priority: the first is shed last. Feeders not listed are never shed.
    pub priorities: Vec<FeederRef>,
}

/// A feeder anywhere in the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct FeederRef {
    /// Node that owns the contactor.
    pub node: NodeId,
    /// Feeder number on that node.
    pub feeder: u16,
}

/// A cumulative energy register reading of one customer's meter.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MeterRead {
    /// Whose meter.
    pub customer: CustomerId,
    /// The meter's cumulative register, Wh (monotonic on a healthy meter).
    pub total_wh: u64,
    /// When the node read it (node's clock, Unix ms); informational, never used for billing time.
    pub read_at_ms: u64,
}

/// An operator's credit by amount (migration from another system, corrections): no token
/// proves it, so it travels only on the admin API's operator-credit route.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct TopUp {
    /// Credited account.
    pub customer: CustomerId,
    /// The operator's reference for this credit, accepted once, ever (a retried request is
    /// refused, not credited twice).
    pub token_id: u64,
    /// Credit added, mpaisa.
    pub amount_mpaisa: i64,
}

/// An OpenPAYGO Token (a 9-digit code) typed in for a customer's account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct TokenTopUp {
    /// Account the code is for (its key and starting code decode it).
    pub customer: CustomerId,
    /// The code as typed, 0..=999,999,999.
    pub code: u32,
}

/// A customer's meter was replaced (or its register reset): bill the old meter up to its final
/// read, then take the new meter's register as the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct MeterReplace {
    /// Whose meter.
    pub customer: CustomerId,
    /// The new meter's register when installed, Wh: the new baseline.
    pub new_read_wh: u64,
    /// The old meter's last register, Wh, when someone read it; `None` bills nothing beyond the
    /// last accepted read.
    pub old_final_wh: Option<u64>,
}

/// An account's OpenPAYGO Token secrets, set by the office. `Debug` shows neither secret.
#[derive(Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct TokenKey {
    /// The 16-byte SipHash key shared with the office's token generator.
    pub secret_key: [u8; 16],
    /// The starting code (the token at count 0), 0..=999,999,999.
    pub starting_code: u32,
    /// What one unit of a token's value is worth, mpaisa (the office's price of a unit).
    pub unit_mpaisa: i64,
}

impl core::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TokenKey")
            .field("secret_key", &"<redacted>")
            .field("starting_code", &"<redacted>")
            .field("unit_mpaisa", &self.unit_mpaisa)
            .finish()
    }
}

/// A tariff: how energy and connections are charged.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Tariff {
    /// Tariff id customers refer to.
    pub id: u16,
    /// Version, bumped by operators on every change (reported in ledger records).
    pub version: u32,
    /// How it charges.
    pub kind: TariffKind,
}

/// The tariff shapes seen in Nepal's micro-hydro grids.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum TariffKind {
    /// Flat fee by connection size ("cut-out" tariff): charged once per log day.
    Flat {
        /// Bands by connection size: the first band with `up_to_w >= connection_w` applies.
        bands: Vec<FlatBand>,
    },
    /// One rate per kWh.
    PerKwh {
        /// paisa per kWh.
        rate_paisa_per_kwh: u32,
    },
    /// Increasing blocks per billing period (30 log days), e.g. first 10 kWh free.
    Tiered {
        /// Blocks in order; the last block's `up_to_wh` is ignored (unbounded).
        blocks: Vec<TierBlock>,
        /// Demand charge per billing period, paisa (charged at the period's first read).
        period_charge_paisa: u32,
    },
}

/// One band of a flat tariff.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct FlatBand {
    /// Connection sizes up to this, W.
    pub up_to_w: u32,
    /// Fee per log day, paisa.
    pub daily_fee_paisa: u32,
}

/// One block of a tiered tariff.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct TierBlock {
    /// Energy in the period up to this, Wh.
    pub up_to_wh: u64,
    /// paisa per kWh within the block.
    pub rate_paisa_per_kwh: u32,
}

/// How an account pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum AccountMode {
    /// Pays ahead; disconnected at zero credit outside friendly hours.
    Prepaid,
    /// Billed after use; never disconnected by billing.
    Postpaid,
}

/// A customer account as an operator defines it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct CustomerSpec {
    /// Account id (also the meter's id).
    pub id: CustomerId,
    /// Node whose relay board has this customer's disconnect relay.
    pub node: NodeId,
    /// Prepaid or postpaid.
    pub mode: AccountMode,
    /// Tariff id.
    pub tariff: u16,
    /// Connection size, W (selects the flat-tariff band).
    pub connection_w: u32,
    /// Opening credit for a new account, mpaisa (ignored when the account exists).
    pub opening_credit_mpaisa: i64,
    /// OpenPAYGO Token secrets; `None` leaves the account's as they are (none for a new one).
    /// A different key or starting code starts a new token count.
    pub token: Option<TokenKey>,
}

/// The plausibility margin billing uses until an operator sets one, percent: a read may bill
/// three times what the connection's size would draw since the last read. A household averages
/// 85-100 W (AEPC's micro-hydro programme) under a cut-out of a few hundred W; the margin
/// covers a register that runs ahead of its reads, while a stuck or corrupted one is caught.
pub const PLAUSIBLE_MARGIN_PCT_DEFAULT: u32 = 300;

/// The UTC offset a grid keeps until an operator commits a `BillingConfig`, minutes: Nepal
/// Standard Time, UTC+5:45 (billing and the host's energy hours both start from it).
pub const UTC_OFFSET_MIN_DEFAULT: i32 = 345;

/// Billing-wide settings.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BillingConfig {
    /// Local time offset from UTC, minutes (Nepal: +345).
    pub utc_offset_min: i32,
    /// Friendly hours: no disconnection from this local minute of the day (inclusive)...
    pub friendly_start_min: u16,
    /// ...to this one (exclusive); the window may wrap midnight. Equal values: none.
    pub friendly_end_min: u16,
    /// A prepaid account is disconnected when its credit falls to this or below, mpaisa.
    pub disconnect_at_mpaisa: i64,
    /// A read may bill at most this percentage of what the connection could draw in the log
    /// time since the last read (100..=10,000); the rest is held for review.
    pub plausible_margin_pct: u32,
}

/// A durable timer coming due, proposed by the leader once log time has reached `due_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct Tick {
    /// When it was due (log time, ms).
    pub due_ms: u64,
    /// The actor's own tag for it.
    pub tag: u32,
}

/// Everything that goes into the outbox: what actors emit, and the host's hourly energy
/// aggregates ([`Output::EnergyHour`], which an actor may not emit).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Output {
    /// Open or close a relay on a node (executed by that node's field loop).
    Relay(RelayCommand),
    /// Set a node's ballast target, W.
    BallastSetpoint {
        /// Node whose ballast controller obeys.
        node: NodeId,
        /// Target ballast power, W.
        setpoint_w: u32,
    },
    /// A billing ledger record (goes to the outbox for the data center).
    Ledger(LedgerRecord),
    /// An alarm for operators.
    Alarm(Alarm),
    /// Wake me at this log time with this tag.
    Timer {
        /// Log time, ms.
        at_ms: u64,
        /// Returned in the [`Tick`].
        tag: u32,
    },
    /// One UTC hour's energy of a customer, feeder or plant: what hosts wrote before local
    /// hours (still decoded: an outbox or a central may hold them). Never written now; an
    /// actor emitting one traps.
    EnergyHour(EnergyHour),
    /// One local hour's energy of a customer, feeder or plant. Written by the host when
    /// committed log time leaves the hour (never by an actor: an actor emitting one traps).
    /// A variant of its own, after the others, so records written before it still decode.
    EnergyLocal {
        /// The hour: its start is a local hour's start under `utc_offset_min` (or the time
        /// the grid's offset changed: then the hour is shorter, never longer).
        hour: EnergyHour,
        /// The grid's UTC offset when the hour opened, minutes (Nepal: +345). The local day
        /// of the hour is `(hour_start_ms + utc_offset_min * 60,000) / 86,400,000`.
        utc_offset_min: i32,
    },
    /// What a grid's outbox records of one subject and local day added up to, written by the
    /// host when no central acknowledged them within the grid's detail window (the node's
    /// `state::fold`): the detail records are deleted and this stands for them. Additive: one
    /// subject's day may be folded in several passes, each its own record; the office sums
    /// them. Never written by an actor (an actor emitting one traps). A variant of its own,
    /// after the others, so records written before it still decode. In every build, host or
    /// actor: the variants after it must have the same index in both.
    Folded(FoldedDay),
    /// A tariff version billing accepted, with its whole schedule (billing emits one for each
    /// `SetTariff` it takes): with the ledger's reads, what a bill is rebuilt from.
    TariffSet(Tariff),
    /// The billing-wide settings billing accepted (for each `SetBillingConfig` it takes):
    /// local days and periods, friendly hours and the disconnect threshold of the charges
    /// after it. Before the first, billing uses its documented defaults.
    BillingConfigSet(BillingConfig),
}

/// A local day's totals of the outbox records folded in one pass (see [`Output::Folded`]).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct FoldedDay {
    /// Start of the local day, log time, Unix ms: a local midnight under `utc_offset_min`.
    pub day_start_ms: u64,
    /// The UTC offset the day is local to, minutes: an energy record's own, else the grid's
    /// offset when the fold ran.
    pub utc_offset_min: i32,
    /// Whose records.
    pub subject: FoldSubject,
    /// The first and one past the last outbox sequence of the pass that folded them: the
    /// central holds no detail record of this subject in the range that was also folded,
    /// unless it was in flight when the fold ran (the node folds only after an hour in which
    /// no acknowledgement was committed).
    pub first_seq: u64,
    /// See `first_seq`.
    pub end_seq: u64,
    /// The sums.
    pub totals: FoldTotals,
}

/// Whose records a [`FoldedDay`] sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub enum FoldSubject {
    /// Records of no customer, feeder or plant: alarms, relay commands of feeders and
    /// ballast, ballast set-points (counted only).
    Grid,
    /// A customer's ledger lines, energy hours and relay commands.
    Customer(CustomerId),
    /// A feeder's energy hours.
    Feeder {
        /// The node that owns the feeder.
        node: NodeId,
        /// Feeder number on that node.
        feeder: u16,
    },
    /// A plant's energy hours.
    Plant(NodeId),
}

/// Sums of folded records; every field is a plain sum of the records it stands for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Encode, Decode)]
pub struct FoldTotals {
    /// Records folded.
    pub records: u32,
    /// Energy of the folded energy hours, Wh.
    pub energy_wh: u64,
    /// Ledger lines folded.
    pub ledger_lines: u32,
    /// `Charge` lines: energy billed, Wh.
    pub charged_wh: u64,
    /// `Charge` lines: amount charged, mpaisa.
    pub charged_mpaisa: i64,
    /// `Fee` lines, mpaisa.
    pub fees_mpaisa: i64,
    /// Credit added: `TopUp`, `OperatorCredit` and `TokenCredit` lines, mpaisa.
    pub credited_mpaisa: i64,
    /// `Held` lines: energy held for review, Wh.
    pub held_wh: u64,
    /// Alarms folded.
    pub alarms: u32,
    /// Relay commands folded.
    pub relay_commands: u32,
}

/// One hour's energy of one subject, closed by committed log time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct EnergyHour {
    /// Start of the hour, log time, Unix ms (in `Output::EnergyHour`, a multiple of
    /// 3,600,000: UTC hours; in `Output::EnergyLocal`, a local hour's start).
    pub hour_start_ms: u64,
    /// Whose energy.
    pub subject: EnergySubject,
    /// Energy in the hour, Wh.
    pub energy_wh: u64,
}

/// What an [`EnergyHour`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub enum EnergySubject {
    /// Energy billed to a customer (the sum of its ledger charges).
    Customer(CustomerId),
    /// Energy through a feeder, from its node's telemetry.
    Feeder {
        /// The node that owns the feeder.
        node: NodeId,
        /// Feeder number on that node.
        feeder: u16,
    },
    /// Energy generated at a node's plant, from its telemetry.
    Plant(NodeId),
}

/// A relay command addressed to the node that owns the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct RelayCommand {
    /// Owning node.
    pub node: NodeId,
    /// Which relay.
    pub relay: RelayId,
    /// true = close (supply), false = open (cut).
    pub closed: bool,
    /// Why.
    pub reason: RelayReason,
}

/// One line of a customer's ledger.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct LedgerRecord {
    /// Account.
    pub customer: CustomerId,
    /// Log time of the event, ms.
    pub at_ms: u64,
    /// What happened.
    pub kind: LedgerKind,
    /// Credit after the event, mpaisa (negative is debt).
    pub balance_after_mpaisa: i64,
    /// Tariff version in force.
    pub tariff_version: u32,
}

/// What a ledger line records.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum LedgerKind {
    /// Energy charged.
    Charge {
        /// Energy billed by this record, Wh.
        energy_wh: u64,
        /// Amount charged, mpaisa.
        amount_mpaisa: i64,
        /// Charged during friendly hours (may create debt).
        friendly: bool,
    },
    /// A fixed fee (flat tariff day, tiered period charge).
    Fee {
        /// Amount charged, mpaisa.
        amount_mpaisa: i64,
    },
    /// A top-up accepted.
    TopUp {
        /// Token id.
        token_id: u64,
        /// Credit added, mpaisa.
        amount_mpaisa: i64,
    },
    /// The supply was cut.
    Disconnect {
        /// Why.
        reason: RelayReason,
    },
    /// The supply was restored.
    Reconnect {
        /// Why.
        reason: RelayReason,
    },
    /// An operator's credit by amount (migration, corrections), not a token.
    OperatorCredit {
        /// The operator's reference (accepted once, ever).
        ref_id: u64,
        /// Credit added, mpaisa.
        amount_mpaisa: i64,
    },
    /// An OpenPAYGO Token accepted.
    TokenCredit {
        /// The code as typed.
        code: u32,
        /// The token's count.
        count: u32,
        /// The token's value, in units of the account's `unit_mpaisa`.
        value: u32,
        /// A set-credit token (the balance became the value) rather than an add-credit one.
        set: bool,
        /// The change of balance, mpaisa (negative when a set-credit token lowered it).
        amount_mpaisa: i64,
    },
    /// Energy a read reported beyond what the connection could draw: not charged, held for
    /// an operator's review.
    Held {
        /// Energy held, Wh.
        energy_wh: u64,
        /// Energy the read was allowed to bill, Wh (billed by the `Charge` beside it).
        allowed_wh: u64,
    },
    /// A meter replaced: the old one billed to `old_final_wh`, the new one's baseline set.
    MeterReplaced {
        /// The old meter's last register billed, Wh (the last accepted read when none was given).
        old_final_wh: u64,
        /// The new meter's baseline, Wh.
        new_read_wh: u64,
    },
    // The variants below carry what an auditor rebuilds a bill from (the meter's registers,
    // the account's set-up). After the others, so lines written before them still decode.
    /// Energy charged for a read, with the registers it was computed from: `energy_wh` is
    /// `read.to_wh - read.from_wh` less what a `HeldRead` beside it held. Written instead of
    /// [`LedgerKind::Charge`] by billing since reads are exported ([`LedgerKind::charge`]
    /// reads either).
    ChargeRead {
        /// Energy billed by this record, Wh.
        energy_wh: u64,
        /// Amount charged, mpaisa.
        amount_mpaisa: i64,
        /// Charged during friendly hours (may create debt).
        friendly: bool,
        /// The read it bills.
        read: MeterSpan,
    },
    /// [`LedgerKind::Held`] with the read it comes from (written instead of it).
    HeldRead {
        /// Energy held, Wh.
        energy_wh: u64,
        /// Energy the read was allowed to bill, Wh (billed by the `ChargeRead` beside it).
        allowed_wh: u64,
        /// The read.
        read: MeterSpan,
    },
    /// An account's first read: its baseline, billed nothing.
    Baseline {
        /// The register, Wh.
        read_wh: u64,
        /// When the node read it (node's clock, Unix ms).
        read_at_ms: u64,
    },
    /// A read refused because its register is below the baseline (not monotonic): billed
    /// nothing, the baseline unchanged. `read.from_wh` is the baseline, `read.to_wh` the read.
    ReadRejected {
        /// The baseline and the refused register.
        read: MeterSpan,
    },
    /// An account opened or changed by an operator: its set-up from this line on. When opened,
    /// `balance_after_mpaisa` is the opening credit.
    Account(AccountSetup),
}

/// A meter read as billing took it: from the baseline before it to its register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct MeterSpan {
    /// The register billing billed up to before this read (the baseline), Wh.
    pub from_wh: u64,
    /// This read's register, Wh (for an old meter's final register entered with a
    /// replacement, the figure entered).
    pub to_wh: u64,
    /// When the node read it (node's clock, Unix ms: `MeterRead::read_at_ms`); for a figure
    /// entered with a replacement, the entry's log time.
    pub read_at_ms: u64,
}

/// An account's set-up as billing holds it (no token secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct AccountSetup {
    /// A new account (else a change to an existing one).
    pub opened: bool,
    /// Prepaid or postpaid.
    pub mode: AccountMode,
    /// Tariff id.
    pub tariff: u16,
    /// Connection size, W.
    pub connection_w: u32,
    /// What one unit of an OpenPAYGO token is worth, mpaisa; `None` without a token key.
    pub token_unit_mpaisa: Option<i64>,
}

impl LedgerKind {
    /// A charge's energy billed (Wh), amount (mpaisa) and friendly flag, in either form
    /// ([`LedgerKind::Charge`], [`LedgerKind::ChargeRead`]).
    pub fn charge(&self) -> Option<(u64, i64, bool)> {
        match *self {
            LedgerKind::Charge {
                energy_wh,
                amount_mpaisa,
                friendly,
            }
            | LedgerKind::ChargeRead {
                energy_wh,
                amount_mpaisa,
                friendly,
                ..
            } => Some((energy_wh, amount_mpaisa, friendly)),
            _ => None,
        }
    }

    /// A held line's energy held and allowed (Wh), in either form ([`LedgerKind::Held`],
    /// [`LedgerKind::HeldRead`]).
    pub fn held(&self) -> Option<(u64, u64)> {
        match *self {
            LedgerKind::Held {
                energy_wh,
                allowed_wh,
            }
            | LedgerKind::HeldRead {
                energy_wh,
                allowed_wh,
                ..
            } => Some((energy_wh, allowed_wh)),
            _ => None,
        }
    }

    /// The meter read a line carries, if any (a charge, a held read, a refused read; a
    /// baseline as a span from its own register).
    pub fn read(&self) -> Option<MeterSpan> {
        match *self {
            LedgerKind::ChargeRead { read, .. }
            | LedgerKind::HeldRead { read, .. }
            | LedgerKind::ReadRejected { read } => Some(read),
            LedgerKind::Baseline {
                read_wh,
                read_at_ms,
            } => Some(MeterSpan {
                from_wh: read_wh,
                to_wh: read_wh,
                read_at_ms,
            }),
            _ => None,
        }
    }
}

/// An alarm for operators.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Alarm {
    /// What kind.
    pub code: AlarmCode,
    /// Node concerned, if any.
    pub node: Option<NodeId>,
    /// Subject (customer id, feeder number...) as the code defines.
    pub subject: u32,
    /// A value (the offending reading...) as the code defines.
    pub value: i64,
    /// Short human text.
    pub text: String,
}

/// Alarm kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub enum AlarmCode {
    /// A meter register went backwards: the read was rejected and not billed.
    MeterNotMonotonic,
    /// A top-up token was presented twice, or is older than the count window: rejected.
    TokenReplayed,
    /// Input for an unknown customer or tariff.
    UnknownAccount,
    /// Frequency outside the statutory band in telemetry.
    FrequencyOutOfBand,
    /// Balancing shed a feeder.
    FeederShed,
    /// Balancing has no feeder left to shed and generation is short.
    CannotBalance,
    /// The leader's clock disagreed with its members' by more than the node's bound
    /// (`ghatta::state::logtime`): log time was bounded instead of following it. Raised by the
    /// node's state machine, not by an actor; `value` is the leader's offset in ms (positive:
    /// fast) and `node` the leader.
    ClockSkew,
    /// A token was refused: not a valid code for the account (value: the code).
    TokenInvalid,
    /// A read reported more energy than the connection could draw; the excess is held, not
    /// charged (value: Wh held).
    ImplausibleRead,
    /// An actor module was deployed, cut over, rolled back or refused (`ghatta actor`).
    /// Raised by the node's state machine, not by an actor; `subject` is the actor's id,
    /// `value` the version, the text says what happened and, when refused, why.
    ActorDeploy,
    /// Outbox detail older than the node's window, never acknowledged by a central, was folded
    /// into daily totals (`Output::Folded`). Raised by the node's state machine, not by an
    /// actor; `value` is the number of records folded, `subject` the local day (days since
    /// 1970 in the grid's local time). Only with the `host` feature, as `Output::Folded`.
    #[cfg(feature = "host")]
    OutboxFolded,
    /// A board's own alarm rule raised (frequency, voltage, shedding, a silent sensor or
    /// meter, a stalled journal...), reported by that board through the log. Raised by the
    /// node's state machine, not by an actor; `node` is the board, `value` the gauge in the
    /// rule's unit, the text names the rule, the value and the level. Only with the `host`
    /// feature, so the actors' modules do not change with it.
    #[cfg(feature = "host")]
    BoardRaised,
    /// A board's alarm rule cleared (as [`AlarmCode::BoardRaised`]).
    #[cfg(feature = "host")]
    BoardCleared,
}

/// Why an actor refused an input (the non-zero status codes of `ghatta_handle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
#[repr(i32)]
pub enum RejectReason {
    /// The input is not for this actor.
    NotForMe = 1,
    /// Unknown customer, tariff or feeder.
    Unknown = 2,
    /// Token already used.
    Replayed = 3,
    /// Meter register went backwards.
    NotMonotonic = 4,
    /// The input is malformed or out of range.
    Invalid = 5,
    /// The input is older than, or the same as, what is in force (a tariff whose version is
    /// not above the current one's).
    Stale = 6,
}
