//! The balancing actor's state in the host key-value store: key layout and records.
//!
//! - `cfg`: the [`BalancingConfig`] (absent: [`default_config`]);
//! - `n/` + node id (u64 BE): that node's latest [`NodeReport`];
//! - `ix`: ids of the nodes that have reported, sorted (the host has no scan);
//! - `st`: [`Balance`], what balancing has done (shed feeders, last actions, alarm states, the
//!   set-points last sent).
//!
//! Values use a fixed little-endian layout led by a format version byte ([`FORMAT_V1`]) rather
//! than bincode, whose derived code is monomorphised per type and twice per encode; the module
//! must fit its 64 KiB budget. A value that does not parse reads as absent.

use alloc::vec::Vec;

use ghatta_actor_sdk::{BalancingConfig, FeederLoad, FeederRef, Host, NodeId};

/// Format version of the records; bump it (and read the old one) on any change.
pub const FORMAT_V1: u8 = 1;

/// Key of the configuration.
pub const KEY_CONFIG: &[u8] = b"cfg";
/// Key of the node list.
pub const KEY_INDEX: &[u8] = b"ix";
/// Key of the balancing record.
pub const KEY_BALANCE: &[u8] = b"st";

/// Most nodes one grid may have. The largest interconnected cluster we know of has six plants
/// (Kalung Khola, Baglung); 32 leaves room for feeder-only nodes while every delivery's walk
/// over all reports stays small.
pub const NODES_MAX: usize = 32;
/// Most feeders one node may report: relay boards have 4 to 16 contactor outputs.
pub const FEEDERS_PER_NODE_MAX: usize = 16;
/// Most feeders in the priority list (and so shed at once): 128 is about twenty per plant of the
/// largest cluster we know of, and keeps the config near 1.3 KiB and the shed record under
/// 3 KiB, far under the host's 16 KiB value limit.
pub const PRIORITIES_MAX: usize = 128;

/// Nominal grid frequency, mHz.
pub const NOMINAL_MHZ: u32 = 50_000;
/// Default shed threshold, mHz: 49.2 Hz, the first under-frequency step ABB recommends.
pub const DEFAULT_SHED_BELOW_MHZ: u32 = 49_200;
/// Default restore threshold, mHz: 49.8 Hz, 0.6 Hz of hysteresis above the shed threshold so
/// one restore cannot drag the grid straight back under it.
pub const DEFAULT_RESTORE_ABOVE_MHZ: u32 = 49_800;
/// Default ballast headroom kept when restoring, W: about 15 households at ~100 W each.
pub const DEFAULT_RESTORE_MARGIN_W: u32 = 1_500;
/// Default minimum time between restores, ms: long enough for the previous step to show in
/// several 1 Hz reports.
pub const DEFAULT_RESTORE_INTERVAL_MS: u64 = 30_000;

/// The configuration used until an operator commits one; with no priorities nothing is shed.
pub fn default_config() -> BalancingConfig {
    BalancingConfig {
        nominal_mhz: NOMINAL_MHZ,
        shed_below_mhz: DEFAULT_SHED_BELOW_MHZ,
        restore_above_mhz: DEFAULT_RESTORE_ABOVE_MHZ,
        restore_margin_w: DEFAULT_RESTORE_MARGIN_W,
        restore_interval_ms: DEFAULT_RESTORE_INTERVAL_MS,
        priorities: Vec::new(),
    }
}

/// Whether an operator's configuration is usable: hysteresis between the thresholds, a bounded
/// priority list without duplicates.
pub fn config_is_valid(cfg: &BalancingConfig) -> bool {
    let p = &cfg.priorities;
    cfg.shed_below_mhz < cfg.restore_above_mhz
        && p.len() <= PRIORITIES_MAX
        && p.iter()
            .enumerate()
            .all(|(i, f)| !p.iter().skip(i + 1).any(|g| g == f))
}

/// Key of a node's report.
pub fn node_key(node: NodeId) -> [u8; 10] {
    let b = node.0.to_be_bytes();
    [b'n', b'/', b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// A node's latest telemetry, as far as balancing needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// Log time of the report, ms.
    pub at_ms: u64,
    /// Frequency, mHz (0: not measured).
    pub frequency_mhz: u32,
    /// Generation, W.
    pub generation_w: u32,
    /// Ballast capacity, W.
    pub ballast_capacity_w: u32,
    /// Whether the node's frequency was last seen outside the statutory band.
    pub out_of_band: bool,
    /// Feeders.
    pub feeders: Vec<FeederLoad>,
}

/// A feeder balancing has shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shed {
    /// Which.
    pub feeder: FeederRef,
    /// Its load when shed, W: what restoring it will add back.
    pub load_w: u32,
    /// Log time of the shed, ms.
    pub at_ms: u64,
}

