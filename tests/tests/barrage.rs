//! A stranger throws junk at a node: before it answers the node's cookie, none of it is parsed; then, as a
//! validated neighbour, 20,000 junk and near-valid datagrams. The node must keep working, stay small and
//! count what it refused.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use ferry_proto::wire::{Kind, MessageFrame, SizeClass};
use ferry_tests::{Node, eventually, free_udp_addr, json, loopback_args};

const DELIVERY: Duration = Duration::from_secs(12);
const DATAGRAMS: usize = 20_000;
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// xorshift64*: reproducible junk without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.fill(&mut v);
        v
    }
}

/// A message frame of `class` with a random body and a correct id (it passes the id check; it opens for
/// nobody).
fn valid_shape(rng: &mut Rng, class: SizeClass) -> Vec<u8> {
    let kind = if rng.below(2) == 0 { Kind::Contact } else { Kind::FirstContact };
    let mut buf = rng.bytes(class.frame_len());
    let mut commit = [0u8; 12];
    rng.fill(&mut commit);
    let mut f = MessageFrame::new_unchecked(&mut buf[..]);
    f.emit_header(kind, 1 + rng.below(12) as u8, 1 + rng.below(600) as u32, &commit);
    f.fill_id();
    buf
}

/// One datagram of the barrage; `kinds[k]` counts what was made.
fn junk(rng: &mut Rng, kinds: &mut [usize; 6]) -> Vec<u8> {
    let class = if rng.below(2) == 0 { SizeClass::Small } else { SizeClass::Large };
    let k = rng.below(6);
    kinds[k] += 1;
    match k {
        // Random bytes, any length 1..=1300.
        0 => {
            let len = 1 + rng.below(1300);
            rng.bytes(len)
        }
        // A well-formed message frame with a correct id: new to the node, stored, never opened.
        1 => valid_shape(rng, class),
        // The same with one byte of the id, commitment or body flipped: a bad id.
        2 => {
            let mut f = valid_shape(rng, class);
            let at = 5 + rng.below(f.len() - 5);
            f[at] ^= 1 << rng.below(8);
            f
        }
        // Truncated or extended: a bad length.
        3 => {
            let mut f = valid_shape(rng, class);
            if rng.below(2) == 0 {
                f.truncate(1 + rng.below(f.len() - 1));
            } else {
                let extra = 1 + rng.below(60);
                f.extend(rng.bytes(extra));
            }
            f
        }
        // Link frames with random contents: receipts, hellos, summaries, segments.
        4 => {
            let (b0, len) = match rng.below(4) {
                0 => (0x23, 33),
                1 => (0x24, 33),
                2 => (0x25, 240),
                _ => (0x26, 5 + rng.below(1200)),
            };
            let mut f = rng.bytes(len);
            f[0] = b0;
            f
        }
        // Wrong version or unknown kind with a plausible length.
        _ => {
            let mut f = rng.bytes(class.frame_len());
            f[0] = if rng.below(2) == 0 { 0x41 + rng.below(6) as u8 } else { 0x20 | (7 + rng.below(25)) as u8 };
            f
        }
    }
}

