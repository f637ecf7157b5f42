//! The node: one task that owns the `proto` core and drives it with its
//! links (UDP, serial ports), mDNS discovery, timers and requests from the
//! local API.
//!
//! It is the thin driver the house style asks for: a `select!` over
//! datagrams, serial port events, the core's timer, typed [`Command`]s and
//! discovery events, each followed by draining `poll_transmit` and
//! `poll_event`.
//!
//! * `cores`: which core (relay or endpoint) and how it is built; both are
//!   driven through the one face, [`ferry_proto::Node`].
//! * `peers`: the link table (`proto`'s, keyed by link kind and address) and
//!   what happens as links come and go.
//! * this file: the task, its state, sending, events, and the answers to
//!   commands.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration as StdDuration, SystemTime, UNIX_EPOCH};

use ferry_proto::Instant;
use ferry_proto::endpoint::{DeliveryState, Event, SendError};
use ferry_proto::envelope::{Identity, PeerKey};
use ferry_proto::link::table::Origin;
use ferry_proto::router::LinkCaps;
use ferry_proto::wire::{HELLO_LEN, MAX_FRAME_LEN, MessageId};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant as TokioInstant;

use self::peers::{Links, PeerAddr};
use crate::book::Book;
pub use crate::command::Command;
use crate::link::{Datagrams, Link};
use crate::mdns::{Discovery, DiscoveryEvent};
use crate::notes;
use crate::rpc::RpcError;
use crate::serial::{Port, PortEvent, SerialSpec};
use crate::udp::Udp;

mod cores;
mod peers;

use self::cores::{Core, endpoint_core, relay_core};
pub use self::cores::{HostEndpoint, ROUTER_CONFIG, UDP_CAPS, router_config};

/// Maintenance tick: static peer retries, idle links, saving tag counters.
const TICK: StdDuration = StdDuration::from_millis(500);
/// The stack below the loop is scrubbed at most this long after the core
/// last ran (a scrub per wake-up cost a relay 20% more CPU).
const SCRUB_DELAY: StdDuration = StdDuration::from_millis(20);
/// Datagrams sent in one batch by `flush`.
const FLUSH_BATCH: usize = 256;
/// Requests handled before the node sends what they produced: under load,
/// many sends leave in one batch.
const REQUEST_BATCH: usize = 64;
/// mDNS instances tracked at most.
const MDNS_INSTANCES: usize = 1024;

/// What the node is.
#[derive(Debug)]
pub enum Mode {
    /// A person's node: identity and address book.
    Endpoint {
        /// The identity.
        identity: Identity,
        /// The address book (in memory for `--ephemeral`).
        book: Book,
    },
    /// A relay: no identity, nothing on disk.
    Relay,
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// UDP address to bind; `None` for a random port on all interfaces.
    pub listen: Option<SocketAddr>,
    /// Static peers.
    pub peers: Vec<SocketAddr>,
    /// Advertise and browse mDNS.
    pub mdns: bool,
    /// Memory for held messages in KiB (`None`: all the router has).
    pub store_kib: Option<u32>,
    /// Serial devices, each one more link of the same router.
    pub serial: Vec<SerialSpec>,
    /// The epoch, in seconds: a new mDNS name, and a new UDP port unless
    /// `listen` names one (`None`: 50 to 70 minutes, at random).
    pub rotate_secs: Option<u64>,
}

/// One request to the node.
#[derive(Debug)]
pub struct Request {
    /// What is asked.
    pub command: Command,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Value, RpcError>>,
}

/// A handle on a running node.
#[derive(Debug, Clone)]
pub struct Handle {
    requests: mpsc::Sender<Request>,
    notes: notes::Subscriber,
}

impl Handle {
    /// Call a method.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        self.submit(method, params).await.await.unwrap_or_else(|_| Err(RpcError::app("the node has stopped")))
    }

    /// Hand a request to the node (waiting only for room in its queue) and
    /// return where its answer will come: requests submitted one after the
    /// other are handled in that order. A stopped node drops the sender.
    pub async fn submit(&self, method: &str, params: Value) -> oneshot::Receiver<Result<Value, RpcError>> {
        match Command::parse(method, &params) {
            Ok(command) => self.command(command).await,
            Err(e) => {
                // Refused at the edge: the node never sees it.
                let (reply, rx) = oneshot::channel();
                let _ = reply.send(Err(e));
                rx
            }
        }
    }

    /// Hand a typed command to the node; see [`Handle::submit`].
    pub async fn command(&self, command: Command) -> oneshot::Receiver<Result<Value, RpcError>> {
        let (reply, rx) = oneshot::channel();
        let _ = self.requests.send(Request { command, reply }).await;
        rx
    }

    /// Subscribe to notifications (JSON-RPC notification objects, one line
    /// each, without the newline).
    pub fn subscribe(&self) -> notes::Receiver {
        self.notes.subscribe()
    }
}

