//! Scenario files: what to simulate, in TOML.
//!
//! A scenario names everything a run depends on except the seed: the node
//! count and graph, the radio medium, the traffic, and the events that change
//! the topology (partitions, churn, mobility, carriers). Every field has a
//! default so that small files stay small; [`Scenario::from_toml`] refuses
//! unknown fields and values out of range with a typed error that says which.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A whole scenario.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A short name, shown in reports.
    #[serde(default = "default_name")]
    pub name: String,
    /// Nodes in all (endpoints and relays).
    pub nodes: u32,
    /// Simulated time, seconds.
    pub duration_secs: u64,
    /// How often the time series is sampled, seconds.
    #[serde(default = "default_sample_secs")]
    pub sample_secs: u64,
    /// Where the nodes are and who hears whom.
    #[serde(default)]
    pub graph: Graph,
    /// The radio.
    #[serde(default)]
    pub medium: Medium,
    /// Who sends what when.
    #[serde(default)]
    pub traffic: Traffic,
    /// Time windows during which no frame crosses a line.
    #[serde(default, rename = "partition")]
    pub partitions: Vec<Partition>,
    /// Relays that switch off and on.
    #[serde(default)]
    pub churn: Option<Churn>,
    /// Relays that move (random waypoint).
    #[serde(default)]
    pub mobility: Option<Mobility>,
    /// Relays that shuttle along a fixed route (a bus between camps).
    #[serde(default, rename = "carrier")]
    pub carriers: Vec<Carrier>,
    /// Also run naive flooding on the same graph and seed.
    #[serde(default = "yes")]
    pub baseline: bool,
    /// Also run counter-based flooding with this `k` (broadcast media): a
    /// node stays silent if it heard `k` copies during its random delay.
    #[serde(default)]
    pub baseline_counter: Option<u32>,
    /// The counter-based baseline's longest random delay, milliseconds.
    #[serde(default = "fifty")]
    pub baseline_counter_delay_ms: u64,
    /// The router every node runs.
    #[serde(default = "dongle")]
    pub relay: RelayKind,
    /// Overrides of the router's runtime configuration (`router::Config`)
    /// and the endpoint's, for tuning; unset fields keep the defaults.
    #[serde(default)]
    pub router_config: RouterConfig,
    /// Hostile nodes (they act in the router run only; in the flooding
    /// baseline they are silent).
    #[serde(default, rename = "adversary")]
    pub adversaries: Vec<Adversary>,
}

/// Overrides of `ferry_proto::router::Config` (SPEC §6.7) and of the
/// endpoint's first-contact trial rate.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Cap on the remaining lifetime a node accepts, seconds.
    pub max_lifetime_secs: Option<u32>,
    /// Frames per second accepted from one link.
    pub link_rate: Option<u32>,
    /// Token bucket depth.
    pub link_burst: Option<u32>,
    /// First hello retry delay, milliseconds.
    pub hello_retry_ms: Option<u64>,
    /// Hello retries.
    pub hello_retries: Option<u8>,
    /// Summary frames per round.
    pub max_summary_frames: Option<u8>,
    /// Summary round interval, milliseconds.
    pub resync_ms: Option<u64>,
    /// Store slots per class for own messages.
    pub own_quota: Option<usize>,
    /// Link-ups accepted per second.
    pub link_ups_per_sec: Option<u32>,
    /// First-contact trial decryptions per second per link (endpoints).
    pub first_contact_rate: Option<u32>,
    /// Longest hold-back of a relayed frame on a broadcast link, ms.
    pub broadcast_defer_ms: Option<u64>,
    /// Copies heard meanwhile that cancel the rebroadcast (0: never).
    pub broadcast_copies: Option<u8>,
    /// Copies of a receipt (from as near the sender or nearer) that cancel
    /// a rebroadcast.
    pub receipt_copies: Option<u8>,
    /// New messages per second per link that keep their hop budget.
    pub far_rate: Option<u32>,
    /// Depth of that bucket.
    pub far_burst: Option<u32>,
    /// The budget the others go on with.
    pub near_hops: Option<u8>,
    /// The same on broadcast links.
    pub near_hops_broadcast: Option<u8>,
}

