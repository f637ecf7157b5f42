//! `ferry-flood-bench`: one `ferry` node (B) under a first-contact flood from
//! many UDP source ports, and what it costs B and its honest peers.
//!
//! ```text
//! cargo build --release -p ferry-node -p ferry-tools
//! target/release/ferry-flood-bench --ferry before=OLD/ferry --ferry after=target/release/ferry \
//!     --ports 64,1 --runs 5
//! ```
//!
//! Every run starts three fresh nodes (`ferry rpc --ephemeral --no-mdns`) on
//! loopback: B listens on 127.0.0.2; A (127.0.0.1) and C (127.0.0.4) have B
//! as their `--peer`. A and B add each other as contacts and exchange one
//! text each way (with receipts), so that A's texts take the tagged path
//! (SPEC §4.2: no Diffie-Hellman for anyone else). C adds B, but B never
//! adds C: C's texts are first contacts, which compete with the flood for
//! B's first-contact budget.
//!
//! The attacker is the harness itself: `--ports` UDP sockets on distinct
//! source ports of `--hosts` loopback addresses (127.0.0.3 for one host,
//! else 127.0.1.1, 127.0.1.2, ...). Each socket first becomes a link the
//! way any peer's would (SPEC §6.1): it sends a hello and answers every
//! hello of B whose nonce it has not echoed yet, or that has not echoed its
//! own (this completes B's stateless cookie where B has one, and the plain
//! hello exchange where it has not). Then, for `--seconds`, it sends unique
//! first-contact frames (kind 2, small class: random commitment and body,
//! key id 0, valid id) round robin over the sockets at `--rate` frames a
//! second in all, still answering B's hellos. Every such frame costs B one
//! X25519 (an `es` that does not open the sender's key) unless a budget
//! refuses it first.
//!
//! Meanwhile A sends B `--contact-rate` texts a second and C sends
//! `--stranger-texts` texts spread over the flood (at most 5 a minute, so
//! that B's per-stranger limit, SPEC §5, is not what stops them). A text
//! counts as delivered when B's `received` notification for it comes within
//! the flood plus `--grace`.
//!
//! Measured per run: B's CPU (utime + stime, /proc/PID/stat) over the flood
//! window and its VmHWM after the grace; A's and C's CPU over the same
//! window (B forwards the flood to them: they try it too); the frames the
//! attacker sent and what came back; how many of the attacker's links B held
//! (validated links in B's `peers`, less A and C) before the flood and
//! after the grace; datagrams the kernel dropped at B's socket (B did not
//! read them in time); the harness's own CPU; and B's `stats` before and
//! after (every numeric field either side has; older
//! builds have fewer). The cost of one failed first-contact trial is
//! measured once in-process (`ferry_proto::envelope::open` on the same kind
//! of junk), so B's CPU can be read as an upper bound on the trials it did.
//!
//! Runs are interleaved: run 1 of every `--ferry` and every `--ports`, then
//! run 2, and so on, so drift of the host's speed spreads over all of them.
//! Every binary is copied once at the start and the copy is what runs.
//! Every wait has a timeout; the children stop when their stdin closes (the
//! harness ended, however) and are killed 3 s later if they have not.

use ferry_tools::harness::{clk_tck, cpu_ticks, default_ferry, loadavg, median, num, status_kb, tail, thousands};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use ferry_proto::envelope::{self, Identity, KEY_ID_STATIC, OpenError};
use ferry_proto::wire::{COMMIT_LEN, HelloRepr, Kind, MessageFrame, SizeClass};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Longest wait for an RPC answer or a setup step.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the attacker's sockets may take to finish their hellos.
const HANDSHAKE: Duration = Duration::from_secs(3);
/// During the flood, the attacker reads its sockets this often.
const DRAIN_EVERY: Duration = Duration::from_millis(5);
/// At most this many datagrams read per socket per drain while greeting.
const DRAIN_MAX: usize = 64;
/// ... and during the flood: B forwards the flood to every attacker link,
/// and reading all of it would take the harness a core that the nodes under
/// test share; what is not read overflows the attacker's sockets (dropped
/// there, in B's send path, at B's cost).
const DRAIN_FLOOD: usize = 8;
/// The flood's pacing step: frames due within it leave in one burst.
const PACE: Duration = Duration::from_millis(1);
/// Life of the junk frames: long enough to stay in B's store all run.
const JUNK_LIFETIME_SECS: u32 = 3600;

const USAGE: &str = "\
ferry-flood-bench: a ferry node (B) under a first-contact flood from many UDP
source ports, with honest texts from a contact (A) and a stranger (C); prints
markdown tables.

usage: ferry-flood-bench [options]
  --ferry [LABEL=]PATH  a ferry binary under test (repeatable; runs are interleaved)
                        (default: target/release/ferry of this workspace)
  --ports N[,N...]      attacker source ports (default 64); several values are interleaved
  --hosts H             loopback addresses the ports are spread over (default 1: 127.0.0.3;
                        else 127.0.1.1 ... 127.0.1.H)
  --seconds S           flood length (default 10)
  --rate R              junk frames per second, all ports together (default 20000)
  --runs K              runs of every binary and port count (default 5)
  --hops H              hop budget of the junk frames (default 10; 0: B tries them but neither
                        stores nor forwards them)
  --contact-rate F      texts a second from A, a contact of B (default 2)
  --stranger-texts N    texts from C, a stranger to B, spread over the flood (default 5, at most 5)
  --grace S             after the flood, how long a text may still arrive (default 10)
  --keep-logs           keep the children's logs even when every run went well
";

