//! `ferry-relay-bench`: three `ferry` processes on loopback, A → relay R → B,
//! and the relay figures of the issue as markdown tables.
//!
//! ```text
//! cargo build --release -p ferry-node --bin ferry
//! cargo run --release -p ferry-tools --bin ferry-relay-bench -- [--messages N] [--runs R]
//! ```
//!
//! Every run starts a fresh relay (`ferry relay --no-mdns`) and two endpoints
//! (`ferry rpc --ephemeral --no-mdns`) that have the relay as their only
//! peer, all on 127.0.0.1. A and B add each other as contacts, wait until
//! their link to the relay is validated and exchange one warm-up message each
//! way (and wait for both receipts), so that the run starts on the tagged path.
//!
//! A then sends N texts to B through its JSON-RPC stdin, many requests per
//! write, keeping at most `--window` messages outstanding (requested, or
//! accepted but not yet `received` at B). If A refuses a send because it
//! already holds as many undelivered messages as it may ("message store is
//! full", "too many messages waiting for delivery"), the text is retried, and
//! from then on the harness sends one request per `delivered` notification of
//! A (ack clocking), so that it does not flood A with requests that cannot
//! succeed.
//!
//! Measured per run: N / (first send → last `received` at B); the relay's CPU
//! time (utime + stime from /proc/PID/stat) from just before the first send
//! until A's `pending` reaches 0 (every receipt back; A's `delivered`
//! notifications are not counted on, its JSON-RPC drops them for a slow
//! reader); the relay's VmHWM at the end; bytes put on the wire by A and B
//! (their `stats.bytes_out`, all of which goes to the relay). A's `pending`
//! that stops short of 0 is reported, told apart by A's `stats.receipts_valid`
//! into receipts lost on the way and deliveries A never reported. The
//! unloaded latency comes from a separate run (fresh processes) that sends one
//! message at a time and waits for it at B before the next.
//!
//! The binary is copied once at the start and the copy is what runs, so a
//! rebuild of the shared target directory during the bench cannot mix two
//! builds in one table; the report names it (build time, size, hash).
//!
//! `--raw` adds runs of the relay alone (see [`raw`]); `--raw-only` runs just
//! those, a quick loop for work on the relay. `FERRY_BENCH_VERBOSE=1` also
//! prints A's and B's full `stats` at the end of each loaded run (stderr).
//!
//! The harness stops by itself: every wait has a timeout, a run in which B
//! receives nothing for 10 s is aborted and reported, and the child processes
//! are stopped when the harness ends, panics or is killed (A and B stop at the
//! end of their stdin; the relay runs under a small `sh` wrapper that stops it
//! when its stdin closes).

use ferry_tools::harness::{clk_tck, cpu_ticks, default_ferry, loadavg, median, num, status_kb, tail, thousands};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A run is aborted when B receives nothing for this long.
const STALL: Duration = Duration::from_secs(10);
/// After the last message, how long A's `pending` may stand still before the
/// receipts still missing are reported as lost (summary rounds, which
/// re-offer what a peer lacks, come every 15 s).
const RECEIPT_WAIT: Duration = Duration::from_secs(35);
/// Longest wait for an RPC answer or a setup step.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How A says that it holds as many undelivered messages as it may
/// (`SendError::StoreFull`, `SendError::OutboxFull`): back-pressure, retried.
const BACK_PRESSURE: [&str; 2] = ["store is full", "waiting for delivery"];

fn back_pressure(e: &str) -> bool {
    BACK_PRESSURE.iter().any(|p| e.contains(p))
}
/// Progress lines on stderr this often.
const PROGRESS: Duration = Duration::from_secs(10);

/// Runs the relay in the background, prints its pid, and stops it when its
/// own stdin closes (the harness exited, however) or it gets a signal.
const RELAY_WRAPPER: &str = r#""$0" "$@" </dev/null >/dev/null &
p=$!
trap 'kill "$p" 2>/dev/null; exit 0' HUP INT TERM
echo "$p"
read -r _ || :
kill "$p" 2>/dev/null
wait "$p"
"#;

const USAGE: &str = "\
ferry-relay-bench: A -> relay -> B over loopback with three `ferry` processes;
prints the relay figures as markdown tables.

usage: ferry-relay-bench [options]
  --messages N          messages per loaded run (default 100000)
  --runs R              loaded runs; the median is reported (default 5)
  --window W            most messages outstanding (not yet received at B) (default 200)
  --latency-messages M  messages of the unloaded latency run, one at a time (default 1000; 0 skips it)
  --ferry PATH          the ferry binary (default: target/release/ferry of this workspace)
  --raw                 also R runs of the relay alone: the harness sends N raw message frames
                        (valid ids and commitments) and answers each with its receipt
  --raw-only            only the runs of the relay alone (no endpoints, no latency run)
  --raw-messages N      frames per raw run (default: --messages)
  --raw-rate F          pace of the raw runs, frames per second (default 4000)
  --keep-logs           keep the children's logs (and the copy of ferry) even when all went well

environment: FERRY_BIN (the binary, if no --ferry), FERRY_BENCH_VERBOSE=1 (full stats on stderr)
";

#[derive(Debug)]
struct Args {
    messages: u64,
    runs: usize,
    window: usize,
    latency_messages: usize,
    ferry: PathBuf,
    raw: bool,
    raw_only: bool,
    keep_logs: bool,
    raw_rate: f64,
    raw_messages: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        messages: 100_000,
        runs: 5,
        window: 200,
        latency_messages: 1_000,
        ferry: PathBuf::new(),
        raw: false,
        raw_only: false,
        keep_logs: false,
        raw_rate: 4_000.0,
        raw_messages: None,
    };
    let mut ferry = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--messages" => args.messages = num("--messages", &value("--messages")?)?,
            "--runs" => args.runs = num("--runs", &value("--runs")?)?,
            "--window" => args.window = num("--window", &value("--window")?)?,
            "--latency-messages" => args.latency_messages = num("--latency-messages", &value("--latency-messages")?)?,
            "--ferry" => ferry = Some(PathBuf::from(value("--ferry")?)),
            "--raw" => args.raw = true,
            "--keep-logs" => args.keep_logs = true,
            "--raw-only" => {
                args.raw = true;
                args.raw_only = true;
            }
            "--raw-rate" => args.raw_rate = num("--raw-rate", &value("--raw-rate")?)?,
            "--raw-messages" => args.raw_messages = Some(num("--raw-messages", &value("--raw-messages")?)?),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    if args.messages == 0
        || args.runs == 0
        || args.window == 0
        || args.raw_messages == Some(0)
        || args.raw_rate.is_nan()
        || args.raw_rate <= 0.0
    {
        return Err("--messages, --runs and --window must be at least 1".into());
    }
    args.ferry = ferry.unwrap_or_else(default_ferry);
    Ok(args)
}

// ----- /proc ---------------------------------------------------------------

/// Bytes received on `lo` (every loopback datagram, with its IP and UDP
/// headers, from every process on the machine).
fn lo_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/dev").ok()?;
    let line = s.lines().find(|l| l.trim_start().starts_with("lo:"))?;
    line.split_once(':')?.1.split_whitespace().next()?.parse().ok()
}

/// UDP datagrams the kernel dropped for a full receive buffer (machine-wide,
/// /proc/net/snmp `Udp: RcvbufErrors`).
fn udp_rcvbuf_errors() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = s.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

fn cpus() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

fn is_ferry(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "ferry")
}

// ----- child processes ---------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    A,
    B,
}

