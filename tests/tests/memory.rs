//! "Delivered, then destroyed", checked in a relay's memory (issue 11, SPEC §8): a `ferry relay` carries
//! messages from A to B; every datagram A sends it is captured on the way; the relay's memory is read
//! through `/proc/PID/mem` while it holds the messages (the control: they must be found) and after every
//! receipt has passed (none may be found). Every 16-byte window of each frame's sealed part is searched
//! for, so a copy in any layout is found. The seen table's keyed entries (ids, commitments) are not sealed
//! bytes and are exempt (SPEC §8).
//!
//! The second test does the same for a person's node and the plaintext it showed.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_tests::{Node, Proc, eventually, ferry_bin, free_udp_addr, is_ci, skip_unless};

const MESSAGES: usize = 5;
const DELIVERY: Duration = Duration::from_secs(30);

/// A UDP proxy between A and the relay that keeps a copy of every message frame A sends.
struct Tap {
    addr: SocketAddr,
    frames: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
}

impl Tap {
    fn new(host: u8, a: SocketAddr, relay: SocketAddr) -> Tap {
        let sock = UdpSocket::bind(free_udp_addr(host)).expect("bind the tap");
        sock.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        let addr = sock.local_addr().expect("tap address");
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (frames.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                let d = &buf[..n];
                if from == a {
                    // Message frames: byte 0 is version 1, kind 1 or 2.
                    if (n == 240 || n == 1200) && (d[0] == 0x21 || d[0] == 0x22) {
                        f.lock().unwrap().push(d.to_vec());
                    }
                    let _ = sock.send_to(d, relay);
                } else if from == relay {
                    let _ = sock.send_to(d, a);
                }
            }
        });
        Tap { addr, frames, stop }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The writable mappings of `pid`, read through /proc/PID/mem.
fn dump(pid: u32) -> std::io::Result<Vec<u8>> {
    dump_regions(pid).map(|(bytes, _)| bytes)
}

/// Where each mapping starts in a dump: (offset in the dump, the mapping's line in /proc/PID/maps).
type Regions = Vec<(usize, String)>;

/// The writable mappings of `pid`, and where each starts in the dump.
fn dump_regions(pid: u32) -> std::io::Result<(Vec<u8>, Regions)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let mut mem = File::open(format!("/proc/{pid}/mem"))?;
    let mut out = Vec::new();
    let mut regions = Vec::new();
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else { continue };
        if !perms.starts_with("rw") || line.contains("[vvar") || line.contains("[vsyscall]") {
            continue;
        }
        let Some((lo, hi)) = range.split_once('-') else { continue };
        let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) else { continue };
        let mut region = vec![0u8; (hi - lo) as usize];
        if mem.seek(SeekFrom::Start(lo)).is_ok() && mem.read_exact(&mut region).is_ok() {
            regions.push((out.len(), line.to_owned()));
            out.extend_from_slice(&region);
        }
    }
    Ok((out, regions))
}

