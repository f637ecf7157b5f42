//! The one face every Ferry node shows its driver.
//!
//! A relay ([`Router`](crate::router::Router)) and an end user's node
//! ([`Endpoint`](crate::endpoint::Endpoint), a router plus keys) are driven
//! through the same [`Node`] trait, with the same signatures: a driver (the
//! daemon, the firmware, the simulator, [`testing`](crate::testing)) owns the
//! links, the clock and the random numbers, feeds in what happens, and polls
//! out what to send and when to wake up:
//!
//! ```text
//!            link up/down, frames in            frames out (per link, or any)
//!  driver ───────────────────────────▶  Node  ──────────────────────────────▶ driver
//!         ◀── poll_timeout / handle_timeout ──▶       ──▶ poll_event (status, texts)
//! ```
//!
//! Nothing here blocks, allocates or reads a clock: `now` is an argument,
//! and so is the random number generator ([`Rng`], one type for every call).
//! The trait is object safe, so a driver can hold `&mut dyn Node` and stay
//! ignorant of which kind of node it drives.

use crate::router::{Config, FrameError, LinkCaps, LinkId, LinkInfo, Stats, Stranger, Transmit, ValidatedHello};
use crate::time::Instant;
use crate::wire::MessageId;

/// The random number generator every call takes: cryptographically secure,
/// because link nonces and cookies must be unpredictable even on a relay.
pub type Rng<'a> = &'a mut dyn rand_core::CryptoRng;

/// A sent message's state, as its sender sees it (SPEC §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeliveryState {
    /// Sealed and stored, not yet handed to any link.
    Queued,
    /// Handed to at least one link.
    Sent,
    /// A valid receipt came back (for every part).
    Delivered,
    /// Its lifetime ran out before a receipt came.
    Expired,
}

/// What a node tells its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // a text is the common case on an endpoint
#[non_exhaustive]
pub enum Event {
    /// One of this node's own messages changed state. On a router, `id` is
    /// the frame's id (from [`Router::submit`](crate::router::Router::submit));
    /// on an endpoint, the id [`Endpoint::send`](crate::endpoint::Endpoint::send)
    /// returned.
    Status {
        /// The message.
        id: MessageId,
        /// Its new state.
        state: DeliveryState,
    },
    /// A text arrived for this endpoint (never on a relay).
    #[cfg(feature = "endpoint")]
    Received(crate::endpoint::Received),
}