struct State {
    core: Core,
    book: Option<Book>,
    book_dirty: bool,
    start: TokioInstant,
    rng: rand::rngs::StdRng,
    /// Every link, keyed by kind and address.
    links: Links,
    /// What the datagram link carries (its `caps()`).
    dgram_caps: LinkCaps,
    /// When the stack must be scrubbed (the core ran since the last scrub).
    scrub_at: Option<TokioInstant>,
    statics: Vec<SocketAddr>,
    notes: notes::Sender,
    /// Ids of messages sent, to say which are still undelivered.
    pending: HashMap<MessageId, DeliveryState>,
    /// mDNS instances and their addresses (one node each).
    mdns: HashMap<String, Vec<SocketAddr>>,
    /// Addresses of mDNS instances without a link yet: greeted with
    /// stateless probes (SPEC §6.1), so they take no link until they answer.
    probes: peers::Probes,
    /// Stateless answers to hellos from addresses without a link, to send
    /// with the next flush (bounded by the router's answer rate).
    answers: Vec<(SocketAddr, [u8; HELLO_LEN])>,
    /// Serial ports (`--serial`); port `i`'s link is `PeerAddr::Serial(i)`
    /// while its session is up.
    ports: Vec<PortLink>,
}

/// A serial port as the node sees it.
#[derive(Debug)]
struct PortLink {
    port: Port,
    /// The session is up but the link table was full: the peer's MTU, to
    /// try again every tick.
    waiting: Option<u16>,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn state_name(s: DeliveryState) -> &'static str {
    match s {
        DeliveryState::Queued => "queued",
        DeliveryState::Sent => "sent",
        DeliveryState::Delivered => "delivered",
        DeliveryState::Expired => "expired",
    }
}

