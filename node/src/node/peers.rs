//! The node's peers: one [`LinkTable`] (from `proto`, the same a dongle
//! uses) keyed by link kind and address, and what the node does when links
//! come and go: static peers retried with backoff, mDNS peers reconciled to
//! one link each, learned peers admitted only after the router validated
//! their address, idle links dropped, serial ports brought up as pull links.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use ferry_proto::link::table::{LinkAddr, LinkEntry, LinkTable, Origin, TableConfig, local_group};
use ferry_proto::router::{LinkCaps, LinkId, Stranger};
use ferry_proto::time::{Duration, Instant};
use ferry_proto::wire::{HELLO_LEN, MAX_FRAME_LEN, SizeClass};
use serde_json::{Value, json};

use super::State;
use crate::serial::PortEvent;

/// Links a node keeps: the router's link table size.
pub(super) const LINKS: usize = 32;

/// The node's link table.
pub(super) type Links = LinkTable<PeerAddr, LINKS>;

/// Addresses kept per mDNS instance (and so probed).
pub(super) const MDNS_ADDRS: usize = 4;
/// Probes sent per second at most, in all (SPEC §6.1).
const PROBE_RATE: u32 = 16;
/// One IP address gets at most one probe in this long, whatever its ports
/// (SPEC §6.1: discovery cannot be turned against a host).
const PROBE_IP_GAP: Duration = Duration::from_secs(1);
/// An address that does not answer is probed again after this, doubling
/// up to [`PROBE_MAX`].
const PROBE_MIN: Duration = Duration::from_secs(2);
const PROBE_MAX: Duration = Duration::from_secs(60);

/// Stateless probes of the addresses of mDNS instances that have no link.
#[derive(Debug, Default)]
pub(super) struct Probes {
    /// Address → (when next, backoff, probes sent).
    due: HashMap<SocketAddr, (Instant, Duration, u32)>,
    /// Probes that may still go out this second.
    tokens: u32,
    refilled: Instant,
    /// When each IP address was last probed (within [`PROBE_IP_GAP`]).
    recent: HashMap<IpAddr, Instant>,
}

/// A fresh link table: learned links idle for two minutes go, a host (an
/// IPv4 address, an IPv6 /64) holds at most 4 learned links, configured
/// peers are retried from 2 s up to every 30 s.
pub(super) fn new_links() -> Links {
    LinkTable::new(TableConfig::DEFAULT)
}

/// Where a link goes. Peers are keyed by link kind and address: the same
/// number can be a UDP port and a serial port index without a clash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum PeerAddr {
    /// A UDP peer.
    Udp(SocketAddr),
    /// The peer at the other end of `--serial` port number `n`.
    Serial(usize),
}

impl PeerAddr {
    /// The link kind, as `peers` reports it.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            PeerAddr::Udp(_) => "udp",
            PeerAddr::Serial(_) => "serial",
        }
    }
}

impl LinkAddr for PeerAddr {
    fn group(&self) -> [u8; 16] {
        match self {
            PeerAddr::Udp(a) => a.group(),
            // A serial port is its own group: nobody else sends on it.
            PeerAddr::Serial(n) => local_group(b's', u32::try_from(*n).unwrap_or(u32::MAX)),
        }
    }
}

/// The bytes a stateless cookie binds: the address and the port.
fn addr_bytes(a: &SocketAddr) -> [u8; 18] {
    let mut out = [0u8; 18];
    let ip = match a {
        SocketAddr::V4(v4) => v4.ip().to_ipv6_mapped().octets(),
        SocketAddr::V6(v6) => v6.ip().octets(),
    };
    out[..16].copy_from_slice(&ip);
    out[16..].copy_from_slice(&a.port().to_be_bytes());
    out
}

/// Caps of a serial link whose peer said `mtu` in its link hello.
fn serial_caps(mtu: u16) -> LinkCaps {
    LinkCaps { mtu: mtu.min(MAX_FRAME_LEN as u16), broadcast: false, max_class: SizeClass::Large }
}

