//! The daemon's own logic (JSON-RPC handling, contacts, blocking, receipts)
//! over an in-memory network: no sockets, a few milliseconds per message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_node::book::Book;
use ferry_node::link::{Link, MemNet};
use ferry_node::node::{Handle, Mode, Options, spawn_on};
use ferry_proto::envelope::Identity;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

/// Run `f` on a thread with room for the routers (built on the stack
/// before they are boxed).
fn big_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new().stack_size(256 << 20).spawn(f).unwrap().join().unwrap();
}

fn person() -> Mode {
    Mode::Endpoint { identity: Identity::generate(&mut rand::rng()), book: Book::in_memory() }
}

fn opts(peers: Vec<SocketAddr>) -> Options {
    Options { listen: None, peers, mdns: false }
}

async fn note(rx: &mut broadcast::Receiver<Arc<str>>, method: &str, within: Duration) -> Option<Value> {
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
