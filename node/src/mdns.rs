//! LAN discovery with mDNS/DNS-SD (mdns-sd): every node advertises
//! `_ferry._udp.local.` and browses for it, on every interface.
//!
//! Nothing in the records identifies the person or the machine: the
//! instance name and the host label are random, new every run and again
//! every epoch (about an hour), and the only TXT entry is the protocol
//! version (`v=1`). The port is the node's UDP port, random per run and
//! new every epoch too unless `--listen` fixes it (the node decides the
//! epochs and calls [`Discovery::rotate`]).
//! Only IPv4 is used: IPv6 addresses often carry the MAC address.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use rand::RngExt;
use tokio::sync::mpsc;

/// The DNS-SD service type.
pub const SERVICE_TYPE: &str = "_ferry._udp.local.";
/// The one TXT property: the protocol version.
pub const TXT_VERSION: (&str, &str) = ("v", "1");

/// Instances remembered at most (to tell the node when one goes away).
const KNOWN_MAX: usize = 1024;

/// What discovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// The service instance `instance` advertises these addresses (all of
    /// them the same node: try every one, keep one).
    Discovered {
        /// The instance's full name (random, changes every epoch).
        instance: String,
        /// Its usable addresses.
        addrs: Vec<SocketAddr>,
    },
    /// The instance went away.
    Expired {
        /// The instance's full name.
        instance: String,
    },
}

/// A running (or disabled) discovery.
#[derive(Debug)]
pub struct Discovery {
    rx: Option<mpsc::Receiver<DiscoveryEvent>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// A new epoch: new random names, for this port.
    rotate: Option<mpsc::Sender<u16>>,
}

fn random_label(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// A fresh, random advertisement for `port`.
pub fn advertisement(port: u16) -> Result<ServiceInfo, mdns_sd::Error> {
    let instance = format!("ferry-{}", random_label(12));
    let host = format!("{}.local.", random_label(12));
    let props = [TXT_VERSION];
    Ok(ServiceInfo::new(SERVICE_TYPE, &instance, &host, "", port, &props[..])?.enable_addr_auto())
}

/// Addresses worth probing. IPv4 link-local ones (169.254/16) are: two
/// machines on a cable with no DHCP server have nothing else, and the kernel
/// routes them without a scope. (IPv6 is left out of mDNS altogether.)
fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_broadcast() && !v4.is_multicast(),
        IpAddr::V6(v6) => !v6.is_unspecified() && !v6.is_unicast_link_local(),
    }
}

impl Discovery {
    /// Discovery that never finds anything (`--no-mdns`).
    pub fn disabled() -> Self {
        Discovery { rx: None, stop: None, rotate: None }
    }