impl State {
    /// Bring a link to `addr` up (or find the one there is; a more trusted
    /// origin upgrades it). `None`: the table is full, or the router refused
    /// (link-ups over their rate); the caller tries again later.
    pub(super) fn link_up(&mut self, addr: PeerAddr, origin: Origin, caps: LinkCaps) -> Option<LinkId> {
        let now = self.now();
        let known = self.links.get(&addr).map(|e| e.id);
        let id = match self.links.insert(now, addr, origin, caps) {
            Ok(id) => id,
            Err(e) => {
                tracing::debug!(kind = addr.kind(), "no link for a peer: {e}");
                return None;
            }
        };
        if known.is_some() {
            return Some(id);
        }
        // The router builds the link's state on the stack and moves it in:
        // nothing a frame left there may go with it (SPEC §8).
        self.scrub();
        if !self.core.node().handle_link_up(now, &mut self.rng, id, caps) {
            self.links.remove(id);
            tracing::debug!("the router refused a link (table full or link-ups over their rate)");
            return None;
        }
        tracing::debug!(kind = addr.kind(), ?origin, "link up");
        Some(id)
    }

    /// Take the link to `addr` down, in the table and the router.
    pub(super) fn link_down(&mut self, addr: PeerAddr) {
        if let Some(e) = self.links.remove_addr(&addr) {
            self.router_link_down(&e);
        }
    }

    fn router_link_down(&mut self, e: &LinkEntry<PeerAddr>) {
        let now = self.now();
        self.core.node().handle_link_down(now, e.id);
        tracing::debug!(kind = e.addr.kind(), origin = ?e.origin, "link down");
    }

    /// Whether the router has validated link `id` (its peer answered).
    pub(super) fn validated(&self, id: LinkId) -> bool {
        self.core.node_ref().link(id).is_some_and(|l| l.validated)
    }

    /// A datagram from `from`: a frame on its link, or bytes from a
    /// stranger. Only a frame the router took keeps the link alive (a
    /// spoofed source cannot hold a dead link open).
    pub(super) fn handle_datagram(&mut self, from: SocketAddr, bytes: &[u8]) {
        let Some(id) = self.links.get(&PeerAddr::Udp(from)).map(|e| e.id) else {
            self.handle_stranger(from, bytes);
            return;
        };
        self.link_frame(id, bytes);
    }

    /// A frame on link `id`, from any link kind.
    fn link_frame(&mut self, id: LinkId, bytes: &[u8]) {
        let now = self.now();
        if self.core.node().handle_frame(now, &mut self.rng, id, bytes).is_ok() {
            self.links.touch(now, id);
        }
        // Collect the endpoint's events after every frame: its queue is
        // small, and a receive batch can carry dozens of receipts.
        self.drain_events();
    }

    /// The UDP socket moved to a new port: restart every UDP link, so each
    /// peer gets a fresh hello from the new address (it answers as to a
    /// stranger, and the cookie exchange makes its side's link again;
    /// its link to the old port goes idle).
    pub(super) fn relink_udp(&mut self) {
        let now = self.now();
        let udp: Vec<(LinkId, LinkCaps)> =
            self.links.iter().filter(|e| matches!(e.addr, PeerAddr::Udp(_))).map(|e| (e.id, e.caps)).collect();
        for (id, caps) in udp {
            self.scrub();
            let _ = self.core.node().handle_link_up(now, &mut self.rng, id, caps);
        }
        self.probes.due.clear();
    }

