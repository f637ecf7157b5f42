//! Serial links (`--serial`, SPEC §10) between `ferry` processes over pseudo-terminals: messages and receipts
//! both ways, a node bridging UDP and serial, a line that spoils bytes, and a device that goes away and
//! comes back. No root, no hardware.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_tests::serial_wire::{Noise, Wire};
use ferry_tests::{Node, eventually, free_udp_addr, json, loopback_args};

/// A message and its receipt over a serial line (a pty at full speed) and the link coming up.
const DELIVERY: Duration = Duration::from_secs(20);

fn args(listen_host: u8, peers: &[std::net::SocketAddr], serial: &[&Path]) -> Vec<String> {
    let mut a = loopback_args(free_udp_addr(listen_host), peers);
    for s in serial {
        a.push("--serial".to_owned());
        a.push(s.display().to_string());
    }
    a
}

fn devices(dir: &tempfile::TempDir) -> (PathBuf, PathBuf) {
    (dir.path().join("ttyA"), dir.path().join("ttyB"))
}

fn serial_up(node: &mut Node) -> bool {
    let peers = node.ok("peers", json!({}));
    peers.as_array().is_some_and(|l| l.iter().any(|p| p["kind"] == "serial" && p["validated"] == true))
}

/// `from` sends `text` to `to`; `to` shows it and `from` hears it was delivered.
fn deliver(from: &mut Node, to: &mut Node, to_code: &str, text: &str) {
    let id = from.send(to_code, text);
    to.wait_received(text, DELIVERY);
    from.wait_delivered(&id, DELIVERY);
}

fn wait_serial_up(node: &mut Node) {
    if !eventually(DELIVERY, || serial_up(node)) {
        let peers = node.ok("peers", json!({}));
        let stats = node.ok("stats", json!({}));
        panic!("{}: the serial link did not come up: peers {peers}, stats {stats}", node.name());
    }
}

#[test]
fn two_nodes_over_a_serial_line_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (da, db) = devices(&dir);
    let _wire = Wire::new([&da, &db], Noise::default());
    let mut a = Node::rpc("A", &args(1, &[], &[&da]));
    let mut b = Node::rpc("B", &args(2, &[], &[&db]));
    let (code_a, code_b) = (a.code(), b.code());
    wait_serial_up(&mut a);
    wait_serial_up(&mut b);
    deliver(&mut a, &mut b, &code_b, "over the wire");
    deliver(&mut b, &mut a, &code_a, "and back");
    // Large frames (1200 bytes) cross too.
    deliver(&mut a, &mut b, &code_b, &"x".repeat(600));
    let peers = a.ok("peers", json!({}));
    assert_eq!(peers.as_array().map(Vec::len), Some(1), "only the serial link: {peers}");
    assert_eq!(peers[0]["device"], json!(da.display().to_string()));
    let stats = a.ok("stats", json!({}));
    let port = &stats["serial"][0];
    assert_eq!(port["crc_errors"], json!(0), "{stats}");
    assert_eq!(port["frames_overrun"], json!(0), "{stats}");
    assert!(port["frames_in"].as_u64() > Some(3), "{stats}");
}

/// A (UDP only) — R (UDP and serial) — C (serial only): R's one router carries messages between its links.
#[test]
fn a_node_bridges_udp_and_serial() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (dr, dc) = devices(&dir);
    let _wire = Wire::new([&dr, &dc], Noise::default());
    let (pa, pr) = (free_udp_addr(1), free_udp_addr(2));
    let mut a = Node::rpc("A", &loopback_args(pa, &[pr]));
    let mut r_args = loopback_args(pr, &[pa]);
    r_args.extend(["--serial".to_owned(), dr.display().to_string()]);
    let mut r = Node::rpc("R", &r_args);
    let mut c = Node::rpc("C", &args(3, &[], &[&dc]));
    let (code_a, code_c) = (a.code(), c.code());
    wait_serial_up(&mut r);
    deliver(&mut a, &mut c, &code_c, "udp to serial");
    deliver(&mut c, &mut a, &code_a, "serial to udp");
    let peers = r.ok("peers", json!({}));
    let kinds: Vec<&str> = peers.as_array().unwrap().iter().filter_map(|p| p["kind"].as_str()).collect();
    assert!(kinds.contains(&"udp") && kinds.contains(&"serial"), "{peers}");
}