impl State {
    fn now(&self) -> Instant {
        Instant::from_millis(u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn to_tokio(&self, t: Instant) -> TokioInstant {
        self.start + StdDuration::from_millis(t.millis())
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.core.node_ref().poll_timeout()
    }

    /// Every tick: links (retries, idle expiry, mDNS), then saved state.
    fn maintain(&mut self) {
        let now = self.now();
        if let Core::Endpoint(ep) = &mut self.core {
            // The wall clock, for texts dated ahead of it (SPEC §4.5).
            ep.set_unix_time(now, unix_now());
        }
        self.maintain_links();
        self.save_states();
    }

    fn handle_timeout(&mut self) {
        let now = self.now();
        self.core.node().handle_timeout(now, &mut self.rng);
    }

    fn save_states(&mut self) {
        let (Core::Endpoint(e), Some(book)) = (&self.core, self.book.as_mut()) else { return };
        let keys: Vec<PeerKey> = book.contacts().filter_map(|c| PeerKey::from_code(&c.code).ok()).collect();
        for k in keys {
            if let Some(s) = e.contact_state(&k) {
                self.book_dirty |= book.set_state(&k, s);
            }
        }
        if self.book_dirty {
            if let Err(e) = book.save() {
                tracing::warn!("could not save the address book: {e}");
            }
            self.book_dirty = false;
        }
    }

    /// Drain `poll_transmit` into `out` (one arena, no allocation per
    /// frame once warm) and send it in batches.
    async fn flush<L: Link<Addr = SocketAddr>>(&mut self, link: &L, scratch: &mut Vec<u8>, out: &mut Datagrams) {
        let now = self.now();
        out.clear();
        for (to, hello) in self.answers.drain(..) {
            out.push(to, &hello);
        }
        loop {
            let start = out.bytes.len();
            out.bytes.resize(start + MAX_FRAME_LEN, 0);
            let t = self.core.node().poll_transmit(now, &mut out.bytes[start..]);
            let Some(t) = t else {
                out.bytes.truncate(start);
                break;
            };
            out.bytes.truncate(start + t.len);
            // Serial links are pull links: only UDP frames come here.
            match self.links.by_id(t.link).map(|e| e.addr) {
                Some(PeerAddr::Udp(addr)) => out.frames.push((addr, start..start + t.len)),
                _ => out.bytes.truncate(start),
            }
            if out.len() >= FLUSH_BATCH {
                link.send(out, scratch).await;
                out.wipe();
            }
        }
        if !out.is_empty() {
            link.send(out, scratch).await;
            out.wipe();
        }
        self.pull_serial();
        self.drain_events();
        self.scrub_soon();
    }

    /// The core ran: what it left on the stack (frames handled, requests,
    /// timers, the serial pull) is overwritten within [`SCRUB_DELAY`], or
    /// now if that time has come (SPEC §8). Under load that is one scrub per
    /// [`SCRUB_DELAY`], not one per wake-up; when the node falls idle, the
    /// loop wakes once more to do it.
    fn scrub_soon(&mut self) {
        let now = TokioInstant::now();
        match self.scrub_at {
            Some(t) if now >= t => {
                self.scrub();
                self.scrub_at = None;
            }
            Some(_) => {}
            None => self.scrub_at = Some(now + SCRUB_DELAY),
        }
    }

    /// Overwrite the stack below the loop: deeper for an endpoint, whose
    /// paths carry texts of up to 4 KiB.
    pub(super) fn scrub(&self) {
        match self.core {
            Core::Relay(_) => ferry_proto::wipe::scrub_stack(),
            Core::Endpoint(_) => ferry_proto::wipe::scrub_stack_bytes::<{ 256 * 1024 }>(),
        }
    }

    fn note(&self, method: &str, params: Value) {
        let line = json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string();
        self.notes.send(Arc::from(line));
    }

    /// Handle the core's events one at a time: a shown text goes from the
    /// core straight into its notification, with no copy in a collection
    /// that would be freed unwiped.
    fn drain_events(&mut self) {
        while let Some(ev) = self.core.node().poll_event() {
            match ev {
                Event::Received(r) => self.on_received(r),
                Event::Status { id, state } => {
                    let hex = id.to_string();
                    self.note("status", json!({"id": hex, "state": state_name(state)}));
                    if state == DeliveryState::Delivered {
                        self.note("delivered", json!({"id": hex}));
                    }
                    if matches!(state, DeliveryState::Delivered | DeliveryState::Expired) {
                        self.pending.remove(&id);
                    } else {
                        self.pending.insert(id, state);
                    }
                }
                _ => {}
            }
        }
    }

    /// The endpoint's block list is the address book's (which `contacts.add`
    /// may shorten: adding a blocked code as a contact unblocks it).
    fn sync_blocked(&mut self) {
        let (Core::Endpoint(ep), Some(book)) = (&mut self.core, self.book.as_ref()) else { return };
        ep.clear_blocked();
        for e in book.entries().iter().filter(|e| e.blocked) {
            if let Ok(k) = PeerKey::from_code(&e.code)
                && ep.block(&k).is_err()
            {
                tracing::warn!("more blocked codes than the node can hold; the rest are not blocked");
                break;
            }
        }
    }

    /// A text the endpoint showed (its policy already left out blocked codes
    /// and strangers over their rate, and sent the receipt). Its one copy
    /// outside the core is the notification line the API hands out: it is
    /// written straight into a buffer sized for it (never reallocated, so
    /// never left behind in freed memory), copied into the line, and wiped
    /// (README, Privacy).
    fn on_received(&mut self, r: ferry_proto::endpoint::Received) {
        #[derive(serde::Serialize)]
        struct Params<'a> {
            id: String,
            from: &'a str,
            code: &'a str,
            contact: bool,
            text: &'a str,
            sent_at: u64,
        }
        #[derive(serde::Serialize)]
        struct Note<'a> {
            jsonrpc: &'static str,
            method: &'static str,
            params: Params<'a>,
        }
        let book = self.book.as_ref();
        let code = r.from.code().to_string();
        let name = book.and_then(|b| b.by_key(&r.from)).filter(|e| !e.name.is_empty()).map(|e| e.name.clone());
        let note = Note {
            jsonrpc: "2.0",
            method: "received",
            params: Params {
                id: r.id.to_string(),
                from: name.as_deref().unwrap_or(&code),
                code: &code,
                contact: name.is_some(),
                text: r.text.as_str(),
                sent_at: r.sent_at,
            },
        };
        // JSON escapes a byte to at most 6 ("\u00XX").
        let room = 512 + 6 * (r.text.len() + name.as_ref().map_or(0, String::len));
        let mut line = zeroize::Zeroizing::new(Vec::with_capacity(room));
        if serde_json::to_writer(&mut *line, &note).is_ok()
            && let Ok(text) = std::str::from_utf8(&line)
        {
            self.notes.send(Arc::from(text));
        }
    }