#[test]
fn junk_barrage_from_a_stranger() {
    let (pa, pb) = (free_udp_addr(1), free_udp_addr(2));
    let mut a = Node::rpc("A", &loopback_args(pa, &[pb]));
    let mut b = Node::rpc("B", &loopback_args(pb, &[pa]));
    let (code_a, code_b) = (a.code(), b.code());
    a.ok("contacts.add", json!({"name": "bob", "code": code_b}));
    b.ok("contacts.add", json!({"name": "alice", "code": code_a}));

    // Working before.
    let id = a.send("bob", "before the storm");
    b.wait_received("before the storm", DELIVERY);
    a.wait_delivered(&id, DELIVERY);
    let before = a.ok("stats", json!({}));
    let rss_before = a.proc.rss_kib().expect("A's VmRSS");

    let stranger = UdpSocket::bind((ferry_tests::loopback_ip(9), 0)).expect("bind the stranger's socket");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
    // Before it answers A's cookie, the stranger's junk is not even parsed:
    // it takes no link and gets nothing back.
    for _ in 0..200 {
        let d = junk(&mut rng, &mut [0usize; 6]);
        stranger.send_to(&d, pa).expect("send");
    }
    std::thread::sleep(Duration::from_millis(300));
    let early = a.ok("stats", json!({}));
    assert!(early["stranger_dropped"].as_u64() > before["stranger_dropped"].as_u64(), "{before} -> {early}");
    assert_eq!(early["malformed"], before["malformed"], "junk from an unvalidated address was parsed");
    // Then it does the stateless handshake (SPEC §6.1) like a real peer, and
    // barrages as a validated neighbour: the parsers get all of it.
    let mut nonce = [0u8; 16];
    rng.fill(&mut nonce);
    let mut hello = vec![0x24u8];
    hello.extend_from_slice(&nonce);
    hello.extend_from_slice(&[0; 16]);
    stranger.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    let mut buf = [0u8; 2048];
    let cookie = loop {
        stranger.send_to(&hello, pa).expect("send the hello");
        let (n, _) = stranger.recv_from(&mut buf).expect("A answers a hello");
        if n == 33 && buf[0] == 0x24 && buf[17..33] == nonce {
            break buf[1..17].to_vec();
        }
    };
    let mut answer = vec![0x24u8];
    answer.extend_from_slice(&nonce);
    answer.extend_from_slice(&cookie);
    stranger.send_to(&answer, pa).expect("echo the cookie");
    assert!(
        eventually(Duration::from_secs(3), || {
            a.ok("stats", json!({}))["stranger_links"].as_u64() > before["stranger_links"].as_u64()
        }),
        "A made no link for the stranger that echoed its cookie"
    );
    let mut kinds = [0usize; 6];
    let start = Instant::now();
    let mut send_errors = 0usize;
    for i in 0..DATAGRAMS {
        let d = junk(&mut rng, &mut kinds);
        if stranger.send_to(&d, pa).is_err() {
            send_errors += 1;
        }
        // About 10,000 a second: within the link's burst and refill, so most of it is parsed.
        if i % 500 == 499 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!("sent {DATAGRAMS} datagrams in {:?}; kinds {kinds:?}; send errors {send_errors}", start.elapsed());
    assert!(send_errors < DATAGRAMS / 10, "{send_errors} sends failed");

    // Both alive and answering.
    assert!(a.proc.try_exit().is_none(), "A died: {}", a.proc.stderr());
    assert!(b.proc.try_exit().is_none(), "B died: {}", b.proc.stderr());
    assert_eq!(a.code(), code_a);
    assert_eq!(b.code(), code_b);

    // Still delivering both ways.
    let mut ids_a = Vec::new();
    let mut ids_b = Vec::new();
    for i in 0..3 {
        ids_a.push(a.send("bob", &format!("after a->b {i}")));
        ids_b.push(b.send("alice", &format!("after b->a {i}")));
    }
    for i in 0..3 {
        b.wait_received(&format!("after a->b {i}"), DELIVERY);
        a.wait_received(&format!("after b->a {i}"), DELIVERY);
    }
    for id in &ids_a {
        a.wait_delivered(id, DELIVERY);
    }
    for id in &ids_b {
        b.wait_delivered(id, DELIVERY);
    }
    a.drain_for(Duration::from_millis(2200));
    b.drain_for(Duration::from_millis(100));
    a.assert_no_duplicates();
    b.assert_no_duplicates();
    // Junk never opens: everything shown is ours.
    for n in [&a, &b] {
        for v in n.history.iter().filter(|v| v["method"] == "received") {
            let text = v["params"]["text"].as_str().unwrap_or_default();
            assert!(text.starts_with("after ") || text == "before the storm", "{}: junk opened: {v}", n.name());
        }
    }
    assert_eq!(b.received_ids().len(), 4);
    assert_eq!(a.received_ids().len(), 3);

    let rss_after = a.proc.rss_kib().expect("A's VmRSS");
    eprintln!("A's VmRSS: {rss_before} KiB before, {rss_after} KiB after");
    assert!(rss_after < RSS_LIMIT_KIB, "A's RSS is {rss_after} KiB (limit {RSS_LIMIT_KIB} KiB)");

    let after = a.ok("stats", json!({}));
    eprintln!("A's stats before {before}\nafter {after}");
    let grew = |k: &str| after[k].as_u64().unwrap_or(0) > before[k].as_u64().unwrap_or(0);
    assert!(grew("malformed"), "malformed did not grow: {before} -> {after}");
    assert!(grew("bad_id"), "bad_id did not grow: {before} -> {after}");
    assert!(grew("frames_in"), "{before} -> {after}");
    let counted = ["malformed", "bad_id", "rate_limited", "duplicates"]
        .iter()
        .map(|k| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0))
        .sum::<u64>();
    assert!(counted >= (DATAGRAMS / 2) as u64, "only {counted} of {DATAGRAMS} junk datagrams were counted as refused");
    assert!(after["held"].as_u64() <= Some(2048 + 1024), "held beyond the store: {after}");
}

