//! # ferry-proto
//!
//! The core every Ferry device runs: the laptop daemon, the relay dongle and
//! the simulator drive this same code. It is sans-IO (no sockets, clock, RNG
//! or async: time and randomness are arguments), `no_std`, and heap-free:
//! every buffer is bounded by a const generic or by caller-owned memory.
//!
//! * [`wire`]: the outer frame, the only bytes a relay reads.
//! * [`router`]: the store-carry-forward node state machine (relay-only builds
//!   stop here: no X25519, no AEAD).
//! * `endpoint` (feature): identity, contact codes, the sealed envelope and the
//!   [`Endpoint`](endpoint::Endpoint) that wraps a router for an end user.
//! * [`link`]: the link layer below the router on serial and BLE links (link
//!   hello, credits) and the serial framing (COBS + CRC).
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
pub mod router;
pub mod segment;
pub mod time;
pub mod wire;

pub use time::{Duration, Instant};
