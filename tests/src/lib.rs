//! Helpers for the cross-process tests of the `ferry` program (`tests/tests/*.rs`).
//!
//! - [`ferry_bin`]: where the binary is (`$CARGO_TARGET_DIR` or `<workspace>/target`, then `debug/ferry`).
//! - [`Node`]: a `ferry rpc` child with a JSON-RPC client: [`Node::call`] matches responses by id while
//!   buffering notifications, [`Node::wait_note`] waits for a notification, with a timeout.
//! - [`Proc`]: any child (a relay, a daemon, an `ip netns exec ...`), killed with its whole process group
//!   when dropped; its stderr is kept and printed if the test panics.
//!
//! Every wait here has a timeout; nothing blocks forever.

pub mod serial_wire;

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::signal;
pub use nix::sys::signal::Signal;
use nix::unistd::Pid;
pub use serde_json::{Value, json};

/// Default timeout for one RPC call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The `ferry` binary: `$CARGO_TARGET_DIR/debug/ferry`, or `<workspace>/target/debug/ferry`.
/// Panics with a clear message if it is not there.
pub fn ferry_bin() -> PathBuf {
    // FERRY_BIN runs the same tests against another build (test.sh runs the
    // memory test against the release binary: wipes must survive the optimiser).
    if let Some(bin) = std::env::var_os("FERRY_BIN").filter(|v| !v.is_empty()) {
        return PathBuf::from(bin);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() { dir } else { workspace.join(dir) }
        }
        None => workspace.join("target"),
    };
    let bin = target.join("debug").join("ferry");
    assert!(
        bin.is_file(),
        "the ferry binary is missing at {}: build it first with `cargo build -p ferry-node --bin ferry` \
         (`cargo nextest run --workspace --all-targets` builds it too)",
        bin.display()
    );
    bin
}

/// Whether we run under CI (`CI=true`, `1` or `yes`): a test that cannot run then fails instead of skipping.
pub fn is_ci() -> bool {
    matches!(std::env::var("CI").map(|v| v.to_ascii_lowercase()).as_deref(), Ok("true" | "1" | "yes"))
}

/// Skip the test (print `SKIP: reason` to stderr and return `true`) — or, under CI, fail it.
/// Use as `if skip_unless(cond, "reason") { return; }`.
pub fn skip_unless(ok: bool, reason: &str) -> bool {
    if ok {
        return false;
    }
    assert!(!is_ci(), "CI=true and this test cannot run: {reason}");
    eprintln!("SKIP: {reason}");
    true
}

/// Whether `prog` is found on `PATH` (or is an existing path).
pub fn have(prog: &str) -> bool {
    if prog.contains('/') {
        return std::path::Path::new(prog).is_file();
    }
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file())).unwrap_or(false)
}

/// Whether we run as root (from `/proc/self/status`, no `unsafe`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A loopback address of our own for this test process, `127.A.B.host`, with A.B taken from the pid, so that
/// tests running in parallel (one process each under nextest) never share an address.
pub fn loopback_ip(host: u8) -> Ipv4Addr {
    let pid = std::process::id();
    Ipv4Addr::new(127, 1 + ((pid >> 8) % 250) as u8, (pid & 0xff) as u8, host)
}

/// A UDP address on [`loopback_ip`]`(host)` with a port the kernel says is free right now.
pub fn free_udp_addr(host: u8) -> SocketAddr {
    let s = UdpSocket::bind((loopback_ip(host), 0)).expect("bind a probe UDP socket on loopback");
    s.local_addr().expect("local address of the probe socket")
}

/// Text of stderr lines kept from a child.
type Lines = Arc<Mutex<Vec<String>>>;

/// Collect `r`'s lines in a thread; the flag is set when it reached the end.
fn keep_lines(name: String, r: impl std::io::Read + Send + 'static, echo: bool) -> (Lines, Arc<AtomicBool>) {
    let lines: Lines = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let (out, finished) = (lines.clone(), done.clone());
    thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if echo {
                eprintln!("[{name}] {line}");
            }
            if let Ok(mut v) = out.lock() {
                if v.len() > 20_000 {
                    v.drain(..10_000);
                }
                v.push(line);
            }
        }
        finished.store(true, Ordering::Release);
    });
    (lines, done)
}

