//! `ferry` nodes in Linux network namespaces, found by mDNS alone (no `--peer`).
//!
//! Each test builds its own topology: a "switch" namespace holding one bridge per LAN, and one namespace
//! per host with a veth into the switch. Nothing is created in the root namespace; names carry the test's
//! pid, and a guard kills what runs inside and deletes the namespaces, even when the test panics.
//!
//! Needs root and `ip` (iproute2). Without them the tests print `SKIP: ...`, or fail under `CI=true`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::{Node, Proc, Signal, Value, eventually, ferry_bin, have, is_root, json, skip_unless};

/// Discovery, then a message and its receipt.
const DELIVERY: Duration = Duration::from_secs(15);

fn can_run() -> bool {
    let reason = if !is_root() {
        Some("needs root for network namespaces")
    } else if !have("ip") {
        Some("`ip` (iproute2) is not installed")
    } else {
        None
    };
    match reason {
        Some(r) => !skip_unless(false, r),
        None => true,
    }
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Namespaces, bridges and veths of one test; torn down on drop.
#[derive(Debug)]
struct Topo {
    prefix: String,
    /// Every namespace made, the switch first.
    namespaces: Vec<String>,
    switch: String,
    ports: u32,
    lans: Vec<u8>,
    dir: tempfile::TempDir,
}

impl Topo {
    fn new(tag: &str) -> Topo {
        clean_stale();
        let prefix = format!("ferrytest-{}-{tag}", std::process::id());
        let mut t = Topo {
            switch: format!("{prefix}-sw"),
            prefix,
            namespaces: Vec::new(),
            ports: 0,
            lans: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let sw = t.switch.clone();
        t.add_ns(&sw);
        t
    }

    fn add_ns(&mut self, full: &str) {
        run(&["ip", "netns", "add", full]);
        self.namespaces.push(full.to_owned());
        run(&["ip", "-n", full, "link", "set", "lo", "up"]);
    }

    /// A host namespace (`name` is short: "a", "r1", ...); returns its full name.
    fn host(&mut self, name: &str) -> String {
        let full = format!("{}-{name}", self.prefix);
        self.add_ns(&full);
        full
    }

    /// LAN `n` (1..): a bridge `brN` in the switch namespace, subnet 10.77.N.0/24.
    fn lan(&mut self, n: u8) {
        let br = format!("br{n}");
        run(&["ip", "-n", &self.switch, "link", "add", &br, "type", "bridge", "mcast_snooping", "0"]);
        run(&["ip", "-n", &self.switch, "link", "set", &br, "up"]);
        self.lans.push(n);
    }

    /// Plug `ns` into LAN `lan` as `ifname` with address 10.77.lan.host/24.
    fn plug(&mut self, ns: &str, ifname: &str, lan: u8, host: u8) {
        self.ports += 1;
        let port = format!("p{}", self.ports);
        let br = format!("br{lan}");
        run(&["ip", "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", &port, "netns", &self.switch]);
        run(&["ip", "-n", &self.switch, "link", "set", &port, "master", &br]);
        run(&["ip", "-n", &self.switch, "link", "set", &port, "up"]);
        run(&["ip", "-n", ns, "addr", "add", &format!("10.77.{lan}.{host}/24"), "dev", ifname]);
        run(&["ip", "-n", ns, "link", "set", ifname, "multicast", "on"]);
        run(&["ip", "-n", ns, "link", "set", ifname, "up"]);
    }

    /// Two LANs and three hosts: `a` on LAN 1 (10.77.1.1), `b` on LAN 2
    /// (10.77.2.1), and `r` on both (.254 on each). Returns (a, r, b).
    fn two_lans_bridged(&mut self) -> (String, String, String) {
        self.lan(1);
        self.lan(2);
        let (na, nr, nb) = (self.host("a"), self.host("r"), self.host("b"));
        self.plug(&na, "eth1", 1, 1);
        self.plug(&nr, "eth1", 1, 254);
        self.plug(&nr, "eth2", 2, 254);
        self.plug(&nb, "eth1", 2, 1);
        (na, nr, nb)
    }

    /// `ip netns exec NS prog args...`
    fn cmd(&self, ns: &str, prog: impl AsRef<std::ffi::OsStr>, args: &[String]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(prog).args(args);
        c
    }

    /// `ferry rpc` with mDNS on and no static peers, inside `ns`.
    fn rpc(&self, name: &str, ns: &str, extra: &[String]) -> Node {
        let mut args = vec!["rpc".to_owned()];
        if !extra.iter().any(|a| a == "--identity") {
            args.push("--ephemeral".into());
        }
        args.extend_from_slice(extra);
        Node::spawn(name, self.cmd(ns, ferry_bin(), &args))
    }

    /// `ferry relay` with mDNS on, inside `ns`.
    fn relay(&self, name: &str, ns: &str) -> Proc {
        let mut c = self.cmd(ns, ferry_bin(), &["relay".to_owned()]);
        c.stdin(Stdio::null()).stdout(Stdio::null());
        Proc::spawn(name, c)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        // Whatever still runs inside our namespaces was started by this test.
        for ns in &self.namespaces {
            kill_inside(ns);
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}

fn pids_inside(ns: &str) -> Vec<String> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn kill_inside(ns: &str) {
    let pids = pids_inside(ns);
    for pid in &pids {
        let Ok(pid) = pid.parse::<i32>() else { continue };
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => eprintln!("cannot SIGKILL pid {pid} in {ns}: {e}"),
        }
    }
    if !pids.is_empty() && !eventually(Duration::from_secs(3), || pids_inside(ns).is_empty()) {
        eprintln!("processes still inside {ns} 3 s after SIGKILL: {:?}", pids_inside(ns));
    }
}

/// Namespaces left by an earlier run of these tests that was killed before its guard ran: delete those
/// whose pid is gone and that hold no process.
fn clean_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(rest) = name.strip_prefix("ferrytest-") else { continue };
        let Some(pid) = rest.split('-').next() else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() || !pids_inside(name).is_empty() {
            continue;
        }
        let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
    }
}

fn peers_found_by(node: &mut Node, how: &str) -> usize {
    let peers = node.ok("peers", json!({}));
    peers.as_array().map(|l| l.iter().filter(|p| p["found_by"] == json!(how)).count()).unwrap_or(0)
}

/// a. Two nodes on one LAN, no `--peer`: mDNS finds them, and a message gets through.
#[test]
fn mdns_discovery_on_one_lan() {
    if !can_run() {
        return;
    }
    let mut t = Topo::new("a");
    t.lan(1);
    let (na, nb) = (t.host("a"), t.host("b"));
    t.plug(&na, "eth1", 1, 1);
    t.plug(&nb, "eth1", 1, 2);
    // Each host has four addresses (two IPv4, one IPv6 ULA, and the IPv6 link-local one every interface
    // gets); its record carries the two IPv4 ones (mDNS leaves IPv6 out), and both are tried.
    for (ns, host) in [(&na, 1), (&nb, 2)] {
        run(&["ip", "-n", ns, "addr", "add", &format!("10.77.1.{}/24", 100 + host), "dev", "eth1"]);
        run(&["ip", "-n", ns, "addr", "add", &format!("fd77:1::{host}/64"), "dev", "eth1", "nodad"]);
    }
    let mut a = t.rpc("A", &na, &[]);
    let mut b = t.rpc("B", &nb, &[]);
    let (code_a, code_b) = (a.code(), b.code());

    assert!(
        eventually(DELIVERY, || peers_found_by(&mut a, "mdns") >= 1),
        "A found no peer by mDNS: {}",
        a.ok("peers", json!({}))
    );
    let id = a.send(&code_b, "found you by mDNS");
    let r = b.wait_received("found you by mDNS", DELIVERY);
    assert_eq!(r["code"], json!(code_a), "{r}");
    a.wait_delivered(&id, DELIVERY);
    // Every address was tried; once one answered, each side keeps exactly
    // one link to the other (no traffic twice over two addresses).
    for n in [&mut a, &mut b] {
        let one = eventually(DELIVERY, || {
            let peers = n.ok("peers", json!({}));
            let list = peers.as_array().cloned().unwrap_or_default();
            let mdns: Vec<&Value> = list.iter().filter(|p| p["found_by"] == "mdns").collect();
            mdns.len() == 1 && mdns[0]["validated"] == json!(true)
        });
        assert!(one, "not one validated mDNS link: {}", n.ok("peers", json!({})));
    }
    // And one link in all: the datagrams that came in from the peer's other addresses while every address
    // was tried left "incoming" links, which must go too, and stay gone.
    for n in [&mut a, &mut b] {
        let links = |n: &mut Node| n.ok("peers", json!({})).as_array().map_or(0, Vec::len);
        let one = eventually(DELIVERY, || links(n) == 1);
        let (name, peers) = (n.name().to_owned(), n.ok("peers", json!({})));
        assert!(one, "{name}: not one link: {peers}");
    }
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        for n in [&mut a, &mut b] {
            let peers = n.ok("peers", json!({}));
            assert_eq!(peers.as_array().map(Vec::len), Some(1), "{}: a second link came back: {peers}", n.name());
        }
    }
    a.assert_no_duplicates();
    b.assert_no_duplicates();
}