/// Where in `memory` (by mapping and offset in it) windows of `frames` are: to say where a
/// leftover copy lives when the test fails.
fn locate(frames: &[Vec<u8>], memory: &[u8], regions: &[(usize, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        for (k, w) in f[33..].chunks_exact(16).enumerate() {
            let mut from = 0;
            while let Some(p) = memory[from..].windows(16).position(|m| m == w) {
                let at = from + p;
                let (start, line) = regions.iter().rev().find(|(o, _)| *o <= at).cloned().unwrap_or_default();
                // How far the copy reaches: the frame's bytes it matches on either side.
                let fpos = 33 + 16 * k;
                let left = (1..=fpos.min(at)).take_while(|d| memory[at - d] == f[fpos - d]).count();
                let right = (0..)
                    .take_while(|d| {
                        fpos + 16 + d < f.len() && at + 16 + d < memory.len() && memory[at + 16 + d] == f[fpos + 16 + d]
                    })
                    .count();
                out.push(format!(
                    "frame {i} (len {}) bytes {}..{} at +{:#x} of {line}",
                    f.len(),
                    fpos - left,
                    fpos + 16 + right,
                    at - start
                ));
                from = at + 1;
            }
        }
    }
    out
}

/// For each frame, how many of its sealed part's 16-byte windows (at every 16th offset: any copy of 31
/// or more contiguous bytes contains one whole) occur anywhere in `memory`.
fn windows_found(frames: &[Vec<u8>], memory: &[u8]) -> Vec<usize> {
    let mut index: HashMap<u64, Vec<(usize, [u8; 16])>> = HashMap::new();
    for (i, f) in frames.iter().enumerate() {
        let sealed = &f[33..];
        for w in sealed.chunks_exact(16) {
            let key = u64::from_ne_bytes(w[..8].try_into().unwrap());
            index.entry(key).or_default().push((i, w.try_into().unwrap()));
        }
    }
    let mut found = vec![std::collections::HashSet::new(); frames.len()];
    for (pos, head) in memory.windows(8).enumerate() {
        let key = u64::from_ne_bytes(head.try_into().unwrap());
        // Most of the address space is untouched zeros.
        if key == 0 {
            continue;
        }
        if let Some(cands) = index.get(&key) {
            for (i, w) in cands {
                if memory.get(pos..pos + 16) == Some(&w[..]) {
                    found[*i].insert(*w);
                }
            }
        }
    }
    found.iter().map(|s| s.len()).collect()
}

#[test]
fn a_relay_keeps_no_ciphertext_after_delivery() {
    let (pa, pr, pb) = (free_udp_addr(1), free_udp_addr(2), free_udp_addr(3));
    let relay_args: Vec<String> =
        ["relay", "--no-mdns", "--listen", &pr.to_string()].iter().map(|s| s.to_string()).collect();
    let relay = Proc::ferry("R", &relay_args);
    std::thread::sleep(Duration::from_millis(300));
    if let Err(e) = dump(relay.pid()) {
        let reason = format!("cannot read the relay's memory through /proc/PID/mem ({e}): needs ptrace rights");
        assert!(!is_ci(), "{reason}");
        skip_unless(false, &reason);
        return;
    }
    let tap = Tap::new(4, pa, pr);
    let mut a = Node::rpc(
        "A",
        &["--ephemeral", "--no-mdns", "--listen", &pa.to_string(), "--peer", &tap.addr.to_string()].map(str::to_owned),
    );
    // B's identity exists before B runs, so that A can write to it while it is away.
    let dir = tempfile::tempdir().expect("tempdir");
    let id_file = dir.path().join("b-identity");
    let out = std::process::Command::new(ferry_bin())
        .args(["id", "--identity", &id_file.display().to_string()])
        .output()
        .expect("ferry id");
    let code_b = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_owned();
    let ids: Vec<String> = (0..MESSAGES).map(|i| a.send(&code_b, &format!("carried by the relay #{i}"))).collect();
    assert!(
        eventually(Duration::from_secs(20), || tap.frames.lock().unwrap().len() >= MESSAGES),
        "A did not hand its messages to the relay"
    );
    std::thread::sleep(Duration::from_millis(500));
    let frames = tap.frames.lock().unwrap().clone();

    // Control: while the relay holds them, they are in its memory.
    let t = std::time::Instant::now();
    let memory = dump(relay.pid()).expect("dump the relay");
    let before = windows_found(&frames, &memory);
    eprintln!("searched {} MiB of the relay's memory in {:?}", memory.len() >> 20, t.elapsed());
    assert!(before.iter().all(|&n| n > 0), "the control found no copy of some held frame: {before:?}");

    // B comes; everything is delivered and every receipt passes back through the relay.
    let mut b = Node::rpc(
        "B",
        &[
            "--identity",
            &id_file.display().to_string(),
            "--no-mdns",
            "--listen",
            &pb.to_string(),
            "--peer",
            &pr.to_string(),
        ]
        .map(str::to_owned),
    );
    for i in 0..MESSAGES {
        b.wait_received(&format!("carried by the relay #{i}"), DELIVERY);
    }
    for id in &ids {
        a.wait_delivered(id, DELIVERY);
    }
    // The relay acted on the receipts as it passed them on; give its loop a moment to go idle.
    std::thread::sleep(Duration::from_secs(2));
    let (memory, regions) = dump_regions(relay.pid()).expect("dump the relay");
    let after = windows_found(&frames, &memory);
    eprintln!("16-byte windows of the sealed parts found: before delivery {before:?}, after {after:?}");
    for place in locate(&frames, &memory, &regions).iter().take(20) {
        eprintln!("  left: {place}");
    }
    assert!(after.iter().all(|&n| n == 0), "ciphertext left in the relay's memory after delivery: {after:?}");
}

/// Where copies of `text` are in `memory`, by 32-byte windows (so that a long text's parts, kept apart
/// while it is put together, are found too), and how many sit inside a line the API handed out: a
/// `received` notification, where the text follows `"text":"` whole.
fn text_copies(text: &[u8], memory: &[u8], regions: &[(usize, String)]) -> (usize, Vec<String>) {
    const JSON: &[u8] = b"\"text\":\"";
    let (mut handed_out, mut other) = (0, Vec::new());
    for k in (0..text.len().saturating_sub(31)).step_by(32) {
        let w = &text[k..k + 32];
        let mut from = 0;
        while let Some(p) = memory[from..].windows(32).position(|m| m == w) {
            let at = from + p;
            if at >= k + JSON.len() && &memory[at - k - JSON.len()..at - k] == JSON {
                handed_out += 1;
            } else {
                let (start, map) = regions.iter().rev().find(|(o, _)| *o <= at).cloned().unwrap_or_default();
                let before = &memory[at.saturating_sub(24)..at];
                other.push(format!(
                    "bytes {k}.. at +{:#x} of {map} (after {:?})",
                    at - start,
                    String::from_utf8_lossy(before).replace('\0', ".")
                ));
            }
            from = at + 1;
        }
    }
    (handed_out, other)
}

/// The person's side (issue 11): once a text is shown, it stays only where the API handed it out (the
/// `received` notification lines, JSON), not in the endpoint, its buffers, freed memory or the stack.
#[test]
fn a_person_keeps_a_shown_text_only_where_the_api_handed_it_out() {
    let (pa, pb) = (free_udp_addr(5), free_udp_addr(6));
    let mut b = Node::rpc("B", &["--ephemeral", "--no-mdns", "--listen", &pb.to_string()].map(str::to_owned));
    if let Err(e) = dump(b.proc.pid()) {
        let reason = format!("cannot read B's memory through /proc/PID/mem ({e}): needs ptrace rights");
        assert!(!is_ci(), "{reason}");
        skip_unless(false, &reason);
        return;
    }
    let mut a = Node::rpc(
        "A",
        &["--ephemeral", "--no-mdns", "--listen", &pa.to_string(), "--peer", &pb.to_string()].map(str::to_owned),
    );
    let code_b = b.code();
    // Texts no other process memory holds by chance: a marker and the test's own clock.
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    // The control: a contact name B keeps for as long as it runs, so it must be found.
    let control = format!("control-name-{nonce:x}");
    let code_a = a.code();
    b.call("contacts.add", serde_json::json!({"name": control, "code": code_a})).expect("contacts.add");
    // Every 32-byte window of every text is unique (a counter and the clock in every 20 bytes or so).
    let text = |i: usize, segments: usize| (0..segments).map(|j| format!("t{i}s{j:02}-{nonce:x}:")).collect::<String>();
    let mut texts: Vec<String> = (0..MESSAGES).map(|i| text(i, 3 + i)).collect();
    // And a long one, sent in parts that B keeps apart until the last one comes.
    texts.push(text(MESSAGES, 80));
    let ids: Vec<String> = texts.iter().map(|t| a.send(&code_b, t)).collect();
    for t in &texts {
        b.wait_received(t, DELIVERY);
    }
    for id in &ids {
        a.wait_delivered(id, DELIVERY);
    }
    std::thread::sleep(Duration::from_secs(2));
    let (memory, regions) = dump_regions(b.proc.pid()).expect("dump B");
    let mut leftovers = Vec::new();
    let mut handed = Vec::new();
    for t in &texts {
        let (n, other) = text_copies(t.as_bytes(), &memory, &regions);
        handed.push(n);
        leftovers.extend(other.into_iter().map(|o| format!("text {:?}: {o}", &t[..6])));
    }
    eprintln!("copies of each text in the API's lines: {handed:?}; anywhere else: {}", leftovers.len());
    for l in leftovers.iter().take(20) {
        eprintln!("  left: {l}");
    }
    let kept = memory.windows(control.len()).filter(|w| *w == control.as_bytes()).count();
    assert!(kept > 0, "the control (a contact name B keeps) was not found: the search does not see B's memory");
    assert!(leftovers.is_empty(), "{} copies of shown texts outside the API's lines", leftovers.len());
}

/// The identity's secret (issue 12, "files"): a node holds it as 32 bytes for as long as it runs, but the
/// hex text of the file (64 characters) must not stay in its memory, neither after making the file nor
/// after reading it back: every buffer that held the text is wiped, including ones a growing `String`
/// left behind.
#[test]
fn the_identity_secret_is_not_left_in_memory_as_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("identity");
    let args =
        ["--identity", path.to_str().expect("utf-8 path"), "--no-mdns", "--listen", "127.0.0.1:0"].map(str::to_owned);
    for run in ["made", "read back"] {
        let mut n = Node::rpc("N", &args);
        n.code();
        if let Err(e) = dump(n.proc.pid()) {
            let reason = format!("cannot read the node's memory through /proc/PID/mem ({e}): needs ptrace rights");
            assert!(!is_ci(), "{reason}");
            skip_unless(false, &reason);
            return;
        }
        let text = std::fs::read_to_string(&path).expect("read the identity file");
        let hex = text.lines().last().expect("the secret's line").trim().to_owned();
        assert_eq!(hex.len(), 64, "the identity file's last line is the secret in hex: {text:?}");
        let secret: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex")).collect();
        let memory = dump(n.proc.pid()).expect("dump");
        // The control: the secret itself, which the node needs.
        let raw = memory.windows(32).filter(|w| *w == secret.as_slice()).count();
        assert!(raw > 0, "the secret's 32 bytes were not found: the search does not see the node's memory");
        // Any half of the hex text (a partial copy counts too).
        let copies: usize =
            [&hex[..32], &hex[32..]].iter().map(|h| memory.windows(32).filter(|w| *w == h.as_bytes()).count()).sum();
        n.shutdown(Duration::from_secs(10));
        assert_eq!(copies, 0, "identity {run}: {copies} copies of the secret's hex text in the node's memory");
    }
}
