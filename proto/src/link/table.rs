//! Which address is which link: the driver's side of link bookkeeping.
//!
//! The router names links by [`LinkId`] and keeps its own per-link state
//! (hellos, queues, summaries). The driver has to remember which UDP
//! address, serial port or BLE connection each id stands for, where it came
//! from, when it was last heard and when to try a configured peer again.
//! [`LinkTable`] is that memory, bounded by a const generic and the same for
//! every driver (daemon, dongle, simulator) and every link kind: the address
//! type `A` is the driver's ([`LinkAddr`]), so one table can hold UDP, serial
//! and BLE links side by side and hand out ids that never collide.
//!
//! Why it is safe to expose to strangers: junk cannot fill it. A *learned*
//! address (one that contacted us) reaches this table only after the router
//! validated it with a stateless cookie (SPEC §6.1), so a spoofed source
//! never takes a slot. And a validated sender with many addresses cannot
//! take the table either: one [group](LinkAddr::group) (an IPv4 host, an
//! IPv6 /64) holds at most [`TableConfig::learned_per_group`] learned links,
//! a full table makes room from the group that holds the most, and links the
//! user configured or discovery found are never evicted for a learned one.
//!
//! Call order for a driver (`now` is the router's clock):
//!
//! * A configured, discovered or connected peer: [`LinkTable::insert`], then
//!   the router's `handle_link_up(now, rng, id, caps)`; if the router
//!   refuses, [`LinkTable::remove`] the id again.
//! * A stranger the router reports as validated: [`LinkTable::admit_learned`]
//!   (call the router's `handle_link_down` for every evicted entry), then
//!   `accept_stranger(.., id, ..)`; if the router refuses, `remove` the id.
//! * A frame from an address: [`LinkTable::get`] gives the id (none: it is a
//!   stranger), [`LinkTable::touch`], then the router's `handle_frame`.
//! * A link that went away (BLE disconnect, serial session down, discovery
//!   expired, the user removed a peer): [`LinkTable::remove`] or
//!   [`LinkTable::remove_addr`], then the router's `handle_link_down`.
//! * On a timer: [`LinkTable::pop_idle`] until `None` (take each link down in
//!   the router), then [`LinkTable::due_retry`] until `None` (call the
//!   router's `handle_link_up` again with the same id and caps: it restarts
//!   the link and greets the peer afresh). Wake up at the earlier of
//!   [`LinkTable::poll_timeout`] and the router's.
//!
//! Every operation is a scan of at most `N` entries; nothing allocates and
//! nothing panics.

use core::cmp::Reverse;
use core::fmt;
use core::net::SocketAddr;

use heapless::Vec;

use crate::router::{LinkCaps, LinkId};
use crate::time::{Duration, Instant};

/// Where a link came from. It decides what may evict it, whether it
/// expires when idle and whether it is retried.
///
/// The order of trust is `Static` > `Discovered` > `Learned`: inserting an
/// address again with a more trusted origin upgrades it; nothing downgrades.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Configured by the user (a peer address, a serial port). Never evicted,
    /// never expired: when it is silent it is retried, with a backoff that
    /// doubles up to [`TableConfig::backoff_max`], forever.
    Static,
    /// Found by discovery (mDNS, a BLE scan). Never evicted for a learned
    /// link; retried until the peer is first heard, and removed once it
    /// has been silent for [`TableConfig::idle`] (discovery brings it back
    /// if it is still there).
    Discovered,
    /// It contacted us, and the router validated its address with a
    /// stateless cookie before the driver inserted it. Subject to the
    /// per-group limit and to eviction; removed when idle; never retried
    /// (it is up to the peer to come back).
    Learned,
}

impl Origin {
    /// Higher is more trusted.
    const fn rank(self) -> u8 {
        match self {
            Origin::Static => 2,
            Origin::Discovered => 1,
            Origin::Learned => 0,
        }
    }
}

/// A driver's address for a link: a UDP socket address, a serial port
/// index, a BLE connection handle (not the BLE address, which rotates), or
/// an enum of those when one driver has several kinds of links.
///
/// `group` names what one sender controls, for fairness: all the learned
/// links of one group count against one limit
/// ([`TableConfig::learned_per_group`]). For IP that is the host (an IPv4
/// address, an IPv6 /64: one machine can own a whole /64); a serial port or
/// a BLE connection is its own group ([`local_group`]). Two addresses that
/// are equal must have the same group, and the group of an address must not
/// change (the table computes it once, at insertion).
///
/// # Example
///
/// ```
/// use core::net::SocketAddr;
/// use ferry_proto::link::table::{LinkAddr, local_group};
///
/// #[derive(Clone, Debug, PartialEq, Eq)]
/// enum Addr {
///     Udp(SocketAddr),
///     Serial(u8),
///     Ble(u16),
/// }
///
/// impl LinkAddr for Addr {
///     fn group(&self) -> [u8; 16] {
///         match self {
///             Addr::Udp(a) => a.group(),
///             Addr::Serial(port) => local_group(1, u32::from(*port)),
///             Addr::Ble(handle) => local_group(2, u32::from(*handle)),
///         }
///     }
/// }
/// ```
pub trait LinkAddr: Clone + Eq {
    /// The fairness group of this address (see the trait's documentation).
    fn group(&self) -> [u8; 16];
}

/// An IPv4 peer's group is its host (as an IPv4-mapped IPv6 address); an
/// IPv6 peer's is its /64, except that an IPv4-mapped IPv6 address (a
/// dual-stack socket's view of an IPv4 peer) is its IPv4 host: otherwise
/// every IPv4 peer of a dual-stack socket would share one group.
impl LinkAddr for SocketAddr {
    fn group(&self) -> [u8; 16] {
        match self {
            SocketAddr::V4(v4) => v4.ip().to_ipv6_mapped().octets(),
            SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => v4.to_ipv6_mapped().octets(),
                None => {
                    let [a, b, c, d, e, f, g, h, ..] = v6.ip().octets();
                    [a, b, c, d, e, f, g, h, 0, 0, 0, 0, 0, 0, 0, 0]
                }
            },
        }
    }
}