#[derive(Debug)]
struct Args {
    ferries: Vec<(String, PathBuf)>,
    ports: Vec<usize>,
    hosts: usize,
    seconds: f64,
    rate: f64,
    runs: usize,
    hops: u8,
    contact_rate: f64,
    stranger_texts: usize,
    grace: Duration,
    keep_logs: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        ferries: Vec::new(),
        ports: vec![64],
        hosts: 1,
        seconds: 10.0,
        rate: 20_000.0,
        runs: 5,
        hops: 10,
        contact_rate: 2.0,
        stranger_texts: 5,
        grace: Duration::from_secs(10),
        keep_logs: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--ferry" => {
                let v = value("--ferry")?;
                let (label, path) = match v.split_once('=') {
                    Some((l, p)) => (l.to_owned(), PathBuf::from(p)),
                    None => (format!("ferry{}", args.ferries.len() + 1), PathBuf::from(v)),
                };
                args.ferries.push((label, path));
            }
            "--ports" => {
                args.ports = value("--ports")?.split(',').map(|p| num("--ports", p)).collect::<Result<_, _>>()?;
            }
            "--hosts" => args.hosts = num("--hosts", &value("--hosts")?)?,
            "--seconds" => args.seconds = num("--seconds", &value("--seconds")?)?,
            "--rate" => args.rate = num("--rate", &value("--rate")?)?,
            "--runs" => args.runs = num("--runs", &value("--runs")?)?,
            "--hops" => args.hops = num("--hops", &value("--hops")?)?,
            "--contact-rate" => args.contact_rate = num("--contact-rate", &value("--contact-rate")?)?,
            "--stranger-texts" => args.stranger_texts = num("--stranger-texts", &value("--stranger-texts")?)?,
            "--grace" => args.grace = Duration::from_secs_f64(num::<f64>("--grace", &value("--grace")?)?.max(0.0)),
            "--keep-logs" => args.keep_logs = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if args.ports.contains(&0) || args.runs == 0 || !positive(args.seconds) || !positive(args.rate) {
        return Err("--ports, --runs, --seconds and --rate must be above 0".into());
    }
    if args.hosts == 0 || args.hosts > 254 {
        return Err("--hosts must be 1 to 254".into());
    }
    if args.stranger_texts > 5 {
        return Err("--stranger-texts: at most 5 (B shows a stranger at most 5 texts a minute)".into());
    }
    if !args.contact_rate.is_finite() || args.contact_rate < 0.0 {
        return Err("--contact-rate must be 0 or more".into());
    }
    if args.ferries.is_empty() {
        args.ferries.push(("ferry".into(), default_ferry()));
    }
    Ok(args)
}

// ----- /proc ---------------------------------------------------------------

/// Datagrams the kernel dropped at the UDP socket bound to `addr` (its
/// receive buffer was full: the node did not read fast enough), from the
/// `drops` column of /proc/net/udp (the address as the kernel prints it:
/// the IPv4 address's bytes as a host-order u32, in hex, then the port).
fn socket_drops(addr: SocketAddr) -> Option<u64> {
    let SocketAddr::V4(v4) = addr else { return None };
    let want = format!("{:08X}:{:04X}", u32::from_ne_bytes(v4.ip().octets()), v4.port());
    let s = std::fs::read_to_string("/proc/net/udp").ok()?;
    let line = s.lines().skip(1).find(|l| l.split_whitespace().nth(1) == Some(want.as_str()))?;
    line.split_whitespace().nth(12)?.parse().ok()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

// ----- the honest nodes ----------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    A,
    B,
    C,
}

/// What a line from a node's stdout was.
#[derive(Debug)]
enum Ev {
    Response {
        id: u64,
        result: Result<Value, String>,
    },
    Received(String),
    Delivered,
    /// The process closed its stdout.
    Closed,
}

#[derive(Debug)]
struct Msg {
    who: Who,
    at: Instant,
    ev: Ev,
}

fn classify(line: &str) -> Option<Ev> {
    let mut v = serde_json::from_str::<Value>(line).ok()?;
    if let Some(id) = v.get("id").and_then(Value::as_u64) {
        if let Some(r) = v.get_mut("result") {
            return Some(Ev::Response { id, result: Ok(r.take()) });
        }
        let e = v.pointer("/error/message").and_then(Value::as_str).unwrap_or("error without a message");
        return Some(Ev::Response { id, result: Err(e.to_owned()) });
    }
    match v.get("method").and_then(Value::as_str) {
        Some("received") => Some(Ev::Received(v.pointer("/params/text").and_then(Value::as_str)?.to_owned())),
        Some("delivered") => Some(Ev::Delivered),
        _ => None,
    }
}

/// Read `out` line by line on a thread and pass on what matters, stamped
/// with the time it was read.
fn reader(who: Who, out: impl Read + Send + 'static, tx: Sender<Msg>) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut line = String::new();
        loop {
            line.clear();
            let n = r.read_line(&mut line);
            let at = Instant::now();
            let ev = match n {
                Ok(0) | Err(_) => Ev::Closed,
                Ok(_) => match classify(&line) {
                    Some(ev) => ev,
                    None => continue,
                },
            };
            let closed = matches!(ev, Ev::Closed);
            if tx.send(Msg { who, at, ev }).is_err() || closed {
                break;
            }
        }
    });
}

