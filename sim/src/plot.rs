//! A hand-written SVG plot of a run: frequency, load and ballast over time,
//! node roles as coloured bands, faults shaded. Downsampled into a fixed
//! number of time buckets, so a simulated week costs the same as an hour.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::net::NodeId;
use crate::observe::{Observation, Role};
use crate::plant::PlantTruth;

/// Time buckets across the plot: about one per horizontal pixel of the plot area.
pub const PLOT_BUCKETS: usize = 1_000;
/// Fault spans drawn at most (later ones are counted in the legend only).
pub const FAULT_SPANS_MAX: usize = 2_000;

const WIDTH: f64 = 1_200.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const FREQ_TOP: f64 = 40.0;
const FREQ_H: f64 = 220.0;
const POWER_TOP: f64 = FREQ_TOP + FREQ_H + 40.0;
const POWER_H: f64 = 160.0;
const ROLES_TOP: f64 = POWER_TOP + POWER_H + 40.0;
const ROLE_H: f64 = 18.0;

/// Role codes per bucket (0: no information).
const R_NONE: u8 = 0;
const R_LEARNER: u8 = 1;
const R_FOLLOWER: u8 = 2;
const R_CANDIDATE: u8 = 3;
const R_DOWN: u8 = 4;
const R_LEADER: u8 = 5;

fn role_code(r: Role) -> u8 {
    match r {
        Role::Follower => R_FOLLOWER,
        Role::Candidate => R_CANDIDATE,
        Role::Leader => R_LEADER,
        Role::Learner => R_LEARNER,
        Role::Shutdown => R_DOWN,
    }
}

fn role_colour(code: u8) -> Option<&'static str> {
    match code {
        R_LEARNER => Some("#c6dbef"),
        R_FOLLOWER => Some("#9ecae1"),
        R_CANDIDATE => Some("#fdae6b"),
        R_DOWN => Some("#636363"),
        R_LEADER => Some("#31a354"),
        _ => None,
    }
}

#[derive(Clone, Debug, Default)]
struct NodeTrack {
    roles: Vec<u8>,
    current: u8,
    since: usize,
}

#[derive(Clone, Copy, Debug, Default)]
struct PowerBucket {
    load_w: u64,
    ballast_w: u64,
    n: u64,
}

/// Collects a run's time series for the plot.
#[derive(Clone, Debug)]
pub struct PlotRecorder {
    duration_ms: u64,
    bucket_ms: u64,
    freq: Vec<Option<(u32, u32)>>,
    power: Vec<PowerBucket>,
    nodes: BTreeMap<NodeId, NodeTrack>,
    faults: Vec<(u64, Option<u64>, String)>,
    open_faults: BTreeMap<u64, usize>,
    faults_dropped: u64,
    title: String,
}

impl PlotRecorder {
    /// A recorder for a run of `duration_ms` (samples later than that are clamped).
    pub fn new(title: &str, duration_ms: u64) -> Self {
        let duration_ms = duration_ms.max(1);
        let bucket_ms = duration_ms.div_ceil(PLOT_BUCKETS as u64).max(1);
        Self {
            duration_ms,
            bucket_ms,
            freq: vec![None; PLOT_BUCKETS],
            power: vec![PowerBucket::default(); PLOT_BUCKETS],
            nodes: BTreeMap::new(),
            faults: Vec::new(),
            open_faults: BTreeMap::new(),
            faults_dropped: 0,
            title: title.to_string(),
        }
    }

    fn bucket(&self, t_ms: u64) -> usize {
        ((t_ms / self.bucket_ms) as usize).min(PLOT_BUCKETS - 1)
    }

    /// Records the plants' true state at `t_ms` (frequency envelope over
    /// plants, total load and ballast).
    pub fn record_plants(&mut self, t_ms: u64, plants: &[PlantTruth]) {
        if plants.is_empty() {
            return;
        }
        let b = self.bucket(t_ms);
        let lo = plants.iter().map(|p| p.frequency_mhz).min().unwrap_or(0);
        let hi = plants.iter().map(|p| p.frequency_mhz).max().unwrap_or(0);
        self.freq[b] = Some(match self.freq[b] {
            Some((a, z)) => (a.min(lo), z.max(hi)),
            None => (lo, hi),
        });
        let p = &mut self.power[b];
        p.load_w += plants.iter().map(|p| p.load_w).sum::<u64>();
        p.ballast_w += plants.iter().map(|p| p.ballast_w).sum::<u64>();
        p.n += 1;
    }