/// What a line from A's or B's stdout was.
#[derive(Debug)]
enum Ev {
    Response {
        id: u64,
        result: Result<Value, String>,
    },
    Received(String),
    Delivered,
    Expired,
    Other,
    /// The process closed its stdout.
    Closed,
}

#[derive(Debug)]
struct Msg {
    who: Who,
    at: Instant,
    ev: Ev,
}

fn classify(line: &str) -> Ev {
    let Ok(mut v) = serde_json::from_str::<Value>(line) else { return Ev::Other };
    if let Some(id) = v.get("id").and_then(Value::as_u64) {
        if let Some(r) = v.get_mut("result") {
            return Ev::Response { id, result: Ok(r.take()) };
        }
        let e = v.pointer("/error/message").and_then(Value::as_str).unwrap_or("error without a message");
        return Ev::Response { id, result: Err(e.to_owned()) };
    }
    match v.get("method").and_then(Value::as_str) {
        Some("received") => Ev::Received(v.pointer("/params/text").and_then(Value::as_str).unwrap_or("").to_owned()),
        Some("delivered") => Ev::Delivered,
        Some("status") if v.pointer("/params/state").and_then(Value::as_str) == Some("expired") => Ev::Expired,
        _ => Ev::Other,
    }
}

/// Read `out` line by line on a thread, timestamp each line as it is read,
/// and pass on what matters.
fn reader(who: Who, out: impl Read + Send + 'static, tx: Sender<Msg>) {
    std::thread::spawn(move || {
        let mut r = BufReader::with_capacity(1 << 16, out);
        let mut line = String::new();
        loop {
            line.clear();
            let n = r.read_line(&mut line);
            let at = Instant::now();
            let ev = match n {
                Ok(0) | Err(_) => Ev::Closed,
                Ok(_) => classify(&line),
            };
            if matches!(ev, Ev::Other) {
                continue;
            }
            let closed = matches!(ev, Ev::Closed);
            if tx.send(Msg { who, at, ev }).is_err() || closed {
                break;
            }
        }
    });
}

/// A child that is stopped when dropped: its stdin is closed (A and B stop
/// at the end of their input; the relay's wrapper stops the relay), then it
/// gets 3 s before SIGKILL.
struct Proc {
    name: &'static str,
    child: Child,
    stdin: Option<BufWriter<ChildStdin>>,
    /// For the relay: the pid of `ferry relay` under the wrapper.
    inner: Option<u32>,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.inner.unwrap_or_else(|| self.child.id())
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let until = Instant::now() + Duration::from_secs(3);
        let mut exited = false;
        while Instant::now() < until {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    exited = true;
                    break;
                }
            }
        }
        if !exited {
            eprintln!("ferry-relay-bench: {} did not stop within 3 s; killing it", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(pid) = self.inner
            && is_ferry(pid)
        {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
            match nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => eprintln!("ferry-relay-bench: cannot SIGKILL the relay (pid {pid}): {e}"),
            }
        }
    }
}