/// A `ferry rpc` child, stopped when dropped: its stdin is closed, then it
/// gets 3 s before SIGKILL.
struct Proc {
    name: &'static str,
    child: Child,
    stdin: Option<BufWriter<ChildStdin>>,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                _ => return,
            }
        }
        eprintln!("ferry-flood-bench: {} did not stop within 3 s; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free UDP port on `ip` (bound, read, released).
fn free_port(ip: Ipv4Addr) -> Result<u16, String> {
    UdpSocket::bind((ip, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free UDP port on {ip}: {e}"))
}

const IP_A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const IP_B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const IP_C: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);

/// A, B and C on loopback, and the events from their stdout.
struct Mesh {
    a: Proc,
    b: Proc,
    c: Proc,
    b_addr: SocketAddr,
    rx: Receiver<Msg>,
    stash: VecDeque<Msg>,
    next_id: u64,
    logs: PathBuf,
}

impl Mesh {
    fn start(ferry: &Path, logs: PathBuf) -> Result<Self, String> {
        std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
        let b_addr = SocketAddr::from((IP_B, free_port(IP_B)?));
        let (tx, rx) = mpsc::channel();
        let spawn =
            |who: Who, name: &'static str, listen: SocketAddr, peer: Option<SocketAddr>| -> Result<Proc, String> {
                let log_path = logs.join(format!("{name}.log"));
                let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
                let mut cmd = Command::new(ferry);
                cmd.args(["rpc", "--ephemeral", "--no-mdns", "--listen", &listen.to_string()]);
                if let Some(p) = peer {
                    cmd.args(["--peer", &p.to_string()]);
                }
                let mut child = cmd
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(log)
                    .spawn()
                    .map_err(|e| format!("cannot start {}: {e}", ferry.display()))?;
                let stdin = child.stdin.take().map(BufWriter::new);
                if let Some(out) = child.stdout.take() {
                    reader(who, out, tx.clone());
                }
                Ok(Proc { name, child, stdin })
            };
        let b = spawn(Who::B, "b", b_addr, None)?;
        let a = spawn(Who::A, "a", SocketAddr::from((IP_A, free_port(IP_A)?)), Some(b_addr))?;
        let c = spawn(Who::C, "c", SocketAddr::from((IP_C, free_port(IP_C)?)), Some(b_addr))?;
        Ok(Mesh { a, b, c, b_addr, rx, stash: VecDeque::new(), next_id: 1, logs })
    }

    fn proc(&mut self, who: Who) -> &mut Proc {
        match who {
            Who::A => &mut self.a,
            Who::B => &mut self.b,
            Who::C => &mut self.c,
        }
    }

    fn request(&mut self, who: Who, method: &str, params: Value) -> Result<u64, String> {
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string() + "\n";
        let p = self.proc(who);
        let name = p.name;
        let w = p.stdin.as_mut().ok_or_else(|| format!("{name}: stdin closed"))?;
        w.write_all(line.as_bytes()).and_then(|()| w.flush()).map_err(|e| format!("{name} stopped reading: {e}"))?;
        Ok(id)
    }

    fn stopped(&mut self, who: Who) -> String {
        let name = self.proc(who).name;
        format!("{name} stopped:\n{}", tail(&self.logs.join(format!("{name}.log")), 10))
    }

    /// The next event (stashed ones first) that `want` accepts; others are
    /// kept for later waits.
    fn wait_for(&mut self, timeout: Duration, what: &str, want: impl Fn(&Msg) -> bool) -> Result<Msg, String> {
        if let Some(i) = self.stash.iter().position(&want)
            && let Some(m) = self.stash.remove(i)
        {
            return Ok(m);
        }
        let until = Instant::now() + timeout;
        loop {
            match self.rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(m) if want(&m) => return Ok(m),
                Ok(Msg { who, ev: Ev::Closed, .. }) => return Err(self.stopped(who)),
                Ok(m) => self.stash.push_back(m),
                Err(RecvTimeoutError::Timeout) => return Err(format!("no {what} within {} s", timeout.as_secs())),
                Err(RecvTimeoutError::Disconnected) => return Err("the nodes are gone".into()),
            }
        }
    }

    fn call(&mut self, who: Who, method: &str, params: Value) -> Result<Value, String> {
        let id = self.request(who, method, params)?;
        let what = format!("answer from {who:?} to {method}");
        let m = self.wait_for(CALL_TIMEOUT, &what, |m| {
            m.who == who && matches!(&m.ev, Ev::Response { id: i, .. } if *i == id)
        })?;
        match m.ev {
            Ev::Response { result, .. } => result.map_err(|e| format!("{who:?} {method}: {e}")),
            _ => Err(what),
        }
    }

    /// Validated links in `who`'s `peers`.
    fn validated(&mut self, who: Who) -> Result<usize, String> {
        let peers = self.call(who, "peers", json!({}))?;
        Ok(peers.as_array().map_or(0, |a| a.iter().filter(|p| p["validated"] == json!(true)).count()))
    }

    /// B's `stats`, numeric fields only.
    fn stats(&mut self) -> Result<BTreeMap<String, u64>, String> {
        let v = self.call(Who::B, "stats", json!({}))?;
        let obj = v.as_object().ok_or("B's stats is not an object")?;
        Ok(obj.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).collect())
    }

    /// Contacts A <-> B (and C -> B only), validated links, one text each
    /// way between A and B with its receipt.
    fn setup(&mut self) -> Result<(), String> {
        let code = |v: Value| v["code"].as_str().map(str::to_owned).ok_or_else(|| "identity without a code".to_owned());
        let ca = code(self.call(Who::A, "identity", json!({}))?)?;
        let cb = code(self.call(Who::B, "identity", json!({}))?)?;
        self.call(Who::A, "contacts.add", json!({"name": "b", "code": cb}))?;
        self.call(Who::C, "contacts.add", json!({"name": "b", "code": cb}))?;
        self.call(Who::B, "contacts.add", json!({"name": "a", "code": ca}))?;
        let until = Instant::now() + CALL_TIMEOUT;
        while self.validated(Who::A)? == 0 || self.validated(Who::C)? == 0 || self.validated(Who::B)? < 2 {
            if Instant::now() > until {
                return Err("A's and C's links to B were not validated within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let received =
            |who: Who, text: &'static str| move |m: &Msg| m.who == who && matches!(&m.ev, Ev::Received(t) if t == text);
        let delivered = |who: Who| move |m: &Msg| m.who == who && matches!(m.ev, Ev::Delivered);
        self.call(Who::A, "send", json!({"to": "b", "text": "warm-up A to B"}))?;
        self.wait_for(CALL_TIMEOUT, "warm-up at B", received(Who::B, "warm-up A to B"))?;
        self.call(Who::B, "send", json!({"to": "a", "text": "warm-up B to A"}))?;
        self.wait_for(CALL_TIMEOUT, "warm-up at A", received(Who::A, "warm-up B to A"))?;
        self.wait_for(CALL_TIMEOUT, "receipt at A", delivered(Who::A))?;
        self.wait_for(CALL_TIMEOUT, "receipt at B", delivered(Who::B))?;
        self.stash.clear();
        Ok(())
    }
}

// ----- the attacker --------------------------------------------------------

/// The attacker: UDP sockets that greet B as peers do, then flood it.
mod attacker {
    use super::*;

    /// One source port, and where its hello exchange with B stands.
    struct Port {
        sock: UdpSocket,
        nonce: [u8; 16],
        /// B's nonce this port last echoed.
        echoed: Option<[u8; 16]>,
        /// B has echoed our nonce (from B's point of view, the address
        /// answers: where B keeps a link for it, it is validated).
        heard_echo: bool,
    }

    /// What the attacker did and got, counted over a whole run.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Counts {
        /// Junk frames sent (each one unique).
        pub sent: u64,
        /// Junk frames the socket would not take (full send buffer).
        pub send_failed: u64,
        /// Hellos sent (greetings and answers), before and during the flood.
        pub hellos: u64,
        /// Hellos from B.
        pub hellos_in: u64,
        /// Other datagrams from B (the flood forwarded, summaries).
        pub other_in: u64,
        /// Ports B had echoed when the flood began.
        pub echoed: usize,
    }

    pub struct Attacker {
        ports: Vec<Port>,
        rng: StdRng,
        out: [u8; 64],
        buf: [u8; 2048],
        pub counts: Counts,
    }

    /// The source address of host `h` of `hosts`.
    fn host(h: usize, hosts: usize) -> Ipv4Addr {
        if hosts == 1 { Ipv4Addr::new(127, 0, 0, 3) } else { Ipv4Addr::new(127, 0, 1, (h + 1) as u8) }
    }

    impl Attacker {
        /// `n` sockets spread round robin over `hosts` addresses, each
        /// connected to `b`.
        pub fn bind(n: usize, hosts: usize, b: SocketAddr, seed: u64) -> Result<Self, String> {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut ports = Vec::with_capacity(n);
            for i in 0..n {
                let ip = host(i % hosts, hosts);
                let sock = UdpSocket::bind((ip, 0)).map_err(|e| format!("cannot bind a UDP socket on {ip}: {e}"))?;
                sock.connect(b).map_err(|e| format!("cannot connect a UDP socket to {b}: {e}"))?;
                sock.set_nonblocking(true).map_err(|e| format!("cannot make a UDP socket non-blocking: {e}"))?;
                let mut nonce = [0u8; 16];
                rng.fill_bytes(&mut nonce);
                ports.push(Port { sock, nonce, echoed: None, heard_echo: false });
            }
            Ok(Attacker { ports, rng, out: [0; 64], buf: [0; 2048], counts: Counts::default() })
        }

        fn hello(&mut self, i: usize, echo: [u8; 16]) {
            let Some(p) = self.ports.get(i) else { return };
            let Ok(n) = (HelloRepr { nonce: p.nonce, echo }).emit(&mut self.out) else { return };
            if p.sock.send(&self.out[..n]).is_ok() {
                self.counts.hellos += 1;
            }
        }

        /// Read up to `max` datagrams on every socket and answer B's hellos
        /// by the rule of SPEC §6.1: answer a hello whose nonce we have not
        /// echoed yet, or that has not echoed ours.
        fn drain(&mut self, max: usize) {
            for i in 0..self.ports.len() {
                for _ in 0..max {
                    let Some(p) = self.ports.get_mut(i) else { break };
                    let n = match p.sock.recv(&mut self.buf) {
                        Ok(n) => n,
                        // WouldBlock: nothing more; anything else (ICMP
                        // port unreachable while B starts): next socket.
                        Err(_) => break,
                    };
                    let Ok(h) = HelloRepr::parse(&self.buf[..n]) else {
                        self.counts.other_in += 1;
                        continue;
                    };
                    self.counts.hellos_in += 1;
                    let ours = h.echo == p.nonce;
                    p.heard_echo |= ours;
                    if !ours || p.echoed != Some(h.nonce) {
                        p.echoed = Some(h.nonce);
                        self.hello(i, h.nonce);
                    }
                }
            }
        }

        /// Greet B from every port (again every 500 ms while B has not
        /// echoed) and answer its hellos, for `within`; then 300 ms more of
        /// answers, for B's own hellos on new links.
        pub fn handshake(&mut self, within: Duration) {
            let until = Instant::now() + within;
            let mut next_greeting = Instant::now();
            while Instant::now() < until && !self.ports.iter().all(|p| p.heard_echo) {
                if Instant::now() >= next_greeting {
                    for i in 0..self.ports.len() {
                        if self.ports.get(i).is_some_and(|p| !p.heard_echo) {
                            self.hello(i, [0; 16]);
                        }
                    }
                    next_greeting = Instant::now() + Duration::from_millis(500);
                }
                self.drain(DRAIN_MAX);
                std::thread::sleep(Duration::from_millis(2));
            }
            let until = Instant::now() + Duration::from_millis(300);
            while Instant::now() < until {
                self.drain(DRAIN_MAX);
                std::thread::sleep(Duration::from_millis(5));
            }
            self.counts.echoed = self.ports.iter().filter(|p| p.heard_echo).count();
        }

        /// A unique first-contact frame: random commitment and body, key id
        /// 0 (the static identity key, so B must do the `es` DH to learn it
        /// is not for it), valid id.
        fn junk(&mut self, hops: u8, frame: &mut [u8]) {
            let mut commit = [0u8; COMMIT_LEN];
            self.rng.fill_bytes(&mut commit);
            let mut f = MessageFrame::new_unchecked(frame);
            f.emit_header(Kind::FirstContact, hops, JUNK_LIFETIME_SECS, &commit);
            let body = f.sealed_mut();
            self.rng.fill_bytes(body);
            if let Some(k) = body.first_mut() {
                *k = KEY_ID_STATIC;
            }
            f.fill_id();
        }

        /// Flood for `length` at `rate` frames a second in all, round robin
        /// over the ports, answering B's hellos every [`DRAIN_EVERY`];
        /// stops early when `stop` is set.
        pub fn flood(&mut self, length: Duration, rate: f64, hops: u8, stop: &AtomicBool) {
            let mut frame = [0u8; SizeClass::Small.frame_len()];
            let start = Instant::now();
            let mut next_drain = start;
            let mut seq: u64 = 0;
            let n = self.ports.len().max(1) as u64;
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now.duration_since(start) >= length {
                    break;
                }
                if now >= next_drain {
                    self.drain(DRAIN_FLOOD);
                    next_drain = now + DRAIN_EVERY;
                }
                let due = start + Duration::from_secs_f64(seq as f64 / rate);
                if now < due {
                    // Sleep at least a millisecond and then send what is
                    // due in one burst: a spinning harness would take a
                    // core from the nodes it measures.
                    std::thread::sleep((due - now).clamp(PACE, DRAIN_EVERY));
                    continue;
                }
                self.junk(hops, &mut frame);
                let i = usize::try_from(seq % n).unwrap_or(0);
                seq += 1;
                match self.ports.get(i).map(|p| p.sock.send(&frame)) {
                    Some(Ok(_)) => self.counts.sent += 1,
                    Some(Err(e)) if e.kind() == ErrorKind::WouldBlock => self.counts.send_failed += 1,
                    // Connection refused: an ICMP error from B's port
                    // (B restarting or gone); counted, not fatal.
                    Some(Err(_)) | None => self.counts.send_failed += 1,
                }
            }
            self.drain(DRAIN_MAX);
        }
    }
}