/// The node face: what a driver calls. Every method is cheap to call at any
/// time, and none panics on any input.
pub trait Node {
    /// A link came up. The node greets it with a hello (address validation,
    /// summary salt) unless it is a broadcast medium. Returns `false` if the
    /// link table is full or link-ups arrive faster than
    /// [`Config::link_ups_per_sec`]; the driver should then drop the link.
    #[must_use]
    fn handle_link_up(&mut self, now: Instant, rng: Rng<'_>, link: LinkId, caps: LinkCaps) -> bool;

    /// A link went down: its queue, partial frames and summary state go.
    /// Stored messages stay (that is the "carry" in store-carry-forward).
    fn handle_link_down(&mut self, now: Instant, link: LinkId);

    /// Bytes from an address that has no link (SPEC §6.1, stateless
    /// validation). Nothing is kept for such an address until it proves it
    /// receives there. A well-formed Ferry frame of at least 33 bytes is
    /// answered with one hello whose nonce is a *cookie* (a keyed hash of
    /// the address and the time epoch, that only this node can make) and
    /// that echoes the frame's nonce if it is a hello (zeros otherwise: a
    /// peer that believes it has a link to us, after our restart, learns
    /// that it must greet us again). Anything else is dropped. A hello that
    /// echoes a valid cookie for its address is [`Stranger::Validated`].
    /// `addr` is the driver's name for the address (a UDP address's bytes,
    /// say); `out` takes the answer (33 bytes).
    ///
    /// A source gets at most one 33-byte hello per frame of at least 33
    /// bytes it sends (no amplification), and at most
    /// [`Config::stranger_answers_per_sec`] answers go out in all.
    fn handle_stranger(&mut self, now: Instant, rng: Rng<'_>, addr: &[u8], bytes: &[u8], out: &mut [u8]) -> Stranger;

    /// Greet an address this node would like to link (one that discovery
    /// found) without keeping anything: a hello whose nonce is the cookie
    /// for `addr` and whose echo is zero, written to `out` (33 bytes; `None`
    /// if `out` is shorter). The peer answers it as any stranger's hello,
    /// echoing the cookie, so its answer comes back as
    /// [`Stranger::Validated`] from [`Node::handle_stranger`] and makes the
    /// link (SPEC §6.1). An address that never answers costs no link and no
    /// memory; how often to probe is the driver's (SPEC §6.1 gives bounds).
    fn probe(&mut self, now: Instant, rng: Rng<'_>, addr: &[u8], out: &mut [u8]) -> Option<usize>;

    /// Make the link a validated hello asked for, under `link` (point to
    /// point: `caps.broadcast` is ignored). It is validated at once and its
    /// summary exchange starts. `false`: the link table is full, or link-ups
    /// are over their rate; free a link and try again, or drop it.
    #[must_use]
    fn accept_stranger(
        &mut self,
        now: Instant,
        rng: Rng<'_>,
        link: LinkId,
        caps: LinkCaps,
        hello: ValidatedHello,
    ) -> bool;

    /// Handle one frame received on `link`: relay it, and (on an endpoint)
    /// open it if it is for us. Any bytes are fine: malformed ones are
    /// counted and refused with a typed error.
    fn handle_frame(&mut self, now: Instant, rng: Rng<'_>, link: LinkId, bytes: &[u8]) -> Result<(), FrameError>;

    /// Run timers (due receipts, hello retries, expiry of stored messages,
    /// seen entries, partial frames, deferred work).
    fn handle_timeout(&mut self, now: Instant, rng: Rng<'_>);

    /// When to call [`Node::handle_timeout`] next (`None`: nothing is due
    /// until something comes in).
    fn poll_timeout(&self) -> Option<Instant>;

    /// The next frame to send on any push link, written to the start of
    /// `buf` (which must hold [`MAX_FRAME_LEN`](crate::wire::MAX_FRAME_LEN)
    /// bytes). Links take turns, so one busy link cannot starve the others.
    /// Pull links (see [`Node::set_pull`]) are skipped.
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit>;

    /// The next frame (or segment) for one link, pull link or not: for a
    /// driver whose link can take a frame now (it has a credit, its line is
    /// free).
    fn poll_transmit_link(&mut self, now: Instant, link: LinkId, buf: &mut [u8]) -> Option<Transmit>;

    /// Make `link` a pull link (or not): [`Node::poll_transmit`] skips it,
    /// and its frames come only from [`Node::poll_transmit_link`]. For links
    /// that pace themselves (serial with credits, BLE).
    fn set_pull(&mut self, link: LinkId, pull: bool);

    /// The next event, if any. Drain it after every call that can make one
    /// (a full queue counts what it drops in [`Stats::events_dropped`]).
    fn poll_event(&mut self) -> Option<Event>;

    /// What the node knows of one of its links (`None`: not up).
    fn link(&self, link: LinkId) -> Option<LinkInfo>;

    /// The router's counters.
    fn stats(&self) -> Stats;

    /// Messages held in the store.
    fn held(&self) -> usize;

    /// The router's configuration.
    fn config(&self) -> &Config;

    /// Replace the router's configuration (meant for start-up, before any
    /// frame: a store already fuller than a new `store_slots` drains as its
    /// messages go, rather than at once).
    fn set_config(&mut self, config: Config);
}

#[cfg(feature = "std")]
impl<T: Node + ?Sized> Node for std::boxed::Box<T> {
    fn handle_link_up(&mut self, now: Instant, rng: Rng<'_>, link: LinkId, caps: LinkCaps) -> bool {
        (**self).handle_link_up(now, rng, link, caps)
    }
    fn handle_link_down(&mut self, now: Instant, link: LinkId) {
        (**self).handle_link_down(now, link)
    }
    fn handle_stranger(&mut self, now: Instant, rng: Rng<'_>, addr: &[u8], bytes: &[u8], out: &mut [u8]) -> Stranger {
        (**self).handle_stranger(now, rng, addr, bytes, out)
    }
    fn probe(&mut self, now: Instant, rng: Rng<'_>, addr: &[u8], out: &mut [u8]) -> Option<usize> {
        (**self).probe(now, rng, addr, out)
    }
    fn accept_stranger(
        &mut self,
        now: Instant,
        rng: Rng<'_>,
        link: LinkId,
        caps: LinkCaps,
        hello: ValidatedHello,
    ) -> bool {
        (**self).accept_stranger(now, rng, link, caps, hello)
    }
    fn handle_frame(&mut self, now: Instant, rng: Rng<'_>, link: LinkId, bytes: &[u8]) -> Result<(), FrameError> {
        (**self).handle_frame(now, rng, link, bytes)
    }
    fn handle_timeout(&mut self, now: Instant, rng: Rng<'_>) {
        (**self).handle_timeout(now, rng)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        (**self).poll_timeout()
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        (**self).poll_transmit(now, buf)
    }
    fn poll_transmit_link(&mut self, now: Instant, link: LinkId, buf: &mut [u8]) -> Option<Transmit> {
        (**self).poll_transmit_link(now, link, buf)
    }
    fn set_pull(&mut self, link: LinkId, pull: bool) {
        (**self).set_pull(link, pull)
    }
    fn poll_event(&mut self) -> Option<Event> {
        (**self).poll_event()
    }
    fn link(&self, link: LinkId) -> Option<LinkInfo> {
        (**self).link(link)
    }
    fn stats(&self) -> Stats {
        (**self).stats()
    }
    fn held(&self) -> usize {
        (**self).held()
    }
    fn config(&self) -> &Config {
        (**self).config()
    }
    fn set_config(&mut self, config: Config) {
        (**self).set_config(config)
    }
}