    fn set_role(&mut self, node: NodeId, t_ms: u64, code: u8) {
        let b = self.bucket(t_ms);
        let track = self.nodes.entry(node).or_insert_with(|| NodeTrack {
            roles: vec![R_NONE; PLOT_BUCKETS],
            current: R_NONE,
            since: b,
        });
        for i in track.since..=b {
            track.roles[i] = track.roles[i].max(track.current);
        }
        track.roles[b] = track.roles[b].max(code);
        track.current = code;
        track.since = b;
    }

    /// Records roles, crashes and faults from an observation.
    pub fn observe(&mut self, obs: &Observation) {
        match obs {
            Observation::RoleChange {
                t_ms, node, role, ..
            } => self.set_role(*node, *t_ms, role_code(*role)),
            Observation::NodeCrash { t_ms, node } => self.set_role(*node, *t_ms, R_DOWN),
            Observation::NodeRestart { t_ms, node } => self.set_role(*node, *t_ms, R_FOLLOWER),
            Observation::FaultStart { t_ms, id, what } => {
                if self.faults.len() < FAULT_SPANS_MAX {
                    self.open_faults.insert(*id, self.faults.len());
                    self.faults.push((*t_ms, None, what.clone()));
                } else {
                    self.faults_dropped += 1;
                }
            }
            Observation::FaultEnd { t_ms, id } => {
                if let Some(i) = self.open_faults.remove(id) {
                    self.faults[i].1 = Some(*t_ms);
                }
            }
            _ => {}
        }
    }

    fn x(&self, t_ms: f64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * (t_ms / self.duration_ms as f64).clamp(0.0, 1.0)
    }