/// Microseconds one failed first-contact trial takes in this process
/// (`envelope::open` on the attacker's kind of junk: one X25519 and a
/// failed AEAD), the median of 5 batches of 400.
fn trial_cost_us() -> Result<f64, String> {
    let mut rng = StdRng::seed_from_u64(7);
    let me = Identity::generate(&mut rng);
    let mut frames = vec![[0u8; SizeClass::Small.frame_len()]; 400];
    for f in &mut frames {
        let mut commit = [0u8; COMMIT_LEN];
        rng.fill_bytes(&mut commit);
        let mut m = MessageFrame::new_unchecked(&mut f[..]);
        m.emit_header(Kind::FirstContact, 10, JUNK_LIFETIME_SECS, &commit);
        let body = m.sealed_mut();
        rng.fill_bytes(body);
        if let Some(k) = body.first_mut() {
            *k = KEY_ID_STATIC;
        }
        m.fill_id();
    }
    let mut scratch = [0u8; SizeClass::Large.frame_len()];
    let mut batches = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for f in &frames {
            let frame = MessageFrame::new_checked(&f[..]).map_err(|e| format!("calibration frame refused: {e:?}"))?;
            match envelope::open(&me, &frame, None, &mut scratch) {
                Err(OpenError::NotForUs) => {}
                other => return Err(format!("calibration: junk did not fail as 'not for us': {other:?}")),
            }
        }
        batches.push(t.elapsed().as_secs_f64() * 1e6 / frames.len() as f64);
    }
    median(batches).ok_or_else(|| "calibration: no batches".to_owned())
}