/// A group of its own for a non-IP link: `kind` tells link kinds apart (a
/// serial port, a BLE connection), `index` names the link among its kind.
/// The group starts with `0xff`, the IPv6 multicast prefix, which is never a
/// peer's source address, so it cannot share a group with an IP peer.
pub const fn local_group(kind: u8, index: u32) -> [u8; 16] {
    let [i0, i1, i2, i3] = index.to_be_bytes();
    [0xff, kind, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, i0, i1, i2, i3]
}

/// One link as the driver knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkEntry<A> {
    /// The router's name for the link.
    pub id: LinkId,
    /// The driver's name for the peer's end.
    pub addr: A,
    /// Where the link came from.
    pub origin: Origin,
    /// What the link carries, as last given to the router.
    pub caps: LinkCaps,
    /// When the link was inserted.
    pub up_since: Instant,
    /// When the peer was last heard ([`LinkTable::touch`]); the link's
    /// insertion until then. Idle expiry counts from here.
    pub last_rx: Instant,
    /// When the link is next due for a retry ([`LinkTable::due_retry`]);
    /// [`Instant::FAR_FUTURE`] for a link that is not retried (a learned
    /// one, or a discovered one whose peer has been heard).
    pub retry_at: Instant,
    /// The wait between the last retry and the next; back to
    /// [`TableConfig::backoff_min`] whenever the peer is heard.
    pub backoff: Duration,
}

impl<A> LinkEntry<A> {
    /// How long the peer has been silent at `now` (zero if `now` is
    /// earlier than its last frame).
    pub fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_since(self.last_rx)
    }
}

/// The table's timers and fairness limit. [`TableConfig::DEFAULT`] holds
/// the daemon's numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableConfig {
    /// A learned or discovered link silent this long is removed; a static
    /// link silent this long is due for a retry. Longer than the router's
    /// resync interval (15 s), so a live link is never taken for dead.
    pub idle: Duration,
    /// Learned links one [group](LinkAddr::group) may hold. A further one
    /// from the same group replaces that group's longest idle. 0: the table
    /// takes no learned links at all.
    pub learned_per_group: usize,
    /// The first retry of a static link comes this long after it went up
    /// or fell silent; every retry doubles the wait.
    pub backoff_min: Duration,
    /// The longest wait between two retries: a dead static peer costs one
    /// hello per this interval. At least `backoff_min`.
    pub backoff_max: Duration,
}

impl TableConfig {
    /// Idle links go after 120 s, one group holds 4 learned links, retries
    /// start 2 s apart and double up to 30 s apart: the daemon's numbers.
    pub const DEFAULT: TableConfig = TableConfig {
        idle: Duration::from_secs(120),
        learned_per_group: 4,
        backoff_min: Duration::from_secs(2),
        backoff_max: Duration::from_secs(30),
    };
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig::DEFAULT
    }
}

/// Every slot holds a link that this call may not evict: free one (or drop
/// the peer) and try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFull;

impl fmt::Display for TableFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the link table is full of links that may not be evicted")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TableFull {}

/// Why [`LinkTable::insert`] did not add a link. `insert` never evicts; a
/// learned peer that should make room goes through
/// [`LinkTable::admit_learned`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// No free slot.
    Full,
    /// A learned link whose group already holds
    /// [`TableConfig::learned_per_group`] learned links.
    GroupFull,
}