    fn handle_request(&mut self, command: Command) -> Result<Value, RpcError> {
        match command {
            Command::Peers => Ok(self.peers_json()),
            Command::Stats => Ok(self.stats_json()),
            Command::Pending => Ok(json!(self.pending.len())),
            c if matches!(self.core, Core::Relay(_)) && c.needs_identity() => {
                Err(RpcError::app("a relay has no identity or contacts"))
            }
            c => self.endpoint_request(c),
        }
    }

    fn stats_json(&self) -> Value {
        let s = self.core.node_ref().stats();
        let held = self.core.node_ref().held();
        let mut v = json!({
            "held": held,
            "frames_in": s.frames_in, "frames_out": s.frames_out, "bytes_out": s.bytes_out,
            "malformed": s.malformed, "bad_id": s.bad_id, "duplicates": s.duplicates,
            "rate_limited": s.rate_limited, "receipts_valid": s.receipts_valid,
            "receipts_refused": s.receipts_refused, "evictions": s.evictions,
            "stranger_answers": s.stranger_answers, "stranger_dropped": s.stranger_dropped,
            "stranger_links": s.stranger_links, "router_events_dropped": s.events_dropped,
            "serial": self.ports.iter().enumerate().map(|(i, p)| {
                let st = p.port.status.lock().map(|s| s.clone()).unwrap_or_default();
                json!({
                    "device": p.port.spec.path.display().to_string(),
                    "open": st.open, "opens": st.opens, "up": self.port_up_now(i),
                    "frames_in": st.frames_in, "frames_out": st.frames_out,
                    "dropped": st.dropped, "crc_errors": st.crc_errors, "malformed": st.malformed,
                    "hellos_in": st.session.hellos_in, "hellos_out": st.session.hellos_out,
                    "peer_sessions": st.session.peer_sessions, "restarts": st.session.restarts,
                    "frames_early": st.session.frames_early, "frames_overrun": st.session.frames_overrun,
                    "frames_too_long": st.session.frames_too_long,
                })
            }).collect::<Vec<_>>(),
        });
        if let (Core::Endpoint(e), Some(obj)) = (&self.core, v.as_object_mut()) {
            // What the endpoint's policy did not show: never silent.
            let es = e.endpoint_stats();
            obj.insert("shown".into(), es.shown.into());
            obj.insert("blocked".into(), es.blocked.into());
            obj.insert("over_rate".into(), es.over_rate.into());
            obj.insert("events_dropped".into(), es.events_dropped.into());
            obj.insert("too_far_ahead".into(), es.too_far_ahead.into());
            obj.insert("tag_fallbacks".into(), es.tag_fallbacks.into());
        }
        v
    }

    fn resolve(&self, to: &str) -> Result<PeerKey, RpcError> {
        if let Some(k) = self.book.as_ref().and_then(|b| b.by_name(to)) {
            return Ok(k);
        }
        PeerKey::from_code(to)
            .map_err(|e| RpcError::params(format!("{to:?} is neither a contact name nor a valid code: {e}")))
    }

