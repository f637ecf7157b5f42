//! The daemon's own logic (JSON-RPC handling, contacts, blocking, receipts)
//! over an in-memory network: no sockets, a few milliseconds per message.

use std::net::SocketAddr;
use std::time::Duration;

use ferry_node::book::Book;
use ferry_node::link::{Link, MemNet};
use ferry_node::node::{Handle, Mode, Options, spawn_on};
use ferry_proto::envelope::Identity;
use serde_json::{Value, json};
use tokio::sync::watch;

/// Run `f` on a thread with room for the routers (built on the stack
/// before they are boxed).
fn big_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new().stack_size(256 << 20).spawn(f).unwrap().join().unwrap();
}

fn person() -> Mode {
    Mode::Endpoint { identity: Identity::generate(&mut rand::rng()), book: Book::in_memory() }
}

fn opts(peers: Vec<SocketAddr>) -> Options {
    Options { listen: None, peers, mdns: false, store_kib: None, serial: Vec::new(), rotate_secs: None }
}

async fn note(rx: &mut ferry_node::notes::Receiver, method: &str, within: Duration) -> Option<Value> {
    tokio::time::timeout(within, async {
        loop {
            let line = rx.recv().await.ok()?;
            let v: Value = serde_json::from_str(&line).ok()?;
            if v["method"] == method {
                return Some(v["params"].clone());
            }
        }
    })
    .await
    .ok()
    .flatten()
}

async fn code(h: &Handle) -> String {
    h.call("identity", json!({})).await.unwrap()["code"].as_str().unwrap().to_owned()
}

#[test]
fn through_a_relay_over_memory_with_blocking() {
    big_stack(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let net = MemNet::new();
            let (la, lr, lb) = (net.link(), net.link(), net.link());
            let relay_addr = lr.local_addr();
            let (_stop, stop_rx) = watch::channel(false);
            let (a, _, _) = spawn_on(la, person(), opts(vec![relay_addr]), false, stop_rx.clone());
            let (_r, _, _) = spawn_on(lr, Mode::Relay, opts(vec![]), false, stop_rx.clone());
            let (b, _, _) = spawn_on(lb, person(), opts(vec![relay_addr]), false, stop_rx.clone());
            let (code_a, code_b) = (code(&a).await, code(&b).await);
            let mut notes_a = a.subscribe();
            let mut notes_b = b.subscribe();

            a.call("contacts.add", json!({"name": "bob", "code": code_b})).await.unwrap();
            let id = a.call("send", json!({"to": "bob", "text": "over memory"})).await.unwrap()["id"].clone();
            let got = note(&mut notes_b, "received", Duration::from_secs(10)).await.expect("b received");
            assert_eq!(got["text"], "over memory");
            assert_eq!(got["contact"], false);
            assert_eq!(got["code"], code_a.as_str());
            let done = note(&mut notes_a, "delivered", Duration::from_secs(10)).await.expect("a told delivered");
            assert_eq!(done["id"], id);

            // B blocks A: A's next message is not shown and gets no receipt.
            b.call("contacts.block", json!({"code": code_a})).await.unwrap();
            let id2 = a.call("send", json!({"to": "bob", "text": "blocked"})).await.unwrap()["id"].clone();
            assert!(note(&mut notes_b, "received", Duration::from_secs(3)).await.is_none());
            let delivered = tokio::time::timeout(Duration::from_secs(3), async {
                loop {
                    match note(&mut notes_a, "delivered", Duration::from_secs(3)).await {
                        Some(d) if d["id"] == id2 => return true,
                        Some(_) => continue,
                        None => return false,
                    }
                }
            })
            .await
            .unwrap_or(false);
            assert!(!delivered, "a blocked code must get no receipt");

            // Errors say what is wrong.
            let e = a.call("contacts.add", json!({"name": "x", "code": "ferry1nope"})).await.unwrap_err();
            assert_eq!(e.code, -32602);
            let e = a.call("send", json!({"to": code_a, "text": "me"})).await.unwrap_err();
            assert!(e.message.contains("own code"), "{}", e.message);
        });
    });
}

/// 1,000 sends written in one go to `rpc::serve` over a 256-byte pipe read
/// slowly: every answer comes back in request order, and every `status`
/// notification arrives (none lost, no `lagged`), while A delivers to B.
#[test]
fn pipelined_requests_answered_in_order_and_no_notification_lost() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    big_stack(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let net = MemNet::new();
            let (la, lb) = (net.link(), net.link());
            let b_addr = lb.local_addr();
            let (_stop, stop_rx) = watch::channel(false);
            let (a, _, _) = spawn_on(la, person(), opts(vec![b_addr]), false, stop_rx.clone());
            let (b, _, _) = spawn_on(lb, person(), opts(vec![]), false, stop_rx.clone());
            let code_b = code(&b).await;
            a.call("contacts.add", json!({"name": "bob", "code": code_b})).await.unwrap();

            let (client, server) = tokio::io::duplex(256);
            let (server_r, server_w) = tokio::io::split(server);
            tokio::spawn(ferry_node::rpc::serve(BufReader::new(server_r), server_w, a.clone()));
            let (client_r, mut client_w) = tokio::io::split(client);
            const N: u64 = 1000;
            let writer = tokio::spawn(async move {
                let mut all = String::new();
                for i in 1..=N {
                    let req = json!({"jsonrpc": "2.0", "id": i, "method": "send", "params": {"to": "bob", "text": format!("m{i}")}});
                    all.push_str(&req.to_string());
                    all.push('\n');
                }
                client_w.write_all(all.as_bytes()).await.unwrap();
                client_w
            });
            let mut lines = BufReader::new(client_r).lines();
            let (mut next_id, mut queued, mut sent_ids) = (1u64, 0u64, std::collections::HashSet::new());
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while next_id <= N || queued < N {
                // A slow reader: the pipe fills and the node keeps going.
                if next_id % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let line = tokio::time::timeout_at(deadline, lines.next_line()).await.expect("in time").unwrap().unwrap();
                let v: Value = serde_json::from_str(&line).unwrap();
                assert_ne!(v["method"], "lagged", "no notification may be lost: {v}");
                if let Some(id) = v.get("id") {
                    assert_eq!(id, &json!(next_id), "answers in request order");
                    assert!(v["result"]["id"].is_string(), "{v}");
                    assert!(sent_ids.insert(v["result"]["id"].as_str().unwrap().to_owned()));
                    next_id += 1;
                } else if v["method"] == "status" && v["params"]["state"] == "queued" {
                    queued += 1;
                }
            }
            assert_eq!(sent_ids.len() as u64, N);
            let _w = writer.await.unwrap();
        });
    });
}