    /// Bytes from an address with no link: the router answers hellos
    /// statelessly and makes a link only for a hello that echoes its cookie
    /// (SPEC §6.1), so junk from any number of addresses takes no link. A
    /// validated one is admitted by the table's fairness rules: one host
    /// holds a few learned links, and a full table makes room from the host
    /// that holds the most; configured and discovered peers are never
    /// evicted for it.
    fn handle_stranger(&mut self, from: SocketAddr, bytes: &[u8]) {
        let now = self.now();
        let mut answer = [0u8; HELLO_LEN];
        let r = self.core.node().handle_stranger(now, &mut self.rng, &addr_bytes(&from), bytes, &mut answer);
        let hello = match r {
            Stranger::Dropped => return,
            Stranger::Answer(_) => {
                self.answers.push((from, answer));
                return;
            }
            Stranger::Validated(hello) => hello,
        };
        let mut evicted = Vec::new();
        let admitted = self.links.admit_learned(now, PeerAddr::Udp(from), self.dgram_caps, &mut |e| evicted.push(e));
        for e in &evicted {
            self.router_link_down(e);
        }
        match admitted {
            Ok(id) => {
                self.scrub();
                if self.core.node().accept_stranger(now, &mut self.rng, id, self.dgram_caps, hello) {
                    tracing::debug!("link up (learned)");
                } else {
                    self.links.remove(id);
                    tracing::debug!("link-ups over their rate: a validated peer tries again");
                }
            }
            Err(_) => tracing::debug!("link table full: a validated peer waits for a free link"),
        }
    }

    /// One link per node found by mDNS. An instance none of whose
    /// addresses has a validated link gets stateless probes (SPEC §6.1):
    /// nothing is kept for an address until it answers, so fake records
    /// take no link and the node sends their addresses only a bounded
    /// trickle of 33-byte hellos (issue 12). An address that answers makes
    /// a learned link through the cookie, which becomes the instance's
    /// link. Once an instance has links, only the best validated one is
    /// kept (IPv4 first, then the lowest address: both ends pick the same
    /// pair, so the peer's datagrams come from the address we keep); links
    /// to addresses no instance advertises any more go down.
    ///
    /// Both ends probe each other at once, so each answers the other's
    /// probe as a stranger; datagrams from the peer's other addresses can
    /// make "incoming" links too. Those to an address of the instance that
    /// ranks below the kept one go down as well: otherwise both ends keep
    /// answering each other's hellos and summaries on them and they never
    /// go idle. One that ranks above is kept: it is the peer reaching us on
    /// the pair both ends will settle on.
    pub(super) fn reconcile_mdns(&mut self) {
        let rank = |a: &SocketAddr| (a.is_ipv6(), *a);
        let mut wanted: HashSet<SocketAddr> = HashSet::new();
        let mut outranked: HashSet<SocketAddr> = HashSet::new();
        let mut to_probe: HashSet<SocketAddr> = HashSet::new();
        for addrs in self.mdns.values() {
            let best = addrs
                .iter()
                .filter(|a| self.links.get(&PeerAddr::Udp(**a)).is_some_and(|e| self.validated(e.id)))
                .min_by_key(|a| rank(a));
            match best {
                Some(best) => {
                    wanted.insert(*best);
                    outranked.extend(addrs.iter().filter(|a| rank(a) > rank(best)));
                }
                None => to_probe.extend(addrs.iter().filter(|a| self.links.get(&PeerAddr::Udp(**a)).is_none())),
            }
        }
        let stale: Vec<PeerAddr> = self
            .links
            .iter()
            .filter(|e| {
                let PeerAddr::Udp(a) = e.addr else { return false };
                match e.origin {
                    Origin::Discovered => !wanted.contains(&a),
                    Origin::Learned => outranked.contains(&a) && !wanted.contains(&a),
                    Origin::Static => false,
                }
            })
            .map(|e| e.addr)
            .collect();
        for a in stale {
            self.link_down(a);
        }
        // The instance's validated link (learned through a probe's answer,
        // or the peer's own) is now its discovered link.
        for a in wanted {
            self.link_up(PeerAddr::Udp(a), Origin::Discovered, self.dgram_caps);
        }
        let now = self.now();
        self.probes.due.retain(|a, _| to_probe.contains(a));
        for a in to_probe {
            self.probes.due.entry(a).or_insert((now, PROBE_MIN, 0));
        }
        self.send_probes();
    }