    fn endpoint_request(&mut self, command: Command) -> Result<Value, RpcError> {
        let now = self.now();
        let Core::Endpoint(ep) = &mut self.core else { return Err(RpcError::app("a relay has no identity")) };
        let book = self.book.get_or_insert_with(Book::in_memory);
        match command {
            Command::Identity => Ok(json!({"code": ep.identity().code().as_str()})),
            Command::ContactsAdd { name, key } => {
                if key == ep.identity().public() {
                    return Err(RpcError::params("that is your own code"));
                }
                book.add(&name, &key).map_err(|e| RpcError::params(e.to_string()))?;
                let state = book.by_key(&key).map(|e| e.state).unwrap_or_default();
                ep.restore_contact(now, key, state).map_err(|e| RpcError::app(e.to_string()))?;
                // A blocked code added as a contact is unblocked.
                ep.unblock(&key);
                self.book_dirty = true;
                self.save_states();
                Ok(json!(true))
            }
            Command::ContactsList => {
                Ok(Value::Array(book.contacts().map(|e| json!({"name": e.name, "code": e.code})).collect()))
            }
            Command::ContactsRemove { name } => {
                let entry = book.remove(&name).map_err(|e| RpcError::params(e.to_string()))?;
                if let Ok(k) = PeerKey::from_code(&entry.code) {
                    ep.remove_contact(&k);
                }
                self.book_dirty = true;
                self.save_states();
                Ok(json!(true))
            }
            Command::ContactsRename { name, new_name } => {
                book.rename(&name, &new_name).map_err(|e| RpcError::params(e.to_string()))?;
                self.book_dirty = true;
                self.save_states();
                Ok(json!(true))
            }
            Command::ContactsBlock { key } => {
                book.block(&key).map_err(|e| RpcError::params(e.to_string()))?;
                ep.block(&key).map_err(|e| RpcError::app(e.to_string()))?;
                self.book_dirty = true;
                self.save_states();
                Ok(json!(true))
            }
            Command::Send { to, text } => {
                let key = self.resolve(&to)?;
                let Core::Endpoint(ep) = &mut self.core else { return Err(RpcError::app("a relay cannot send")) };
                if key == ep.identity().public() {
                    return Err(RpcError::params("that is your own code"));
                }
                let id = ep.send(now, &mut self.rng, unix_now(), &key, &text).map_err(|e| match e {
                    SendError::TooLong { max } => {
                        RpcError::params(format!("text is {} bytes; the limit is {max} bytes", text.len()))
                    }
                    SendError::Empty => RpcError::params("text is empty"),
                    other => RpcError::app(other.to_string()),
                })?;
                Ok(json!({"id": id.to_string()}))
            }
            Command::Peers | Command::Stats | Command::Pending => Err(RpcError::app("not an endpoint request")),
        }
    }
}