// ----- one run -------------------------------------------------------------

/// What one run measured.
#[derive(Debug)]
struct Run {
    label: String,
    ports: usize,
    run: usize,
    /// Attacker links B held (validated, A and C not counted): when the
    /// flood began, and after the grace.
    links_before: usize,
    links_after: usize,
    attack: attacker::Counts,
    flood_secs: f64,
    b_ticks: u64,
    a_ticks: u64,
    c_ticks: u64,
    /// The harness itself (flood thread included): it shares the cores.
    own_ticks: u64,
    b_hwm_kb: u64,
    udp_drops: Option<u64>,
    contact: Delivery,
    stranger: Delivery,
    stats_before: BTreeMap<String, u64>,
    stats_after: BTreeMap<String, u64>,
}

/// Honest texts: how many were sent, how many B showed in time, and their
/// latencies (request written to A or C → `received` at B).
#[derive(Debug, Default)]
struct Delivery {
    sent: usize,
    refused: usize,
    latencies: Vec<Duration>,
}

impl Delivery {
    fn got(&self) -> usize {
        self.latencies.len()
    }
}

fn one_run(args: &Args, label: &str, ferry: &Path, ports: usize, run: usize, logs: PathBuf) -> Result<Run, String> {
    let mut mesh = Mesh::start(ferry, logs)?;
    mesh.setup()?;
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let mut atk = attacker::Attacker::bind(ports, args.hosts, mesh.b_addr, seed)?;
    atk.handshake(HANDSHAKE);
    let links_before = mesh.validated(Who::B)?.saturating_sub(2);
    let stats_before = mesh.stats()?;
    let (a_pid, b_pid, c_pid) = (mesh.a.pid(), mesh.b.pid(), mesh.c.pid());

    let length = Duration::from_secs_f64(args.seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let me = std::process::id();
    let cpu0 = [cpu_ticks(b_pid), cpu_ticks(a_pid), cpu_ticks(c_pid), cpu_ticks(me)];
    let drops0 = socket_drops(mesh.b_addr);
    let start = Instant::now();
    let flood = {
        let (stop, rate, hops) = (stop.clone(), args.rate, args.hops);
        std::thread::spawn(move || {
            atk.flood(length, rate, hops, &stop);
            atk
        })
    };
    // Stop the flood however this function ends.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let guard = StopOnDrop(stop);

    // The honest schedule: (when, who, text).
    let mut plan: Vec<(Duration, Who, String)> = Vec::new();
    if args.contact_rate > 0.0 {
        let n = (args.seconds * args.contact_rate).floor() as usize;
        for i in 0..n {
            plan.push((
                Duration::from_secs_f64((i as f64 + 0.5) / args.contact_rate),
                Who::A,
                format!("contact {run}.{i}"),
            ));
        }
    }
    for i in 0..args.stranger_texts {
        let at = (i as f64 + 0.5) * args.seconds / args.stranger_texts as f64;
        plan.push((Duration::from_secs_f64(at), Who::C, format!("stranger {run}.{i}")));
    }
    plan.sort_by_key(|p| p.0);
    let mut contact = Delivery::default();
    let mut stranger = Delivery::default();
    let mut written: HashMap<String, (Who, Instant)> = HashMap::new();
    let mut requests: HashMap<u64, Who> = HashMap::new();
    let mut next = 0;
    let mut cpu1 = None;
    let deadline = start + length + args.grace;
    loop {
        let now = Instant::now();
        if cpu1.is_none() && now >= start + length {
            cpu1 = Some([cpu_ticks(b_pid), cpu_ticks(a_pid), cpu_ticks(c_pid), cpu_ticks(me)]);
        }
        while let Some((at, who, text)) = plan.get(next)
            && start + *at <= now
        {
            let id = mesh.request(*who, "send", json!({"to": "b", "text": text}))?;
            requests.insert(id, *who);
            written.insert(text.clone(), (*who, Instant::now()));
            match who {
                Who::C => stranger.sent += 1,
                _ => contact.sent += 1,
            }
            next += 1;
        }
        let done = next == plan.len() && written.is_empty() && cpu1.is_some();
        if done || now >= deadline {
            break;
        }
        let wake = plan.get(next).map_or(deadline, |p| start + p.0).min(deadline).min(if cpu1.is_none() {
            start + length
        } else {
            deadline
        });
        match mesh.rx.recv_timeout(wake.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))) {
            Ok(Msg { who: Who::B, at, ev: Ev::Received(text) }) => {
                if let Some((from, t0)) = written.remove(&text) {
                    let d = if from == Who::C { &mut stranger } else { &mut contact };
                    d.latencies.push(at.saturating_duration_since(t0));
                }
            }
            Ok(Msg { ev: Ev::Response { id, result: Err(e) }, .. }) => {
                if let Some(who) = requests.remove(&id) {
                    eprintln!("  {who:?} refused a send: {e}");
                    match who {
                        Who::C => stranger.refused += 1,
                        _ => contact.refused += 1,
                    }
                }
            }
            Ok(Msg { who, ev: Ev::Closed, .. }) => return Err(mesh.stopped(who)),
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Err("the nodes are gone".into()),
        }
    }
    let flood_secs = length.as_secs_f64();
    let cpu1 = cpu1.unwrap_or([cpu_ticks(b_pid), cpu_ticks(a_pid), cpu_ticks(c_pid), cpu_ticks(me)]);
    drop(guard);
    let atk = flood.join().map_err(|_| "the flood thread panicked".to_owned())?;
    let udp_drops = drops0.zip(socket_drops(mesh.b_addr)).map(|(x, y)| y.saturating_sub(x));
    let b_hwm_kb = status_kb(b_pid, "VmHWM").unwrap_or(0);
    let stats_after = mesh.stats()?;
    let links_after = mesh.validated(Who::B)?.saturating_sub(2);
    let ticks = |i: usize| cpu0[i].zip(cpu1[i]).map_or(0, |(x, y)| y.saturating_sub(x));
    Ok(Run {
        label: label.to_owned(),
        ports,
        run,
        links_before,
        links_after,
        attack: atk.counts,
        flood_secs,
        b_ticks: ticks(0),
        a_ticks: ticks(1),
        c_ticks: ticks(2),
        own_ticks: ticks(3),
        b_hwm_kb,
        udp_drops,
        contact,
        stranger,
        stats_before,
        stats_after,
    })
}