/// b. A relay with one leg on each of two LANs carries messages between them.
#[test]
fn relay_bridges_two_lans() {
    if !can_run() {
        return;
    }
    let mut t = Topo::new("b");
    let (na, nr, nb) = t.two_lans_bridged();
    let _relay = t.relay("R", &nr);
    let mut a = t.rpc("A", &na, &[]);
    let mut b = t.rpc("B", &nb, &[]);
    let (code_a, code_b) = (a.code(), b.code());

    let id = a.send(&code_b, "across two LANs");
    let r = b.wait_received("across two LANs", DELIVERY);
    assert_eq!(r["code"], json!(code_a), "{r}");
    a.wait_delivered(&id, DELIVERY);
    let id = b.send(&code_a, "and back across");
    let r = a.wait_received("and back across", DELIVERY);
    assert_eq!(r["code"], json!(code_b), "{r}");
    b.wait_delivered(&id, DELIVERY);
    // A and B never saw each other directly: every validated peer of A is the relay (on 10.77.1.254).
    for n in [&mut a, &mut b] {
        let peers = n.ok("peers", json!({}));
        let validated = peers.as_array().map(|l| l.iter().filter(|p| p["validated"] == json!(true)).count());
        assert_eq!(validated, Some(1), "{}: {peers}", n.name());
    }
    a.drain_for(Duration::from_millis(500));
    a.assert_no_duplicates();
    b.assert_no_duplicates();
}