/// Garbage bursts and flipped bits on the line: both nodes keep running, the bad runs are counted and
/// dropped, and every message is delivered (what a bad CRC cost is sent again by a later summary round).
#[test]
fn noise_on_the_line_costs_only_what_it_hits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (da, db) = devices(&dir);
    let wire = Wire::new([&da, &db], Noise { garbage_permille: 100, flip_permille: 50, seed: 7 });
    let mut a = Node::rpc("A", &args(1, &[], &[&da]));
    let mut b = Node::rpc("B", &args(2, &[], &[&db]));
    let (code_a, code_b) = (a.code(), b.code());
    // Contacts: more than a stranger's 5 messages a minute.
    a.ok("contacts.add", json!({"name": "b", "code": code_b}));
    b.ok("contacts.add", json!({"name": "a", "code": code_a}));
    wait_serial_up(&mut a);
    wait_serial_up(&mut b);
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push((true, a.send(&code_b, &format!("a to b #{i}"))));
        ids.push((false, b.send(&code_a, &format!("b to a #{i}"))));
    }
    // Lost frames wait for the next summary round (15 s).
    let patient = Duration::from_secs(60);
    fn received(n: &mut Node, text: &str, patience: Duration) -> bool {
        n.history.iter().any(|v| v["method"] == "received" && v["params"]["text"] == json!(text))
            || n.try_note(patience, |v| v["method"] == "received" && v["params"]["text"] == json!(text)).is_some()
    }
    for i in 0..8 {
        let (ok_b, ok_a) =
            (received(&mut b, &format!("a to b #{i}"), patient), received(&mut a, &format!("b to a #{i}"), patient));
        if !(ok_a && ok_b) {
            panic!(
                "#{i} not received (at B: {ok_b}, at A: {ok_a})\nA stats {}\nB stats {}",
                a.ok("stats", json!({})),
                b.ok("stats", json!({}))
            );
        }
    }
    for (from_a, id) in &ids {
        if *from_a { a.wait_delivered(id, patient) } else { b.wait_delivered(id, patient) }
    }
    a.assert_no_duplicates();
    b.assert_no_duplicates();
    assert!(a.proc.try_exit().is_none() && b.proc.try_exit().is_none(), "a node died");
    let spoiled = wire.stats.bursts.load(std::sync::atomic::Ordering::Relaxed)
        + wire.stats.flips.load(std::sync::atomic::Ordering::Relaxed);
    assert!(spoiled > 0, "the wire spoiled nothing: the test proves nothing");
    let dropped: u64 = [&mut a, &mut b]
        .into_iter()
        .map(|n| n.ok("stats", json!({}))["serial"][0]["dropped"].as_u64().unwrap_or(0))
        .sum();
    assert!(dropped > 0, "no run was dropped although {spoiled} chunks were spoiled");
}

/// A device that is not there yet: the node runs, says why, and links once it appears. Then the line goes
/// away (as when a dongle is unplugged) and comes back on another pty: the link comes back and carries.
#[test]
fn a_device_that_comes_and_goes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (da, db) = devices(&dir);
    let mut a = Node::rpc("A", &args(1, &[], &[&da]));
    let code_a = a.code();
    // Missing: the node answers, and `peers` says why the port is not open.
    let peers = a.ok("peers", json!({}));
    assert_eq!(peers[0]["open"], json!(false), "{peers}");
    assert!(eventually(Duration::from_secs(5), || {
        a.ok("peers", json!({}))[0]["problem"].as_str().is_some_and(|p| p.contains("no such device"))
    }));
    assert!(a.proc.stderr().contains("no such device"), "no clear message: {}", a.proc.stderr());
    let wire = Wire::new([&da, &db], Noise::default());
    let mut b = Node::rpc("B", &args(2, &[], &[&db]));
    let code_b = b.code();
    wait_serial_up(&mut a);
    deliver(&mut a, &mut b, &code_b, "first life");
    // Unplugged.
    let t = std::time::Instant::now();
    drop(wire);
    eprintln!("the wire was dropped in {:?}", t.elapsed());
    assert!(
        eventually(Duration::from_secs(10), || !serial_up(&mut a)),
        "A did not notice the line went away: {}\n{}",
        a.ok("peers", json!({})),
        a.proc.stderr()
    );
    let id = b.send(&code_a, "second life");
    // Plugged in again (new ptys behind the same names).
    let _wire = Wire::new([&da, &db], Noise::default());
    a.wait_received("second life", Duration::from_secs(40));
    b.wait_delivered(&id, Duration::from_secs(40));
    let opens = a.ok("stats", json!({}))["serial"][0]["opens"].as_u64();
    assert!(opens >= Some(2), "the device was not opened again: {opens:?}");
}