// ----- report --------------------------------------------------------------

fn p50(v: &[Duration]) -> Option<Duration> {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len().saturating_sub(1) / 2).copied()
}

/// The stats fields worth a column, in this order (those B has).
const STAT_COLUMNS: [&str; 8] = [
    "frames_in",
    "rate_limited",
    "stranger_answers",
    "stranger_dropped",
    "stranger_links",
    "held",
    "evictions",
    "over_rate",
];

impl Run {
    fn cpu(&self, ticks: u64, clk: u64) -> f64 {
        ticks as f64 / clk as f64
    }
    fn stat_delta(&self, k: &str) -> Option<u64> {
        let after = *self.stats_after.get(k)?;
        // `held` is a level, not a counter.
        if k == "held" {
            return Some(after);
        }
        Some(after.saturating_sub(self.stats_before.get(k).copied().unwrap_or(0)))
    }
}

fn run_table(w: &mut String, runs: &[Run], clk: u64, trial_us: f64) {
    let _ = writeln!(
        w,
        "| binary | ports | run | attacker links at B (start → end) | junk sent | B CPU s | B cores | B CPU as trials/s (upper bound) | A CPU s | C CPU s | B VmHWM MB | contact texts | p50 ms | stranger texts | p50 ms | B socket drops | {} |",
        STAT_COLUMNS.join(" | ")
    );
    let _ = writeln!(w, "|{}", "---|".repeat(16 + STAT_COLUMNS.len()));
    for r in runs {
        let b = r.cpu(r.b_ticks, clk);
        let stats: Vec<String> =
            STAT_COLUMNS.iter().map(|k| r.stat_delta(k).map_or("–".into(), |v| thousands(v as f64))).collect();
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} → {} | {} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {:.1} | {}/{} | {} | {}/{} | {} | {} | {} |",
            r.label,
            r.ports,
            r.run,
            r.links_before,
            r.links_after,
            thousands(r.attack.sent as f64),
            b,
            b / r.flood_secs,
            thousands(b / r.flood_secs / (trial_us / 1e6)),
            r.cpu(r.a_ticks, clk),
            r.cpu(r.c_ticks, clk),
            r.b_hwm_kb as f64 / 1000.0,
            r.contact.got(),
            r.contact.sent,
            ms(p50(&r.contact.latencies)),
            r.stranger.got(),
            r.stranger.sent,
            ms(p50(&r.stranger.latencies)),
            r.udp_drops.map_or("?".into(), |d| thousands(d as f64)),
            stats.join(" | "),
        );
    }
}