/// Make an identity file with `ferry id` and return its code.
fn make_identity(path: &Path) -> String {
    let out = Command::new(ferry_bin()).arg("id").arg("--identity").arg(path).output().expect("ferry id");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_owned()
}

/// c. A sends to B while B does not exist yet; B (on the far side of a relay) starts 5 s later.
#[test]
fn store_and_forward_through_a_relay() {
    if !can_run() {
        return;
    }
    let mut t = Topo::new("c");
    let (na, nr, nb) = t.two_lans_bridged();
    let id_file = t.path("b.identity");
    let code_b = make_identity(&id_file);

    let _relay = t.relay("R", &nr);
    let mut a = t.rpc("A", &na, &[]);
    let code_a = a.code();
    let id = a.send(&code_b, "for when you come");
    // The relay takes it (A's status goes to sent) while B does not exist.
    a.wait_status(&id, "sent", DELIVERY);
    std::thread::sleep(Duration::from_secs(5));
    assert!(!a.history.iter().any(|v| v["method"] == "delivered"), "delivered before B started: {:#?}", a.history);

    let start = Instant::now();
    let mut b = t.rpc("B", &nb, &["--identity".into(), id_file.display().to_string()]);
    assert_eq!(b.code(), code_b);
    let r = b.wait_received("for when you come", DELIVERY);
    assert_eq!(r["code"], json!(code_a), "{r}");
    a.wait_delivered(&id, DELIVERY);
    eprintln!("delivered {:?} after B started", start.elapsed());
}

