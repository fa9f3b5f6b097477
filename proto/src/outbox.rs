//! The records a grid commits for the outside world: which actor produced an output
//! ([`ActorKind`]), one outbox record ([`OutboxRecord`]) and the WAN stream that carries it
//! ([`Stream`]). The node's state machine writes them, its uploader sends them and the central
//! stores them; they live here so none of those three imports another.

use ghatta_actor_sdk::{self as sdk, codec as sdk_codec};
use serde::{Deserialize, Serialize};

/// Which actor. The byte value prefixes the actor's keys in the shared state table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ActorKind {
    /// Balancing: telemetry in, ballast set-points and feeder shed/restore out.
    Balancing = 1,
    /// Billing: meter reads, top-ups, tariffs in; ledger records and disconnects out.
    Billing = 2,
    /// Demand response: deferrable loads started when spare generation covers them. Shipped
    /// by deployment, never compiled into the node.
    DemandResponse = 3,
}

impl ActorKind {
    /// Every actor, in id order.
    pub const ALL: [ActorKind; 3] = [
        ActorKind::Balancing,
        ActorKind::Billing,
        ActorKind::DemandResponse,
    ];

    /// The key prefix of this actor's state.
    pub fn prefix(self) -> u8 {
        self as u8
    }

    /// The actor that owns an input kind, or None for inputs no actor takes.
    pub fn for_input(input: &ghatta_actor_sdk::Input) -> Option<ActorKind> {
        use ghatta_actor_sdk::Input::*;
        match input {
            Telemetry(_) | SetBalancingConfig(_) => Some(ActorKind::Balancing),
            MeterRead(_) | TopUp(_) | TokenTopUp(_) | MeterReplace(_) | SetTariff(_)
            | UpsertCustomer(_) | SetBillingConfig(_) => Some(ActorKind::Billing),
            DeferrableLoad(_) => Some(ActorKind::DemandResponse),
            Noop | Tick(_) => None,
        }
    }

    /// Lower-case name, as in config and status output.
    pub fn name(self) -> &'static str {
        match self {
            ActorKind::Balancing => "balancing",
            ActorKind::Billing => "billing",
            ActorKind::DemandResponse => "demand-response",
        }
    }

    /// The actor of this name (as [`ActorKind::name`] spells it).
    pub fn by_name(name: &str) -> Option<ActorKind> {
        ActorKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// From the state-key prefix byte.
    pub fn from_prefix(b: u8) -> Option<ActorKind> {
        match b {
            1 => Some(ActorKind::Balancing),
            2 => Some(ActorKind::Billing),
            3 => Some(ActorKind::DemandResponse),
            _ => None,
        }
    }
}

/// One record in the outbox: an actor output with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRecord {
    /// Log index of the entry that produced it.
    pub index: u64,
    /// Log time of that entry.
    pub time_ms: u64,
    /// Producing actor.
    pub actor: ActorKind,
    /// bincode `ghatta_actor_sdk::Output`.
    pub output: Vec<u8>,
}

/// A WAN stream: which outbox records it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Stream {
    /// Billing ledger records (charges, fees, top-ups, disconnects, ...).
    Ledger = 0,
    /// Alarms and relay commands (with their reasons).
    Events = 1,
    /// Energy per local hour per customer, feeder and plant (`state::energy`).
    Energy = 2,
}

impl Stream {
    /// Every stream.
    pub const ALL: [Stream; 3] = [Stream::Ledger, Stream::Events, Stream::Energy];

    /// The stream's number on the wire and in `Body::OutboxAck`.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The stream with this number.
    pub fn from_id(id: u32) -> Option<Stream> {
        Stream::ALL.into_iter().find(|s| s.id() == id)
    }

    /// Whether an outbox record belongs to this stream (decided from the committed output
    /// alone, so every replica agrees).
    pub fn carries(self, rec: &OutboxRecord) -> bool {
        match sdk_codec::decode::<sdk::Output>(&rec.output) {
            // Billing's set-up travels with the ledger it bills.
            Some(
                sdk::Output::Ledger(_)
                | sdk::Output::TariffSet(_)
                | sdk::Output::BillingConfigSet(_),
            ) => self == Stream::Ledger,
            Some(sdk::Output::Alarm(_)) | Some(sdk::Output::Relay(_)) => self == Stream::Events,
            Some(sdk::Output::EnergyHour(_) | sdk::Output::EnergyLocal { .. }) => {
                self == Stream::Energy
            }
            // A customer's folded day sums its ledger lines (and its energy hours): the
            // office's ledger totals need it. Every other folded day sums energy or events.
            Some(sdk::Output::Folded(f)) => match f.subject {
                sdk::FoldSubject::Customer(_) => self == Stream::Ledger,
                sdk::FoldSubject::Grid => self == Stream::Events,
                sdk::FoldSubject::Feeder { .. } | sdk::FoldSubject::Plant(_) => {
                    self == Stream::Energy
                }
            },
            _ => false,
        }
    }
}