/// Start a node; returns its handle and the task running it. The task ends
/// when every [`Handle`] is dropped or `shutdown` fires.
pub fn spawn(
    mode: Mode,
    options: Options,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<(Handle, SocketAddr, tokio::task::JoinHandle<()>)> {
    let udp = Udp::bind(options.listen)?;
    let mdns = options.mdns;
    Ok(spawn_on(udp, mode, options, mdns, shutdown))
}

/// Start a node on any [`Link`] (UDP, or an in-memory network in tests).
pub fn spawn_on<L: Link<Addr = SocketAddr>>(
    link: L,
    mode: Mode,
    options: Options,
    mdns: bool,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> (Handle, SocketAddr, tokio::task::JoinHandle<()>) {
    let local = link.local_addr();
    let (req_tx, mut req_rx) = mpsc::channel::<Request>(64);
    let (notes, subscriber) = notes::channel(notes::NOTE_BACKLOG, notes::NOTE_BACKLOG_BYTES);
    let handle = Handle { requests: req_tx, notes: subscriber };
    let rng: rand::rngs::StdRng = rand::make_rng();
    let (mut core, book) = match mode {
        Mode::Endpoint { identity, book } => (Core::Endpoint(endpoint_core(identity)), Some(book)),
        Mode::Relay => (Core::Relay(relay_core()), None),
    };
    let config = router_config(options.store_kib);
    core.node().set_config(config);
    let mut state = State {
        core,
        book,
        book_dirty: false,
        start: TokioInstant::now(),
        rng,
        links: peers::new_links(),
        dgram_caps: link.caps(),
        scrub_at: None,
        statics: options.peers.clone(),
        notes,
        pending: HashMap::new(),
        mdns: HashMap::new(),
        probes: peers::Probes::default(),
        answers: Vec::new(),
        ports: Vec::new(),
    };
    let (port_tx, mut port_rx) = mpsc::channel::<PortEvent>(64);
    for (i, spec) in options.serial.iter().enumerate() {
        let port = crate::serial::spawn(i, spec.clone(), port_tx.clone());
        state.ports.push(PortLink { port, waiting: None });
    }
    drop(port_tx);
    // Named contacts with their saved tag counters, and the blocked codes.
    if let (Core::Endpoint(ep), Some(book)) = (&mut state.core, &state.book) {
        ep.set_unix_time(Instant::ZERO, unix_now());
        for e in book.contacts() {
            if let Ok(k) = PeerKey::from_code(&e.code) {
                let _ = ep.restore_contact(Instant::ZERO, k, e.state);
            }
        }
    }
    state.sync_blocked();
    let discovery = if mdns { Discovery::start(local.port()) } else { Discovery::disabled() };
    // A new port with every new mDNS name, unless the port was chosen (a
    // static peer may then be told it): otherwise the port alone would link
    // the names of one run (issue 12).
    let rotate_port = mdns && options.listen.is_none_or(|a| a.port() == 0);
    let rotate_secs = options.rotate_secs;
    let task = tokio::spawn(async move {
        let mut discovery = discovery;
        let mut link = link;
        let mut local = local;
        let mut epoch = Box::pin(tokio::time::sleep(Discovery::epoch(rotate_secs)));
        let mut bufs = link.bufs();
        let mut scratch = Vec::new();
        // Sized once: they never grow, so they are never reallocated with
        // frames in them, and they are wiped after every use.
        let mut out = Datagrams::with_capacity(FLUSH_BATCH * MAX_FRAME_LEN + MAX_FRAME_LEN);
        let mut inbox = Datagrams::with_capacity(crate::udp::BATCH * 64 * 1024);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for addr in state.statics.clone() {
            state.link_up(PeerAddr::Udp(addr), Origin::Static, state.dgram_caps);
        }
        state.flush(&link, &mut scratch, &mut out).await;
        loop {
            let wake = state.poll_timeout().map(|t| state.to_tokio(t));
            let sleep = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let scrub_at = state.scrub_at;
            let scrub = async {
                match scrub_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = link.recv(&mut bufs, &mut inbox) => {
                    for i in 0..inbox.len() {
                        if let Some((from, bytes)) = inbox.get(i) {
                            state.handle_datagram(from, bytes);
                        }
                    }
                    inbox.wipe();
                }
                () = sleep => state.handle_timeout(),
                // Nothing to do but wipe the stack (flush does it).
                () = scrub => {}
                Some(ev) = port_rx.recv() => {
                    state.handle_port(ev);
                    // Frames come in bursts: take what is already there.
                    for _ in 1..REQUEST_BATCH {
                        let Ok(ev) = port_rx.try_recv() else { break };
                        state.handle_port(ev);
                    }
                }
                req = req_rx.recv() => match req {
                    Some(req) => {
                        let result = state.handle_request(req.command);
                        let _ = req.reply.send(result);
                        // Whatever else is queued already goes in the same batch.
                        for _ in 1..REQUEST_BATCH {
                            let Ok(req) = req_rx.try_recv() else { break };
                            let result = state.handle_request(req.command);
                            let _ = req.reply.send(result);
                        }
                    }
                    None => break,
                },
                ev = discovery.next() => {
                    match ev {
                        Some(DiscoveryEvent::Discovered { instance, mut addrs }) => {
                            addrs.retain(|a| *a != local);
                            addrs.truncate(peers::MDNS_ADDRS);
                            if state.mdns.len() >= MDNS_INSTANCES && !state.mdns.contains_key(&instance) {
                                // Full: make room from instances that never
                                // answered, so fakes cannot keep real peers
                                // out (issue 12).
                                state.evict_mdns();
                            }
                            if state.mdns.len() < MDNS_INSTANCES || state.mdns.contains_key(&instance) {
                                state.mdns.insert(instance, addrs);
                            }
                        }
                        Some(DiscoveryEvent::Expired { instance }) => {
                            state.mdns.remove(&instance);
                        }
                        None => {}
                    }
                    state.reconcile_mdns();
                }
                () = &mut epoch, if mdns => {
                    if rotate_port {
                        match link.rebind() {
                            Ok(()) => {
                                local = link.local_addr();
                                bufs = link.bufs();
                                // Greet every UDP peer afresh from the new port.
                                state.relink_udp();
                                tracing::info!(port = local.port(), "new epoch: new UDP port");
                            }
                            Err(e) => tracing::warn!("new epoch: kept the UDP port: {e}"),
                        }
                    }
                    discovery.rotate(local.port());
                    epoch.as_mut().reset(TokioInstant::now() + Discovery::epoch(rotate_secs));
                }
                _ = tick.tick() => state.maintain(),
                _ = shutdown.changed() => break,
            }
            state.flush(&link, &mut scratch, &mut out).await;
        }
        state.save_states();
        discovery.stop();
    });
    (handle, local, task)
}

/// Whether the node still has sent messages not yet delivered (for the chat
/// to warn on exit: the outbox is not kept across restarts).
pub async fn pending(handle: &Handle) -> usize {
    handle.call("pending", Value::Null).await.ok().and_then(|v| v.as_u64()).unwrap_or(0) as usize
}