/// d. Two relays between the LANs; one is killed after the first message: the rest go through the other.
#[test]
fn relay_killed_midway_other_path_takes_over() {
    if !can_run() {
        return;
    }
    let mut t = Topo::new("d");
    t.lan(1);
    t.lan(2);
    let (na, nr1, nr2, nb) = (t.host("a"), t.host("r1"), t.host("r2"), t.host("b"));
    t.plug(&na, "eth1", 1, 1);
    t.plug(&nr1, "eth1", 1, 201);
    t.plug(&nr1, "eth2", 2, 201);
    t.plug(&nr2, "eth1", 1, 202);
    t.plug(&nr2, "eth2", 2, 202);
    t.plug(&nb, "eth1", 2, 1);
    let mut r1 = t.relay("R1", &nr1);
    let _r2 = t.relay("R2", &nr2);
    let mut a = t.rpc("A", &na, &[]);
    let mut b = t.rpc("B", &nb, &[]);
    let (code_a, code_b) = (a.code(), b.code());
    // Contacts (strangers' messages are rate-limited per minute at the recipient).
    b.ok("contacts.add", json!({"name": "alice", "code": code_a}));
    // Both relays are up with A before we start, so the first message takes both paths.
    assert!(
        eventually(DELIVERY, || {
            let peers = a.ok("peers", json!({}));
            peers.as_array().map(|l| l.iter().filter(|p| p["validated"] == json!(true)).count()).unwrap_or(0) >= 2
        }),
        "A did not find both relays: {}",
        a.ok("peers", json!({}))
    );

    let id = a.send(&code_b, "msg 0");
    b.wait_received("msg 0", DELIVERY);
    a.wait_delivered(&id, DELIVERY);

    r1.signal(Signal::SIGKILL);
    assert!(r1.wait_exit(Duration::from_secs(5)).is_some(), "R1 did not die");
    let ids: Vec<String> = (1..=5).map(|i| a.send(&code_b, &format!("msg {i}"))).collect();
    for i in 1..=5 {
        b.wait_received(&format!("msg {i}"), DELIVERY);
    }
    for id in &ids {
        a.wait_delivered(id, DELIVERY);
    }
    b.drain_for(Duration::from_secs(1));
    a.assert_no_duplicates();
    b.assert_no_duplicates();
    assert_eq!(b.received_ids().len(), 6, "{:#?}", b.history);
}

// ---- e. the mDNS records, seen by an independent implementation (Avahi) -----------------------------

/// A private D-Bus and avahi-daemon inside `ns`, and `avahi-browse` against them.
#[derive(Debug)]
struct Avahi {
    ns: String,
    bus: PathBuf,
    _dbus: Proc,
    daemon: Proc,
}