impl fmt::Display for InsertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InsertError::Full => f.write_str("the link table is full"),
            InsertError::GroupFull => f.write_str("the address's group holds as many learned links as it may"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for InsertError {}

/// An entry with what the table keeps about it for fairness.
#[derive(Clone, Debug)]
struct Slot<A> {
    entry: LinkEntry<A>,
    /// `entry.addr.group()`, computed once.
    group: [u8; 16],
    /// Learned links in `group`, kept current on every change, so that a
    /// full table finds the group with the most in one scan.
    group_learned: usize,
}

/// The driver's links: address, id, origin, caps and timers of at most `N`
/// links. See the [module documentation](self) for the call order.
///
/// Ids come from a counter that skips every id still in the table, so a
/// stale id (of a link removed a moment ago) never names a new peer before
/// the counter has gone round all 2³² ids.
#[derive(Clone, Debug)]
pub struct LinkTable<A, const N: usize> {
    slots: Vec<Slot<A>, N>,
    next_id: u32,
    config: TableConfig,
}

impl<A: LinkAddr, const N: usize> Default for LinkTable<A, N> {
    fn default() -> Self {
        Self::new(TableConfig::DEFAULT)
    }
}

impl<A: LinkAddr, const N: usize> LinkTable<A, N> {
    /// An empty table; the first id it hands out is `LinkId(1)`. `const`, so
    /// firmware can keep it in a `static`.
    pub const fn new(config: TableConfig) -> Self {
        LinkTable { slots: Vec::new(), next_id: 1, config }
    }

    /// The timers and limits in force.
    pub const fn config(&self) -> &TableConfig {
        &self.config
    }

    /// Links in the table.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the table holds no link.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether every slot is taken.
    pub fn is_full(&self) -> bool {
        self.slots.is_full()
    }

    /// The most links the table holds: `N`.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// The link to `addr`, if there is one.
    pub fn get(&self, addr: &A) -> Option<&LinkEntry<A>> {
        self.slots.iter().map(|s| &s.entry).find(|e| e.addr == *addr)
    }

    /// The link named `id`, if it is in the table.
    pub fn by_id(&self, id: LinkId) -> Option<&LinkEntry<A>> {
        self.slots.iter().map(|s| &s.entry).find(|e| e.id == id)
    }

    /// Every link, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &LinkEntry<A>> {
        self.slots.iter().map(|s| &s.entry)
    }

    /// Add a link to `addr` and return its new id; the driver then brings
    /// the router's link up under it. An address already in the table keeps
    /// its id, entry and caps; only its origin is upgraded if `origin` is
    /// more trusted (a learned peer the user now configures becomes static),
    /// never downgraded. A static or discovered link is due for its first
    /// retry [`TableConfig::backoff_min`] from `now`.
    ///
    /// Never evicts: [`InsertError::Full`] when no slot is free,
    /// [`InsertError::GroupFull`] for a learned link whose group is at its
    /// limit. Learned peers normally come in through
    /// [`LinkTable::admit_learned`], which makes room.
    pub fn insert(&mut self, now: Instant, addr: A, origin: Origin, caps: LinkCaps) -> Result<LinkId, InsertError> {
        if let Some(i) = self.position(|e| e.addr == addr) {
            return self.upgrade(i, origin).ok_or(InsertError::Full);
        }
        if self.slots.is_full() {
            return Err(InsertError::Full);
        }
        let group = addr.group();
        if origin == Origin::Learned && self.learned_in(&group) >= self.config.learned_per_group {
            return Err(InsertError::GroupFull);
        }
        self.add(now, addr, group, origin, caps).ok_or(InsertError::Full)
    }

    /// Add a learned link to `addr`, making room by the fairness rules, and
    /// return its id. Call it only for an address the router validated
    /// (`Stranger::Validated`): that is what keeps spoofed junk out.
    ///
    /// * An address already in the table keeps its entry (whatever its
    ///   origin); it counts as heard ([`LinkTable::touch`]).
    /// * If the address's group already holds
    ///   [`TableConfig::learned_per_group`] learned links, the one of them
    ///   idle longest goes.
    /// * If the table is full, a learned link goes: from the group that
    ///   holds the most learned links, the one idle longest among them.
    ///
    /// Every entry removed is passed to `evicted` (at most one with a fixed
    /// config); take its link down in the router. Static and discovered
    /// links are never evicted: a table full of them gives [`TableFull`],
    /// and then nothing was removed. With `learned_per_group` of 0 it is
    /// always [`TableFull`].
    pub fn admit_learned(
        &mut self,
        now: Instant,
        addr: A,
        caps: LinkCaps,
        evicted: &mut impl FnMut(LinkEntry<A>),
    ) -> Result<LinkId, TableFull> {
        if let Some(i) = self.position(|e| e.addr == addr) {
            let config = self.config;
            let slot = self.slots.get_mut(i).ok_or(TableFull)?;
            Self::heard(&mut slot.entry, &config, now);
            return Ok(slot.entry.id);
        }
        let limit = self.config.learned_per_group;
        if limit == 0 {
            return Err(TableFull);
        }
        let group = addr.group();
        // The group's own links make room first: one sender cannot push out
        // anyone else's link while it is at its limit.
        while self.learned_in(&group) >= limit {
            let idlest = self
                .min_position(|s| (s.entry.origin == Origin::Learned && s.group == group).then_some(s.entry.last_rx));
            let Some(entry) = idlest.and_then(|i| self.take(i)) else { break };
            evicted(entry);
        }
        if self.slots.is_full() {
            let victim = self.min_position(|s| {
                (s.entry.origin == Origin::Learned).then_some((Reverse(s.group_learned), s.entry.last_rx))
            });
            let entry = victim.and_then(|i| self.take(i)).ok_or(TableFull)?;
            evicted(entry);
        }
        self.add(now, addr, group, Origin::Learned, caps).ok_or(TableFull)
    }

    /// Remove the link `id` and return its entry; take its link down in the
    /// router. `None` if it is not in the table.
    pub fn remove(&mut self, id: LinkId) -> Option<LinkEntry<A>> {
        let i = self.position(|e| e.id == id)?;
        self.take(i)
    }

    /// Remove the link to `addr` and return its entry, as
    /// [`LinkTable::remove`] does.
    pub fn remove_addr(&mut self, addr: &A) -> Option<LinkEntry<A>> {
        let i = self.position(|e| e.addr == *addr)?;
        self.take(i)
    }

    /// The peer of `id` was heard at `now`: its idle clock restarts and its
    /// backoff goes back to [`TableConfig::backoff_min`]. A static link is
    /// next due for a retry only once it has been silent for
    /// [`TableConfig::idle`]; a discovered one is not retried any more (it
    /// expires when idle). `false`: `id` is not in the table.
    ///
    /// Call it for frames the router accepted on the link, so that a spoofed
    /// source address cannot keep a dead link alive.
    pub fn touch(&mut self, now: Instant, id: LinkId) -> bool {
        let config = self.config;
        match self.slots.iter_mut().find(|s| s.entry.id == id) {
            Some(s) => {
                Self::heard(&mut s.entry, &config, now);
                true
            }
            None => false,
        }
    }

    /// Record new caps for a live link (a BLE MTU renegotiated, a serial
    /// peer's new session); the driver tells the router too. `false`: `id`
    /// is not in the table.
    pub fn set_caps(&mut self, id: LinkId, caps: LinkCaps) -> bool {
        match self.slots.iter_mut().find(|s| s.entry.id == id) {
            Some(s) => {
                s.entry.caps = caps;
                true
            }
            None => false,
        }
    }

    /// Remove and return a learned or discovered link that has been silent
    /// for [`TableConfig::idle`] or longer at `now`, the idlest first; take
    /// its link down in the router. Call until `None`. Static links are
    /// never removed here: a silent one is due for a retry instead
    /// ([`LinkTable::due_retry`]).
    pub fn pop_idle(&mut self, now: Instant) -> Option<LinkEntry<A>> {
        let idle = self.config.idle;
        let i = self.min_position(|s| {
            (s.entry.origin != Origin::Static && s.entry.idle_for(now) >= idle).then_some(s.entry.last_rx)
        })?;
        self.take(i)
    }

    /// A static link, or a discovered one not heard yet, whose retry time
    /// has come at `now` (the earliest first): the driver brings the
    /// router's link up again under the same id. Its backoff doubles (up to
    /// [`TableConfig::backoff_max`]) and the next retry is that far from
    /// `now`. Call until `None`, after [`LinkTable::pop_idle`].
    pub fn due_retry(&mut self, now: Instant) -> Option<LinkId> {
        let i = self.min_position(|s| (s.entry.retry_at <= now).then_some(s.entry.retry_at))?;
        let config = self.config;
        let entry = &mut self.slots.get_mut(i)?.entry;
        let doubled = Duration::from_millis(entry.backoff.as_millis().saturating_mul(2));
        entry.backoff = doubled.min(config.backoff_max).max(config.backoff_min);
        entry.retry_at = now.saturating_add(entry.backoff);
        Some(entry.id)
    }

    /// The next instant at which [`LinkTable::pop_idle`] or
    /// [`LinkTable::due_retry`] has something: the earliest idle expiry of a
    /// learned or discovered link, or retry. `None`: nothing will ever be
    /// due until the table changes.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = self.config.idle;
        self.slots
            .iter()
            .flat_map(|s| {
                let expiry = (s.entry.origin != Origin::Static).then(|| s.entry.last_rx.saturating_add(idle));
                [expiry, Some(s.entry.retry_at)]
            })
            .flatten()
            .filter(|&t| t != Instant::FAR_FUTURE)
            .min()
    }

    // ----- internals ----------------------------------------------------

    fn position(&self, f: impl Fn(&LinkEntry<A>) -> bool) -> Option<usize> {
        self.slots.iter().position(|s| f(&s.entry))
    }

    /// The index of the slot with the least key; slots without one are
    /// skipped. The first of equals wins.
    fn min_position<K: Ord>(&self, key: impl Fn(&Slot<A>) -> Option<K>) -> Option<usize> {
        self.slots.iter().enumerate().filter_map(|(i, s)| key(s).map(|k| (k, i))).min().map(|(_, i)| i)
    }

    fn learned_in(&self, group: &[u8; 16]) -> usize {
        self.slots.iter().filter(|s| s.entry.origin == Origin::Learned && s.group == *group).count()
    }

    /// Set every slot of `group` to the group's present learned count.
    fn recount(&mut self, group: &[u8; 16]) {
        let n = self.learned_in(group);
        for s in self.slots.iter_mut().filter(|s| s.group == *group) {
            s.group_learned = n;
        }
    }

    /// The peer was heard: idle clock, backoff and retry restart.
    fn heard(entry: &mut LinkEntry<A>, config: &TableConfig, now: Instant) {
        entry.last_rx = now;
        entry.backoff = config.backoff_min;
        entry.retry_at = match entry.origin {
            Origin::Static => now.saturating_add(config.idle),
            Origin::Discovered | Origin::Learned => Instant::FAR_FUTURE,
        };
    }

    /// Raise slot `i`'s origin to `origin` if that is more trusted.
    fn upgrade(&mut self, i: usize, origin: Origin) -> Option<LinkId> {
        let idle = self.config.idle;
        let slot = self.slots.get_mut(i)?;
        let id = slot.entry.id;
        let was = slot.entry.origin;
        if origin.rank() <= was.rank() {
            return Some(id);
        }
        slot.entry.origin = origin;
        // A learned link, or a discovered one that was heard, has no retry
        // scheduled; as static it is retried once silent.
        if origin == Origin::Static && slot.entry.retry_at == Instant::FAR_FUTURE {
            slot.entry.retry_at = slot.entry.last_rx.saturating_add(idle);
        }
        let group = slot.group;
        if was == Origin::Learned {
            self.recount(&group);
        }
        Some(id)
    }

    /// A new entry in a free slot. `None`: no slot is free.
    fn add(&mut self, now: Instant, addr: A, group: [u8; 16], origin: Origin, caps: LinkCaps) -> Option<LinkId> {
        if self.slots.is_full() {
            return None;
        }
        let id = self.fresh_id()?;
        let retry_at = match origin {
            Origin::Static | Origin::Discovered => now.saturating_add(self.config.backoff_min),
            Origin::Learned => Instant::FAR_FUTURE,
        };
        let entry = LinkEntry {
            id,
            addr,
            origin,
            caps,
            up_since: now,
            last_rx: now,
            retry_at,
            backoff: self.config.backoff_min,
        };
        self.slots.push(Slot { entry, group, group_learned: 0 }).ok()?;
        self.recount(&group);
        Some(id)
    }

    /// Remove slot `i`, keeping its group's count current.
    fn take(&mut self, i: usize) -> Option<LinkEntry<A>> {
        if i >= self.slots.len() {
            return None;
        }
        let slot = self.slots.swap_remove(i);
        if slot.entry.origin == Origin::Learned {
            self.recount(&slot.group);
        }
        Some(slot.entry)
    }

    /// The first id from `next_id` on that no entry holds. The entries hold
    /// fewer than `N` ids when this is called (a slot is free), so one of
    /// the `N` ids from `next_id` on is free: one scan finds it.
    fn fresh_id(&mut self) -> Option<LinkId> {
        let mut taken = [false; N];
        for s in &self.slots {
            let offset = s.entry.id.0.wrapping_sub(self.next_id);
            if let Ok(offset) = usize::try_from(offset)
                && let Some(t) = taken.get_mut(offset)
            {
                *t = true;
            }
        }
        let offset = taken.iter().position(|&t| !t)?;
        let id = self.next_id.wrapping_add(u32::try_from(offset).ok()?);
        self.next_id = id.wrapping_add(1);
        Some(LinkId(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::SizeClass;
    use core::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};
    use proptest::prelude::*;
    use std::vec::Vec as StdVec;

    const CAPS: LinkCaps = LinkCaps { mtu: 1232, broadcast: false, max_class: SizeClass::Large };
    const BLE_CAPS: LinkCaps = LinkCaps { mtu: 244, broadcast: false, max_class: SizeClass::Small };

    /// A driver with all three kinds of links, as in the trait's example.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Addr {
        Udp(SocketAddr),
        Serial(u8),
        Ble(u16),
    }

    impl LinkAddr for Addr {
        fn group(&self) -> [u8; 16] {
            match self {
                Addr::Udp(a) => a.group(),
                Addr::Serial(port) => local_group(1, u32::from(*port)),
                Addr::Ble(handle) => local_group(2, u32::from(*handle)),
            }
        }
    }

    /// A UDP address: host `10.0.h.l`, port `port`.
    fn udp(host: u16, port: u16) -> Addr {
        let [h, l] = host.to_be_bytes();
        Addr::Udp(SocketAddr::from((Ipv4Addr::new(10, 0, h, l), port)))
    }

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    const SEC: u64 = 1000;

    type Table<const N: usize> = LinkTable<Addr, N>;

    fn no_evict(_: LinkEntry<Addr>) {
        panic!("nothing may be evicted here");
    }

    /// Invariants that hold after every operation.
    fn check<const N: usize>(t: &Table<N>) {
        assert!(t.len() <= N);
        let entries: StdVec<_> = t.iter().collect();
        for (i, a) in entries.iter().enumerate() {
            for b in entries.iter().skip(i + 1) {
                assert_ne!(a.id, b.id, "ids unique");
                assert_ne!(a.addr, b.addr, "addresses unique");
            }
        }
        for s in &t.slots {
            assert_eq!(s.group, s.entry.addr.group());
            let n = t.slots.iter().filter(|o| o.group == s.group && o.entry.origin == Origin::Learned).count();
            assert_eq!(s.group_learned, n, "cached group count");
            if s.entry.origin == Origin::Learned {
                assert!(n <= t.config.learned_per_group, "group over its limit");
                assert_eq!(s.entry.retry_at, Instant::FAR_FUTURE, "learned links are not retried");
            }
            assert!(s.entry.backoff >= t.config.backoff_min && s.entry.backoff <= t.config.backoff_max);
        }
    }

    #[test]
    fn test_insert_get_and_upgrade() {
        let mut t: Table<8> = LinkTable::new(TableConfig::DEFAULT);
        assert!(t.is_empty());
        assert_eq!(t.capacity(), 8);
        let a = t.insert(at(0), udp(1, 1), Origin::Static, CAPS).unwrap();
        let s = t.insert(at(0), Addr::Serial(0), Origin::Static, CAPS).unwrap();
        let b = t.insert(at(0), Addr::Ble(7), Origin::Learned, BLE_CAPS).unwrap();
        assert_eq!((a, s, b), (LinkId(1), LinkId(2), LinkId(3)));
        assert_eq!(t.len(), 3);
        assert_eq!(t.get(&udp(1, 1)).map(|e| e.id), Some(a));
        assert_eq!(t.by_id(b).map(|e| &e.addr), Some(&Addr::Ble(7)));
        assert_eq!(t.get(&udp(1, 2)), None);
        assert_eq!(t.iter().count(), 3);

        // Again: same id; learned upgrades, static never downgrades.
        assert_eq!(t.insert(at(5), Addr::Ble(7), Origin::Discovered, CAPS), Ok(b));
        assert_eq!(t.by_id(b).map(|e| (e.origin, e.caps)), Some((Origin::Discovered, BLE_CAPS)));
        assert_eq!(t.insert(at(5), Addr::Ble(7), Origin::Static, CAPS), Ok(b));
        assert_eq!(t.by_id(b).map(|e| e.origin), Some(Origin::Static));
        assert_eq!(t.by_id(b).map(|e| e.retry_at), Some(at(120 * SEC)), "heard at 0, retried once silent");
        assert_eq!(t.insert(at(5), udp(1, 1), Origin::Learned, CAPS), Ok(a));
        assert_eq!(t.insert(at(5), udp(1, 1), Origin::Discovered, CAPS), Ok(a));
        assert_eq!(t.by_id(a).map(|e| e.origin), Some(Origin::Static));
        assert_eq!(t.admit_learned(at(5), udp(1, 1), CAPS, &mut no_evict), Ok(a));
        assert_eq!(t.by_id(a).map(|e| e.origin), Some(Origin::Static));
        assert_eq!(t.len(), 3);
        check(&t);
    }

    #[test]
    fn test_insert_errors() {
        let mut t: Table<6> = LinkTable::default();
        for port in 0..4 {
            t.insert(at(0), udp(1, port), Origin::Learned, CAPS).unwrap();
        }
        assert_eq!(t.insert(at(0), udp(1, 99), Origin::Learned, CAPS), Err(InsertError::GroupFull));
        t.insert(at(0), udp(1, 99), Origin::Static, CAPS).unwrap();
        t.insert(at(0), udp(2, 1), Origin::Discovered, CAPS).unwrap();
        assert!(t.is_full());
        assert_eq!(t.insert(at(0), udp(3, 1), Origin::Static, CAPS), Err(InsertError::Full));
        check(&t);

        let mut none: Table<0> = LinkTable::default();
        assert_eq!(none.insert(at(0), udp(1, 1), Origin::Static, CAPS), Err(InsertError::Full));
        assert_eq!(none.admit_learned(at(0), udp(1, 1), CAPS, &mut no_evict), Err(TableFull));
    }

    #[test]
    fn test_flood_cannot_evict_static_or_discovered() {
        let mut t: Table<8> = LinkTable::default();
        let keep = [
            t.insert(at(0), udp(1000, 1), Origin::Static, CAPS).unwrap(),
            t.insert(at(0), Addr::Serial(0), Origin::Static, CAPS).unwrap(),
            t.insert(at(0), udp(1001, 1), Origin::Discovered, CAPS).unwrap(),
            t.insert(at(0), Addr::Ble(1), Origin::Discovered, BLE_CAPS).unwrap(),
        ];
        let mut evictions = 0;
        for i in 0..2000u16 {
            // Validated senders from many hosts and ports, newest first in
            // line: each takes a learned slot from another.
            let id = t
                .admit_learned(at(u64::from(i)), udp(i % 300, i), CAPS, &mut |e| {
                    assert_eq!(e.origin, Origin::Learned);
                    evictions += 1;
                })
                .unwrap();
            assert_eq!(t.by_id(id).map(|e| e.origin), Some(Origin::Learned));
            check(&t);
        }
        assert_eq!(evictions, 2000 - 4);
        for id in keep {
            assert!(t.by_id(id).is_some_and(|e| e.origin != Origin::Learned));
        }

        // A table with no learned link refuses, and removes nothing.
        let mut t: Table<2> = LinkTable::default();
        t.insert(at(0), udp(1, 1), Origin::Static, CAPS).unwrap();
        t.insert(at(0), udp(2, 1), Origin::Discovered, CAPS).unwrap();
        for i in 0..100 {
            assert_eq!(t.admit_learned(at(0), udp(i, 2), CAPS, &mut no_evict), Err(TableFull));
        }
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn test_group_limit() {
        let mut t: Table<16> = LinkTable::default();
        let mut evicted = StdVec::new();
        let mut ids = StdVec::new();
        for port in 0..10u16 {
            ids.push(t.admit_learned(at(u64::from(port)), udp(1, port), CAPS, &mut |e| evicted.push(e.id)).unwrap());
            // Port 1 stays busy: never the idlest.
            if let Some(&busy) = ids.get(1) {
                assert!(t.touch(at(u64::from(port)), busy));
            }
            check(&t);
        }
        let group = udp(1, 0).group();
        assert_eq!(t.iter().filter(|e| e.addr.group() == group).count(), 4);
        // The idlest went, each time: 0, 2, 3, 4, 5, 6 (port 1 kept busy).
        assert_eq!(evicted, [ids[0], ids[2], ids[3], ids[4], ids[5], ids[6]]);
        assert!(t.by_id(ids[1]).is_some());

        // An IPv6 /64 is one group; another /64 is not; an IPv4-mapped
        // address is its IPv4 host.
        let v6 = |net: u16, host: u16| {
            Addr::Udp(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::new(0x2001, 0xdb8, 0, net, 0, 0, 0, host), 9, 0, 0)))
        };
        let mut t: Table<16> = LinkTable::default();
        for host in 0..6 {
            t.admit_learned(at(0), v6(1, host), CAPS, &mut |_| {}).unwrap();
            t.admit_learned(at(0), v6(2, host), CAPS, &mut |_| {}).unwrap();
        }
        assert_eq!(t.len(), 8);
        let mapped = SocketAddr::V6(SocketAddrV6::new(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped(), 9, 0, 0));
        assert_eq!(mapped.group(), SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 1)).group());
        assert_ne!(mapped.group(), SocketAddr::from((Ipv4Addr::new(10, 0, 0, 2), 1)).group());

        // Serial ports and BLE handles are each their own group.
        assert_ne!(Addr::Serial(1).group(), Addr::Serial(2).group());
        assert_ne!(Addr::Serial(1).group(), Addr::Ble(1).group());

        // No learned link at all with a limit of 0.
        let mut t: Table<4> = LinkTable::new(TableConfig { learned_per_group: 0, ..TableConfig::DEFAULT });
        assert_eq!(t.admit_learned(at(0), udp(1, 1), CAPS, &mut no_evict), Err(TableFull));
        assert_eq!(t.insert(at(0), udp(1, 1), Origin::Learned, CAPS), Err(InsertError::GroupFull));
    }

    #[test]
    fn test_full_table_evicts_from_the_largest_group_its_idlest() {
        let mut t: Table<7> = LinkTable::default();
        t.insert(at(0), Addr::Serial(0), Origin::Static, CAPS).unwrap();
        // Group 1: three learned links; group 2: two; group 3: one (idlest
        // of all, but its group is small).
        let admit = |t: &mut Table<7>, ms: u64, a: Addr| t.admit_learned(at(ms), a, CAPS, &mut no_evict).unwrap();
        let g3 = admit(&mut t, 1, udp(3, 1));
        let g1a = admit(&mut t, 10, udp(1, 1));
        let g1b = admit(&mut t, 10, udp(1, 2));
        let g1c = admit(&mut t, 10, udp(1, 3));
        let g2a = admit(&mut t, 5, udp(2, 1));
        let g2b = admit(&mut t, 5, udp(2, 2));
        assert!(t.is_full());
        t.touch(at(50), g1a);
        t.touch(at(30), g1c);
        // g1b (idle since 10) is the idlest of the largest group.
        let mut gone = StdVec::new();
        let new = t.admit_learned(at(60), udp(4, 1), CAPS, &mut |e| gone.push(e.id)).unwrap();
        assert_eq!(gone, [g1b]);
        // Now groups 1 and 2 hold two each: the idlest of those four is
        // g2a or g2b (5); the first of equals goes, never g3.
        gone.clear();
        t.admit_learned(at(61), udp(5, 1), CAPS, &mut |e| gone.push(e.id)).unwrap();
        assert!(gone == [g2a] || gone == [g2b], "{gone:?}");
        assert!(t.by_id(g3).is_some() && t.by_id(new).is_some());
        check(&t);
    }

    #[test]
    fn test_ids_never_reused_while_live() {
        let mut t: Table<4> = LinkTable::default();
        let one = t.insert(at(0), udp(1, 1), Origin::Static, CAPS).unwrap();
        assert_eq!(one, LinkId(1));
        let two = t.insert(at(0), udp(1, 2), Origin::Static, CAPS).unwrap();
        t.remove(two).unwrap();
        // Ids move on after a removal: a stale id names nobody new.
        assert_eq!(t.insert(at(0), udp(1, 3), Origin::Static, CAPS), Ok(LinkId(3)));
        t.remove(LinkId(3)).unwrap();
        // Near the wrap: u32::MAX, 0, then 1 is live and skipped.
        t.next_id = u32::MAX;
        assert_eq!(t.insert(at(0), udp(2, 1), Origin::Static, CAPS), Ok(LinkId(u32::MAX)));
        assert_eq!(t.insert(at(0), udp(2, 2), Origin::Static, CAPS), Ok(LinkId(0)));
        assert_eq!(t.insert(at(0), udp(2, 3), Origin::Static, CAPS), Ok(LinkId(2)));
        assert!(t.is_full());
        t.remove(LinkId(0)).unwrap();
        // Every id from next_id on is live except a wrapped-around free one.
        t.next_id = u32::MAX;
        assert_eq!(t.insert(at(0), udp(2, 4), Origin::Static, CAPS), Ok(LinkId(0)));
        check(&t);
    }

    #[test]
    fn test_idle_expiry() {
        let mut t: Table<8> = LinkTable::default();
        let s = t.insert(at(0), udp(1, 1), Origin::Static, CAPS).unwrap();
        let d = t.insert(at(0), udp(2, 1), Origin::Discovered, CAPS).unwrap();
        let l1 = t.admit_learned(at(0), udp(3, 1), CAPS, &mut no_evict).unwrap();
        let l2 = t.admit_learned(at(0), udp(4, 1), CAPS, &mut no_evict).unwrap();
        t.touch(at(60 * SEC), s);
        t.touch(at(10 * SEC), d);
        t.touch(at(20 * SEC), l2);
        assert_eq!(t.pop_idle(at(120 * SEC - 1)), None);
        assert_eq!(t.pop_idle(at(120 * SEC)).map(|e| e.id), Some(l1));
        assert_eq!(t.pop_idle(at(120 * SEC)), None);
        assert_eq!(t.poll_timeout(), Some(at(130 * SEC)));
        // The idlest first; the static link stays.
        assert_eq!(t.pop_idle(at(1000 * SEC)).map(|e| e.id), Some(d));
        assert_eq!(t.pop_idle(at(1000 * SEC)).map(|e| e.id), Some(l2));
        assert_eq!(t.pop_idle(at(1000 * SEC)), None);
        assert_eq!(t.iter().map(|e| e.id).collect::<StdVec<_>>(), [s]);
        assert!(t.poll_timeout().is_some(), "the static link's retry");
        t.remove(s).unwrap();
        assert_eq!(t.poll_timeout(), None);
        check(&t);
    }

    #[test]
    fn test_static_retry_backoff() {
        let mut t: Table<4> = LinkTable::default();
        let s = t.insert(at(0), udp(1, 1), Origin::Static, CAPS).unwrap();
        assert_eq!(t.poll_timeout(), Some(at(2 * SEC)));
        assert_eq!(t.due_retry(at(2 * SEC - 1)), None);
        // 2 s after going up, then 4, 8, 16, and 30 s apart from then on.
        let mut now = 0;
        let mut gaps = StdVec::new();
        for _ in 0..7 {
            let next = t.poll_timeout().unwrap().millis();
            gaps.push((next - now) / SEC);
            now = next;
            assert_eq!(t.due_retry(at(now)), Some(s));
            assert_eq!(t.due_retry(at(now)), None, "once per due time");
            assert_eq!(t.pop_idle(at(now)), None, "static links never expire");
        }
        assert_eq!(gaps, [2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(t.by_id(s).map(|e| e.backoff), Some(Duration::from_secs(30)));
        check(&t);

        // A discovered link is retried until first heard, then only expires.
        let d = t.insert(at(now), udp(2, 1), Origin::Discovered, CAPS).unwrap();
        assert_eq!(t.due_retry(at(now + 2 * SEC)), Some(d));
        t.touch(at(now + 3 * SEC), d);
        assert_eq!(t.by_id(d).map(|e| e.retry_at), Some(Instant::FAR_FUTURE));
        // Learned links are never retried.
        let l = t.admit_learned(at(now), udp(3, 1), CAPS, &mut no_evict).unwrap();
        assert_eq!(t.by_id(l).map(|e| e.retry_at), Some(Instant::FAR_FUTURE));
        assert_eq!(t.due_retry(at(u64::MAX - 1)), Some(s));
        assert_eq!(t.due_retry(at(u64::MAX - 1)), None);
    }

    #[test]
    fn test_touch_resets_backoff() {
        let mut t: Table<4> = LinkTable::default();
        let s = t.insert(at(0), udp(1, 1), Origin::Static, CAPS).unwrap();
        for ms in [2, 6, 14, 30] {
            assert_eq!(t.due_retry(at(ms * SEC)), Some(s));
        }
        assert_eq!(t.by_id(s).map(|e| e.backoff), Some(Duration::from_secs(30)));
        assert!(t.touch(at(31 * SEC), s));
        let e = t.by_id(s).unwrap();
        assert_eq!((e.backoff, e.last_rx, e.retry_at), (Duration::from_secs(2), at(31 * SEC), at(151 * SEC)));
        // Heard again and again: never due.
        for k in 1..10 {
            assert!(t.touch(at((31 + 100 * k) * SEC), s));
            assert_eq!(t.due_retry(at((31 + 100 * k) * SEC)), None);
        }
        // Silent for `idle`: retried 4 s later, then 8.
        let last = 931 * SEC;
        assert_eq!(t.due_retry(at(last + 120 * SEC - 1)), None);
        assert_eq!(t.due_retry(at(last + 120 * SEC)), Some(s));
        assert_eq!(t.poll_timeout(), Some(at(last + 124 * SEC)));
        assert!(!t.touch(at(0), LinkId(99)));
        check(&t);
    }

    #[test]
    fn test_set_caps_and_remove() {
        let mut t: Table<4> = LinkTable::default();
        let b = t.insert(at(0), Addr::Ble(3), Origin::Discovered, BLE_CAPS).unwrap();
        let u = t.insert(at(0), udp(1, 1), Origin::Static, CAPS).unwrap();
        let bigger = LinkCaps { mtu: 498, ..BLE_CAPS };
        assert!(t.set_caps(b, bigger));
        assert_eq!(t.get(&Addr::Ble(3)).map(|e| e.caps), Some(bigger));
        assert_eq!(t.by_id(u).map(|e| e.caps), Some(CAPS));
        assert!(!t.set_caps(LinkId(99), bigger));
        assert_eq!(t.remove_addr(&Addr::Ble(3)).map(|e| e.id), Some(b));
        assert_eq!(t.remove_addr(&Addr::Ble(3)), None);
        assert_eq!(t.remove(b), None);
        assert_eq!(t.remove(u).map(|e| e.addr), Some(udp(1, 1)));
        assert!(t.is_empty());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u8, Origin),
        Admit(u8),
        Remove(u8),
        RemoveAddr(u8),
        Touch(u8),
        SetCaps(u8, u16),
        Advance(u32),
        Timers,
    }

    /// 48 addresses: 6 UDP hosts with 6 ports each, 6 serial ports, 6 BLE
    /// handles, so groups fill up and collide.
    fn addr_of(k: u8) -> Addr {
        match k % 48 {
            k @ 0..36 => udp(u16::from(k / 6), u16::from(k % 6)),
            k @ 36..42 => Addr::Serial(k),
            k => Addr::Ble(u16::from(k)),
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        let origin = prop_oneof![Just(Origin::Static), Just(Origin::Discovered), Just(Origin::Learned)];
        prop_oneof![
            2 => (any::<u8>(), origin).prop_map(|(a, o)| Op::Insert(a, o)),
            4 => any::<u8>().prop_map(Op::Admit),
            1 => any::<u8>().prop_map(Op::Remove),
            1 => any::<u8>().prop_map(Op::RemoveAddr),
            2 => any::<u8>().prop_map(Op::Touch),
            1 => (any::<u8>(), 20..1500u16).prop_map(|(a, m)| Op::SetCaps(a, m)),
            2 => (0..200_000u32).prop_map(Op::Advance),
            2 => Just(Op::Timers),
        ]
    }

    /// Random operations on a table of `N` links; every invariant checked
    /// after each.
    fn run_ops<const N: usize>(ops: StdVec<Op>, limit: usize) -> Result<(), TestCaseError> {
        let config = TableConfig { learned_per_group: limit, ..TableConfig::DEFAULT };
        let mut t: Table<N> = LinkTable::new(config);
        let mut now = 0u64;
        for op in ops {
            let before: StdVec<LinkEntry<Addr>> = t.iter().cloned().collect();
            // A live id picked by index, or one that is not there.
            let pick = |t: &Table<N>, k: u8| {
                t.iter().nth(usize::from(k) % (N + 4)).map_or(LinkId(u32::from(k) + 1_000_000), |e| e.id)
            };
            match op {
                Op::Insert(a, origin) => {
                    let addr = addr_of(a);
                    match t.insert(at(now), addr.clone(), origin, CAPS) {
                        Ok(id) => {
                            let e = t.by_id(id).unwrap();
                            prop_assert_eq!(&e.addr, &addr);
                            prop_assert!(e.origin.rank() >= origin.rank());
                        }
                        Err(InsertError::Full) => prop_assert!(t.is_full()),
                        Err(InsertError::GroupFull) => {
                            prop_assert_eq!(origin, Origin::Learned);
                            prop_assert_eq!(t.learned_in(&addr.group()), limit);
                        }
                    }
                    prop_assert!(t.len() == before.len() || t.len() == before.len() + 1);
                }
                Op::Admit(a) => {
                    let addr = addr_of(a);
                    let mut gone = StdVec::new();
                    match t.admit_learned(at(now), addr.clone(), CAPS, &mut |e| gone.push(e)) {
                        Ok(id) => {
                            prop_assert_eq!(&t.by_id(id).unwrap().addr, &addr);
                            prop_assert!(gone.len() <= 1);
                        }
                        Err(TableFull) => {
                            prop_assert!(gone.is_empty());
                            prop_assert!(t.is_full());
                            prop_assert!(t.iter().all(|e| e.origin != Origin::Learned));
                        }
                    }
                    for e in &gone {
                        prop_assert_eq!(e.origin, Origin::Learned);
                        prop_assert!(before.contains(e));
                        prop_assert!(t.by_id(e.id).is_none_or(|n| n.addr == addr));
                    }
                    // Static and discovered links all stayed.
                    for e in before.iter().filter(|e| e.origin != Origin::Learned) {
                        prop_assert!(t.by_id(e.id).is_some());
                    }
                }
                Op::Remove(k) => {
                    let id = pick(&t, k);
                    let had = t.by_id(id).cloned();
                    prop_assert_eq!(t.remove(id), had);
                    prop_assert!(t.by_id(id).is_none());
                }
                Op::RemoveAddr(a) => {
                    let addr = addr_of(a);
                    let had = t.get(&addr).cloned();
                    prop_assert_eq!(t.remove_addr(&addr), had);
                }
                Op::Touch(k) => {
                    let id = pick(&t, k);
                    prop_assert_eq!(t.touch(at(now), id), t.by_id(id).is_some());
                }
                Op::SetCaps(k, mtu) => {
                    let id = pick(&t, k);
                    let caps = LinkCaps { mtu, ..CAPS };
                    if t.set_caps(id, caps) {
                        prop_assert_eq!(t.by_id(id).map(|e| e.caps), Some(caps));
                    }
                }
                Op::Advance(ms) => now += u64::from(ms),
                Op::Timers => {
                    // Nothing is due before poll_timeout, and something is
                    // due at it.
                    if let Some(next) = t.poll_timeout() {
                        let mut probe = t.clone();
                        prop_assert!(probe.pop_idle(next).is_some() || probe.due_retry(next).is_some());
                        if next > Instant::ZERO {
                            let early = at(next.millis() - 1);
                            let mut probe = t.clone();
                            prop_assert!(probe.pop_idle(early).is_none() && probe.due_retry(early).is_none());
                        }
                    }
                    while let Some(e) = t.pop_idle(at(now)) {
                        prop_assert!(e.origin != Origin::Static);
                        prop_assert!(e.idle_for(at(now)) >= config.idle);
                    }
                    let mut retries = 0;
                    while let Some(id) = t.due_retry(at(now)) {
                        retries += 1;
                        prop_assert!(retries <= N, "each link once per call");
                        prop_assert!(t.by_id(id).unwrap().retry_at > at(now));
                    }
                    prop_assert!(t.poll_timeout().is_none_or(|n| n > at(now)));
                }
            }
            check(&t);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn prop_invariants(ops in proptest::collection::vec(op(), 1..200), limit in 1..4usize) {
            run_ops::<12>(ops, limit)?;
        }

        /// A small table: full of static and discovered links more often.
        #[test]
        fn prop_invariants_small(ops in proptest::collection::vec(op(), 1..100), limit in 1..3usize) {
            run_ops::<4>(ops, limit)?;
        }
    }
}