/// What a hostile node does.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AdversaryKind {
    /// Sends fresh, well-formed message frames (valid ids, junk bodies) as
    /// fast as `rate` asks and its radio allows.
    Flooder,
    /// Sends again message frames it heard earlier.
    Replayer,
    /// Hears everything, sends nothing.
    Dropper,
    /// Sends random bytes.
    Garbage,
    /// Sends receipts with made-up secrets for ids it heard.
    Forger,
}

/// A group of hostile nodes, placed on randomly chosen relays, or next to
/// endpoints (`near_endpoint`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Adversary {
    /// What they do.
    pub kind: AdversaryKind,
    /// How many.
    #[serde(default = "one_u32")]
    pub count: u32,
    /// Frames per second each tries to send (its radio sends at most its
    /// bandwidth's worth; above that it is always busy).
    #[serde(default = "hundred")]
    pub rate: f64,
    /// Place each one on a relay that neighbours an endpoint.
    #[serde(default)]
    pub near_endpoint: bool,
    /// Its radio's bandwidth as a multiple of the medium's (10: it can put
    /// ten times an honest node's frames on the air).
    #[serde(default = "one_f64")]
    pub radio_x: f64,
}
/// Sizes of the real router the nodes run.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RelayKind {
    /// `DongleRouter`: 64 small + 8 large slots, 256 seen entries, 4 links
    /// (under 64 KiB).
    Dongle,
    /// The dongle's store with a 16-link table.
    #[serde(rename = "dongle-16")]
    Dongle16,
    /// `HostRouter` (about 3 MiB): the laptop daemon's.
    Host,
}

/// A random geometric graph: nodes placed uniformly in a square, an edge
/// wherever two are within radio range. The square's side is chosen so that
/// the mean degree comes out at `mean_degree`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Graph {
    /// Target mean degree (neighbours in range).
    pub mean_degree: f64,
    /// Radio range, metres (sets the scale for speeds).
    pub range_m: f64,
}

impl Default for Graph {
    fn default() -> Self {
        Graph { mean_degree: 10.0, range_m: 100.0 }
    }
}

/// How frames travel.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MediumKind {
    /// One radio per node; a frame reaches every node in range.
    Broadcast,
    /// A connection per pair of nodes in range (BLE-style), up to the
    /// router's link table.
    PointToPoint,
}

/// The radio.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Medium {
    /// Broadcast or point-to-point.
    pub kind: MediumKind,
    /// Largest datagram, bytes (frames above it are segmented by the router).
    pub mtu: u16,
    /// Bits per second of one node's radio (serialisation delay).
    pub bandwidth_bps: u64,
    /// Propagation and processing delay, milliseconds.
    pub latency_ms: u64,
    /// Probability that one receiver loses one datagram.
    pub loss: f64,
}

impl Default for Medium {
    fn default() -> Self {
        Medium { kind: MediumKind::Broadcast, mtu: 255, bandwidth_bps: 250_000, latency_ms: 5, loss: 0.0 }
    }
}

/// Which node pairs talk.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Pairs {
    /// Endpoints are drawn from the largest connected component of the
    /// initial graph (so every message can arrive without carriers).
    Connected,
    /// Endpoints are drawn from all nodes.
    Any,
}