impl Avahi {
    fn start(t: &Topo, ns: &str) -> Avahi {
        let bus = t.path("bus");
        let bus_conf = t.path("bus.conf");
        std::fs::write(
            &bus_conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
                bus.display()
            ),
        )
        .expect("write bus.conf");
        let avahi_conf = t.path("avahi-daemon.conf");
        std::fs::write(
            &avahi_conf,
            "[server]\nuse-ipv4=yes\nuse-ipv6=yes\nenable-dbus=yes\nratelimit-burst=1000\n\
             [wide-area]\nenable-wide-area=no\n\
             [publish]\ndisable-publishing=yes\npublish-addresses=no\npublish-hinfo=no\npublish-workstation=no\n",
        )
        .expect("write avahi-daemon.conf");
        let mut c = t.cmd(
            ns,
            "dbus-daemon",
            &[format!("--config-file={}", bus_conf.display()), "--nofork".into(), "--nopidfile".into()],
        );
        c.stdin(Stdio::null()).stdout(Stdio::null());
        let dbus = Proc::spawn("dbus", c);
        assert!(eventually(Duration::from_secs(5), || bus.exists()), "no D-Bus socket: {}", dbus.stderr());
        // `ip netns exec` runs in a private mount namespace: a tmpfs on /run there gives this avahi-daemon
        // its own pid file without touching the host's /run.
        let script = "mount -t tmpfs tmpfs /run && mkdir -p /run/avahi-daemon && \
                      exec avahi-daemon --no-drop-root --no-chroot --no-rlimits -f \"$0\"";
        let mut c = t.cmd(ns, "sh", &["-c".into(), script.into(), avahi_conf.display().to_string()]);
        c.env("DBUS_SYSTEM_BUS_ADDRESS", format!("unix:path={}", bus.display()));
        c.stdin(Stdio::null()).stdout(Stdio::null());
        let daemon = Proc::spawn("avahi-daemon", c);
        assert!(
            eventually(Duration::from_secs(10), || daemon.stderr().contains("Server startup complete")),
            "avahi-daemon did not start: {}",
            daemon.stderr()
        );
        Avahi { ns: ns.to_owned(), bus, _dbus: dbus, daemon }
    }

    /// `avahi-browse -rpt _ferry._udp`: the resolved lines (`=;if;proto;instance;type;domain;host;addr;port;txt`).
    fn browse(&self) -> Vec<Vec<String>> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "timeout", "10", "avahi-browse", "-rpt", "_ferry._udp"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", format!("unix:path={}", self.bus.display()))
            .output()
            .expect("run avahi-browse");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "avahi-browse failed: {}\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.daemon.stderr()
        );
        text.lines().filter(|l| l.starts_with("=;")).map(|l| l.split(';').map(str::to_owned).collect()).collect()
    }

    /// Browse until a resolved `_ferry._udp` service not in `except` shows up; its fields.
    fn wait_new(&self, except: &HashSet<String>, timeout: Duration) -> Vec<String> {
        let end = Instant::now() + timeout;
        loop {
            let found = self.browse();
            if let Some(rec) = found.into_iter().find(|r| r.len() >= 10 && !except.contains(&r[3])) {
                return rec;
            }
            assert!(Instant::now() < end, "no new _ferry._udp service seen by avahi-browse within {timeout:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Run `ferry rpc` with `identity` inside `ns`, in its own UTS namespace with host name `hostname`.
fn rpc_with_hostname(t: &Topo, name: &str, ns: &str, identity: &Path, hostname: &str) -> Node {
    let script = "hostname \"$0\" && exec \"$@\"";
    let args: Vec<String> = vec![
        "--uts".into(),
        "sh".into(),
        "-c".into(),
        script.into(),
        hostname.into(),
        ferry_bin().display().to_string(),
        "rpc".into(),
        "--identity".into(),
        identity.display().to_string(),
    ];
    Node::spawn(name, t.cmd(ns, "unshare", &args))
}

fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// Check one resolved record: only `v=1` in TXT, no code, no host name.
fn check_record(rec: &[String], code: &str, hostname: &str) {
    let line = rec.join(";");
    assert_eq!(rec[4], "_ferry._udp", "{line}");
    assert_eq!(rec[9], "\"v=1\"", "TXT must be exactly v=1: {line}");
    let data = &code["ferry1".len()..];
    for needle in [code, data, &data[..12], &data[data.len() - 12..]] {
        assert!(!line.contains(needle), "the record carries the contact code ({needle}): {line}");
    }
    assert!(!line.to_lowercase().contains(&hostname.to_lowercase()), "the record carries the host name: {line}");
    // The machine's own host name: may be short (e.g. "vm"), so compare whole labels.
    let machine = machine_hostname().to_lowercase();
    if !machine.is_empty() {
        let labels: Vec<String> =
            rec.iter().flat_map(|f| f.split(['.', '-']).map(str::to_lowercase).collect::<Vec<_>>()).collect();
        assert!(!labels.contains(&machine), "a label equals the machine's host name {machine:?}: {line}");
        if machine.len() >= 6 {
            assert!(!line.to_lowercase().contains(&machine), "the record carries {machine:?}: {line}");
        }
    }
}

/// e. Avahi sees the service; TXT is only `v=1`; names are random per run; nothing names the person or
/// the machine.
#[test]
fn mdns_records_seen_by_avahi() {
    if !can_run() {
        return;
    }
    let missing: Vec<&str> = ["avahi-daemon", "avahi-browse", "dbus-daemon", "unshare", "hostname"]
        .into_iter()
        .filter(|p| !have(p))
        .collect();
    if skip_unless(missing.is_empty(), &format!("missing {missing:?} (packages avahi-daemon, avahi-utils, dbus)")) {
        return;
    }
    let mut t = Topo::new("e");
    t.lan(1);
    let (na, nobs) = (t.host("a"), t.host("obs"));
    t.plug(&na, "eth1", 1, 1);
    t.plug(&nobs, "eth1", 1, 9);
    // Addresses that must not be announced (issue 12): IPv6 addresses derived from the MAC address (EUI-64:
    // the link-local one every interface has, and a global one here), which name the device on every
    // network, and a second interface's address (a VPN's, say). The observer's avahi uses IPv6 too.
    run(&["ip", "-n", &na, "addr", "add", "2001:db8:77::211:22ff:fe33:4455/64", "dev", "eth1", "nodad"]);
    run(&["ip", "-n", &na, "link", "add", "vpn0", "type", "veth", "peer", "name", "vpn0p"]);
    run(&["ip", "-n", &na, "addr", "add", "100.64.0.7/24", "dev", "vpn0"]);
    run(&["ip", "-n", &na, "link", "set", "vpn0p", "up"]);
    run(&["ip", "-n", &na, "link", "set", "vpn0", "up"]);
    let avahi = Avahi::start(&t, &nobs);
    let id_file = t.path("a.identity");
    let code = make_identity(&id_file);
    let secret_host = format!("secret-host-{}", std::process::id());

    let mut seen = HashSet::new();
    let mut a = rpc_with_hostname(&t, "A", &na, &id_file, &secret_host);
    assert_eq!(a.code(), code);
    let first = avahi.wait_new(&seen, Duration::from_secs(15));
    check_record(&first, &code, &secret_host);
    assert_eq!(first[7], "10.77.1.1", "address: {first:?}");
    // Give the other addresses time to be announced, if they are; only the LAN's IPv4 address may be.
    std::thread::sleep(Duration::from_secs(3));
    for rec in avahi.browse().iter().filter(|r| r.len() >= 10 && r[3] == first[3]) {
        assert_eq!(rec[7], "10.77.1.1", "A announced another address: {rec:?}");
    }
    let port: u16 = first[8].parse().unwrap_or_else(|_| panic!("port: {first:?}"));
    assert!(port > 0);
    seen.insert(first[3].clone());
    assert!(a.shutdown(Duration::from_secs(5)).success());
    drop(a);

    // Same identity, second run: other instance and host names.
    let mut a = rpc_with_hostname(&t, "A again", &na, &id_file, &secret_host);
    let second = avahi.wait_new(&seen, Duration::from_secs(15));
    check_record(&second, &code, &secret_host);
    assert_ne!(first[3], second[3], "instance name repeated");
    assert_ne!(first[6], second[6], "host name repeated: {first:?} {second:?}");
    // And everything avahi still lists for the type passes the same checks.
    for rec in avahi.browse() {
        check_record(&rec, &code, &secret_host);
    }
    let _ = a.code();
}

/// The `ferry-inspect` binary next to `ferry`.
fn inspect_bin() -> PathBuf {
    ferry_bin().with_file_name("ferry-inspect")
}

/// f. What the LAN sees: tcpdump on A's interface while A and B (found by
/// mDNS) exchange a first-contact message and its receipt. The packet
/// inspector decodes every UDP datagram that is not mDNS as a Ferry frame
/// (nothing Ferry sends is undecodable junk), and neither the text nor the
/// contact codes nor the public keys appear anywhere in the capture.
#[test]
fn a_capture_of_a_real_exchange_is_all_ferry_frames_and_no_plaintext() {
    if !can_run() {
        return;
    }
    if skip_unless(have("tcpdump"), "tcpdump is not installed (scripts/setup.sh installs it)") {
        return;
    }
    let mut t = Topo::new("f");
    t.lan(1);
    let (na, nb) = (t.host("a"), t.host("b"));
    t.plug(&na, "eth1", 1, 1);
    t.plug(&nb, "eth1", 1, 2);
    let cap = t.path("lan.pcap");
    let mut dump = Proc::spawn(
        "tcpdump",
        t.cmd(
            &na,
            "tcpdump",
            &[
                "-i".into(),
                "eth1".into(),
                "--immediate-mode".into(),
                "-U".into(),
                "-w".into(),
                cap.display().to_string(),
                "udp".into(),
            ],
        ),
    );
    assert!(
        eventually(Duration::from_secs(10), || dump.stderr().contains("listening on")),
        "tcpdump: {}",
        dump.stderr()
    );
    let mut a = t.rpc("A", &na, &[]);
    let mut b = t.rpc("B", &nb, &[]);
    let (code_a, code_b) = (a.code(), b.code());
    let text = "a secret only B may read";
    let id = a.send(&code_b, text);
    b.wait_received(text, DELIVERY);
    a.wait_delivered(&id, DELIVERY);
    let reply = b.send(&code_a, "and a reply");
    a.wait_received("and a reply", DELIVERY);
    b.wait_delivered(&reply, DELIVERY);
    std::thread::sleep(Duration::from_millis(500));
    dump.signal_group(Signal::SIGINT);
    let _ = dump.wait_exit(Duration::from_secs(5));

    let bytes = std::fs::read(&cap).expect("capture file");
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(text.as_bytes()), "plaintext on the wire");
    for code in [&code_a, &code_b] {
        assert!(!contains(code.as_bytes()), "a contact code on the wire");
        let key = ferry_proto::envelope::PeerKey::from_code(code).expect("code");
        assert!(!contains(key.as_bytes()), "a public key on the wire");
    }
    let out = Command::new(inspect_bin()).arg("--pcap").arg(&cap).output().expect("ferry-inspect");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary = stdout.lines().last().unwrap_or_default();
    eprintln!("{summary}");
    let count = |label: &str| -> u64 {
        summary
            .split(label)
            .nth(1)
            .and_then(|s| s.trim_start().split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(count("first contact ") + count("messages between contacts ") >= 2, "{summary}");
    assert!(count("receipts ") >= 2, "{summary}");
    assert!(count("hellos ") >= 2, "{summary}");
    assert!(count("mDNS: ") >= 1, "{summary}");
    assert_eq!(count("not Ferry: "), 0, "every non-mDNS datagram is a Ferry frame: {summary}");
}

/// How many datagrams the flood's victim port got from `ip`, from its `received N from IP` lines.
fn flood_count(flood: &Proc, ip: &str) -> usize {
    let suffix = format!(" from {ip}");
    flood
        .stderr()
        .lines()
        .filter_map(|l| l.strip_prefix("received ")?.strip_suffix(suffix.as_str())?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// g. Issue 12, mDNS: a neighbour announces 1,100 fake instances, all pointing at one victim host (16 of
/// its ports).
/// They must not fill the node's tables so that a real peer is never found, and the node must not be
/// turned against the victim: what it sends there is bounded in rate, however many fakes there are.
#[test]
fn mdns_fakes_neither_hide_real_peers_nor_reflect() {
    if !can_run() {
        return;
    }
    const FAKES: usize = 1100;
    let mut t = Topo::new("g");
    t.lan(1);
    let (na, nb, nm) = (t.host("a"), t.host("b"), t.host("m"));
    t.plug(&na, "eth1", 1, 1);
    t.plug(&nb, "eth1", 1, 2);
    t.plug(&nm, "eth1", 1, 9);
    let flood_args: Vec<String> =
        ["--count", &FAKES.to_string(), "--addr", "10.77.1.9", "--port", "40000", "--ports", "16"]
            .map(str::to_owned)
            .to_vec();
    let mut cmd = t.cmd(&nm, env!("CARGO_BIN_EXE_ferry-mdns-flood"), &flood_args);
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let flood = Proc::spawn("flood", cmd);
    assert!(
        eventually(Duration::from_secs(30), || flood.stderr().contains("registered")),
        "the flood did not start: {}",
        flood.stderr()
    );
    // A hears the fakes first.
    let mut a = t.rpc("A", &na, &[]);
    let code_a = a.code();
    std::thread::sleep(Duration::from_secs(8));
    let mut b = t.rpc("B", &nb, &[]);
    let code_b = b.code();
    let found = eventually(Duration::from_secs(60), || {
        let peers = a.ok("peers", json!({}));
        peers.as_array().is_some_and(|l| l.iter().any(|p| p["found_by"] == "mdns" && p["validated"] == json!(true)))
    });
    assert!(found, "A never linked to the real peer among {FAKES} fakes: {}", a.ok("peers", json!({})));
    let id = a.send(&code_b, "found among fakes");
    let r = b.wait_received("found among fakes", DELIVERY);
    assert_eq!(r["code"], json!(code_a), "{r}");
    a.wait_delivered(&id, DELIVERY);
    // The victim: what A sent it over 20 s.
    let before = flood_count(&flood, "10.77.1.1");
    std::thread::sleep(Duration::from_secs(20));
    let sent = flood_count(&flood, "10.77.1.1") - before;
    eprintln!("A sent the victim {sent} datagrams in 20 s ({} in all)", flood_count(&flood, "10.77.1.1"));
    assert!(sent <= 2 * 20, "A sent the victim {sent} datagrams in 20 s: reflection");
}

/// h. Issue 12: a new mDNS name comes with a new UDP port (the port alone would link the names of one run),
/// and the node's links survive the move: its peer is greeted from the new port and both keep talking.
#[test]
fn a_new_mdns_name_comes_with_a_new_port_and_links_survive() {
    if !can_run() {
        return;
    }
    let missing: Vec<&str> = ["avahi-daemon", "avahi-browse", "dbus-daemon"].into_iter().filter(|p| !have(p)).collect();
    if skip_unless(missing.is_empty(), &format!("missing {missing:?} (packages avahi-daemon, avahi-utils, dbus)")) {
        return;
    }
    let mut t = Topo::new("h");
    t.lan(1);
    let (na, nb, nobs) = (t.host("a"), t.host("b"), t.host("obs"));
    t.plug(&na, "eth1", 1, 1);
    t.plug(&nb, "eth1", 1, 2);
    t.plug(&nobs, "eth1", 1, 9);
    let avahi = Avahi::start(&t, &nobs);
    let mut a = t.rpc("A", &na, &["--rotate-secs".into(), "8".into()]);
    let mut b = t.rpc("B", &nb, &[]);
    let (code_a, code_b) = (a.code(), b.code());
    // A's records, as the observer sees them: (instance, port).
    let records_of_a = |avahi: &Avahi| -> HashSet<(String, String)> {
        avahi
            .browse()
            .into_iter()
            .filter(|r| r.len() >= 10 && r[7] == "10.77.1.1")
            .map(|r| (r[3].clone(), r[8].clone()))
            .collect()
    };
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let id = a.send(&code_b, "before the move");
    b.wait_received("before the move", DELIVERY);
    a.wait_delivered(&id, DELIVERY);
    // Two epochs: at least three names, each with its own port.
    let three = eventually(Duration::from_secs(40), || {
        seen.extend(records_of_a(&avahi));
        seen.len() >= 3
    });
    assert!(three, "A's records: {seen:?}");
    let ports: HashSet<&String> = seen.iter().map(|(_, p)| p).collect();
    assert_eq!(ports.len(), seen.len(), "a name came back with a port seen before: {seen:?}");
    // Both still talk, each way.
    let id = a.send(&code_b, "after the moves");
    b.wait_received("after the moves", DELIVERY);
    a.wait_delivered(&id, DELIVERY);
    let id = b.send(&code_a, "and back");
    a.wait_received("and back", DELIVERY);
    b.wait_delivered(&id, DELIVERY);
}

/// i. Two machines on a cable with no DHCP server: each has only an IPv4 link-local address
/// (169.254/16, as avahi-autoipd or NetworkManager gives). mDNS must find the peer there too.
#[test]
fn mdns_discovery_with_only_link_local_ipv4() {
    if !can_run() {
        return;
    }
    let mut t = Topo::new("i");
    t.lan(1);
    let (na, nb) = (t.host("a"), t.host("b"));
    t.plug(&na, "eth1", 1, 1);
    t.plug(&nb, "eth1", 1, 2);
    for (ns, host) in [(&na, 1), (&nb, 2)] {
        run(&["ip", "-n", ns, "addr", "flush", "dev", "eth1", "scope", "global"]);
        run(&["ip", "-n", ns, "addr", "add", &format!("169.254.77.{host}/16"), "dev", "eth1", "scope", "link"]);
    }
    let mut a = t.rpc("A", &na, &[]);
    let mut b = t.rpc("B", &nb, &[]);
    let code_b = b.code();
    assert!(
        eventually(DELIVERY * 2, || peers_found_by(&mut a, "mdns") >= 1),
        "A found no peer by mDNS on a link-local-only LAN: {}",
        a.ok("peers", json!({}))
    );
    let id = a.send(&code_b, "over the cable");
    b.wait_received("over the cable", DELIVERY);
    a.wait_delivered(&id, DELIVERY);
}