/// "median [min–max]" of `f` over `runs`, with `fmt` for each number.
fn spread(runs: &[&Run], f: impl Fn(&Run) -> f64, fmt: impl Fn(f64) -> String) -> String {
    let v: Vec<f64> = runs.iter().map(|r| f(r)).collect();
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match median(v) {
        Some(m) if lo == hi => fmt(m),
        Some(m) => format!("{} [{}–{}]", fmt(m), fmt(lo), fmt(hi)),
        None => "–".into(),
    }
}

fn summary_table(w: &mut String, runs: &[Run], args: &Args, clk: u64, trial_us: f64) {
    let _ = writeln!(
        w,
        "| binary | ports | runs | attacker links at B | B CPU s per flood s (cores) | B CPU as trials/s (upper bound) | A CPU s | B VmHWM MB | contact texts delivered | contact p50 ms | stranger texts delivered | stranger p50 ms | B rate_limited | B stranger_answers |"
    );
    let _ = writeln!(w, "|{}", "---|".repeat(14));
    for (label, _) in &args.ferries {
        for &ports in &args.ports {
            let rs: Vec<&Run> = runs.iter().filter(|r| &r.label == label && r.ports == ports).collect();
            if rs.is_empty() {
                let _ = writeln!(w, "| {label} | {ports} | 0 | every run failed |||||||||||");
                continue;
            }
            let sum = |f: &dyn Fn(&Run) -> (usize, usize)| {
                let (got, sent) = rs.iter().fold((0, 0), |(g, s), r| {
                    let (a, b) = f(r);
                    (g + a, s + b)
                });
                format!("{got}/{sent} ({:.0}%)", 100.0 * got as f64 / sent.max(1) as f64)
            };
            let lat = |f: &dyn Fn(&Run) -> &Vec<Duration>| {
                let all: Vec<Duration> = rs.iter().flat_map(|r| f(r).iter().copied()).collect();
                ms(p50(&all))
            };
            let stat = |k: &'static str| {
                if rs.iter().all(|r| r.stat_delta(k).is_none()) {
                    "–".to_owned()
                } else {
                    spread(&rs, |r| r.stat_delta(k).unwrap_or(0) as f64, thousands)
                }
            };
            let _ = writeln!(
                w,
                "| {label} | {ports} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                rs.len(),
                spread(&rs, |r| r.links_before as f64, |x| format!("{x:.0}")),
                spread(&rs, |r| r.cpu(r.b_ticks, clk) / r.flood_secs, |x| format!("{x:.2}")),
                spread(&rs, |r| r.cpu(r.b_ticks, clk) / r.flood_secs / (trial_us / 1e6), thousands),
                spread(&rs, |r| r.cpu(r.a_ticks, clk), |x| format!("{x:.2}")),
                spread(&rs, |r| r.b_hwm_kb as f64 / 1000.0, |x| format!("{x:.1}")),
                sum(&|r| (r.contact.got(), r.contact.sent)),
                lat(&|r| &r.contact.latencies),
                sum(&|r| (r.stranger.got(), r.stranger.sent)),
                lat(&|r| &r.stranger.latencies),
                stat("rate_limited"),
                stat("stranger_answers"),
            );
        }
    }
}