/// The messages.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// Messages sent in all.
    pub messages: u32,
    /// Nodes that are endpoints (send and receive); the rest are relays.
    pub endpoints: u32,
    /// Share of messages between contacts (the rest are first contacts).
    pub contact_fraction: f64,
    /// Sending starts at this time, seconds.
    pub start_secs: u64,
    /// And ends by this time, seconds (send times are uniform between).
    pub end_secs: u64,
    /// Text length, bytes (at most 100, so that every message is one small
    /// frame on both paths).
    pub text_len: u32,
    /// Message lifetime, seconds.
    pub lifetime_secs: u32,
    /// Where endpoints are drawn from.
    pub pairs: Pairs,
    /// If set, a recipient is at most this many hops from its sender in
    /// the initial graph (to measure the router within its hop budget).
    #[serde(default)]
    pub max_hops: Option<u32>,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            messages: 100,
            endpoints: 50,
            contact_fraction: 0.8,
            start_secs: 10,
            end_secs: 60,
            text_len: 60,
            lifetime_secs: 24 * 3600,
            pairs: Pairs::Connected,
            max_hops: None,
        }
    }
}

/// A wall at `x = at × side` (or `y`, by `axis`), closed from `start_secs`
/// to `end_secs`: no frame crosses it meanwhile.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// Closes at, seconds.
    pub start_secs: u64,
    /// Opens (heals) at, seconds.
    pub end_secs: u64,
    /// `"x"` or `"y"`.
    #[serde(default = "default_axis")]
    pub axis: Axis,
    /// Where, as a fraction of the side.
    #[serde(default = "half")]
    pub at: f64,
}

/// An axis of the square.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Axis {
    /// Horizontal position.
    X,
    /// Vertical position.
    Y,
}

/// Relays that switch off (losing their memory, as a dongle does) and on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    /// Share of relays that churn.
    pub fraction: f64,
    /// Mean time on, seconds (exponential).
    pub mean_up_secs: f64,
    /// Mean time off, seconds (exponential).
    pub mean_down_secs: f64,
}

/// Random-waypoint mobility for a share of the relays.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Mobility {
    /// Share of relays that move.
    pub fraction: f64,
    /// Speed range, metres per second.
    pub speed_min: f64,
    /// Speed range, metres per second.
    pub speed_max: f64,
    /// Pause at each waypoint, seconds.
    pub pause_secs: f64,
    /// Positions and neighbour sets are updated this often, seconds.
    #[serde(default = "one")]
    pub tick_secs: u64,
}

/// A relay that shuttles along `route` (points as fractions of the side),
/// back and forth, pausing at each stop.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Carrier {
    /// Stops, `[x, y]` in `[0, 1]`.
    pub route: Vec<[f64; 2]>,
    /// Metres per second.
    pub speed: f64,
    /// Pause at each stop, seconds.
    pub pause_secs: f64,
}

fn default_name() -> String {
    "unnamed".to_owned()
}
fn default_sample_secs() -> u64 {
    10
}
fn default_axis() -> Axis {
    Axis::X
}
fn half() -> f64 {
    0.5
}
fn one() -> u64 {
    1
}
fn yes() -> bool {
    true
}
fn one_u32() -> u32 {
    1
}
fn fifty() -> u64 {
    50
}
fn one_f64() -> f64 {
    1.0
}
fn hundred() -> f64 {
    100.0
}
fn dongle() -> RelayKind {
    RelayKind::Dongle
}

/// Why a scenario file was refused.
#[derive(Debug)]
pub enum ScenarioError {
    /// The file could not be read.
    Read(std::io::Error),
    /// The file is not valid TOML for a scenario.
    Parse(toml::de::Error),
    /// A value is out of range: the field, and what is allowed.
    Invalid {
        /// The field.
        field: &'static str,
        /// What would be accepted.
        expected: &'static str,
    },
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScenarioError::Read(e) => write!(f, "cannot read the scenario file: {e}"),
            ScenarioError::Parse(e) => write!(f, "the scenario file is not valid: {e}"),
            ScenarioError::Invalid { field, expected } => {
                write!(f, "scenario field `{field}` is out of range: expected {expected}")
            }
        }
    }
}

impl std::error::Error for ScenarioError {}

fn check(ok: bool, field: &'static str, expected: &'static str) -> Result<(), ScenarioError> {
    if ok { Ok(()) } else { Err(ScenarioError::Invalid { field, expected }) }
}

