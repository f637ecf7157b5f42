//! `ferry` processes talking over loopback UDP with static peers (no root, no mDNS).
//!
//! Every node binds its own loopback address (`127.A.B.n`, A.B from the test's pid), so tests running in
//! parallel never share addresses.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::{Node, Proc, Signal, Value, eventually, ferry_bin, free_udp_addr, json, loopback_args, unix_now};

/// Time for a message plus its receipt (the receipt waits 0.2–2 s at the recipient).
const DELIVERY: Duration = Duration::from_secs(12);

fn is_code(s: &str) -> bool {
    s.len() == 65 && s.starts_with("ferry1") && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn status_states(node: &Node, id: &str) -> Vec<String> {
    node.history
        .iter()
        .filter(|v| v["method"] == "status" && v["params"]["id"] == json!(id))
        .filter_map(|v| v["params"]["state"].as_str().map(str::to_owned))
        .collect()
}

/// a. Two nodes with static peers: first contact, then as contacts, then several messages both ways.
#[test]
fn two_nodes_first_contact_reply_and_many_messages() {
    let (pa, pb) = (free_udp_addr(1), free_udp_addr(2));
    let mut a = Node::rpc("A", &loopback_args(pa, &[pb]));
    let mut b = Node::rpc("B", &loopback_args(pb, &[pa]));
    let code_a = a.code();
    let code_b = b.code();
    assert!(is_code(&code_a) && is_code(&code_b), "codes look wrong: {code_a} {code_b}");
    assert_ne!(code_a, code_b);

    // A knows B; B does not know A.
    assert_eq!(a.ok("contacts.add", json!({"name": "bob", "code": code_b})), json!(true));
    assert_eq!(a.ok("contacts.list", json!({})), json!([{"name": "bob", "code": code_b}]));
    let sent_at = unix_now();
    let id1 = a.send("bob", "hello bob, this is alice");
    assert_eq!(id1.len(), 32, "message id should be 16 bytes in hex: {id1}");

    let r = b.wait_received("hello bob, this is alice", DELIVERY);
    assert_eq!(r["contact"], json!(false), "B never added A: {r}");
    assert_eq!(r["code"], json!(code_a), "{r}");
    assert_eq!(r["from"], json!(code_a), "a stranger is named by their code: {r}");
    let at = r["sent_at"].as_u64().unwrap_or_else(|| panic!("sent_at is not a number: {r}"));
    assert!(at.abs_diff(sent_at) <= 30, "sent_at {at} is far from now {sent_at}");
    assert!(r["id"].as_str().is_some_and(|s| !s.is_empty()), "received without an id: {r}");

    a.wait_delivered(&id1, DELIVERY);
    let states = status_states(&a, &id1);
    let sent = states.iter().position(|s| s == "sent");
    let delivered = states.iter().position(|s| s == "delivered");
    assert!(
        matches!((sent, delivered), (Some(s), Some(d)) if s < d),
        "status should go sent, then delivered: {states:?}"
    );
    assert!(!states.iter().any(|s| s == "expired"), "{states:?}");

    // B adds A and answers by name; A sees a contact, named as A named B.
    b.ok("contacts.add", json!({"name": "alice", "code": code_a}));
    let id2 = b.send("alice", "hi alice");
    let r = a.wait_received("hi alice", DELIVERY);
    assert_eq!(r["contact"], json!(true), "{r}");
    assert_eq!(r["from"], json!("bob"), "{r}");
    assert_eq!(r["code"], json!(code_b), "{r}");
    b.wait_delivered(&id2, DELIVERY);

    // Both links are up, static and validated.
    for n in [&mut a, &mut b] {
        let peers = n.ok("peers", json!({}));
        let list = peers.as_array().unwrap_or_else(|| panic!("peers is not an array: {peers}"));
        assert!(
            list.iter().any(|p| p["found_by"] == "static" && p["validated"] == json!(true) && p["kind"] == "udp"),
            "{}: no validated static peer: {peers}",
            n.name()
        );
        assert!(list.iter().all(|p| p["age_secs"].is_u64()), "{peers}");
    }

    // Several both ways, interleaved; each one delivered exactly once.
    let mut from_a = Vec::new();
    let mut from_b = Vec::new();
    for i in 0..6 {
        from_a.push((a.send("bob", &format!("a->b #{i}")), format!("a->b #{i}")));
        from_b.push((b.send("alice", &format!("b->a #{i}")), format!("b->a #{i}")));
    }
    for (_, text) in &from_a {
        let r = b.wait_received(text, DELIVERY);
        assert_eq!(r["from"], json!("alice"), "{r}");
    }
    for (_, text) in &from_b {
        let r = a.wait_received(text, DELIVERY);
        assert_eq!(r["from"], json!("bob"), "{r}");
    }
    for (id, _) in &from_a {
        a.wait_delivered(id, DELIVERY);
    }
    for (id, _) in &from_b {
        b.wait_delivered(id, DELIVERY);
    }
    // Late duplicates would show up within a receipt delay or two.
    a.drain_for(Duration::from_millis(2500));
    b.drain_for(Duration::from_millis(200));
    a.assert_no_duplicates();
    b.assert_no_duplicates();
    assert_eq!(a.received_ids().len(), 7, "A: {:#?}", a.history);
    assert_eq!(b.received_ids().len(), 7, "B: {:#?}", b.history);
    let all_ids: HashSet<&String> = from_a.iter().chain(&from_b).map(|(id, _)| id).collect();
    assert_eq!(all_ids.len(), 12, "message ids must be distinct");

    let stats = a.ok("stats", json!({}));
    for key in ["held", "frames_in", "frames_out", "malformed", "bad_id", "duplicates"] {
        assert!(stats[key].is_u64(), "stats lacks {key}: {stats}");
    }
    assert!(stats["frames_in"].as_u64() > Some(0), "{stats}");

    // stdin closed: a clean exit.
    assert!(a.shutdown(Duration::from_secs(5)).success());
    assert!(b.shutdown(Duration::from_secs(5)).success());
}

/// Contacts: list, rename, remove, block; blocked senders are not shown.
#[test]
fn contacts_rename_remove_and_block() {
    let (pa, pb) = (free_udp_addr(1), free_udp_addr(2));
    let mut a = Node::rpc("A", &loopback_args(pa, &[pb]));
    // The flags may also come before the subcommand.
    let mut cmd = Command::new(ferry_bin());
    cmd.args(loopback_args(pb, &[pa])).arg("rpc");
    let mut b = Node::spawn("B", cmd);
    let (code_a, code_b) = (a.code(), b.code());

    b.ok("contacts.add", json!({"name": "alice", "code": code_a}));
    let e = b.call("contacts.add", json!({"name": "alice", "code": code_a})).expect_err("same name twice");
    assert_eq!(e["code"], json!(-32602), "{e}");
    let e = b.call("contacts.add", json!({"name": "me", "code": code_b})).expect_err("own code");
    assert_eq!(e["code"], json!(-32602), "{e}");
    b.ok("contacts.rename", json!({"name": "alice", "new_name": "Alice Liddell"}));
    assert_eq!(b.ok("contacts.list", json!({})), json!([{"name": "Alice Liddell", "code": code_a}]));
    let e = b.call("contacts.rename", json!({"name": "nobody", "new_name": "x"})).expect_err("no such contact");
    assert_eq!(e["code"], json!(-32602), "{e}");

    let id = a.send(&code_b, "as a contact");
    let r = b.wait_received("as a contact", DELIVERY);
    assert_eq!(r["from"], json!("Alice Liddell"), "{r}");
    assert_eq!(r["contact"], json!(true), "{r}");
    a.wait_delivered(&id, DELIVERY);

    b.ok("contacts.remove", json!({"name": "Alice Liddell"}));
    assert_eq!(b.ok("contacts.list", json!({})), json!([]));
    let id = a.send(&code_b, "as a stranger again");
    let r = b.wait_received("as a stranger again", DELIVERY);
    assert_eq!(r["contact"], json!(false), "{r}");
    assert_eq!(r["from"], json!(code_a), "{r}");
    a.wait_delivered(&id, DELIVERY);

    b.ok("contacts.block", json!({"code": code_a}));
    let id = a.send(&code_b, "you blocked me");
    // It reaches B (A hands it to the link), but B shows nothing.
    a.wait_status(&id, "sent", DELIVERY);
    b.drain_for(Duration::from_millis(2500));
    assert!(
        !b.history.iter().any(|v| v["params"]["text"] == json!("you blocked me")),
        "a blocked sender's text was shown: {:#?}",
        b.history
    );
    b.assert_no_duplicates();
}

/// b. A — relay — B: A and B know only the relay's address.
#[test]
fn through_a_relay() {
    let (pr, pa, pb) = (free_udp_addr(1), free_udp_addr(2), free_udp_addr(3));
    let mut relay = Proc::ferry("relay", &["relay".into(), "--no-mdns".into(), "--listen".into(), pr.to_string()]);
    let mut a = Node::rpc("A", &loopback_args(pa, &[pr]));
    let mut b = Node::rpc("B", &loopback_args(pb, &[pr]));
    let (code_a, code_b) = (a.code(), b.code());

    let id = a.send(&code_b, "via the relay");
    let r = b.wait_received("via the relay", DELIVERY);
    assert_eq!(r["code"], json!(code_a), "{r}");
    a.wait_delivered(&id, DELIVERY);

    let id = b.send(&code_a, "and back");
    let r = a.wait_received("and back", DELIVERY);
    assert_eq!(r["code"], json!(code_b), "{r}");
    b.wait_delivered(&id, DELIVERY);

    // A few more each way.
    let ids_a: Vec<String> = (0..3).map(|i| a.send(&code_b, &format!("relay a{i}"))).collect();
    let ids_b: Vec<String> = (0..3).map(|i| b.send(&code_a, &format!("relay b{i}"))).collect();
    for i in 0..3 {
        b.wait_received(&format!("relay a{i}"), DELIVERY);
        a.wait_received(&format!("relay b{i}"), DELIVERY);
    }
    for id in &ids_a {
        a.wait_delivered(id, DELIVERY);
    }
    for id in &ids_b {
        b.wait_delivered(id, DELIVERY);
    }
    a.drain_for(Duration::from_millis(2200));
    a.assert_no_duplicates();
    b.assert_no_duplicates();

    // Each endpoint sees exactly one peer: the relay.
    let peers = a.ok("peers", json!({}));
    assert_eq!(peers.as_array().map(Vec::len), Some(1), "{peers}");
    assert_eq!(peers[0]["validated"], json!(true), "{peers}");

    // The relay runs until SIGTERM, then exits cleanly.
    assert!(relay.try_exit().is_none(), "the relay exited early: {}", relay.stderr());
    relay.signal(Signal::SIGTERM);
    let status = relay.wait_exit(Duration::from_secs(5)).expect("the relay did not stop on SIGTERM");
    assert!(status.success(), "relay exit: {status:?}\n{}", relay.stderr());
}

/// c1. B starts 3 s after A, with no peer of its own: A's static-peer retries find it.
#[test]
fn static_peer_that_comes_up_later() {
    let (pa, pb) = (free_udp_addr(1), free_udp_addr(2));
    let mut a = Node::rpc("A", &loopback_args(pa, &[pb]));
    let _ = a.code();
    std::thread::sleep(Duration::from_secs(3));
    let mut b = Node::rpc("B", &loopback_args(pb, &[]));
    let code_b = b.code();
    let id = a.send(&code_b, "are you up yet?");
    b.wait_received("are you up yet?", DELIVERY);
    a.wait_delivered(&id, DELIVERY);
    let peers = b.ok("peers", json!({}));
    assert_eq!(peers[0]["found_by"], json!("incoming"), "{peers}");
}

/// c2. A sends while B is down; B (whose identity A knows) starts later on the same port: the message is
/// carried at A and delivered.
#[test]
fn store_and_forward_to_a_peer_that_starts_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id_file = dir.path().join("b.id");
    let code_b = ferry_id(&["--identity".into(), id_file.display().to_string()]);

    let (pa, pb) = (free_udp_addr(1), free_udp_addr(2));
    let mut a = Node::rpc("A", &loopback_args(pa, &[pb]));
    let id = a.send(&code_b, "waiting for you");
    a.wait_status(&id, "queued", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(3));
    assert!(!status_states(&a, &id).iter().any(|s| s == "delivered"), "delivered with B down?");

    let mut args = vec!["--identity".to_owned(), id_file.display().to_string(), "--no-mdns".into()];
    args.extend(["--listen".into(), pb.to_string(), "--peer".into(), pa.to_string()]);
    let mut b = Node::rpc("B", &args);
    assert_eq!(b.code(), code_b);
    let r = b.wait_received("waiting for you", DELIVERY);
    assert_eq!(r["code"], json!(a.code()), "{r}");
    a.wait_delivered(&id, DELIVERY);
}

