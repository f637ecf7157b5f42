//! Time as the caller gives it.
//!
//! `proto` never reads a clock: every entry point takes `now: Instant`, a
//! monotonic count of milliseconds from an origin the driver picks (boot, for
//! a dongle; process start, for the daemon; zero, for the simulator). Nothing
//! here is wall-clock time, so a device whose clock is wrong routes correctly.

use core::fmt;

/// A point on the driver's monotonic clock, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant {
    millis: u64,
}

/// A span of time, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    millis: u64,
}

impl Instant {
    /// The origin of the driver's clock.
    pub const ZERO: Instant = Instant { millis: 0 };
    /// Later than every instant a node will ever see; used for "never".
    pub const FAR_FUTURE: Instant = Instant { millis: u64::MAX };

    /// An instant `millis` milliseconds after the origin.
    pub const fn from_millis(millis: u64) -> Self {
        Instant { millis }
    }

    /// Milliseconds since the origin.
    pub const fn millis(self) -> u64 {
        self.millis
    }

    /// `self + d`, saturating at [`Instant::FAR_FUTURE`].
    #[must_use]
    pub const fn saturating_add(self, d: Duration) -> Instant {
        Instant { millis: self.millis.saturating_add(d.millis) }
    }

    /// Time from `earlier` to `self`, or zero if `earlier` is later.
    #[must_use]
    pub const fn saturating_since(self, earlier: Instant) -> Duration {
        Duration { millis: self.millis.saturating_sub(earlier.millis) }
    }
}

impl Duration {
    /// No time at all.
    pub const ZERO: Duration = Duration { millis: 0 };

    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Duration { millis }
    }

    /// A duration of `secs` seconds (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        Duration { millis: secs.saturating_mul(1000) }
    }

    /// The duration in milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.millis
    }

    /// The duration in whole seconds, rounded up (a holder that kept a frame
    /// for 1 ms charges it a full second of lifetime, never zero).
    pub const fn as_secs_ceil(self) -> u64 {
        self.millis.div_ceil(1000)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.millis / 1000, self.millis % 1000)
    }
}