fn fraction(x: f64) -> bool {
    (0.0..=1.0).contains(&x)
}

impl Scenario {
    /// Read and check a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(ScenarioError::Read)?;
        Scenario::from_toml(&text)
    }

    /// Parse and check a scenario.
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(ScenarioError::Parse)?;
        s.validate()?;
        Ok(s)
    }

    /// Parse a scenario with one value replaced: `key` is a dotted path
    /// (`traffic.messages`, `router_config.resync_ms`) and `value` is TOML
    /// (`2000`, `"point-to-point"`; a bare word is taken as a string). For
    /// parameter sweeps.
    pub fn from_toml_with(text: &str, key: &str, value: &str) -> Result<Scenario, ScenarioError> {
        let mut doc: toml::Table = toml::from_str(text).map_err(ScenarioError::Parse)?;
        let value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
            Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(value.to_owned())),
            Err(_) => toml::Value::String(value.to_owned()),
        };
        let bad = ScenarioError::Invalid { field: "--set", expected: "a dotted path through tables" };
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts
            .pop()
            .filter(|k| !k.is_empty())
            .ok_or(ScenarioError::Invalid { field: "--set", expected: "KEY=VALUES with a non-empty key" })?;
        let mut table = &mut doc;
        for p in parts {
            let entry = table.entry(p.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(t) => t,
                _ => return Err(bad),
            };
        }
        table.insert(last.to_owned(), value);
        let s: Scenario = doc.try_into().map_err(ScenarioError::Parse)?;
        s.validate()?;
        Ok(s)
    }

    /// Check every value is in range (the simulator relies on it).
    pub fn validate(&self) -> Result<(), ScenarioError> {
        check((2..=200_000).contains(&self.nodes), "nodes", "2 to 200000")?;
        check((1..=30 * 86_400).contains(&self.duration_secs), "duration_secs", "1 s to 30 days")?;
        check(self.sample_secs >= 1, "sample_secs", "at least 1")?;
        let g = &self.graph;
        check(g.mean_degree.is_finite() && g.mean_degree > 0.5, "graph.mean_degree", "above 0.5")?;
        check(g.mean_degree < f64::from(self.nodes), "graph.mean_degree", "below the node count")?;
        check(g.range_m.is_finite() && g.range_m > 0.0, "graph.range_m", "a positive distance")?;
        let m = &self.medium;
        check(m.mtu >= 20, "medium.mtu", "at least 20 bytes")?;
        check(m.bandwidth_bps >= 1_000, "medium.bandwidth_bps", "at least 1000")?;
        check(m.latency_ms <= 60_000, "medium.latency_ms", "at most 60000")?;
        check(m.loss.is_finite() && (0.0..1.0).contains(&m.loss), "medium.loss", "in [0, 1)")?;
        let t = &self.traffic;
        check(t.endpoints >= 2 && t.endpoints <= self.nodes, "traffic.endpoints", "2 to the node count")?;
        check(t.messages <= 1_000_000, "traffic.messages", "at most 1000000")?;
        check(fraction(t.contact_fraction), "traffic.contact_fraction", "in [0, 1]")?;
        check(t.start_secs <= t.end_secs, "traffic.end_secs", "not before start_secs")?;
        check(t.end_secs <= self.duration_secs, "traffic.end_secs", "within duration_secs")?;
        check((1..=100).contains(&t.text_len), "traffic.text_len", "1 to 100 bytes")?;
        check(t.lifetime_secs >= 1, "traffic.lifetime_secs", "at least 1")?;
        check(t.max_hops.is_none_or(|h| h >= 1), "traffic.max_hops", "at least 1")?;
        for p in &self.partitions {
            check(p.start_secs <= p.end_secs, "partition.end_secs", "not before start_secs")?;
            check(fraction(p.at), "partition.at", "in [0, 1]")?;
        }
        if let Some(c) = &self.churn {
            check(fraction(c.fraction), "churn.fraction", "in [0, 1]")?;
            check(c.mean_up_secs >= 1.0 && c.mean_up_secs.is_finite(), "churn.mean_up_secs", "at least 1")?;
            check(c.mean_down_secs >= 1.0 && c.mean_down_secs.is_finite(), "churn.mean_down_secs", "at least 1")?;
        }
        if let Some(mo) = &self.mobility {
            check(fraction(mo.fraction), "mobility.fraction", "in [0, 1]")?;
            check(mo.speed_min > 0.0 && mo.speed_min <= mo.speed_max, "mobility.speed_min", "0 < min <= max")?;
            check(mo.speed_max.is_finite(), "mobility.speed_max", "finite")?;
            check(mo.pause_secs >= 0.0 && mo.pause_secs.is_finite(), "mobility.pause_secs", "0 or more")?;
            check(mo.tick_secs >= 1, "mobility.tick_secs", "at least 1")?;
        }
        for c in &self.carriers {
            check(c.route.len() >= 2, "carrier.route", "at least two stops")?;
            check(c.route.iter().flatten().all(|&v| fraction(v)), "carrier.route", "coordinates in [0, 1]")?;
            check(c.speed > 0.0 && c.speed.is_finite(), "carrier.speed", "a positive speed")?;
            check(c.pause_secs >= 0.0 && c.pause_secs.is_finite(), "carrier.pause_secs", "0 or more")?;
        }
        for a in &self.adversaries {
            check(a.rate > 0.0 && a.rate <= 1e6, "adversary.rate", "0 < rate <= 1000000 frames/s")?;
            check(a.radio_x >= 1.0 && a.radio_x <= 1000.0, "adversary.radio_x", "1 to 1000")?;
        }
        let relays = self.nodes.saturating_sub(t.endpoints);
        check(self.carriers.len() as u64 <= u64::from(relays), "carrier", "no more carriers than relays")?;
        Ok(())
    }

    /// Whether positions change during the run.
    pub fn moves(&self) -> bool {
        self.mobility.as_ref().is_some_and(|m| m.fraction > 0.0) || !self.carriers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_file_gets_defaults_and_bad_values_say_which_field() {
        let s = Scenario::from_toml(
            "nodes = 20\nduration_secs = 60\n[traffic]\nmessages = 1\nendpoints = 2\ncontact_fraction = 1.0\nstart_secs = 1\nend_secs = 2\ntext_len = 10\nlifetime_secs = 60\npairs = \"any\"\n",
        );
        assert!(s.is_ok(), "{s:?}");
        let e = Scenario::from_toml("nodes = 1\nduration_secs = 60\n");
        assert!(matches!(e, Err(ScenarioError::Invalid { field: "nodes", .. })), "{e:?}");
        let e = Scenario::from_toml("nodes = 10\nduration_secs = 60\nbogus = 1\n");
        assert!(matches!(e, Err(ScenarioError::Parse(_))), "{e:?}");
    }

    #[test]
    fn sweep_overrides_reach_nested_fields() {
        let text = "nodes = 20\nduration_secs = 60\n[traffic]\nmessages = 1\nendpoints = 2\ncontact_fraction = 1.0\nstart_secs = 1\nend_secs = 2\ntext_len = 10\nlifetime_secs = 60\npairs = \"any\"\n";
        let s = Scenario::from_toml_with(text, "router_config.resync_ms", "2000");
        assert_eq!(s.map(|s| s.router_config.resync_ms).ok(), Some(Some(2000)));
        let s = Scenario::from_toml_with(text, "medium.kind", "point-to-point");
        assert!(s.is_err(), "a partial [medium] table is refused, not defaulted");
        let s = Scenario::from_toml_with(text, "relay", "host");
        assert_eq!(s.map(|s| s.relay).ok(), Some(RelayKind::Host));
        let s = Scenario::from_toml_with(text, "traffic.messages", "-3");
        assert!(s.is_err());
    }
}
