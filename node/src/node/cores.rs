//! The core a node drives, and how it is built: a relay's router (in a
//! static, so only the pages it uses become resident) or a person's
//! endpoint (a router plus keys), both behind the one face
//! ([`ferry_proto::Node`]).

use ferry_proto::Node;
use ferry_proto::endpoint::Endpoint;
use ferry_proto::envelope::Identity;
use ferry_proto::router::{Config, HostRouter, LinkCaps};
use ferry_proto::wire::SizeClass;
use static_cell::ConstStaticCell;

/// The endpoint size the daemon uses: 1024 contacts (16384 tags), 1024
/// messages awaiting delivery, 16384 remembered receipt secrets.
pub type HostEndpoint = Endpoint<Box<HostRouter>, 1024, 16384, 1024, 16384>;

/// Caps of a UDP peer: a datagram below the IPv6 minimum MTU, large frames.
pub const UDP_CAPS: LinkCaps = LinkCaps { mtu: 1232, broadcast: false, max_class: SizeClass::Large };

/// The router's limits on a host: a LAN peer may send far more than a radio
/// neighbour (50,000 frames/s costs a relay about 5% of a core), and a
/// person may have up to 1024 messages waiting for delivery, as many as the
/// endpoint tracks.
pub const ROUTER_CONFIG: Config = Config { link_rate: 50_000, link_burst: 50_000, own_quota: 1024, ..Config::DEFAULT };

/// The router configuration for a store budget of `kib` KiB, split between
/// the size classes as in the full store (2/7 small, 5/7 large).
pub fn router_config(kib: Option<u32>) -> Config {
    let Some(kib) = kib else { return ROUTER_CONFIG };
    let bytes = kib as usize * 1024;
    let small = (bytes * 2 / 7 / SizeClass::Small.frame_len()).max(1);
    let large = (bytes * 5 / 7 / SizeClass::Large.frame_len()).max(1);
    Config { store_slots: (small, large), ..ROUTER_CONFIG }
}

/// The core this node drives: a relay or an endpoint, through the one face
/// both show ([`Node`]); only the endpoint's own requests (send, contacts)
/// look inside.
pub(super) enum Core {
    Endpoint(Box<HostEndpoint>),
    Relay(RelayRouter),
}

impl Core {
    pub(super) fn node(&mut self) -> &mut dyn Node {
        match self {
            Core::Endpoint(e) => &mut **e,
            Core::Relay(r) => &mut **r,
        }
    }

    pub(super) fn node_ref(&self) -> &dyn Node {
        match self {
            Core::Endpoint(e) => &**e,
            Core::Relay(r) => &**r,
        }
    }
}

/// A person's core: router and endpoint. Out of line, so that its
/// multi-megabyte stack frame is only ever touched by endpoints.
#[inline(never)]
pub(super) fn endpoint_core(identity: Identity) -> Box<HostEndpoint> {
    let router = Box::new(HostRouter::new(ROUTER_CONFIG));
    let mut ep = Box::new(HostEndpoint::new(identity, router));
    // All of a LAN's traffic may come through one relay link: allow 5,000
    // first-contact trials per second there (about a quarter of a core at
    // worst).
    ep.set_first_contact_rate(5_000);
    ep
}

/// The first relay of the process lives in a static built at compile time
/// (`Router::new` is `const`): it is never copied, so only the pages it
/// actually uses become resident (a relay's RSS stays well under 10 MB).
static RELAY: ConstStaticCell<HostRouter> = ConstStaticCell::new(HostRouter::new(ROUTER_CONFIG));

/// A relay's router: the static one, or (a second relay in one process,
/// as in tests) a copy on the heap.
pub(super) enum RelayRouter {
    Static(&'static mut HostRouter),
    Boxed(Box<HostRouter>),
}

impl std::ops::Deref for RelayRouter {
    type Target = HostRouter;
    fn deref(&self) -> &HostRouter {
        match self {
            RelayRouter::Static(r) => r,
            RelayRouter::Boxed(r) => r,
        }
    }
}

impl std::ops::DerefMut for RelayRouter {
    fn deref_mut(&mut self) -> &mut HostRouter {
        match self {
            RelayRouter::Static(r) => r,
            RelayRouter::Boxed(r) => r,
        }
    }
}

#[inline(never)]
pub(super) fn relay_core() -> RelayRouter {
    const FRESH: HostRouter = HostRouter::new(ROUTER_CONFIG);
    match RELAY.try_take() {
        Some(r) => RelayRouter::Static(r),
        None => RelayRouter::Boxed(Box::new(FRESH)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_budget_maps_to_slots_within_it() {
        assert_eq!(router_config(None), ROUTER_CONFIG);
        // The largest budget is exactly the compiled store.
        assert_eq!(router_config(Some(1680)).store_slots, (2048, 1024));
        for kib in [64u32, 100, 512, 1000, 1680] {
            let (s, l) = router_config(Some(kib)).store_slots;
            let bytes = s * SizeClass::Small.frame_len() + l * SizeClass::Large.frame_len();
            let budget = kib as usize * 1024;
            assert!(bytes <= budget && bytes * 100 >= budget * 98, "{kib} KiB -> {s} + {l} slots = {bytes} B");
        }
    }
}