/// c3. B was up (link validated), then dies; A sends; B comes back on the same port with the same
/// identity: the message still arrives.
///
/// Known bug (reported): `Router::handle_hello` (proto/src/router.rs) restarts the summary exchange when the
/// peer's hello nonce changes, but leaves the link's bit set in every stored message's `peer_has`, so a
/// message handed to the dead peer is never offered again to the restarted one on the same address.
#[test]
fn store_and_forward_across_a_peer_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id_file = dir.path().join("b.id");
    let code_b = ferry_id(&["--identity".into(), id_file.display().to_string()]);
    let (pa, pb) = (free_udp_addr(1), free_udp_addr(2));
    let mut b_args = vec!["--identity".to_owned(), id_file.display().to_string(), "--no-mdns".into()];
    b_args.extend(["--listen".into(), pb.to_string(), "--peer".into(), pa.to_string()]);

    let mut a = Node::rpc("A", &loopback_args(pa, &[pb]));
    let mut b = Node::rpc("B", &b_args);
    let id = a.send(&code_b, "first");
    b.wait_received("first", DELIVERY);
    a.wait_delivered(&id, DELIVERY);

    b.proc.kill();
    drop(b);
    let id = a.send(&code_b, "while you were away");
    std::thread::sleep(Duration::from_secs(2));
    let mut b = Node::rpc("B again", &b_args);
    let got = b.try_note(DELIVERY, |v| v["params"]["text"] == json!("while you were away"));
    if got.is_none() {
        let diag = format!(
            "A statuses {:?}\nA peers {}\nA stats {}\nB peers {}\nB stats {}",
            status_states(&a, &id),
            a.ok("peers", json!({})),
            a.ok("stats", json!({})),
            b.ok("peers", json!({})),
            b.ok("stats", json!({}))
        );
        panic!("B, restarted, never got the message A sent while it was down:\n{diag}");
    }
    a.wait_delivered(&id, DELIVERY);
}