/// What balancing has done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Balance {
    /// Shed feeders, in shedding order.
    pub shed: Vec<Shed>,
    /// Log time of the last shed or restore, ms.
    pub last_action_ms: Option<u64>,
    /// Whether `CannotBalance` is raised.
    pub cannot_balance: bool,
    /// The set-point last sent to each ballast node, in node order.
    pub setpoints: Vec<(NodeId, u32)>,
}

/// Appends fixed-width little-endian fields.
struct Writer(Vec<u8>);

impl Writer {
    fn new() -> Self {
        Writer(alloc::vec![FORMAT_V1])
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes(&[v])
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
    /// A list length; callers bound their lists far below `u16::MAX`.
    fn len(&mut self, n: usize) -> &mut Self {
        self.u16(u16::try_from(n).unwrap_or(u16::MAX))
    }
}

/// Reads what [`Writer`] wrote; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
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
    /// A list of `limit` items at most, each read by `item`.
    fn list<T>(
        &mut self,
        limit: usize,
        mut item: impl FnMut(&mut Self) -> Option<T>,
    ) -> Option<Vec<T>> {
        let n = usize::from(self.u16()?);
        if n > limit {
            return None;
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(item(self)?);
        }
        Some(v)
    }
    fn done<T>(self, v: T) -> Option<T> {
        self.0.is_empty().then_some(v)
    }
}

/// The configuration's stored form.
pub fn encode_config(c: &BalancingConfig) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(c.nominal_mhz)
        .u32(c.shed_below_mhz)
        .u32(c.restore_above_mhz)
        .u32(c.restore_margin_w)
        .u64(c.restore_interval_ms)
        .len(c.priorities.len());
    for f in &c.priorities {
        w.u64(f.node.0).u16(f.feeder);
    }
    w.0
}

/// Parse the configuration's stored form.
pub fn decode_config(bytes: &[u8]) -> Option<BalancingConfig> {
    let mut r = Reader::new(bytes)?;
    let c = BalancingConfig {
        nominal_mhz: r.u32()?,
        shed_below_mhz: r.u32()?,
        restore_above_mhz: r.u32()?,
        restore_margin_w: r.u32()?,
        restore_interval_ms: r.u64()?,
        priorities: r.list(PRIORITIES_MAX, |r| {
            Some(FeederRef {
                node: NodeId(r.u64()?),
                feeder: r.u16()?,
            })
        })?,
    };
    r.done(c)
}

impl NodeReport {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.at_ms)
            .u32(self.frequency_mhz)
            .u32(self.generation_w)
            .u32(self.ballast_capacity_w)
            .u8(u8::from(self.out_of_band))
            .len(self.feeders.len());
        for f in &self.feeders {
            w.u16(f.feeder).u32(f.load_w).u8(u8::from(f.closed));
        }
        w.0
    }

    /// Parse the stored form.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes)?;
        let n = NodeReport {
            at_ms: r.u64()?,
            frequency_mhz: r.u32()?,
            generation_w: r.u32()?,
            ballast_capacity_w: r.u32()?,
            out_of_band: r.bool()?,
            feeders: r.list(FEEDERS_PER_NODE_MAX, |r| {
                Some(FeederLoad {
                    feeder: r.u16()?,
                    load_w: r.u32()?,
                    closed: r.bool()?,
                })
            })?,
        };
        r.done(n)
    }
}