/// A child process, killed (with its whole process group) when dropped. Its stderr is collected and, if
/// the test is panicking, printed on drop. `FERRY_TEST_ECHO=1` echoes it live.
#[derive(Debug)]
pub struct Proc {
    /// A name for messages.
    pub name: String,
    child: Child,
    stderr: Lines,
    /// The stderr reader saw the end (everything the process wrote is in `stderr`).
    stderr_done: Arc<AtomicBool>,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Spawn `cmd` in its own process group with stderr captured. Stdin and stdout are left as `cmd` has
    /// them (set them before calling; the default here is null for both).
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stderr(Stdio::piped()).process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {name} ({cmd:?}): {e}"));
        let echo = std::env::var_os("FERRY_TEST_ECHO").is_some();
        let (stderr, stderr_done) = keep_lines(name.to_owned(), child.stderr.take().expect("piped stderr"), echo);
        Proc { name: name.to_owned(), child, stderr, stderr_done, exited: None }
    }

    /// A `ferry` command with `args`, stdin and stdout null (for a relay or a daemon).
    pub fn ferry(name: &str, args: &[String]) -> Proc {
        let mut cmd = Command::new(ferry_bin());
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null());
        Proc::spawn(name, cmd)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|v| v.join("\n")).unwrap_or_default()
    }

    /// Send `sig` to the process itself. Panics if it cannot be delivered (the process is gone and reaped,
    /// say): a test that signals a process expects it to be there.
    pub fn signal(&self, sig: Signal) {
        if let Err(e) = signal::kill(self.nix_pid(), sig) {
            panic!("{}: cannot send {sig} to pid {}: {e}", self.name, self.pid());
        }
    }

    /// Send `sig` to the whole process group (for wrappers such as `strace` or `ip netns exec`). Panics if
    /// no process of the group is left to receive it.
    pub fn signal_group(&self, sig: Signal) {
        if let Err(e) = signal::killpg(self.nix_pid(), sig) {
            panic!("{}: cannot send {sig} to process group {}: {e}", self.name, self.pid());
        }
    }

    fn nix_pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.pid()).expect("a pid fits in i32"))
    }

    /// Whether it has exited (and with what).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
            if self.exited.is_some() {
                // What it wrote before it exited is read before anyone looks (unless a child it left
                // behind still holds the pipe: then not more than a second).
                let end = Instant::now() + Duration::from_secs(1);
                while !self.stderr_done.load(Ordering::Acquire) && Instant::now() < end {
                    thread::sleep(Duration::from_millis(5));
                }
            }
        }
        self.exited
    }

    /// Wait up to `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill it (SIGKILL to the group, then to itself) and reap it. A group or process that is already gone
    /// (`ESRCH`) is fine here; anything else is reported, but never panics (this runs in `Drop`).
    pub fn kill(&mut self) {
        let pid = self.nix_pid();
        let name = self.name.clone();
        let report = move |what: &str, r: nix::Result<()>| match r {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => eprintln!("{name}: cannot SIGKILL {what} {pid}: {e}"),
        };
        // Even when the leader is gone its group may still have members (a tracee, say).
        report("process group", signal::killpg(pid, Signal::SIGKILL));
        if self.try_exit().is_none() {
            report("pid", signal::kill(pid, Signal::SIGKILL));
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                eprintln!("{}: pid {pid} did not exit within 5 s of SIGKILL", self.name);
            }
        }
    }

    /// Resident memory in KiB, from `/proc/PID/status` `VmRSS`.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            // Give the stderr thread a moment to read the last lines.
            thread::sleep(Duration::from_millis(50));
            let text = self.stderr();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!("---- stderr of {} (last {} lines) ----", self.name, tail.len());
            for l in tail {
                eprintln!("[{}] {l}", self.name);
            }
        }
    }
}

/// A JSON-RPC client on a `ferry rpc` child (or anything that speaks the same on its stdin/stdout).
///
/// Every stdout line must be a JSON value: a line that is not makes the next wait panic.
#[derive(Debug)]
pub struct Node {
    /// The process.
    pub proc: Proc,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Notifications not yet taken by [`Node::wait_note`].
    notes: VecDeque<Value>,
    /// Responses not yet taken.
    responses: VecDeque<Value>,
    /// Every notification ever seen, in order.
    pub history: Vec<Value>,
    /// Every stdout line ever read.
    pub raw: Vec<String>,
    next_id: u64,
    closed: bool,
}