/// d. JSON-RPC robustness: errors with the standard codes, oversize lines, batches, notifications; the node
/// keeps working and stdout carries only JSON.
#[test]
fn json_rpc_robustness() {
    let (pa, pb) = (free_udp_addr(1), free_udp_addr(2));
    let mut a = Node::rpc("A", &loopback_args(pa, &[pb]));
    let mut b = Node::rpc("B", &loopback_args(pb, &[pa]));
    let code_b = b.code();
    let t = Duration::from_secs(5);

    // Malformed JSON.
    a.send_line(r#"{"jsonrpc":"2.0","id":1,"method":"#);
    let r = a.next_response(t);
    assert_eq!(r["error"]["code"], json!(-32700), "{r}");
    assert_eq!(r["id"], Value::Null, "{r}");
    assert_eq!(r["jsonrpc"], json!("2.0"), "{r}");
    // Not UTF-8.
    a.send_bytes(b"\xff\xfe\xfd\n");
    let r = a.next_response(t);
    assert_eq!(r["error"]["code"], json!(-32700), "{r}");
    // Not a request object.
    a.send_line("42");
    let r = a.next_response(t);
    assert_eq!(r["error"]["code"], json!(-32600), "{r}");
    a.send_line(r#"{"id":7,"method":"identity"}"#);
    let r = a.next_response(t);
    assert_eq!(r["error"]["code"], json!(-32600), "missing \"jsonrpc\": {r}");
    assert_eq!(r["id"], json!(7), "{r}");

    // Unknown method.
    let e = a.call("no.such.method", json!({})).expect_err("unknown method");
    assert_eq!(e["code"], json!(-32601), "{e}");

    // Bad params.
    let e = a.call("contacts.add", json!({"name": "x", "code": "ferry1notacode"})).expect_err("bad code");
    assert_eq!(e["code"], json!(-32602), "{e}");
    let msg = e["message"].as_str().unwrap_or_default().to_lowercase();
    assert!(msg.contains("code"), "the message should say the code is wrong: {e}");
    let e = a.call("contacts.add", json!({"name": "x"})).expect_err("missing code");
    assert_eq!(e["code"], json!(-32602), "{e}");
    assert!(e["message"].as_str().unwrap_or_default().contains("code"), "{e}");
    let e = a.call("send", json!({"to": "nobody-by-that-name", "text": "x"})).expect_err("unknown recipient");
    assert_eq!(e["code"], json!(-32602), "{e}");
    let e = a.call("send", json!({"to": code_b, "text": 5})).expect_err("text not a string");
    assert_eq!(e["code"], json!(-32602), "{e}");

    // Text over the limit.
    let long = "x".repeat(4097);
    let e = a.call("send", json!({"to": code_b, "text": long})).expect_err("4097 bytes");
    assert!(e["message"].as_str().unwrap_or_default().contains("4096"), "the message should name 4096: {e}");
    assert_eq!(e["code"], json!(-32602), "{e}");
    // Exactly the limit is fine (multi-byte text counts bytes: 1024 × 4-byte char).
    let max_text = "\u{1F6A2}".repeat(1024);
    assert_eq!(max_text.len(), 4096);
    let id_long = a.send(&code_b, &max_text);

    // A 300 KiB line: refused, skipped, and the node keeps working.
    let pad = "p".repeat(300 * 1024);
    a.send_line(&format!(r#"{{"jsonrpc":"2.0","id":99,"method":"identity","params":{{"pad":"{pad}"}}}}"#));
    let r = a.next_response(t);
    assert_eq!(r["error"]["code"], json!(-32600), "{r}");
    assert_eq!(a.ok("identity", json!({}))["code"].as_str().map(str::len), Some(65));

    // A batch.
    a.send_line(
        r#"[{"jsonrpc":"2.0","id":"b1","method":"identity"},{"jsonrpc":"2.0","id":"b2","method":"nope"},{"jsonrpc":"2.0","method":"stats"}]"#,
    );
    let r = a.next_response(t);
    let items = r.as_array().unwrap_or_else(|| panic!("a batch gets an array: {r}"));
    assert_eq!(items.len(), 2, "two requests with ids, one notification: {r}");
    let by_id = |id: &str| items.iter().find(|v| v["id"] == json!(id)).cloned().unwrap_or(Value::Null);
    assert!(by_id("b1")["result"]["code"].is_string(), "{r}");
    assert_eq!(by_id("b2")["error"]["code"], json!(-32601), "{r}");
    a.send_line("[]");
    assert_eq!(a.next_response(t)["error"]["code"], json!(-32600));

    // Notifications (no id) get no response: the next response is the next request's.
    a.send_line(r#"{"jsonrpc":"2.0","method":"identity"}"#);
    a.send_line(r#"{"jsonrpc":"2.0","method":"no.such.method"}"#);
    a.send_line("");
    a.send_line(r#"{"jsonrpc":"2.0","id":"after","method":"identity"}"#);
    let r = a.next_response(t);
    assert_eq!(r["id"], json!("after"), "a notification was answered: {r}");

    // After all this, sending still works.
    let id = a.send(&code_b, "still alive");
    b.wait_received("still alive", DELIVERY);
    let r = b.wait_received(&max_text, DELIVERY);
    assert_eq!(r["text"].as_str().map(str::len), Some(4096));
    a.wait_delivered(&id, DELIVERY);
    a.wait_delivered(&id_long, DELIVERY);
    // Every stdout line was JSON (the client panics otherwise); check there were many.
    assert!(a.raw.len() >= 15, "{:?}", a.raw);
    for line in &a.raw {
        serde_json::from_str::<Value>(line).expect("stdout line is JSON");
    }
    assert!(a.shutdown(Duration::from_secs(5)).success());
}

/// Run `ferry id` with `args`; returns the code (the last stdout line) after checking the output.
fn ferry_id(args: &[String]) -> String {
    ferry_id_env(args, None)
}

fn ferry_id_env(args: &[String], home: Option<&std::path::Path>) -> String {
    let mut cmd = Command::new(ferry_bin());
    cmd.arg("id").args(args);
    if let Some(h) = home {
        cmd.env("HOME", h).env("XDG_DATA_HOME", h.join("data")).env("XDG_RUNTIME_DIR", h.join("run"));
    }
    let out = cmd.output().expect("run ferry id");
    assert!(out.status.success(), "ferry id failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 stdout");
    let last = stdout.lines().last().unwrap_or_default().to_owned();
    assert!(is_code(&last), "the last line should be the code: {stdout:?}");
    // Not a terminal: no QR code, only the code.
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    last
}

/// e. `ferry id`: the identity file is 0600 and stable; `--ephemeral` writes nothing and differs each time.
#[test]
fn id_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("sub").join("identity");
    let arg = vec!["--identity".to_owned(), file.display().to_string()];
    let code = ferry_id(&arg);
    let meta = std::fs::metadata(&file).expect("the identity file exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "identity file mode");
    assert_eq!(ferry_id(&arg), code, "the second run prints the same code");
    // The flag before the subcommand works the same.
    let out = Command::new(ferry_bin()).args(&arg).arg("id").output().expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), code);

    // An rpc node with that identity has that code.
    let mut args = arg.clone();
    args.extend(["--no-mdns".into(), "--listen".into(), free_udp_addr(1).to_string()]);
    let mut n = Node::rpc("N", &args);
    assert_eq!(n.code(), code);
    drop(n);

    // --ephemeral: a new code each time, nothing written (not even under HOME).
    let home = tempfile::tempdir().expect("tempdir");
    let e1 = ferry_id_env(&["--ephemeral".into()], Some(home.path()));
    let e2 = ferry_id_env(&["--ephemeral".into()], Some(home.path()));
    assert_ne!(e1, e2);
    assert_ne!(e1, code);
    let left: Vec<_> = std::fs::read_dir(home.path()).expect("read dir").collect();
    assert!(left.is_empty(), "--ephemeral wrote {left:?}");
    // A damaged or world-readable identity file is refused, not replaced.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = Command::new(ferry_bin()).arg("id").args(&arg).output().expect("run");
    assert!(!out.status.success(), "a 0644 identity file was accepted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// f. `ferry daemon`: JSON-RPC on a 0600 socket in a 0700 directory; refuses a directory others can enter.
#[test]
fn daemon_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let private = dir.path().join("private");
    std::fs::create_dir(&private).expect("mkdir");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let sock = private.join("d.sock");
    let listen = free_udp_addr(1).to_string();
    let args = |s: &std::path::Path| -> Vec<String> {
        vec![
            "daemon".into(),
            "--ephemeral".into(),
            "--no-mdns".into(),
            "--listen".into(),
            listen.clone(),
            "--socket".into(),
            s.display().to_string(),
        ]
    };
    let mut d = Proc::ferry("daemon", &args(&sock));
    assert!(eventually(Duration::from_secs(10), || sock.exists()), "no socket at {}: {}", sock.display(), d.stderr());
    let mode = std::fs::metadata(&sock).expect("socket metadata").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    let call = |req: &str| -> Value {
        let mut s = UnixStream::connect(&sock).expect("connect to the daemon");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        s.write_all(req.as_bytes()).and_then(|()| s.write_all(b"\n")).expect("write");
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).expect("read a response line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
    };
    let r = call(r#"{"jsonrpc":"2.0","id":1,"method":"identity"}"#);
    assert!(r["result"]["code"].as_str().is_some_and(is_code), "{r}");
    let code = r["result"]["code"].clone();
    // A second connection talks to the same node.
    let r = call(r#"{"jsonrpc":"2.0","id":2,"method":"identity"}"#);
    assert_eq!(r["result"]["code"], code);
    let r = call(r#"{"jsonrpc":"2.0","id":3,"method":"nope"}"#);
    assert_eq!(r["error"]["code"], json!(-32601), "{r}");

    // A second daemon on the same socket refuses.
    let mut d2 = Proc::ferry("daemon2", &args(&sock));
    let st = d2.wait_exit(Duration::from_secs(10)).expect("a second daemon should refuse and exit");
    assert!(!st.success());
    assert!(d2.stderr().contains("already running"), "{}", d2.stderr());

    // SIGTERM: a clean exit and the socket is gone.
    d.signal(Signal::SIGTERM);
    let st = d.wait_exit(Duration::from_secs(5)).expect("the daemon did not stop on SIGTERM");
    assert!(st.success(), "{st:?}: {}", d.stderr());
    assert!(!sock.exists(), "the socket was left behind");

    // Without --socket: $XDG_RUNTIME_DIR/ferry/daemon.sock, the directory made 0700.
    let runtime = dir.path().join("runtime");
    std::fs::create_dir(&runtime).expect("mkdir");
    let mut cmd = Command::new(ferry_bin());
    cmd.args(["daemon", "--ephemeral", "--no-mdns", "--listen", &free_udp_addr(2).to_string()]);
    cmd.env("XDG_RUNTIME_DIR", &runtime).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
    let mut d4 = Proc::spawn("daemon4", cmd);
    let default_sock = runtime.join("ferry").join("daemon.sock");
    assert!(eventually(Duration::from_secs(10), || default_sock.exists()), "no default socket: {}", d4.stderr());
    let dir_mode = std::fs::metadata(runtime.join("ferry")).expect("metadata").permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700, "{dir_mode:o}");
    let mode = std::fs::metadata(&default_sock).expect("metadata").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    d4.signal(Signal::SIGINT);
    assert!(d4.wait_exit(Duration::from_secs(5)).is_some_and(|s| s.success()), "{}", d4.stderr());

    // A directory others can enter: refused with a clear message, no socket made.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let open_sock = open.join("d.sock");
    let start = Instant::now();
    let mut d3 = Proc::ferry("daemon3", &args(&open_sock));
    let st = d3.wait_exit(Duration::from_secs(10)).expect("the daemon should refuse a 0755 directory and exit");
    assert!(!st.success(), "exit {st:?}");
    let err = d3.stderr();
    assert!(err.contains("0700") || err.contains("private"), "the refusal should say why: {err}");
    assert!(!open_sock.exists());
    assert!(start.elapsed() < Duration::from_secs(10));
}

/// Messages from a stranger beyond the recipient's per-minute limit are not shown; the sender must then not
/// be told they were delivered.
///
/// Known bug (reported): `State::on_received` (node/src/node.rs) drops the `received` notification over the
/// per-sender rate, but the endpoint has already opened the message and queued its receipt, so the sender
/// gets `delivered` for a text nobody saw, and it is never sent again.
#[test]
fn stranger_over_the_rate_limit_is_not_told_delivered() {
    let (pa, pb) = (free_udp_addr(1), free_udp_addr(2));
    let mut a = Node::rpc("A", &loopback_args(pa, &[pb]));
    let mut b = Node::rpc("B", &loopback_args(pb, &[pa]));
    let code_b = b.code();
    let ids: Vec<String> = (0..8).map(|i| a.send(&code_b, &format!("stranger #{i}"))).collect();
    // Wait for every message to be settled one way or the other.
    b.drain_for(Duration::from_secs(4));
    a.drain_for(Duration::from_millis(100));
    for i in 0..5 {
        assert!(
            b.history.iter().any(|v| v["params"]["text"] == json!(format!("stranger #{i}"))),
            "the first five messages of a stranger are shown: #{i} was not"
        );
    }
    for (i, id) in ids.iter().enumerate() {
        let shown = b.history.iter().any(|v| v["params"]["text"] == json!(format!("stranger #{i}")));
        let delivered = a.history.iter().any(|v| v["method"] == "delivered" && v["params"]["id"] == json!(id));
        assert!(!delivered || shown, "message #{i} was reported delivered but never shown to B");
    }
}

/// The chat as a person uses it: its terminal shows only the chat (no log lines), `/to` refuses a name that
/// is no contact and a code that is not valid, "sent" is said as "handed to the mesh", and times are
/// `[HH:MM]` (local time, or `HH:MM UTC` where the machine has no time zone).
#[test]
fn chat_session() {
    let (pa, pb) = (free_udp_addr(1), free_udp_addr(2));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = loopback_args(pa, &[pb]);
    // A socket path where no daemon runs: the chat starts its own node.
    args.extend(["--socket".to_owned(), dir.path().join("no-daemon.sock").display().to_string()]);
    let mut chat = ferry_tests::Chat::spawn("chat", &args);
    let mut b = Node::rpc("B", &loopback_args(pb, &[pa]));
    let code_b = b.code();

    let first = chat.expect("ferry chat", DELIVERY);
    assert_eq!(chat.seen[0], first, "the chat's first line");
    let me = chat.expect("your code: ", DELIVERY);
    let code_a = me.trim_start_matches("your code: ").to_owned();
    assert!(is_code(&code_a), "{me}");

    chat.send("/to nobody");
    chat.expect("no contact named nobody", DELIVERY);
    chat.send("/to ferry1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq");
    chat.expect("not a valid contact code", DELIVERY);
    chat.send("hello?");
    chat.expect("pick a conversation first", DELIVERY);

    chat.send(&format!("/add bob {code_b}"));
    chat.expect("ok", DELIVERY);
    chat.send("/to bob");
    chat.expect("now talking to bob", DELIVERY);
    chat.send("hello bob");
    chat.expect("message #1 queued", DELIVERY);
    chat.expect("message #1 handed to the mesh (not delivered yet)", DELIVERY);
    b.wait_received("hello bob", DELIVERY);
    chat.expect("message #1 delivered", DELIVERY);
    assert!(!chat.seen.iter().any(|l| l.ends_with(" sent")), "a bare \"sent\" reads as arrived: {:#?}", chat.seen);

    b.send(&code_a, "hi alice");
    let line = chat.expect("] bob: hi alice", DELIVERY);
    let when = line.strip_prefix('[').and_then(|l| l.split_once(']')).map(|(t, _)| t).unwrap_or("");
    let hm = when.strip_suffix(" UTC").unwrap_or(when);
    assert!(
        hm.len() == 5 && hm.as_bytes()[2] == b':' && hm.bytes().filter(u8::is_ascii_digit).count() == 4,
        "time not shown as [HH:MM]: {line}"
    );

    chat.send("/quit");
    let status = chat.proc.wait_exit(Duration::from_secs(10)).expect("the chat exits on /quit");
    assert!(status.success(), "chat exit status {status:?}");
    let stderr = chat.proc.stderr();
    assert!(stderr.trim().is_empty(), "the chat's terminal got log lines:\n{stderr}");
}

/// Junk from many source ports must not lock a node out of new peers (issue 11). 600 ports each send one
/// datagram to B, spread over the time in which A (which B does not know: a *learned* peer) links to B: a
/// third are one byte, a third 240 bytes of noise, a third well-formed hellos with random nonces. A must
/// link and deliver, and no junk port may get more than one answer (one hello of 33 bytes at most).
#[test]
fn junk_from_many_ports_does_not_lock_out_a_learned_peer() {
    use std::net::UdpSocket;
    let (pa, pb) = (free_udp_addr(1), free_udp_addr(2));
    let mut b = Node::rpc("B", &loopback_args(pb, &[]));
    let code_b = b.code();
    let junk_ip = ferry_tests::loopback_ip(3);
    let ports: Vec<UdpSocket> = (0..600)
        .map(|_| {
            let s = UdpSocket::bind((junk_ip, 0)).expect("bind a junk port");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let mut noise = |buf: &mut [u8]| {
        for b in buf.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
    };
    let send_junk = |s: &UdpSocket, i: usize, noise: &mut dyn FnMut(&mut [u8])| {
        let mut buf = [0u8; 240];
        let len = match i % 3 {
            0 => 1,
            1 => 240,
            _ => {
                noise(&mut buf[1..33]);
                buf[0] = 0x24;
                33
            }
        };
        if i % 3 != 2 {
            noise(&mut buf[..len]);
        }
        s.send_to(&buf[..len], pb).expect("send junk");
    };
    // The first 400 before A starts, the rest while A links.
    for (i, s) in ports.iter().enumerate().take(400) {
        send_junk(s, i, &mut noise);
    }
    let mut a = Node::rpc("A", &loopback_args(pa, &[pb]));
    for (i, s) in ports.iter().enumerate().skip(400) {
        send_junk(s, i, &mut noise);
        std::thread::sleep(Duration::from_millis(5));
    }
    let id = a.send(&code_b, "through the junk");
    b.wait_received("through the junk", DELIVERY);
    a.wait_delivered(&id, DELIVERY);
    // Hello retries run for 7 s after a link-up: wait them out, then count the answers.
    std::thread::sleep(Duration::from_secs(8));
    let mut worst = (0, 0usize, 0usize);
    for (i, s) in ports.iter().enumerate() {
        let (mut n, mut bytes) = (0, 0);
        let mut buf = [0u8; 2048];
        while let Ok((len, _)) = s.recv_from(&mut buf) {
            n += 1;
            bytes += len;
        }
        if n > worst.1 {
            worst = (i, n, bytes);
        }
        assert!(bytes <= 33 * n, "answers of more than 33 bytes to junk port #{i}");
    }
    assert!(worst.1 <= 1, "junk port #{} got {} answers ({} bytes)", worst.0, worst.1, worst.2);
}

/// Issue 12: `ferry rpc` exits cleanly on SIGTERM and on SIGINT even while its stdin stays open (a client
/// that holds the pipe), after saving its state.
#[test]
fn rpc_stops_on_sigterm_and_sigint_with_stdin_open() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let pa = free_udp_addr(1);
        let mut a = Node::rpc("A", &loopback_args(pa, &[]));
        let _ = a.code();
        a.proc.signal(sig);
        let status = a.proc.wait_exit(Duration::from_secs(5));
        assert!(status.is_some(), "ferry rpc did not exit within 5 s of {sig:?} with its stdin open");
        assert!(status.is_some_and(|s| s.success()), "{sig:?}: {status:?}");
    }
}

/// Issue 12: lines that reach the chat together (pasted, or piped in one write) are all handled, in order:
/// "/to bob", a text and "/quit" in one burst used to reach the daemon as `identity` only.
#[test]
fn chat_handles_lines_that_come_together() {
    let (pa, pb) = (free_udp_addr(1), free_udp_addr(2));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = loopback_args(pa, &[pb]);
    args.extend(["--socket".to_owned(), dir.path().join("no-daemon.sock").display().to_string()]);
    let mut b = Node::rpc("B", &loopback_args(pb, &[pa]));
    let code_b = b.code();
    let mut chat = ferry_tests::Chat::spawn("chat", &args);
    // One write, before the chat has even answered its first line.
    chat.send(&format!("/add bob {code_b}\n/to bob\nhello in a burst"));
    b.wait_received("hello in a burst", DELIVERY);
    chat.expect("now talking to bob", DELIVERY);
    chat.expect("message #1 queued", DELIVERY);
    // A text and /quit together: the text is handed to the node (and answered) before the chat ends.
    chat.send("second in a burst\n/quit");
    let status = chat.proc.wait_exit(Duration::from_secs(10)).expect("the chat exits on /quit");
    assert!(status.success(), "chat exit status {status:?}");
    chat.expect("message #2 queued", DELIVERY);
}

/// Issue 12: `ferry chat --socket PATH` attaches only to a daemon run by the same user. A listener another
/// user runs (here: a real `ferry daemon` as uid 65534) is refused with a clear message, and nothing typed
/// reaches it.
#[test]
fn chat_refuses_a_socket_another_user_runs() {
    if !nix::unistd::geteuid().is_root() {
        let reason = "needs root to run a daemon as another user";
        assert!(!ferry_tests::is_ci(), "{reason}");
        ferry_tests::skip_unless(false, reason);
        return;
    }
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).expect("mkdir");
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("chown");
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let sock = theirs.join("d.sock");
    let mut cmd = Command::new(ferry_bin());
    cmd.args(["daemon", "--ephemeral", "--no-mdns", "--listen", &free_udp_addr(3).to_string()]);
    cmd.args(["--socket", &sock.display().to_string()]);
    cmd.env("HOME", &theirs).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
    cmd.uid(65534).gid(65534);
    let mut d = Proc::spawn("their daemon", cmd);
    assert!(eventually(Duration::from_secs(10), || sock.exists()), "their daemon made no socket: {}", d.stderr());
    let mut args = loopback_args(free_udp_addr(1), &[]);
    args.extend(["--socket".to_owned(), sock.display().to_string()]);
    let mut chat = ferry_tests::Chat::spawn("chat", &args);
    let status = chat.proc.wait_exit(Duration::from_secs(10));
    let err = chat.proc.stderr();
    assert!(status.is_some_and(|s| !s.success()), "the chat did not refuse: {status:?} {:?}", chat.seen);
    assert!(err.contains("another user"), "the refusal should say why: {err}");
    assert!(!chat.seen.iter().any(|l| l.contains("attached")), "attached to another user's daemon: {:?}", chat.seen);
    let _ = d.try_exit();

    // Our own daemon, in our own 0700 directory: the chat attaches.
    let ours = dir.path().join("ours");
    std::fs::create_dir(&ours).expect("mkdir");
    std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let sock = ours.join("d.sock");
    let daemon_args: Vec<String> = ["daemon", "--ephemeral", "--no-mdns", "--listen", &free_udp_addr(4).to_string()]
        .iter()
        .map(|s| s.to_string())
        .chain(["--socket".to_owned(), sock.display().to_string()])
        .collect();
    let mut mine = Proc::ferry("our daemon", &daemon_args);
    assert!(eventually(Duration::from_secs(10), || sock.exists()), "our daemon made no socket: {}", mine.stderr());
    let mut args = loopback_args(free_udp_addr(1), &[]);
    args.extend(["--socket".to_owned(), sock.display().to_string()]);
    let mut chat = ferry_tests::Chat::spawn("chat 2", &args);
    chat.expect("attached to the running ferry daemon", DELIVERY);
    chat.send("/quit");
    assert!(chat.proc.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()));
    let _ = mine.try_exit();
}

/// A daemon that never answers (hung, or busy for good): the chat says so within seconds and still takes
/// what is typed, so `/quit` leaves (it used to wait for the first answer before reading another line).
#[test]
fn chat_on_a_daemon_that_never_answers_still_quits() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let sock = dir.path().join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind a silent socket");
    // Accept and read, never answer.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let mut args = loopback_args(free_udp_addr(1), &[]);
    args.extend(["--socket".to_owned(), sock.display().to_string()]);
    let mut chat = ferry_tests::Chat::spawn("chat", &args);
    chat.expect("has not answered", Duration::from_secs(20));
    chat.send("/quit");
    let status = chat.proc.wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "the chat did not leave on /quit: {status:?} {:?}", chat.seen);
}

/// Issue 13's reproduction, end to end: A writes to B by code (B has named A, so B shows all of it) past
/// the first tag window, then names B with `contacts.add`. A's next texts must still open at B. Before the
/// fix the add zeroed A's tag counters, so once A heard from B again it sent tags B's window had passed,
/// and those texts were never opened.
#[test]
fn adding_a_peer_already_exchanged_with_keeps_its_tags() {
    let (pa, pb) = (free_udp_addr(1), free_udp_addr(2));
    let mut a = Node::rpc("A", &loopback_args(pa, &[pb]));
    let mut b = Node::rpc("B", &loopback_args(pb, &[pa]));
    let (code_a, code_b) = (a.code(), b.code());
    b.ok("contacts.add", json!({"name": "alice", "code": code_a}));
    let exchange = |from: &mut Node, to: &mut Node, whom: &str, text: &str| {
        let id = from.send(whom, text);
        to.wait_received(text, DELIVERY);
        from.wait_delivered(&id, DELIVERY);
    };
    exchange(&mut a, &mut b, &code_b, "hello by code");
    exchange(&mut b, &mut a, "alice", "hello back");
    // Past the first tag window (16 numbers), so a counter restarted at 0 falls behind B's window.
    for i in 0..20 {
        exchange(&mut a, &mut b, &code_b, &format!("by code {i}"));
    }
    a.ok("contacts.add", json!({"name": "bob", "code": code_b}));
    exchange(&mut b, &mut a, "alice", "ping after the add");
    for i in 0..3 {
        exchange(&mut a, &mut b, "bob", &format!("after the add {i}"));
    }
    let stats = a.ok("stats", json!({}));
    assert_eq!(stats["tag_fallbacks"], json!(0), "A fell back to first contact: {stats}");
    a.assert_no_duplicates();
    b.assert_no_duplicates();
}