/// Issue 12, "notification backlog": an API client that stops reading must not let a remote sender grow
/// the node. Each text here is 4,096 control characters, which the `received` line carries escaped
/// (about 24 KiB); 1,000 of them queued for the stalled client would be about 24 MiB. The backlog is
/// bounded in bytes (SPEC/README: 4 MiB), so the node grows by less than 8 MiB, and a client that reads
/// is still told everything.
#[test]
fn a_stalled_api_client_costs_bounded_memory() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;
    const TEXTS: usize = 1000;
    const BATCH: usize = 100;
    const GROWTH_LIMIT_KIB: u64 = 8 * 1024;

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let sock = dir.path().join("d.sock");
    let (pa, pb) = (free_udp_addr(1), free_udp_addr(2));
    let mut args = vec!["daemon".to_owned()];
    args.extend(loopback_args(pb, &[pa]));
    args.extend(["--socket".to_owned(), sock.display().to_string()]);
    let b = ferry_tests::Proc::ferry("B", &args);
    assert!(eventually(Duration::from_secs(10), || sock.exists()), "no daemon socket: {}", b.stderr());
    let call = |req: serde_json::Value| -> serde_json::Value {
        let mut s = UnixStream::connect(&sock).expect("connect");
        s.write_all(format!("{req}\n").as_bytes()).expect("write");
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).expect("read");
        serde_json::from_str(&line).expect("JSON")
    };
    let identity = call(json!({"jsonrpc": "2.0", "id": 1, "method": "identity"}));
    let code_b = identity["result"]["code"].as_str().expect("B's code").to_owned();
    let mut a = Node::rpc("A", &loopback_args(pa, &[pb]));
    // Contacts both ways, so that B keeps each long text whole however the parts interleave.
    let code_a = a.code();
    a.ok("contacts.add", json!({"name": "bob", "code": code_b}));
    let added =
        call(json!({"jsonrpc": "2.0", "id": 2, "method": "contacts.add", "params": {"name": "alice", "code": code_a}}));
    assert!(added.get("result").is_some(), "{added}");

    let text: String = (0..4096).map(|i| char::from(1 + (i % 30) as u8)).collect();
    let send_batch = |a: &mut Node, n: usize| {
        let ids: Vec<String> = (0..n).map(|_| a.send(&code_b, &text)).collect();
        for id in &ids {
            a.wait_delivered(id, DELIVERY * 5);
        }
    };
    // Warm up B's tables, then take its size.
    send_batch(&mut a, BATCH);
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = b.rss_kib().expect("B's VmRSS");

    // Two clients: one stops reading at once, the other reads everything.
    let _stalled = UnixStream::connect(&sock).expect("connect the stalled client");
    let reader = UnixStream::connect(&sock).expect("connect the reading client");
    let counted = std::thread::spawn(move || {
        let (mut received, mut lagged) = (0usize, 0usize);
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            received += usize::from(line.contains("\"method\":\"received\""));
            lagged += usize::from(line.contains("\"method\":\"lagged\""));
            if received == TEXTS {
                break;
            }
        }
        (received, lagged)
    });
    for _ in 0..TEXTS / BATCH {
        send_batch(&mut a, BATCH);
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = b.rss_kib().expect("B's VmRSS");
    let (received, lagged) = counted.join().expect("the reading client");
    eprintln!(
        "B's RSS {rss_before} -> {rss_after} KiB with a stalled client; the reader got {received} texts, {lagged} lag notices"
    );
    assert_eq!((received, lagged), (TEXTS, 0), "the client that reads must get every text");
    assert!(
        rss_after.saturating_sub(rss_before) < GROWTH_LIMIT_KIB,
        "a stalled client let {TEXTS} texts grow B by {} KiB",
        rss_after - rss_before
    );
}