/// A thread that reads `stdout` line by line into a channel, until it closes.
fn read_lines(stdout: std::process::ChildStdout) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Node {
    /// Start `ferry rpc` with `args` (flags such as `--ephemeral`, `--listen`, ...).
    pub fn rpc(name: &str, args: &[String]) -> Node {
        let mut cmd = Command::new(ferry_bin());
        cmd.arg("rpc").args(args);
        Node::spawn(name, cmd)
    }

    /// Start `cmd` (which must run `ferry rpc` in the end, e.g. via `ip netns exec`) with piped stdin and
    /// stdout.
    pub fn spawn(name: &str, mut cmd: Command) -> Node {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut proc = Proc::spawn(name, cmd);
        let stdin = proc.child.stdin.take();
        let rx = read_lines(proc.child.stdout.take().expect("piped stdout"));
        Node {
            proc,
            stdin,
            lines: rx,
            notes: VecDeque::new(),
            responses: VecDeque::new(),
            history: Vec::new(),
            raw: Vec::new(),
            next_id: 1,
            closed: false,
        }
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.proc.name
    }

    fn fail(&self, what: &str) -> ! {
        panic!("{}: {what}\n---- its stderr ----\n{}", self.proc.name, tail(&self.proc.stderr(), 60))
    }

    /// Write one raw line (a newline is added).
    pub fn send_line(&mut self, line: &str) {
        let name = self.proc.name.clone();
        let stdin = self.stdin.as_mut().unwrap_or_else(|| panic!("{name}: stdin already closed"));
        if let Err(e) =
            stdin.write_all(line.as_bytes()).and_then(|()| stdin.write_all(b"\n")).and_then(|()| stdin.flush())
        {
            self.fail(&format!("cannot write to stdin: {e}"));
        }
    }

    /// Write raw bytes (no newline added).
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        let name = self.proc.name.clone();
        let stdin = self.stdin.as_mut().unwrap_or_else(|| panic!("{name}: stdin already closed"));
        if let Err(e) = stdin.write_all(bytes).and_then(|()| stdin.flush()) {
            self.fail(&format!("cannot write to stdin: {e}"));
        }
    }

    /// Close stdin (the node should then exit cleanly).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Read one more stdout line (up to `until`) and file it; `false` on timeout or end of output.
    fn pump(&mut self, until: Instant) -> bool {
        let wait = until.saturating_duration_since(Instant::now());
        let line = match self.lines.recv_timeout(wait) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => return false,
            Err(RecvTimeoutError::Disconnected) => {
                self.closed = true;
                return false;
            }
        };
        self.raw.push(line.clone());
        let v: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => self.fail(&format!("stdout carried a line that is not JSON ({e}): {line:?}")),
        };
        let is_note = v.get("method").is_some() && v.get("id").is_none();
        if is_note {
            self.history.push(v.clone());
            self.notes.push_back(v);
        } else {
            self.responses.push_back(v);
        }
        true
    }

    /// Take the first buffered response for which `pred` holds, reading more output until `timeout`.
    pub fn try_response(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(i) = self.responses.iter().position(&pred) {
                return self.responses.remove(i);
            }
            if self.closed {
                return None;
            }
            if !self.pump(until) && Instant::now() >= until {
                return None;
            }
        }
    }

    /// The next response (any id, or a batch array), within `timeout`; panics otherwise.
    pub fn next_response(&mut self, timeout: Duration) -> Value {
        match self.try_response(timeout, |_| true) {
            Some(v) => v,
            None => self.fail(&format!("no response within {timeout:?}")),
        }
    }

    /// Call `method` with `params`; `Ok(result)` or `Err(error object)`. Panics after [`CALL_TIMEOUT`].
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_line(&req.to_string());
        let Some(resp) = self.try_response(CALL_TIMEOUT, |v| v.get("id") == Some(&json!(id))) else {
            self.fail(&format!("no response to {method} (id {id}) within {CALL_TIMEOUT:?}"))
        };
        if let Some(err) = resp.get("error") {
            return Err(err.clone());
        }
        match resp.get("result") {
            Some(r) => Ok(r.clone()),
            None => self.fail(&format!("response without result or error: {resp}")),
        }
    }

    /// [`Node::call`] that must succeed.
    pub fn ok(&mut self, method: &str, params: Value) -> Value {
        match self.call(method, params.clone()) {
            Ok(v) => v,
            Err(e) => self.fail(&format!("{method} {params} failed: {e}")),
        }
    }

    /// This node's contact code.
    pub fn code(&mut self) -> String {
        let v = self.ok("identity", json!({}));
        v["code"].as_str().map(str::to_owned).unwrap_or_else(|| self.fail(&format!("identity gave {v}")))
    }

    /// Send `text` to `to` (a contact name or code); returns the message id.
    pub fn send(&mut self, to: &str, text: &str) -> String {
        let v = self.ok("send", json!({"to": to, "text": text}));
        v["id"].as_str().map(str::to_owned).unwrap_or_else(|| self.fail(&format!("send gave {v}")))
    }

    /// Take the first notification (buffered or new) for which `pred` holds, within `timeout`.
    pub fn try_note(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(i) = self.notes.iter().position(&pred) {
                return self.notes.remove(i);
            }
            if self.closed {
                return None;
            }
            if !self.pump(until) && Instant::now() >= until {
                return None;
            }
        }
    }

    /// [`Node::try_note`] that must find one; `what` says what was awaited, for the failure message.
    pub fn wait_note(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        match self.try_note(timeout, pred) {
            Some(v) => v,
            None => {
                let seen: Vec<String> = self.history.iter().map(Value::to_string).collect();
                self.fail(&format!("no {what} within {timeout:?}; notifications seen: {seen:#?}"))
            }
        }
    }

    /// Wait for a `received` notification with this text; returns its params.
    pub fn wait_received(&mut self, text: &str, timeout: Duration) -> Value {
        let t = text.to_owned();
        let v = self.wait_note(&format!("received {text:?}"), timeout, move |v| {
            v["method"] == "received" && v["params"]["text"] == json!(t)
        });
        v["params"].clone()
    }

    /// Wait for `delivered {id}`.
    pub fn wait_delivered(&mut self, id: &str, timeout: Duration) {
        let id = id.to_owned();
        self.wait_note(&format!("delivered {id}"), timeout, move |v| {
            v["method"] == "delivered" && v["params"]["id"] == json!(id)
        });
    }

    /// Wait for `status {id, state}`.
    pub fn wait_status(&mut self, id: &str, state: &str, timeout: Duration) {
        let (id, state) = (id.to_owned(), state.to_owned());
        self.wait_note(&format!("status {state} for {id}"), timeout, move |v| {
            v["method"] == "status" && v["params"]["id"] == json!(id) && v["params"]["state"] == json!(state)
        });
    }

    /// Read whatever output arrives within `d`, filing it (to see late duplicates, say).
    pub fn drain_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.closed {
            self.pump(until);
        }
    }

    /// Ids of every `received` notification seen so far (in order, with repeats).
    pub fn received_ids(&self) -> Vec<String> {
        self.history
            .iter()
            .filter(|v| v["method"] == "received")
            .filter_map(|v| v["params"]["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Panics if a message id was reported `received` twice, or `delivered` twice.
    pub fn assert_no_duplicates(&self) {
        for method in ["received", "delivered"] {
            let mut seen = HashSet::new();
            for v in self.history.iter().filter(|v| v["method"] == method) {
                let id = v["params"]["id"].to_string();
                assert!(
                    seen.insert(id.clone()),
                    "{}: {method} {id} reported twice: {:#?}",
                    self.proc.name,
                    self.history
                );
            }
        }
    }

    /// Close stdin and wait for a clean exit.
    pub fn shutdown(&mut self, timeout: Duration) -> ExitStatus {
        self.close_stdin();
        match self.proc.wait_exit(timeout) {
            Some(s) => s,
            None => self.fail(&format!("did not exit within {timeout:?} after stdin closed")),
        }
    }
}

/// `ferry chat` (or anything line-based) driven like a person at a terminal: lines in on stdin, every stdout
/// line kept; [`Chat::expect`] waits for a line that contains a text.
#[derive(Debug)]
pub struct Chat {
    /// The process (its stderr is kept separately).
    pub proc: Proc,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every stdout line read so far, in order.
    pub seen: Vec<String>,
    /// Lines before this index were already matched or passed over by [`Chat::expect`].
    cursor: usize,
}

impl Chat {
    /// Start `ferry chat` with `args`.
    pub fn spawn(name: &str, args: &[String]) -> Chat {
        let mut cmd = Command::new(ferry_bin());
        cmd.arg("chat").args(args).stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut proc = Proc::spawn(name, cmd);
        let stdin = proc.child.stdin.take();
        let rx = read_lines(proc.child.stdout.take().expect("piped stdout"));
        Chat { proc, stdin, lines: rx, seen: Vec::new(), cursor: 0 }
    }

    /// Type one line.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).expect("write to the chat");
    }

    /// Close stdin (Ctrl-D).
    pub fn close(&mut self) {
        self.stdin = None;
    }

    /// Wait up to `timeout` for a stdout line containing `text`, after the line the previous call matched;
    /// returns it. Panics with everything seen.
    pub fn expect(&mut self, text: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        if let Some(i) = self.seen[self.cursor..].iter().position(|l| l.contains(text)) {
            self.cursor += i + 1;
            return self.seen[self.cursor - 1].clone();
        }
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        self.cursor = self.seen.len();
                        return line;
                    }
                }
                Err(_) => panic!(
                    "{}: no line with {text:?} within {timeout:?}\n---- stdout ----\n{}\n---- stderr ----\n{}",
                    self.proc.name,
                    self.seen.join("\n"),
                    tail(&self.proc.stderr(), 40)
                ),
            }
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Wait until `cond` holds, polling every 50 ms, for at most `timeout`; whether it held.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Args for an ephemeral, mDNS-less node listening on `listen` with static `peers`.
pub fn loopback_args(listen: SocketAddr, peers: &[SocketAddr]) -> Vec<String> {
    let mut a = vec!["--ephemeral".to_owned(), "--no-mdns".to_owned(), "--listen".to_owned(), listen.to_string()];
    for p in peers {
        a.push("--peer".to_owned());
        a.push(p.to_string());
    }
    a
}