impl Balance {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(u8::from(self.last_action_ms.is_some()))
            .u64(self.last_action_ms.unwrap_or(0))
            .u8(u8::from(self.cannot_balance))
            .len(self.shed.len());
        for s in &self.shed {
            w.u64(s.feeder.node.0)
                .u16(s.feeder.feeder)
                .u32(s.load_w)
                .u64(s.at_ms);
        }
        w.len(self.setpoints.len());
        for &(node, setpoint_w) in &self.setpoints {
            w.u64(node.0).u32(setpoint_w);
        }
        w.0
    }

    /// Parse the stored form.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes)?;
        let has_action = r.bool()?;
        let last_action_ms = r.u64()?;
        let b = Balance {
            last_action_ms: has_action.then_some(last_action_ms),
            cannot_balance: r.bool()?,
            shed: r.list(PRIORITIES_MAX, |r| {
                let feeder = FeederRef {
                    node: NodeId(r.u64()?),
                    feeder: r.u16()?,
                };
                Some(Shed {
                    feeder,
                    load_w: r.u32()?,
                    at_ms: r.u64()?,
                })
            })?,
            setpoints: r.list(NODES_MAX, |r| Some((NodeId(r.u64()?), r.u32()?)))?,
        };
        r.done(b)
    }
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
    pub fn config(&self) -> BalancingConfig {
        self.host
            .get(KEY_CONFIG)
            .and_then(|v| decode_config(&v))
            .unwrap_or_else(default_config)
    }

    /// Replace the configuration.
    pub fn set_config(&mut self, cfg: &BalancingConfig) {
        self.host.set(KEY_CONFIG, &encode_config(cfg));
    }

    /// Ids of the nodes that have reported, sorted.
    pub fn nodes(&self) -> Vec<NodeId> {
        let bytes = self.host.get(KEY_INDEX).unwrap_or_default();
        bytes
            .chunks_exact(8)
            .filter_map(|c| c.try_into().ok())
            .map(|b| NodeId(u64::from_le_bytes(b)))
            .collect()
    }

    /// Store the node list.
    pub fn set_nodes(&mut self, nodes: &[NodeId]) {
        let bytes: Vec<u8> = nodes.iter().flat_map(|n| n.0.to_le_bytes()).collect();
        self.host.set(KEY_INDEX, &bytes);
    }

    /// A node's latest report.
    pub fn report(&self, node: NodeId) -> Option<NodeReport> {
        self.host
            .get(&node_key(node))
            .and_then(|v| NodeReport::decode(&v))
    }

    /// Store a node's report.
    pub fn set_report(&mut self, node: NodeId, report: &NodeReport) {
        self.host.set(&node_key(node), &report.encode());
    }

    /// The balancing record.
    pub fn balance(&self) -> Balance {
        self.host
            .get(KEY_BALANCE)
            .and_then(|v| Balance::decode(&v))
            .unwrap_or_default()
    }

    /// Store the balancing record.
    pub fn set_balance(&mut self, balance: &Balance) {
        self.host.set(KEY_BALANCE, &balance.encode());
    }
}

/// Read the balancing record without building a [`Store`] (for operators' queries and tests).
pub fn read_balance(host: &dyn Host) -> Balance {
    host.get(KEY_BALANCE)
        .and_then(|v| Balance::decode(&v))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn records_round_trip() {
        let mut c = default_config();
        c.priorities = vec![
            FeederRef {
                node: NodeId(1),
                feeder: 2,
            },
            FeederRef {
                node: NodeId(3),
                feeder: 4,
            },
        ];
        assert_eq!(decode_config(&encode_config(&c)), Some(c));
        let n = NodeReport {
            at_ms: 5,
            frequency_mhz: 49_000,
            generation_w: 30_000,
            ballast_capacity_w: 20_000,
            out_of_band: true,
            feeders: vec![FeederLoad {
                feeder: 1,
                load_w: 2,
                closed: true,
            }],
        };
        assert_eq!(NodeReport::decode(&n.encode()), Some(n.clone()));
        let b = Balance {
            shed: vec![Shed {
                feeder: FeederRef {
                    node: NodeId(9),
                    feeder: 1,
                },
                load_w: 7,
                at_ms: 8,
            }],
            last_action_ms: Some(8),
            cannot_balance: true,
            setpoints: vec![(NodeId(1), 100)],
        };
        assert_eq!(Balance::decode(&b.encode()), Some(b));
        assert_eq!(
            Balance::decode(&Balance::default().encode()),
            Some(Balance::default())
        );
        let bytes = n.encode();
        assert!(NodeReport::decode(&bytes[..bytes.len() - 1]).is_none());
        assert!(NodeReport::decode(&[2]).is_none());
    }

    #[test]
    fn config_validation() {
        assert!(config_is_valid(&default_config()));
        let mut c = default_config();
        c.restore_above_mhz = c.shed_below_mhz;
        assert!(!config_is_valid(&c), "no hysteresis");
        let mut c = default_config();
        let f = FeederRef {
            node: NodeId(1),
            feeder: 1,
        };
        c.priorities = vec![f, f];
        assert!(!config_is_valid(&c), "duplicate feeder");
        let mut c = default_config();
        c.priorities = (0..=PRIORITIES_MAX as u16)
            .map(|i| FeederRef {
                node: NodeId(1),
                feeder: i,
            })
            .collect();
        assert!(!config_is_valid(&c), "too many priorities");
    }
}