    /// Advertise `port` and browse. Failures (no multicast interface, say)
    /// are logged and leave discovery disabled: static peers still work.
    pub fn start(port: u16) -> Self {
        let daemon = match ServiceDaemon::new() {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("mDNS unavailable, discovery off: {e}");
                return Self::disabled();
            }
        };
        // IPv4 only. An IPv6 address is too often a name for the device:
        // every interface's link-local address, and many global ones, are
        // derived from its MAC address (EUI-64), the same on every network,
        // and the library cannot tell temporary addresses from stable ones.
        // Records then carry only the IPv4 addresses of the interface they
        // go out on (never those of another interface, such as a VPN's; the
        // library leaves point-to-point interfaces out altogether).
        if let Err(e) = daemon.disable_interface(IfKind::IPv6) {
            tracing::warn!("mDNS: cannot leave IPv6 out, discovery off: {e}");
            let _ = daemon.shutdown();
            return Self::disabled();
        }
        let browse = match daemon.browse(SERVICE_TYPE) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("mDNS browse failed, discovery off: {e}");
                let _ = daemon.shutdown();
                return Self::disabled();
            }
        };
        let (tx, rx) = mpsc::channel(256);
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (rotate_tx, mut rotate_rx) = mpsc::channel::<u16>(4);
        tokio::spawn(async move {
            let mut mine = match advertisement(port) {
                Ok(info) => info,
                Err(e) => {
                    tracing::warn!("mDNS advertisement failed: {e}");
                    let _ = daemon.shutdown();
                    return;
                }
            };
            let mut my_name = mine.get_fullname().to_owned();
            if let Err(e) = daemon.register(mine) {
                tracing::warn!("mDNS register failed: {e}");
            }
            let mut known: HashMap<String, Vec<SocketAddr>> = HashMap::new();
            loop {
                tokio::select! {
                    ev = browse.recv_async() => {
                        let Ok(ev) = ev else { break };
                        match ev {
                            ServiceEvent::ServiceResolved(info) => {
                                if info.get_fullname() == my_name {
                                    continue;
                                }
                                let port = info.get_port();
                                let addrs: Vec<SocketAddr> = info
                                    .get_addresses()
                                    .iter()
                                    .map(|ip| ip.to_ip_addr())
                                    .filter(usable)
                                    .collect::<HashSet<_>>()
                                    .into_iter()
                                    .map(|ip| SocketAddr::new(ip, port))
                                    .collect();
                                if addrs.is_empty() {
                                    continue;
                                }
                                let instance = info.get_fullname().to_owned();
                                if known.len() >= KNOWN_MAX && !known.contains_key(&instance) {
                                    // Full (fake records, say): forget any
                                    // one rather than every newcomer, so a
                                    // real peer still gets through (issue 12).
                                    if let Some(old) = known.keys().next().cloned() {
                                        known.remove(&old);
                                    }
                                }
                                known.insert(instance.clone(), addrs.clone());
                                let _ = tx.try_send(DiscoveryEvent::Discovered { instance, addrs });
                            }
                            ServiceEvent::ServiceRemoved(_, fullname) if known.remove(&fullname).is_some() => {
                                let _ = tx.try_send(DiscoveryEvent::Expired { instance: fullname });
                            }
                            _ => {}
                        }
                    }
                    Some(port) = rotate_rx.recv() => {
                        // A new epoch: new random names (and the node's
                        // port, new too unless it was fixed).
                        let _ = daemon.unregister(&my_name);
                        if let Ok(info) = advertisement(port) {
                            my_name = info.get_fullname().to_owned();
                            mine = info;
                            if let Err(e) = daemon.register(mine) {
                                tracing::warn!("mDNS re-register failed: {e}");
                            }
                        }
                    }
                    _ = &mut stop_rx => break,
                }
            }
            let _ = daemon.unregister(&my_name);
            if let Ok(done) = daemon.shutdown() {
                let _ = tokio::time::timeout(Duration::from_secs(1), done.recv_async()).await;
            }
        });
        Discovery { rx: Some(rx), stop: Some(stop_tx), rotate: Some(rotate_tx) }
    }

    /// The next event; pending forever when disabled.
    pub async fn next(&mut self) -> Option<DiscoveryEvent> {
        match self.rx.as_mut() {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    /// A new epoch: advertise under new random names, at `port`.
    pub fn rotate(&self, port: u16) {
        if let Some(r) = &self.rotate {
            let _ = r.try_send(port);
        }
    }

    /// How long an epoch lasts: `secs` if given, else 50 to 70 minutes at
    /// random (so that epochs of different nodes do not line up).
    pub fn epoch(secs: Option<u64>) -> Duration {
        secs.map_or_else(|| Duration::from_secs(rand::rng().random_range(50 * 60..70 * 60)), Duration::from_secs)
    }

    /// Unregister and stop.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertisements_are_random_and_carry_only_the_version() {
        let a = advertisement(4000).unwrap();
        let b = advertisement(4000).unwrap();
        assert_ne!(a.get_fullname(), b.get_fullname());
        assert_ne!(a.get_hostname(), b.get_hostname());
        let host = gethostname();
        // The labels are random: a short host name ("vm") can turn up inside
        // one by chance (about 1 run in 60 for two letters), so the
        // containment check is for names long enough that chance cannot
        // (6 characters: 1 in 10^8); a short name must just not be a label.
        let labels: Vec<&str> = a.get_fullname().split('.').chain(a.get_hostname().split('.')).collect();
        assert!(host.is_empty() || !labels.contains(&host.as_str()), "{labels:?}");
        if host.len() >= 6 {
            assert!(!a.get_fullname().contains(&host) && !a.get_hostname().contains(&host));
        }
        let props: Vec<(String, String)> =
            a.get_properties().iter().map(|p| (p.key().to_owned(), p.val_str().to_owned())).collect();
        assert_eq!(props, vec![("v".to_owned(), "1".to_owned())]);
    }

    fn gethostname() -> String {
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_default()
    }
}
