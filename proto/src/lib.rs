//! # ferry-proto
//!
//! The core every Ferry device runs: the laptop daemon, the relay dongle and
//! the simulator drive this same code. It is sans-IO (no sockets, clock, RNG
//! or async: time and randomness are arguments), `no_std`, and heap-free:
//! every buffer is bounded by a const generic or by caller-owned memory.
//!
//! ```text
//!   driver (node daemon · firmware · simulator · testing::Net)
//!     │  owns links, clock, RNG; keeps a link::table::LinkTable<Addr, N>
//!     │  link up/down, frames in ─▶  ◀─ frames out, events, next wake-up
//!     ▼
//!   dyn Node ─── the one face (node::Node)
//!     ├── Router            relay: store, seen table, peer sync, broadcast
//!     │                     suppression, per-link queues, cookies
//!     └── Endpoint          a Router plus keys: contacts and tags, outbox,
//!                           inbox, replay table, receipt policy
//!   below the router, per link kind:
//!     link::{LinkFrame, Session, Deframer}   link hello, credits, serial COBS+CRC
//!     segment                                frames above a link's MTU
//!     wire                                   the outer frame (all a relay reads)
//! ```
//!
//! * [`node`]: the face ([`Node`]) a driver calls, the one RNG type, events.
//! * [`wire`]: the outer frame, the only bytes a relay reads.
//! * [`router`]: the store-carry-forward node state machine (relay-only builds
//!   stop here: no X25519, no AEAD).
//! * `endpoint` (feature): identity, contact codes, the sealed envelope and the
//!   [`Endpoint`](endpoint::Endpoint) that wraps a router for an end user.
//! * [`link`]: the link layer below the router on serial and BLE links (link
//!   hello, credits), the serial framing (COBS + CRC), and the driver's link
//!   table ([`link::table`]) that junk cannot fill.
//! * `testing` (feature): `testing::Net`, a deterministic network of real
//!   nodes driven through the face, for tests.
//!
//! The wire format, construction and threat model are in `SPEC.md`.
#![no_std]
#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
#![warn(missing_docs)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

#[cfg(any(feature = "std", test))]
extern crate std;

#[cfg(feature = "endpoint")]
pub mod code;
#[cfg(feature = "endpoint")]
pub mod endpoint;
#[cfg(feature = "endpoint")]
pub mod envelope;
pub mod hash;
pub mod link;
pub mod node;
pub mod router;
pub mod segment;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod wipe;
pub mod wire;

pub use node::Node;
pub use time::{Duration, Instant};