/// Copy a ferry binary into `dir`; returns the copy and a line that
/// identifies the original (build time, size, FNV-1a hash).
fn snapshot(source: &Path, dir: &Path) -> Result<(PathBuf, String), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let copy = dir.join("ferry");
    let bytes = std::fs::read(source).map_err(|e| format!("{}: {e}", source.display()))?;
    std::fs::copy(source, &copy).map_err(|e| format!("copying {} to {}: {e}", source.display(), copy.display()))?;
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let built = std::fs::metadata(source)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or("?".into(), |d| format!("mtime {} (Unix s)", d.as_secs()));
    Ok((copy, format!("{}: {built}, {} bytes, fnv64 {hash:016x}", source.display(), bytes.len())))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ferry-flood-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let logs = std::env::temp_dir().join(format!("ferry-flood-bench.{}", std::process::id()));
    let mut binaries = Vec::new();
    for (i, (label, path)) in args.ferries.iter().enumerate() {
        if !path.is_file() {
            eprintln!("ferry-flood-bench: the ferry binary {} ({label}) is missing", path.display());
            return ExitCode::from(2);
        }
        match snapshot(path, &logs.join(format!("bin{i}"))) {
            Ok((copy, line)) => binaries.push((label.clone(), copy, line)),
            Err(e) => {
                eprintln!("ferry-flood-bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let trial_us = match trial_cost_us() {
        Ok(us) => us,
        Err(e) => {
            eprintln!("ferry-flood-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("one failed first-contact trial: {trial_us:.1} µs here");
    let clk = clk_tck();
    let load_start = loadavg();
    let began = Instant::now();
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    for r in 1..=args.runs {
        for &ports in &args.ports {
            for (label, ferry, _) in &binaries {
                eprintln!("run {r}/{}: {label}, {ports} ports", args.runs);
                let dir = logs.join(format!("{label}-p{ports}-r{r}"));
                match one_run(&args, label, ferry, ports, r, dir) {
                    Ok(run) => {
                        eprintln!(
                            "  {} junk frames, B {:.2} s CPU, contact {}/{}, stranger {}/{}, attacker links {}",
                            run.attack.sent,
                            run.b_ticks as f64 / clk as f64,
                            run.contact.got(),
                            run.contact.sent,
                            run.stranger.got(),
                            run.stranger.sent,
                            run.links_before
                        );
                        runs.push(run);
                    }
                    Err(e) => {
                        eprintln!("  failed: {e}");
                        failures.push(format!("{label}, {ports} ports, run {r}: {e}"));
                    }
                }
            }
        }
    }

    let mut w = String::new();
    let _ = writeln!(w, "## ferry-flood-bench\n");
    let _ = writeln!(
        w,
        "{} ({} CPUs); load average {load_start} at the start, {} at the end; {:.0} s in all. \
         One failed first-contact trial (X25519 + failed AEAD) costs {trial_us:.1} µs in this process.\n",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, usize::from),
        loadavg(),
        began.elapsed().as_secs_f64()
    );
    for (label, _, line) in &binaries {
        let _ = writeln!(w, "- `{label}`: {line}");
    }
    let _ = writeln!(
        w,
        "\nFlood: {} s at {} junk first-contact frames/s in all (hop budget {}), from the given number of source ports on {} \
         loopback host(s); A (contact) sends {} texts/s, C (stranger) {} texts over the flood; delivered = shown at B \
         within the flood + {} s.\n",
        args.seconds,
        thousands(args.rate),
        args.hops,
        args.hosts,
        args.contact_rate,
        args.stranger_texts,
        args.grace.as_secs_f64()
    );
    let _ = writeln!(w, "### Medians [min–max] over runs\n");
    summary_table(&mut w, &runs, &args, clk, trial_us);
    let _ = writeln!(w, "\n### Every run\n");
    run_table(&mut w, &runs, clk, trial_us);
    let _ = writeln!(
        w,
        "\nAttacker side per run (hellos sent / received from B, other datagrams from B, frames refused by the socket, \
         the harness's own CPU over the flood):\n"
    );
    for r in &runs {
        let a = &r.attack;
        let _ = writeln!(
            w,
            "- {} p{} r{}: B echoed {} of {} ports before the flood; hellos {} out / {} in; {} other datagrams in; \
             {} junk not sent; harness CPU {:.2} s",
            r.label,
            r.ports,
            r.run,
            a.echoed,
            r.ports,
            a.hellos,
            a.hellos_in,
            thousands(a.other_in as f64),
            a.send_failed,
            r.cpu(r.own_ticks, clk)
        );
    }
    let _ = writeln!(w, "\nB's stats, every numeric field (after − before; `held` is the level after):\n");
    for r in &runs {
        let fields: Vec<String> =
            r.stats_after.keys().filter_map(|k| Some(format!("{k} {}", r.stat_delta(k)?))).collect();
        let _ = writeln!(w, "- {} p{} r{}: {}", r.label, r.ports, r.run, fields.join(", "));
    }
    if !failures.is_empty() {
        let _ = writeln!(w, "\nFailed runs:\n");
        for f in &failures {
            let _ = writeln!(w, "- {}", f.replace('\n', " / "));
        }
    }
    print!("{w}");
    if failures.is_empty() && !args.keep_logs {
        let _ = std::fs::remove_dir_all(&logs);
    } else {
        eprintln!("logs kept in {}", logs.display());
    }
    if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// A duration in whole milliseconds, or a dash.
fn ms(d: Option<Duration>) -> String {
    d.map_or("–".into(), |d| format!("{:.0}", d.as_secs_f64() * 1000.0))
}