    /// Probes that are due, within the rate: addresses probed least so far
    /// first, and one IP address at most once in [`PROBE_IP_GAP`].
    fn send_probes(&mut self) {
        let now = self.now();
        let p = &mut self.probes;
        let elapsed = now.saturating_since(p.refilled).as_millis();
        let add = u32::try_from(elapsed.saturating_mul(u64::from(PROBE_RATE)) / 1000).unwrap_or(u32::MAX);
        if add > 0 {
            p.tokens = p.tokens.saturating_add(add).min(PROBE_RATE);
            p.refilled = now;
        }
        if p.tokens == 0 {
            return;
        }
        p.recent.retain(|_, t| now.saturating_since(*t) < PROBE_IP_GAP);
        let mut due: Vec<(u32, SocketAddr)> =
            p.due.iter().filter(|(_, (next, _, _))| *next <= now).map(|(a, (_, _, sent))| (*sent, *a)).collect();
        due.sort_unstable_by_key(|(sent, _)| *sent);
        for (_, a) in due {
            if self.probes.tokens == 0 {
                break;
            }
            if self.probes.recent.contains_key(&a.ip()) {
                continue;
            }
            let mut hello = [0u8; HELLO_LEN];
            if self.core.node().probe(now, &mut self.rng, &addr_bytes(&a), &mut hello).is_none() {
                continue;
            }
            self.answers.push((a, hello));
            let p = &mut self.probes;
            p.tokens = p.tokens.saturating_sub(1);
            p.recent.insert(a.ip(), now);
            if let Some((next, backoff, sent)) = p.due.get_mut(&a) {
                *next = now.saturating_add(*backoff);
                *backoff = Duration::from_millis(backoff.as_millis().saturating_mul(2)).min(PROBE_MAX);
                *sent = sent.saturating_add(1);
            }
        }
    }

    /// The mDNS table is full: forget an instance none of whose addresses
    /// has a validated link (any one: the order is the hash map's, which a
    /// sender of records cannot predict). Instances that answered stay.
    pub(super) fn evict_mdns(&mut self) {
        let victim = self
            .mdns
            .iter()
            .find(|(_, addrs)| {
                !addrs.iter().any(|a| self.links.get(&PeerAddr::Udp(*a)).is_some_and(|e| self.validated(e.id)))
            })
            .map(|(name, _)| name.clone());
        if let Some(name) = victim {
            self.mdns.remove(&name);
        }
    }

    /// Every tick: idle learned and discovered links go; configured and
    /// discovered peers that have not answered get their link restarted,
    /// with backoff (the table's); static peers not in the table (it was
    /// full) and serial ports waiting for a free link try again.
    pub(super) fn maintain_links(&mut self) {
        let now = self.now();
        while let Some(e) = self.links.pop_idle(now) {
            self.router_link_down(&e);
        }
        while let Some(id) = self.links.due_retry(now) {
            let Some(caps) = self.links.by_id(id).map(|e| e.caps) else { continue };
            // The router restarts the link under the same id and greets
            // the peer afresh; over the link-up rate it is retried later.
            self.scrub();
            let _ = self.core.node().handle_link_up(now, &mut self.rng, id, caps);
        }
        for addr in self.statics.clone() {
            if self.links.get(&PeerAddr::Udp(addr)).is_none() {
                self.link_up(PeerAddr::Udp(addr), Origin::Static, self.dgram_caps);
            }
        }
        self.reconcile_mdns();
        let waiting: Vec<(usize, u16)> = self
            .ports
            .iter()
            .enumerate()
            .filter(|(i, _)| self.links.get(&PeerAddr::Serial(*i)).is_none())
            .filter_map(|(i, p)| p.waiting.map(|m| (i, m)))
            .collect();
        for (port, mtu) in waiting {
            self.port_up(port, mtu);
        }
    }

    /// The router link of serial port `port`, while its session is up.
    fn port_link(&self, port: usize) -> Option<LinkId> {
        self.links.get(&PeerAddr::Serial(port)).map(|e| e.id)
    }