    /// The SVG document.
    pub fn render(&self) -> String {
        let mut nodes = self.nodes.clone();
        for track in nodes.values_mut() {
            for i in track.since..PLOT_BUCKETS {
                track.roles[i] = track.roles[i].max(track.current);
            }
        }
        let height = ROLES_TOP + ROLE_H * nodes.len().max(1) as f64 + 50.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="20" font-size="14">{}</text>"#,
            xml_escape(&self.title)
        );
        // Faults, shaded behind everything.
        let bottom = ROLES_TOP + ROLE_H * nodes.len().max(1) as f64;
        for (start, end, what) in &self.faults {
            let x0 = self.x(*start as f64);
            let x1 = self.x(end.unwrap_or(self.duration_ms) as f64).max(x0 + 1.0);
            let _ = writeln!(
                s,
                r##"<rect x="{x0:.1}" y="{FREQ_TOP}" width="{:.1}" height="{:.1}" fill="#e31a1c" fill-opacity="0.08"><title>{}</title></rect>"##,
                x1 - x0,
                bottom - FREQ_TOP,
                xml_escape(what)
            );
        }
        self.render_frequency(&mut s);
        self.render_power(&mut s);
        // Roles.
        for (row, (node, track)) in nodes.iter().enumerate() {
            let y = ROLES_TOP + ROLE_H * row as f64;
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">node {node}</text>"#,
                LEFT - 6.0,
                y + ROLE_H * 0.7
            );
            let mut i = 0;
            while i < PLOT_BUCKETS {
                let code = track.roles[i];
                let mut j = i + 1;
                while j < PLOT_BUCKETS && track.roles[j] == code {
                    j += 1;
                }
                if let Some(c) = role_colour(code) {
                    let x0 = self.x((i as u64 * self.bucket_ms) as f64);
                    let x1 = self.x((j as u64 * self.bucket_ms) as f64);
                    let _ = writeln!(
                        s,
                        r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{c}"/>"#,
                        y + 1.0,
                        (x1 - x0).max(0.5),
                        ROLE_H - 2.0
                    );
                }
                i = j;
            }
        }
        // Time axis.
        let hours = self.duration_ms as f64 / 3_600_000.0;
        let step_h = [0.25, 0.5, 1.0, 2.0, 4.0, 6.0, 12.0, 24.0]
            .into_iter()
            .find(|&st| hours / st <= 12.0)
            .unwrap_or(48.0);
        let mut h = 0.0;
        while h <= hours + 1e-9 {
            let x = self.x(h * 3_600_000.0);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{FREQ_TOP}" x2="{x:.1}" y2="{bottom:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{h} h</text>"##,
                bottom + 14.0
            );
            h += step_h;
        }
        let legend_y = bottom + 34.0;
        let _ = writeln!(
            s,
            r##"<text x="{LEFT}" y="{legend_y:.1}">roles: <tspan fill="#31a354">leader</tspan> <tspan fill="#9ecae1">follower</tspan> <tspan fill="#fdae6b">candidate</tspan> <tspan fill="#636363">down</tspan>; faults shaded red ({} spans{})</text>"##,
            self.faults.len(),
            if self.faults_dropped > 0 {
                format!(", {} not drawn", self.faults_dropped)
            } else {
                String::new()
            }
        );
        s.push_str("</svg>\n");
        s
    }

    fn render_frequency(&self, s: &mut String) {
        let (mut lo, mut hi) = (48_500u32, 51_500u32);
        for (a, z) in self.freq.iter().flatten() {
            lo = lo.min(*a);
            hi = hi.max(*z);
        }
        let (lo, hi) = (f64::from(lo) - 100.0, f64::from(hi) + 100.0);
        let y = |mhz: f64| FREQ_TOP + FREQ_H * (1.0 - (mhz - lo) / (hi - lo));
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{FREQ_TOP}" width="{:.1}" height="{FREQ_H}" fill="none" stroke="#999"/>"##,
            WIDTH - LEFT - RIGHT
        );
        for (mhz, dash) in [(48_750.0, "4 3"), (50_000.0, "1 0"), (51_250.0, "4 3")] {
            let yy = y(mhz);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#888" stroke-dasharray="{dash}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{:.2}</text>"##,
                WIDTH - RIGHT,
                LEFT - 6.0,
                yy + 4.0,
                mhz / 1_000.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="{:.1}">frequency (Hz), min-max per bucket</text>"#,
            FREQ_TOP - 6.0
        );
        // Envelope: the max line forward, the min line back.
        let mut up = Vec::new();
        let mut down = Vec::new();
        for (i, f) in self.freq.iter().enumerate() {
            if let Some((a, z)) = f {
                let x = self.x((i as u64 * self.bucket_ms + self.bucket_ms / 2) as f64);
                up.push(format!("{x:.1},{:.1}", y(f64::from(*z))));
                down.push(format!("{x:.1},{:.1}", y(f64::from(*a))));
            }
        }
        if !up.is_empty() {
            down.reverse();
            let _ = writeln!(
                s,
                r##"<polygon points="{} {}" fill="#3182bd" fill-opacity="0.5" stroke="#08519c" stroke-width="0.8"/>"##,
                up.join(" "),
                down.join(" ")
            );
        }
    }

    fn render_power(&self, s: &mut String) {
        let max_w = self
            .power
            .iter()
            .filter(|p| p.n > 0)
            .map(|p| (p.load_w.max(p.ballast_w)) / p.n)
            .max()
            .unwrap_or(1)
            .max(1) as f64
            * 1.1;
        let y = |w: f64| POWER_TOP + POWER_H * (1.0 - w / max_w);
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{POWER_TOP}" width="{:.1}" height="{POWER_H}" fill="none" stroke="#999"/><text x="{LEFT}" y="{:.1}">power (kW): <tspan fill="#08519c">load</tspan>, <tspan fill="#e6550d">ballast</tspan> (all plants)</text>"##,
            WIDTH - LEFT - RIGHT,
            POWER_TOP - 6.0
        );
        for frac in [0.0, 0.5, 1.0] {
            let w = max_w / 1.1 * frac;
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{:.1}</text>"#,
                LEFT - 6.0,
                y(w) + 4.0,
                w / 1_000.0
            );
        }
        for (pick, colour) in [(0, "#08519c"), (1, "#e6550d")] {
            let pts: Vec<String> = self
                .power
                .iter()
                .enumerate()
                .filter(|(_, p)| p.n > 0)
                .map(|(i, p)| {
                    let w = if pick == 0 { p.load_w } else { p.ballast_w } as f64 / p.n as f64;
                    let x = self.x((i as u64 * self.bucket_ms + self.bucket_ms / 2) as f64);
                    format!("{x:.1},{:.1}", y(w))
                })
                .collect();
            if !pts.is_empty() {
                let _ = writeln!(
                    s,
                    r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.2"/>"#,
                    pts.join(" ")
                );
            }
        }
    }

    /// Writes the SVG to `path`.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.render())
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