/// Sum of N over the "a slow API client missed N notifications" lines of a log.
fn missed_notes(path: &Path) -> u64 {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    s.lines()
        .filter_map(|l| l.split("missed ").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn free_ports() -> Result<[u16; 3], String> {
    let socks = (0..3)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot find free UDP ports on 127.0.0.1: {e}"))?;
    let mut ports = [0u16; 3];
    for (p, s) in ports.iter_mut().zip(&socks) {
        *p = s.local_addr().map_err(|e| e.to_string())?.port();
    }
    Ok(ports)
}

/// Start `ferry relay` on a free loopback port under the wrapper; returns it
/// once it holds its port.
fn start_relay(ferry: &Path, logs: &Path) -> Result<(Proc, String), String> {
    std::fs::create_dir_all(logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let log_path = logs.join("relay.log");
    let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let [pr, _, _] = free_ports()?;
    let r_addr = format!("127.0.0.1:{pr}");
    let mut wrapper = Command::new("sh")
        .arg("-c")
        .arg(RELAY_WRAPPER)
        .arg(ferry)
        .args(["relay", "--no-mdns", "--listen", &r_addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start sh for the relay: {e}"))?;
    let stdin = wrapper.stdin.take().map(BufWriter::new);
    let out = wrapper.stdout.take();
    let mut relay = Proc { name: "relay", child: wrapper, stdin, inner: None };
    let mut line = String::new();
    if let Some(out) = out {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let pid: u32 = line.trim().parse().map_err(|_| "the relay wrapper did not print a pid".to_owned())?;
    relay.inner = Some(pid);
    // Wait until the relay holds its port.
    let until = Instant::now() + CALL_TIMEOUT;
    while UdpSocket::bind(&r_addr).is_ok() {
        if !relay.alive() || Instant::now() > until {
            return Err(format!("the relay did not start:\n{}", tail(&log_path, 10)));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if !is_ferry(pid) {
        return Err(format!("pid {pid} from the relay wrapper is not a ferry process"));
    }
    Ok((relay, r_addr))
}

/// A's and B's stats counters that matter here.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    bytes_out: u64,
    frames_out: u64,
    receipts_valid: u64,
}

impl Counters {
    fn of(v: &Value) -> Self {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Counters { bytes_out: n("bytes_out"), frames_out: n("frames_out"), receipts_valid: n("receipts_valid") }
    }
}

/// Three processes on loopback and the events from A's and B's stdout.
struct Topology {
    // Field order is drop order: A and B first, the relay last.
    a: Proc,
    b: Proc,
    relay: Proc,
    rx: Receiver<Msg>,
    stash: VecDeque<Msg>,
    next_id: u64,
    logs: PathBuf,
}

impl Topology {
    fn start(ferry: &Path, logs: PathBuf) -> Result<Self, String> {
        let log = |name: &str| File::create(logs.join(name)).map_err(|e| format!("{}: {e}", logs.join(name).display()));
        // The relay first: its port is then taken and cannot come back here.
        let (relay, r_addr) = start_relay(ferry, &logs)?;
        let [pa, pb, _] = free_ports()?;
        let (a_addr, b_addr) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));

        let (tx, rx) = mpsc::channel();
        let rpc = |who: Who, listen: &str, name: &'static str| -> Result<Proc, String> {
            let mut child = Command::new(ferry)
                .args(["rpc", "--ephemeral", "--no-mdns", "--listen", listen, "--peer", &r_addr])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(log(&format!("{name}.log"))?)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", ferry.display()))?;
            let stdin = child.stdin.take().map(|s| BufWriter::with_capacity(1 << 16, s));
            if let Some(out) = child.stdout.take() {
                reader(who, out, tx.clone());
            }
            Ok(Proc { name, child, stdin, inner: None })
        };
        let a = rpc(Who::A, &a_addr, "a")?;
        let b = rpc(Who::B, &b_addr, "b")?;
        Ok(Topology { a, b, relay, rx, stash: VecDeque::new(), next_id: 1, logs })
    }

    fn proc(&mut self, who: Who) -> &mut Proc {
        match who {
            Who::A => &mut self.a,
            Who::B => &mut self.b,
        }
    }

    fn write(&mut self, who: Who, text: &str) -> Result<(), String> {
        let p = self.proc(who);
        let name = p.name;
        let w = p.stdin.as_mut().ok_or_else(|| format!("{name}: stdin closed"))?;
        w.write_all(text.as_bytes()).and_then(|()| w.flush()).map_err(|e| format!("{name} stopped reading: {e}"))
    }

    fn request(&mut self, who: Who, method: &str, params: Value) -> Result<u64, String> {
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string() + "\n";
        self.write(who, &line)?;
        Ok(id)
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
                Err(RecvTimeoutError::Disconnected) => return Err("A and B are gone".into()),
            }
        }
    }

    fn stopped(&mut self, who: Who) -> String {
        let p = self.proc(who);
        let name = p.name;
        // Give it a moment to be reaped, to say how it ended.
        let mut status = None;
        for _ in 0..50 {
            status = p.child.try_wait().ok().flatten();
            if status.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let how = match status {
            Some(s) => format!("{s}"),
            None => "still running, output closed".into(),
        };
        let others: Vec<String> = [("a", &mut self.a), ("b", &mut self.b), ("relay", &mut self.relay)]
            .into_iter()
            .filter(|(n, _)| *n != name)
            .map(|(n, p)| format!("{n} {}", if p.alive() { "alive" } else { "gone" }))
            .collect();
        format!("{name} stopped ({how}; {}):\n{}", others.join(", "), tail(&self.logs.join(format!("{name}.log")), 10))
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

    fn counters(&mut self, who: Who) -> Result<Counters, String> {
        self.call(who, "stats", json!({})).map(|v| Counters::of(&v))
    }

    fn wait_received(&mut self, who: Who, text: &str, timeout: Duration) -> Result<Msg, String> {
        let what = format!("{text:?} at {who:?}");
        self.wait_for(timeout, &what, |m| m.who == who && matches!(&m.ev, Ev::Received(t) if t == text))
    }

    fn wait_delivered(&mut self, who: Who, timeout: Duration) -> Result<Msg, String> {
        let what = format!("receipt at {who:?}");
        self.wait_for(timeout, &what, |m| m.who == who && matches!(m.ev, Ev::Delivered | Ev::Expired))
    }

    /// Contacts both ways, validated links, one message each way with its
    /// receipt.
    fn setup(&mut self) -> Result<(), String> {
        let code = |v: Value| v["code"].as_str().map(str::to_owned).ok_or_else(|| "identity without a code".to_owned());
        let ca = code(self.call(Who::A, "identity", json!({}))?)?;
        let cb = code(self.call(Who::B, "identity", json!({}))?)?;
        self.call(Who::A, "contacts.add", json!({"name": "b", "code": cb}))?;
        self.call(Who::B, "contacts.add", json!({"name": "a", "code": ca}))?;
        for who in [Who::A, Who::B] {
            let until = Instant::now() + CALL_TIMEOUT;
            loop {
                let peers = self.call(who, "peers", json!({}))?;
                if peers.as_array().is_some_and(|a| a.iter().any(|p| p["validated"] == json!(true))) {
                    break;
                }
                if Instant::now() > until {
                    return Err(format!("{who:?}'s link to the relay was not validated within 10 s"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.call(Who::A, "send", json!({"to": "b", "text": "warm-up A to B"}))?;
        self.wait_received(Who::B, "warm-up A to B", STALL)?;
        self.call(Who::B, "send", json!({"to": "a", "text": "warm-up B to A"}))?;
        self.wait_received(Who::A, "warm-up B to A", STALL)?;
        self.wait_delivered(Who::A, STALL)?;
        self.wait_delivered(Who::B, STALL)?;
        self.stash.clear();
        Ok(())
    }

    /// The loaded run: `n` messages A → B, at most `window` outstanding.
    fn load(&mut self, run: usize, n: u64, window: usize) -> Result<Load, String> {
        let n_us = usize::try_from(n).map_err(|_| "too many messages".to_owned())?;
        let prefix = format!("run {run} msg ");
        let (a_pid, b_pid, r_pid) = (self.a.pid(), self.b.pid(), self.relay.pid());
        let before = (self.counters(Who::A)?, self.counters(Who::B)?);
        self.stash.clear();
        let cpu0 = [cpu_ticks(r_pid), cpu_ticks(a_pid), cpu_ticks(b_pid)];
        let lo0 = lo_bytes();
        let drops0 = udp_rcvbuf_errors();

        // Per message: 0 not requested (or refused), 1 requested, 2 accepted
        // by A, 3 received at B; and when its (last) request was written.
        let mut state = vec![0u8; n_us];
        let mut wrote: Vec<Option<Instant>> = vec![None; n_us];
        let mut pending: HashMap<u64, usize> = HashMap::new();
        let mut retry: VecDeque<usize> = VecDeque::new();
        let (mut next_new, mut in_flight, mut received, mut accepted) = (0usize, 0usize, 0u64, 0u64);
        let (mut acked, mut expired, mut refusals, mut duplicates) = (0u64, 0u64, 0u64, 0u64);
        let (mut credit_mode, mut credits) = (false, 0usize);
        let mut latencies = Vec::with_capacity(n_us);
        let mut batch = String::with_capacity(64 * 1024);
        let mut batch_seqs = Vec::with_capacity(window);
        let start = Instant::now();
        let (mut first_send, mut last_recv, mut last_event) = (None::<Instant>, start, start);
        let mut next_progress = start + PROGRESS;
        let mut inbox: Vec<Msg> = Vec::new();

        let mut aborted = None;
        while received < n {
            // Fill the window, one write for all the requests.
            batch.clear();
            batch_seqs.clear();
            while in_flight < window && (!credit_mode || credits > 0) {
                let seq = match retry.pop_front() {
                    Some(s) => s,
                    None if next_new < n_us => {
                        next_new += 1;
                        next_new - 1
                    }
                    None => break,
                };
                if credit_mode {
                    credits -= 1;
                }
                let id = self.next_id;
                self.next_id += 1;
                pending.insert(id, seq);
                let _ = writeln!(
                    batch,
                    r#"{{"jsonrpc":"2.0","id":{id},"method":"send","params":{{"to":"b","text":"{prefix}{seq}"}}}}"#
                );
                batch_seqs.push(seq);
                if let Some(s) = state.get_mut(seq) {
                    *s = 1;
                }
                in_flight += 1;
            }
            if !batch.is_empty() {
                let t = Instant::now();
                first_send.get_or_insert(t);
                for &s in &batch_seqs {
                    if let Some(w) = wrote.get_mut(s) {
                        *w = Some(t);
                    }
                }
                self.write(Who::A, &batch)?;
            }

            // Wait for something, then take everything already there.
            let now = Instant::now();
            if now.duration_since(last_recv) > STALL {
                aborted = Some(format!(
                    "ABORTED: B received nothing for {} s after {received} of {n} messages ({accepted} accepted \
                     by A, {} sends unanswered, {} waiting to be retried, {acked} receipts back at A); the \
                     figures are over the {received} messages before the stall",
                    STALL.as_secs(),
                    pending.len(),
                    retry.len()
                ));
                break;
            }
            if now >= next_progress {
                let secs = now.duration_since(first_send.unwrap_or(start)).as_secs_f64();
                let rate = received as f64 / secs.max(1e-9);
                let eta = (n - received) as f64 / rate.max(1e-9);
                eprintln!("  run {run}: {received}/{n} received, {rate:.1} msg/s, about {eta:.0} s to go");
                next_progress = now + PROGRESS;
            }
            let wait = STALL.saturating_sub(now.duration_since(last_recv)).min(Duration::from_millis(250));
            inbox.clear();
            match self.rx.recv_timeout(wait) {
                Ok(m) => inbox.push(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err("A and B are gone".into()),
            }
            loop {
                match self.rx.try_recv() {
                    Ok(m) => inbox.push(m),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Err("A and B are gone".into()),
                }
            }
            if inbox.is_empty() {
                // Ack clocking lost its clock (a notification missed?): probe.
                if credit_mode && last_event.elapsed() >= Duration::from_secs(1) {
                    credits = (credits + 1).min(window);
                    last_event = Instant::now();
                }
                continue;
            }
            for m in inbox.drain(..) {
                last_event = m.at;
                match (m.who, m.ev) {
                    (Who::A, Ev::Response { id, result }) => {
                        let Some(seq) = pending.remove(&id) else { continue };
                        match result {
                            Ok(_) => {
                                accepted += 1;
                                if state.get(seq) == Some(&1) {
                                    state[seq] = 2;
                                }
                            }
                            Err(e) if back_pressure(&e) => {
                                refusals += 1;
                                credit_mode = true;
                                if state.get(seq) == Some(&1) {
                                    state[seq] = 0;
                                    in_flight -= 1;
                                    retry.push_back(seq);
                                }
                            }
                            Err(e) => return Err(format!("A refused a send: {e}")),
                        }
                    }
                    (Who::A, ev @ (Ev::Delivered | Ev::Expired)) => {
                        if matches!(ev, Ev::Delivered) {
                            acked += 1;
                        } else {
                            expired += 1;
                        }
                        if credit_mode {
                            credits = (credits + 1).min(window);
                        }
                    }
                    (Who::B, Ev::Received(text)) => {
                        let Some(seq) = text.strip_prefix(&prefix).and_then(|s| s.parse::<usize>().ok()) else {
                            continue;
                        };
                        match state.get(seq) {
                            Some(1 | 2) => {
                                state[seq] = 3;
                                in_flight -= 1;
                                received += 1;
                                last_recv = m.at;
                                if let Some(w) = wrote[seq] {
                                    latencies.push(m.at.saturating_duration_since(w));
                                }
                            }
                            Some(3) => duplicates += 1,
                            _ => {}
                        }
                    }
                    (who, Ev::Closed) => return Err(self.stopped(who)),
                    _ => {}
                }
            }
        }
        let first = first_send.unwrap_or(start);
        let elapsed = last_recv.saturating_duration_since(first);

        // Let the receipts come back (they pass the relay too): poll A's
        // `pending` (its notifications may have been dropped for a slow
        // reader, so they are not counted on) until it is 0, or until it has
        // not moved for RECEIPT_WAIT. The CPU window ends at its last change.
        let mut cpu1 = [cpu_ticks(r_pid), cpu_ticks(a_pid), cpu_ticks(b_pid)];
        let mut lo1 = lo_bytes();
        let mut receipts_done = Instant::now();
        let mut receipts_back = None;
        let mut a_pending = None;
        if aborted.is_none() {
            let (mut last, mut changed) = (u64::MAX, Instant::now());
            loop {
                let p = self.call(Who::A, "pending", json!({}))?.as_u64().unwrap_or(0);
                self.stash.clear();
                let now = Instant::now();
                if p != last {
                    (last, changed) = (p, now);
                    cpu1 = [cpu_ticks(r_pid), cpu_ticks(a_pid), cpu_ticks(b_pid)];
                    lo1 = lo_bytes();
                    receipts_done = now;
                }
                if p == 0 {
                    receipts_back = Some(now.saturating_duration_since(last_recv));
                    break;
                }
                if now.duration_since(changed) > RECEIPT_WAIT {
                    a_pending = Some(p);
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let relay_hwm_kb = status_kb(r_pid, "VmHWM").unwrap_or(0);
        let drops1 = udp_rcvbuf_errors();
        let after = (self.counters(Who::A)?, self.counters(Who::B)?);
        if std::env::var_os("FERRY_BENCH_VERBOSE").is_some() {
            // The full counters, for digging (stderr).
            for who in [Who::A, Who::B] {
                if let Ok(v) = self.call(who, "stats", json!({})) {
                    eprintln!("  run {run}: {who:?} stats at the end: {v}");
                }
            }
        }
        let missed = missed_notes(&self.logs.join("a.log")) + missed_notes(&self.logs.join("b.log"));
        let ticks = |i: usize| match (cpu0[i], cpu1[i]) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        Ok(Load {
            n: received,
            aborted,
            elapsed,
            cpu_window: receipts_done.saturating_duration_since(first),
            relay_ticks: ticks(0),
            a_ticks: ticks(1),
            b_ticks: ticks(2),
            relay_hwm_kb,
            bytes_out: after.0.bytes_out.saturating_sub(before.0.bytes_out)
                + after.1.bytes_out.saturating_sub(before.1.bytes_out),
            frames_out: after.0.frames_out.saturating_sub(before.0.frames_out)
                + after.1.frames_out.saturating_sub(before.1.frames_out),
            lo_bytes: lo0.zip(lo1).map(|(a, b)| b.saturating_sub(a)),
            udp_drops: drops0.zip(drops1).map(|(a, b)| b.saturating_sub(a)),
            a_pending,
            a_receipts: after.0.receipts_valid.saturating_sub(before.0.receipts_valid),
            receipts_back,
            missed,
            latencies,
            refusals,
            expired,
            duplicates,
        })
    }

    /// The unloaded run: one message at a time, each waited for at B.
    fn unloaded(&mut self, m: usize) -> Result<Unloaded, String> {
        let mut latencies = Vec::with_capacity(m);
        let mut refusals = 0u64;
        match self.unloaded_into(m, &mut latencies, &mut refusals) {
            Ok(()) => Ok(Unloaded { latencies, refusals, aborted: None }),
            Err(e) if !latencies.is_empty() => {
                let note = format!("stopped after {} of {m} messages: {}", latencies.len(), e.replace('\n', " "));
                Ok(Unloaded { latencies, refusals, aborted: Some(note) })
            }
            Err(e) => Err(e),
        }
    }

    fn unloaded_into(&mut self, m: usize, latencies: &mut Vec<Duration>, refusals: &mut u64) -> Result<(), String> {
        let mut next_progress = Instant::now() + PROGRESS;
        for seq in 0..m {
            let text = format!("unloaded msg {seq}");
            let wrote = loop {
                let t = Instant::now();
                let id = self.request(Who::A, "send", json!({"to": "b", "text": text}))?;
                let r = self.wait_for(CALL_TIMEOUT, "answer from A to send", |m| {
                    m.who == Who::A && matches!(&m.ev, Ev::Response { id: i, .. } if *i == id)
                })?;
                match r.ev {
                    Ev::Response { result: Ok(_), .. } => break t,
                    Ev::Response { result: Err(e), .. } if back_pressure(&e) => {
                        // Wait for a receipt that frees a slot, then retry.
                        *refusals += 1;
                        self.stash.retain(|m| !(m.who == Who::A && matches!(m.ev, Ev::Delivered | Ev::Expired)));
                        self.wait_delivered(Who::A, STALL)?;
                    }
                    Ev::Response { result: Err(e), .. } => return Err(format!("A refused a send: {e}")),
                    _ => return Err("unexpected event".into()),
                }
            };
            let got = self.wait_received(Who::B, &text, STALL)?;
            latencies.push(got.at.saturating_duration_since(wrote));
            if Instant::now() >= next_progress {
                eprintln!("  unloaded: {}/{m} received", seq + 1);
                next_progress = Instant::now() + PROGRESS;
            }
        }
        Ok(())
    }
}

// ----- the relay alone -------------------------------------------------------

/// The relay alone (`--raw`): the harness speaks the wire format itself on
/// two UDP sockets, so the relay can be loaded beyond what the endpoints let
/// through. "A" sends well-formed message frames (valid id and commitment,
/// junk body), "B" answers each with its receipt at once; the relay checks,
/// stores, forwards and erases exactly as for real traffic.
mod raw {
    use std::net::UdpSocket;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use ferry_proto::hash::receipt_commit;
    use ferry_proto::wire::{
        HelloRepr, Kind, MAX_HOPS_DEFAULT, MessageFrame, RECEIPT_SECRET_LEN, ReceiptRepr, SizeClass, classify,
    };

    use super::{CALL_TIMEOUT, STALL};

    /// What a raw run measured.
    #[derive(Debug)]
    pub struct Raw {
        pub n: u64,
        pub elapsed: Duration,
        pub cpu_ticks: u64,
        pub hwm_kb: u64,
        /// Bytes the harness sent to the relay (A's frames, B's receipts).
        pub bytes_in: u64,
        /// Bytes the relay sent to the harness's two sockets.
        pub bytes_out: u64,
        pub latencies: Vec<Duration>,
        pub acked: u64,
    }

    fn secret(seq: u64) -> [u8; RECEIPT_SECRET_LEN] {
        let mut s = [0xa5u8; RECEIPT_SECRET_LEN];
        s[..8].copy_from_slice(&seq.to_le_bytes());
        s
    }

    fn message(seq: u64, buf: &mut [u8]) {
        let mut f = MessageFrame::new_unchecked(&mut buf[..]);
        f.emit_header(Kind::Contact, 8, 3600, &receipt_commit(&secret(seq)));
        let body = f.sealed_mut();
        // A body that does not compress or repeat: seq, then xorshift bytes.
        let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for chunk in body.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        body[..8].copy_from_slice(&seq.to_le_bytes());
        f.fill_id();
    }

    /// Greet the relay until it has echoed our nonce, then echo its own so it
    /// counts the link as validated.
    fn handshake(sock: &UdpSocket, nonce: [u8; 16]) -> Result<(), String> {
        sock.set_read_timeout(Some(Duration::from_millis(50))).map_err(|e| e.to_string())?;
        let until = Instant::now() + CALL_TIMEOUT;
        let mut next_hello = Instant::now();
        let mut buf = [0u8; 2048];
        let mut out = [0u8; 64];
        while Instant::now() < until {
            if Instant::now() >= next_hello {
                let n = HelloRepr { nonce, echo: [0; 16] }.emit(&mut out).map_err(|e| format!("{e:?}"))?;
                sock.send(&out[..n]).map_err(|e| e.to_string())?;
                next_hello = Instant::now() + Duration::from_millis(250);
            }
            let Ok(n) = sock.recv(&mut buf) else { continue };
            if let Ok(h) = HelloRepr::parse(&buf[..n])
                && h.echo == nonce
            {
                let n = HelloRepr { nonce, echo: h.nonce }.emit(&mut out).map_err(|e| format!("{e:?}"))?;
                sock.send(&out[..n]).map_err(|e| e.to_string())?;
                return Ok(());
            }
        }
        Err("the relay did not answer a hello within 10 s".into())
    }

    fn nonce(salt: u64) -> [u8; 16] {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let mut n = [0u8; 16];
        n[..8].copy_from_slice(&(t as u64 ^ salt.rotate_left(32)).to_le_bytes());
        n[8..].copy_from_slice(&(u64::from(std::process::id()) ^ salt).to_le_bytes());
        n
    }

    /// One run against a relay listening on `relay` (pid `pid`): `n`
    /// messages, at most `window` not yet at B, paced at `rate` per second.
    pub fn run(relay: &str, pid: u32, n: u64, window: usize, rate: f64) -> Result<Raw, String> {
        let err = |e: std::io::Error| e.to_string();
        let a = UdpSocket::bind("127.0.0.1:0").map_err(err)?;
        let b = UdpSocket::bind("127.0.0.1:0").map_err(err)?;
        a.connect(relay).map_err(err)?;
        b.connect(relay).map_err(err)?;
        handshake(&a, nonce(1))?;
        handshake(&b, nonce(2))?;
        // Let the relay's summaries and hellos of the link-ups pass.
        std::thread::sleep(Duration::from_millis(300));
        while a.recv(&mut [0u8; 2048]).is_ok() {}
        while b.recv(&mut [0u8; 2048]).is_ok() {}

        let n_us = usize::try_from(n).map_err(|_| "too many messages".to_owned())?;
        let start = Instant::now();
        let sent_ns: Arc<Vec<AtomicU64>> = Arc::new((0..n_us).map(|_| AtomicU64::new(0)).collect());
        let received = Arc::new(AtomicU64::new(0));
        let last_recv_ns = Arc::new(AtomicU64::new(0));
        let b_bytes = Arc::new(AtomicU64::new(0));
        let b_sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let lat = Arc::new(Mutex::new(Vec::with_capacity(n_us)));

        let b_thread = {
            let (sent_ns, received, last_recv_ns, b_bytes, b_sent, stop, lat) = (
                sent_ns.clone(),
                received.clone(),
                last_recv_ns.clone(),
                b_bytes.clone(),
                b_sent.clone(),
                stop.clone(),
                lat.clone(),
            );
            let b = b.try_clone().map_err(err)?;
            std::thread::spawn(move || {
                let _ = b.set_read_timeout(Some(Duration::from_millis(50)));
                let mut seen = vec![false; n_us];
                let mut local = Vec::with_capacity(n_us);
                let mut buf = [0u8; 2048];
                let mut out = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(len) = b.recv(&mut buf) else { continue };
                    let at = start.elapsed().as_nanos() as u64;
                    b_bytes.fetch_add(len as u64, Ordering::Relaxed);
                    let bytes = &buf[..len];
                    if classify(bytes) != Ok(Kind::Contact) || len != SizeClass::Small.frame_len() {
                        continue;
                    }
                    let f = MessageFrame::new_unchecked(bytes);
                    let mut s = [0u8; 8];
                    s.copy_from_slice(&f.sealed()[..8]);
                    let seq = u64::from_le_bytes(s);
                    let Some(first) = usize::try_from(seq).ok().and_then(|i| seen.get_mut(i)) else { continue };
                    let r = ReceiptRepr { level: MAX_HOPS_DEFAULT, lifetime_secs: 0, id: f.id(), secret: secret(seq) };
                    if let Ok(k) = r.emit(&mut out)
                        && b.send(&out[..k]).is_ok()
                    {
                        b_sent.fetch_add(k as u64, Ordering::Relaxed);
                    }
                    if !*first {
                        *first = true;
                        let t0 = sent_ns[seq as usize].load(Ordering::Relaxed);
                        local.push(Duration::from_nanos(at.saturating_sub(t0)));
                        last_recv_ns.store(at, Ordering::Relaxed);
                        received.fetch_add(1, Ordering::Release);
                    }
                }
                if let Ok(mut l) = lat.lock() {
                    *l = local;
                }
            })
        };
        // Stop B's thread however this function ends.
        struct StopOnDrop(Arc<AtomicBool>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _guard = StopOnDrop(stop.clone());

        a.set_nonblocking(true).map_err(err)?;
        let cpu0 = super::cpu_ticks(pid);
        let mut frame = [0u8; SizeClass::Small.frame_len()];
        let mut buf = [0u8; 2048];
        let (mut a_bytes, mut a_sent, mut acked) = (0u64, 0u64, 0u64);
        let mut drain = |acked: &mut u64, a_bytes: &mut u64| {
            while let Ok(len) = a.recv(&mut buf) {
                *a_bytes += len as u64;
                if classify(&buf[..len]) == Ok(Kind::Receipt) {
                    *acked += 1;
                }
            }
        };
        let first = Instant::now();
        let mut last_progress = (0u64, Instant::now());
        for seq in 0..n {
            // Window and pace.
            loop {
                let got = received.load(Ordering::Acquire);
                if got != last_progress.0 {
                    last_progress = (got, Instant::now());
                } else if last_progress.1.elapsed() > STALL {
                    return Err(format!(
                        "aborted: B received nothing for {} s ({got} of {n} received)",
                        STALL.as_secs()
                    ));
                }
                let due = first + Duration::from_secs_f64(seq as f64 / rate);
                let now = Instant::now();
                if seq - got < window as u64 && now >= due {
                    break;
                }
                drain(&mut acked, &mut a_bytes);
                let wait = due.saturating_duration_since(now).min(Duration::from_micros(200));
                if wait > Duration::from_micros(60) {
                    std::thread::sleep(wait);
                } else {
                    std::thread::yield_now();
                }
            }
            message(seq, &mut frame);
            sent_ns[seq as usize].store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            loop {
                match a.send(&frame) {
                    Ok(k) => {
                        a_sent += k as u64;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(e) => return Err(format!("sending to the relay: {e}")),
                }
            }
            drain(&mut acked, &mut a_bytes);
        }
        // All sent: wait for B to have them all, then for the receipts at A.
        let mut last = (received.load(Ordering::Acquire), Instant::now());
        while received.load(Ordering::Acquire) < n {
            let got = received.load(Ordering::Acquire);
            if got != last.0 {
                last = (got, Instant::now());
            } else if last.1.elapsed() > STALL {
                return Err(format!("aborted: B received nothing for {} s ({got} of {n} received)", STALL.as_secs()));
            }
            drain(&mut acked, &mut a_bytes);
            std::thread::sleep(Duration::from_micros(200));
        }
        let elapsed = Duration::from_nanos(last_recv_ns.load(Ordering::Relaxed))
            .saturating_sub(first.saturating_duration_since(start));
        let mut last_ack = (acked, Instant::now());
        while acked < n && last_ack.1.elapsed() < Duration::from_secs(3) {
            drain(&mut acked, &mut a_bytes);
            if acked != last_ack.0 {
                last_ack = (acked, Instant::now());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let cpu1 = super::cpu_ticks(pid);
        let hwm_kb = super::status_kb(pid, "VmHWM").unwrap_or(0);
        stop.store(true, Ordering::Relaxed);
        let _ = b_thread.join();
        let latencies = lat.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default();
        Ok(Raw {
            n,
            elapsed,
            cpu_ticks: cpu0.zip(cpu1).map_or(0, |(x, y)| y.saturating_sub(x)),
            hwm_kb,
            bytes_in: a_sent + b_sent.load(Ordering::Relaxed),
            bytes_out: a_bytes + b_bytes.load(Ordering::Relaxed),
            latencies,
            acked,
        })
    }
}

// ----- results -------------------------------------------------------------

#[derive(Debug)]
struct Load {
    /// Messages received at B (all N unless aborted).
    n: u64,
    /// Why the run stopped early, if it did.
    aborted: Option<String>,
    /// First send to last `received` at B.
    elapsed: Duration,
    /// First send until the last receipt was back at A (the CPU window).
    cpu_window: Duration,
    relay_ticks: u64,
    a_ticks: u64,
    b_ticks: u64,
    relay_hwm_kb: u64,
    bytes_out: u64,
    frames_out: u64,
    lo_bytes: Option<u64>,
    /// UDP receive-buffer drops on the machine during the run.
    udp_drops: Option<u64>,
    /// A's `pending` (sent, not yet delivered) when it stopped moving.
    a_pending: Option<u64>,
    /// Receipts A's router took as valid during the run (its `stats`).
    a_receipts: u64,
    /// When A's `pending` reached 0, after the last message reached B.
    receipts_back: Option<Duration>,
    /// Notifications A's and B's JSON-RPC dropped for a slow reader (their
    /// "slow API client missed N notifications" warnings).
    missed: u64,
    latencies: Vec<Duration>,
    refusals: u64,
    expired: u64,
    duplicates: u64,
}

impl Load {
    fn rate(&self) -> f64 {
        self.n as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn per_k(&self, ticks: u64, clk: u64) -> f64 {
        ticks as f64 / clk as f64 / (self.n.max(1) as f64 / 1000.0)
    }
}

#[derive(Debug)]
struct Unloaded {
    latencies: Vec<Duration>,
    refusals: u64,
    /// Why it stopped early, if it did (the latencies are of what came).
    aborted: Option<String>,
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn rate_str(r: f64) -> String {
    if r >= 100.0 { thousands(r) } else { format!("{r:.1}") }
}

/// "12 % above" for a small miss, "3.4× above" for a large one (`ratio` ≥ 1).
fn how_far(ratio: f64, side: &str) -> String {
    if ratio < 1.5 { format!("{:.1} % {side}", (ratio - 1.0) * 100.0) } else { format!("{ratio:.1}× {side}") }
}

fn mib(kb: f64) -> String {
    format!("{:.1} MiB ({:.1} MB)", kb / 1024.0, kb * 1024.0 / 1e6)
}

fn raw_report(w: &mut String, raws: &[Result<raw::Raw, String>], args: &Args, clk: u64) {
    let _ = writeln!(
        w,
        "\n### The relay alone (`--raw`)\n\nA fresh `ferry relay` per run; the harness is A and B itself: \
         {} well-formed message frames (240 B, valid id and commitment) paced at up to {:.0}/s with at most {} \
         not yet at B, and B answers each with its receipt (33 B) at once. No endpoint, no JSON-RPC, no \
         sealing: this is what the relay costs per message when the endpoints are not the limit.\n",
        thousands(args.raw_messages.unwrap_or(args.messages) as f64),
        args.raw_rate,
        args.window
    );
    let _ = writeln!(
        w,
        "| run | msg/s | relay CPU / 1,000 msgs | relay VmHWM | into relay / msg | out of relay / msg | \
         p50 / p99 (A → relay → B) | note |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
    let mut ok = Vec::new();
    for (i, r) in raws.iter().enumerate() {
        match r {
            Ok(x) => {
                let mut lat = x.latencies.clone();
                lat.sort_unstable();
                let rate = x.n as f64 / x.elapsed.as_secs_f64().max(1e-9);
                let cpu = x.cpu_ticks as f64 / clk as f64 / (x.n as f64 / 1000.0);
                let note =
                    if x.acked < x.n { format!("{} of {} receipts back at A", x.acked, x.n) } else { String::new() };
                let _ = writeln!(
                    w,
                    "| {} | {} | {cpu:.3} s | {} | {:.1} B | {:.1} B | {} / {} | {note} |",
                    i + 1,
                    rate_str(rate),
                    mib(x.hwm_kb as f64),
                    x.bytes_in as f64 / x.n as f64,
                    x.bytes_out as f64 / x.n as f64,
                    percentile(&lat, 50.0).map(ms).unwrap_or_default(),
                    percentile(&lat, 99.0).map(ms).unwrap_or_default(),
                );
                ok.push((rate, cpu, x.hwm_kb as f64));
            }
            Err(e) => {
                let _ = writeln!(w, "| {} | — | — | — | — | — | — | {} |", i + 1, e.replace('\n', " "));
            }
        }
    }
    if let (Some(r), Some(c), Some(h)) = (
        median(ok.iter().map(|x| x.0).collect()),
        median(ok.iter().map(|x| x.1).collect()),
        median(ok.iter().map(|x| x.2).collect()),
    ) {
        let _ = writeln!(
            w,
            "\nMedian: {} msg/s, relay CPU {c:.3} s per 1,000 messages (target ≤ 0.020 s), peak RSS {}.",
            rate_str(r),
            mib(h)
        );
    }
}

/// Copy the ferry binary into `dir` (named `ferry`, as the relay check
/// wants); returns the copy and a line that identifies the original.
fn snapshot(source: &Path, dir: &Path) -> Result<(PathBuf, String), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let copy = dir.join("ferry");
    let bytes = std::fs::read(source).map_err(|e| format!("{}: {e}", source.display()))?;
    std::fs::copy(source, &copy).map_err(|e| format!("copying {} to {}: {e}", source.display(), copy.display()))?;
    // FNV-1a, enough to tell two builds apart.
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let built = Command::new("date")
        .arg("-u")
        .arg("-r")
        .arg(source)
        .arg("+%Y-%m-%d %H:%M:%S UTC")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "?".into());
    Ok((copy, format!("built {built}, {} bytes, fnv64 {hash:016x}", bytes.len())))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ferry-relay-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if !args.ferry.is_file() {
        eprintln!(
            "ferry-relay-bench: the ferry binary {} is missing.\n\
             Build it first:  cargo build --release -p ferry-node --bin ferry\n\
             (or point --ferry PATH or FERRY_BIN at one)",
            args.ferry.display()
        );
        return ExitCode::from(2);
    }
    let source = args.ferry.canonicalize().unwrap_or_else(|_| args.ferry.clone());
    let clk = clk_tck();
    let load_start = loadavg();
    let logs = std::env::temp_dir().join(format!("ferry-relay-bench.{}", std::process::id()));
    let began = Instant::now();
    // Run a private copy: the target directory is shared, and a rebuild in
    // the middle of the bench must not mix two binaries in one table.
    let (ferry, binary) = match snapshot(&source, &logs) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("ferry-relay-bench: {e}");
            return ExitCode::FAILURE;
        }
    };

    let mut runs: Vec<Result<Load, String>> = Vec::new();
    for r in (1..=args.runs).filter(|_| !args.raw_only) {
        eprintln!("run {r}/{}: {} messages, window {}", args.runs, args.messages, args.window);
        let res = Topology::start(&ferry, logs.join(format!("run{r}")))
            .and_then(|mut t| t.setup().and_then(|()| t.load(r, args.messages, args.window)));
        match &res {
            Ok(l) => eprintln!("  run {r}: {} msg/s in {:.1} s", rate_str(l.rate()), l.elapsed.as_secs_f64()),
            Err(e) => eprintln!("  run {r} failed: {e}"),
        }
        runs.push(res);
    }
    let mut raws: Vec<Result<raw::Raw, String>> = Vec::new();
    let raw_n = args.raw_messages.unwrap_or(args.messages);
    for r in (1..=args.runs).filter(|_| args.raw) {
        eprintln!("relay alone {r}/{}: {raw_n} raw frames at up to {}/s", args.runs, args.raw_rate);
        let res = start_relay(&ferry, &logs.join(format!("raw{r}")))
            .and_then(|(relay, addr)| raw::run(&addr, relay.pid(), raw_n, args.window, args.raw_rate));
        match &res {
            Ok(x) => eprintln!("  relay alone {r}: {:.0} msg/s", x.n as f64 / x.elapsed.as_secs_f64().max(1e-9)),
            Err(e) => eprintln!("  relay alone {r} failed: {e}"),
        }
        raws.push(res);
    }
    let unloaded = (args.latency_messages > 0 && !args.raw_only).then(|| {
        eprintln!("unloaded latency: {} messages, one at a time", args.latency_messages);
        let res = Topology::start(&ferry, logs.join("unloaded"))
            .and_then(|mut t| t.setup().and_then(|()| t.unloaded(args.latency_messages)));
        if let Err(e) = &res {
            eprintln!("  unloaded run failed: {e}");
        }
        res
    });
    let load_end = loadavg();

    // ----- report ----------------------------------------------------------
    // Medians over the complete runs; if every run stopped early, over what
    // they measured before the stall, marked with a dagger.
    let measured: Vec<&Load> = runs.iter().filter_map(|r| r.as_ref().ok()).collect();
    let complete: Vec<&Load> = measured.iter().copied().filter(|l| l.aborted.is_none()).collect();
    let partial = complete.is_empty() && !measured.is_empty();
    let ok = if partial { measured } else { complete };
    let dagger = if partial { " †" } else { "" };
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "## Ferry relay bench\n");
    if !args.raw_only {
        let _ = writeln!(
            w,
            "- topology: A (`ferry rpc --ephemeral`) → relay R (`ferry relay`) → B (`ferry rpc --ephemeral`), \
         UDP on 127.0.0.1, `--no-mdns`, fresh processes per run; A and B are each other's contacts, \
         one warm-up message each way; sealed sender, receipts on"
        );
        let _ = writeln!(w, "- binary: `{}` ({binary}; a copy of it ran)", source.display());
        let _ = writeln!(
            w,
            "- loaded runs: {} × {} messages (median reported), at most {} outstanding (not yet received at B), \
         requests pipelined on A's stdin",
            args.runs,
            thousands(args.messages as f64),
            args.window
        );
        let _ =
            writeln!(w, "- unloaded latency run: {} messages, one at a time", thousands(args.latency_messages as f64));
    }
    let _ =
        writeln!(w, "- machine: {} CPUs, CLK_TCK {clk}; load average at start {load_start}, at end {load_end}", cpus());
    let _ = writeln!(w, "- wall time of the bench: {:.0} s\n", began.elapsed().as_secs_f64());

    if !args.raw_only {
        let _ = writeln!(
            w,
            "| run | msg/s | relay CPU / 1,000 msgs | A CPU / 1,000 | B CPU / 1,000 | relay VmHWM | \
         A+B bytes out / msg | A+B frames out / msg | loaded p50 / p99 | sends refused (back-pressure) | note |"
        );
        let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|---|");
        for (i, r) in runs.iter().enumerate() {
            match r {
                Ok(l) => {
                    let mut lat = l.latencies.clone();
                    lat.sort_unstable();
                    let mut note = match &l.aborted {
                        Some(a) => format!("{a}; {:.1} s to last received", l.elapsed.as_secs_f64()),
                        None => format!("{:.1} s to last received", l.elapsed.as_secs_f64()),
                    };
                    if let Some(t) = l.receipts_back {
                        let _ =
                            write!(note, "; every receipt back at A {:.1} s after the last message", t.as_secs_f64());
                    }
                    if let Some(p) = l.a_pending.filter(|&p| p > 0) {
                        if l.a_receipts >= l.n {
                            let _ = write!(
                                note,
                                "; DELIVERY NOT REPORTED: A's router took {} valid receipts (every message), yet A's \
                                 `pending` still counts {p}, {} s after it last moved",
                                l.a_receipts,
                                RECEIPT_WAIT.as_secs()
                            );
                        } else {
                            let _ = write!(
                                note,
                                "; RECEIPTS LOST: A's router took {} valid receipts for {} messages; `pending` still \
                                 counts {p}, {} s after it last moved",
                                l.a_receipts,
                                l.n,
                                RECEIPT_WAIT.as_secs()
                            );
                        }
                    }
                    if l.missed > 0 {
                        let _ = write!(note, "; A's and B's JSON-RPC dropped {} notifications (slow reader)", l.missed);
                    }
                    if let Some(d) = l.udp_drops.filter(|&d| d > 0) {
                        let _ = write!(note, "; {d} UDP datagrams dropped by the kernel for a full receive buffer");
                    }
                    if l.expired > 0 {
                        let _ = write!(note, "; {} expired", l.expired);
                    }
                    if l.duplicates > 0 {
                        let _ = write!(note, "; {} shown twice at B", l.duplicates);
                    }
                    let _ = writeln!(
                        w,
                        "| {} | {} | {:.3} s | {:.3} s | {:.3} s | {} | {:.1} | {:.2} | {} / {} | {} | {note} |",
                        i + 1,
                        rate_str(l.rate()),
                        l.per_k(l.relay_ticks, clk),
                        l.per_k(l.a_ticks, clk),
                        l.per_k(l.b_ticks, clk),
                        mib(l.relay_hwm_kb as f64),
                        l.bytes_out as f64 / l.n as f64,
                        l.frames_out as f64 / l.n as f64,
                        percentile(&lat, 50.0).map(ms).unwrap_or_default(),
                        percentile(&lat, 99.0).map(ms).unwrap_or_default(),
                        l.refusals,
                    );
                }
                Err(e) => {
                    let _ = writeln!(w, "| {} | — | — | — | — | — | — | — | — | — | {} |", i + 1, e.replace('\n', " "));
                }
            }
        }
        let _ = writeln!(w);

        let med = |f: &dyn Fn(&Load) -> f64| median(ok.iter().map(|l| f(l)).collect());
        let rate = med(&|l| l.rate());
        let cpu = med(&|l| l.per_k(l.relay_ticks, clk));
        let hwm = med(&|l| l.relay_hwm_kb as f64);
        let bytes = med(&|l| l.bytes_out as f64 / l.n as f64);
        let lo = med(&|l| l.lo_bytes.map_or(f64::NAN, |b| b as f64 / l.n as f64));
        let (p50, p99, un_refusals) = match &unloaded {
            Some(Ok(u)) => {
                let mut v = u.latencies.clone();
                v.sort_unstable();
                (percentile(&v, 50.0), percentile(&v, 99.0), Some(u.refusals))
            }
            _ => (None, None, None),
        };
        let un_dagger = match &unloaded {
            Some(Ok(Unloaded { aborted: Some(_), .. })) => " ‡",
            _ => "",
        };
        let dash = || "—".to_owned();
        let _ = writeln!(w, "| figure | measured | target | Reticulum/LXMF (same topology) |");
        let _ = writeln!(w, "|---|---|---|---|");
        let _ =
            writeln!(w, "| msg/s | {} | ≥ 2,000 | 116–169 |", rate.map(|r| rate_str(r) + dagger).unwrap_or_else(dash));
        let _ = writeln!(
            w,
            "| relay CPU per 1,000 msgs | {} | ≤ 0.020 s | 0.58–0.85 s (raw packets 0.23–0.26 s) |",
            cpu.map(|c| format!("{c:.3} s{dagger}")).unwrap_or_else(dash)
        );
        let _ = writeln!(
            w,
            "| relay peak RSS | {} | ≤ 10 MB | 41 MiB |",
            hwm.map(|h| mib(h) + dagger).unwrap_or_else(dash)
        );
        let _ = writeln!(
            w,
            "| p50 / p99 latency | {} | p50 ≤ 1 ms unloaded | p50 2–6 ms |",
            match (p50, p99) {
                (Some(a), Some(b)) => format!("{} / {} (unloaded){un_dagger}", ms(a), ms(b)),
                _ => dash(),
            }
        );
        let _ = writeln!(
            w,
            "| bytes through the relay per message | {} | reported | — |",
            bytes.map(|b| format!("{b:.1} B in (A+B `bytes_out`){dagger}")).unwrap_or_else(dash)
        );
        let _ = writeln!(w);
        if partial {
            let _ = writeln!(
                w,
                "† Every loaded run stopped early (see the runs table): these are medians over what the runs \
             measured before they stalled.\n"
            );
        }
        if let Some(Ok(Unloaded { aborted: Some(a), .. })) = &unloaded {
            let _ = writeln!(w, "‡ The unloaded run {a}; the latencies are of the messages that came.\n");
        }

        // What missed, by how much.
        let mut verdicts = Vec::new();
        if let Some(r) = rate {
            verdicts.push(if r >= 2000.0 {
                format!("msg/s: met ({})", rate_str(r))
            } else {
                format!("msg/s: missed, {} is {} 2,000", rate_str(r), how_far(2000.0 / r.max(1e-9), "below"))
            });
        }
        if let Some(c) = cpu {
            verdicts.push(if c <= 0.020 {
                format!("relay CPU: met ({c:.3} s)")
            } else {
                format!("relay CPU: missed, {c:.3} s is {} the 0.020 s target", how_far(c / 0.020, "above"))
            });
        }
        if let Some(h) = hwm {
            let mb = h * 1024.0 / 1e6;
            verdicts.push(if mb <= 10.0 {
                format!("relay RSS: met ({mb:.1} MB)")
            } else {
                format!("relay RSS: missed, {mb:.1} MB is {} the 10 MB target", how_far(mb / 10.0, "above"))
            });
        }
        if let Some(p) = p50 {
            let p = p.as_secs_f64() * 1000.0;
            verdicts.push(if p <= 1.0 {
                format!("p50 latency: met ({p:.2} ms)")
            } else {
                format!("p50 latency: missed, {p:.2} ms is {} the 1 ms target", how_far(p, "above"))
            });
        }
        for v in verdicts {
            let _ = writeln!(w, "- {v}");
        }
        let _ = writeln!(
            w,
            "\nNotes: msg/s = N / (first `send` written → last `received` read at B). CPU = utime + stime from \
         /proc/PID/stat, from just before the first send until A's `pending` last changed (reaching 0 once every receipt is back) (median \
         window {:.1} s). Peak RSS = VmHWM of the relay at the end of the run. Bytes = A's plus B's \
         `stats.bytes_out` delta over the run divided by N: every byte A and B send goes to the relay \
         (messages from A, receipts from B, hellos), so it is what the relay receives, frame bytes without \
         IP/UDP headers; the relay forwards about as much again (UDP is not in /proc/PID/io and the relay \
         has no RPC). Cross-check: loopback carried {} per message (all `lo` traffic of the machine, both \
         directions of the relay, with 28 B of IP/UDP header per datagram). Latency = `send` written on \
         A's stdin → `received` read on B's stdout{}.",
            med(&|l| l.cpu_window.as_secs_f64()).unwrap_or(0.0),
            lo.filter(|x| x.is_finite()).map(|b| format!("{b:.0} B")).unwrap_or_else(dash),
            match un_refusals {
                Some(0) | None => String::new(),
                Some(k) => format!(
                    "; in the unloaded run A refused {k} sends for back-pressure (\"message store is full\" or \
                 \"too many messages waiting for delivery\"; each was retried after the next receipt, and its \
                 latency counts from the accepted request)"
                ),
            }
        );
        if let Some(Err(e)) = &unloaded {
            let _ = writeln!(w, "\nThe unloaded latency run failed: {}", e.replace('\n', " "));
        }
    }
    if args.raw {
        raw_report(w, &raws, &args, clk);
    }
    print!("{out}");

    let all_ok = runs.iter().all(Result::is_ok) && raws.iter().all(Result::is_ok) && !matches!(unloaded, Some(Err(_)));
    if all_ok && !args.keep_logs {
        let _ = std::fs::remove_dir_all(&logs);
        ExitCode::SUCCESS
    } else {
        eprintln!("ferry-relay-bench: the children's logs are in {}", logs.display());
        if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}