    /// Frames for the serial ports, as many as each port's queue takes: the
    /// port writes them as its peer grants credit, and says `Ready` when it
    /// has room again. What is not pulled stays in the router's queue.
    pub(super) fn pull_serial(&mut self) {
        let now = self.now();
        let mut buf = zeroize::Zeroizing::new([0u8; MAX_FRAME_LEN]);
        for (i, p) in self.ports.iter().enumerate() {
            let Some(link) = self.links.get(&PeerAddr::Serial(i)).map(|e| e.id) else { continue };
            while p.port.tx.capacity() > 0 {
                let Some(t) = self.core.node().poll_transmit_link(now, link, &mut buf[..]) else { break };
                if let Err(e) = p.port.tx.try_send(buf[..t.len].to_vec()) {
                    // The port went away: the frame is dropped, wiped.
                    zeroize::Zeroize::zeroize(&mut e.into_inner());
                    break;
                }
            }
        }
    }

    pub(super) fn handle_port(&mut self, ev: PortEvent) {
        match ev {
            PortEvent::Up { port, mtu } => {
                if self.port_link(port).is_some() {
                    self.port_down(port);
                }
                self.port_up(port, mtu);
            }
            PortEvent::Down { port } => {
                if let Some(p) = self.ports.get_mut(port) {
                    p.waiting = None;
                }
                self.port_down(port);
            }
            PortEvent::Frame { port, mut bytes } => {
                if let Some(link) = self.port_link(port) {
                    self.link_frame(link, &bytes);
                }
                zeroize::Zeroize::zeroize(&mut bytes);
            }
            PortEvent::Ready { .. } => {}
        }
    }

    /// Bring the router's link of `port` up, as a pull link; if the link
    /// table is full, say so once and try again every tick.
    fn port_up(&mut self, port: usize, mtu: u16) {
        let link = self.link_up(PeerAddr::Serial(port), Origin::Static, serial_caps(mtu));
        if let Some(link) = link {
            self.core.node().set_pull(link, true);
        }
        let Some(p) = self.ports.get_mut(port) else { return };
        let path = p.port.spec.path.display();
        match link {
            Some(_) => {
                p.waiting = None;
                tracing::info!("serial {path}: link up (peer MTU {mtu})");
            }
            None => {
                if p.waiting.is_none() {
                    tracing::warn!("serial {path}: the link table is full; the port waits for a free link");
                }
                p.waiting = Some(mtu);
            }
        }
    }

    fn port_down(&mut self, port: usize) {
        if self.port_link(port).is_none() {
            return;
        }
        self.link_down(PeerAddr::Serial(port));
        if let Some(p) = self.ports.get(port) {
            tracing::info!("serial {}: link down", p.port.spec.path.display());
        }
    }

    /// `peers`: every link, with its kind (and every serial port, up or not).
    pub(super) fn peers_json(&self) -> Value {
        let now = self.now();
        let mut list: Vec<Value> = self
            .links
            .iter()
            .filter(|e| matches!(e.addr, PeerAddr::Udp(_)))
            .map(|e| {
                json!({
                    "kind": e.addr.kind(),
                    "found_by": match e.origin {
                        Origin::Static => "static",
                        Origin::Discovered => "mdns",
                        Origin::Learned => "incoming",
                    },
                    "age_secs": now.saturating_since(e.up_since).as_millis() / 1000,
                    "validated": self.validated(e.id),
                })
            })
            .collect();
        for (i, p) in self.ports.iter().enumerate() {
            let status = p.port.status.lock().map(|s| s.clone()).unwrap_or_default();
            let entry = self.links.get(&PeerAddr::Serial(i));
            list.push(json!({
                "kind": PeerAddr::Serial(i).kind(),
                "device": p.port.spec.path.display().to_string(),
                "found_by": "configured",
                "age_secs": entry.map(|e| now.saturating_since(e.up_since).as_millis() / 1000),
                "validated": entry.is_some_and(|e| self.validated(e.id)),
                "open": status.open,
                "problem": status.problem,
            }));
        }
        list.sort_by_key(|v| v["age_secs"].as_u64());
        Value::Array(list)
    }

    /// Whether the serial port `port` has its router link (for `stats`).
    pub(super) fn port_up_now(&self, port: usize) -> bool {
        self.port_link(port).is_some()
    }
}
