//! A relay and two `--ephemeral` nodes do a full exchange under `strace`; none of them may create, write,
//! rename, delete or make anything on disk.
//!
//! What counts as writing: a successful `open`/`openat`/`creat` with `O_WRONLY`, `O_RDWR`, `O_CREAT`,
//! `O_TRUNC` or `O_APPEND` (or `creat` at all) on any path but `/dev/null`; any successful `rename*`,
//! `unlink*`, `mkdir*`. Reading is fine (shared libraries, `/proc`, `/sys`, `/dev/urandom`, ...).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_tests::{Node, Proc, Signal, ferry_bin, free_udp_addr, have, json, loopback_args, skip_unless};

const DELIVERY: Duration = Duration::from_secs(15);
const SYSCALLS: &str = "openat,open,creat,rename,renameat,renameat2,unlink,unlinkat,mkdir,mkdirat";

/// `strace -f -e trace=... -o log ferry args...`
fn traced(log: &Path, args: &[String]) -> Command {
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-e", &format!("trace={SYSCALLS}"), "-o"]).arg(log).arg("--").arg(ferry_bin()).args(args);
    c
}

/// One finished system call from an strace log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    name: String,
    args: String,
    ret: String,
    line: String,
}

impl Call {
    fn ok(&self) -> bool {
        // "= 3", "= 0"; failures are "= -1 ENOENT (...)"; "= ?" means the process died mid-call.
        let r = self.ret.trim();
        !(r.starts_with('-') || r.starts_with('?'))
    }

    /// The first quoted string argument (the path).
    fn path(&self) -> Option<&str> {
        let start = self.args.find('"')? + 1;
        let len = self.args[start..].find('"')?;
        Some(&self.args[start..start + len])
    }
}

/// Parse strace output, joining `<unfinished ...>` / `<... name resumed>` pairs.
fn parse(log: &str) -> Vec<Call> {
    let mut pending: HashMap<String, String> = HashMap::new();
    let mut calls = Vec::new();
    for raw in log.lines() {
        let raw = raw.trim_end();
        let Some((pid, rest)) = raw.split_once(char::is_whitespace) else { continue };
        let rest = rest.trim_start();
        let joined = if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid.to_owned(), head.trim_end().to_owned());
            continue;
        } else if rest.starts_with("<... ") {
            let Some(after) = rest.split_once("resumed>").map(|(_, a)| a) else { continue };
            let head = pending.remove(pid).unwrap_or_default();
            format!("{head}{after}")
        } else {
            rest.to_owned()
        };
        // Signals and exits: "--- SIGTERM ...", "+++ exited with 0 +++".
        if joined.starts_with("---") || joined.starts_with("+++") {
            continue;
        }
        let Some(open) = joined.find('(') else { continue };
        let Some(eq) = joined.rfind(") = ").or_else(|| joined.rfind(") =")) else { continue };
        if eq < open {
            continue;
        }
        calls.push(Call {
            name: joined[..open].to_owned(),
            args: joined[open + 1..eq].to_owned(),
            ret: joined[eq + 3..].trim_start_matches('=').trim().to_owned(),
            line: format!("{pid} {joined}"),
        });
    }
    calls
}

/// The violations among `calls`, as log lines.
fn writes(calls: &[Call]) -> Vec<String> {
    const WRITE_FLAGS: [&str; 5] = ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND"];
    calls
        .iter()
        .filter(|c| c.ok())
        .filter(|c| match c.name.as_str() {
            "open" | "openat" => {
                WRITE_FLAGS.iter().any(|f| c.args.contains(f)) && c.path().is_none_or(|p| p != "/dev/null")
            }
            "creat" | "rename" | "renameat" | "renameat2" | "unlink" | "unlinkat" | "mkdir" | "mkdirat" => true,
            _ => false,
        })
        .map(|c| c.line.clone())
        .collect()
}

#[test]
fn strace_log_parser() {
    let log = "\
101 openat(AT_FDCWD, \"/etc/ld.so.cache\", O_RDONLY|O_CLOEXEC) = 3
101 openat(AT_FDCWD, \"/nope\", O_RDONLY) = -1 ENOENT (No such file or directory)
102 openat(AT_FDCWD, \"/tmp/x\", O_WRONLY|O_CREAT|O_TRUNC, 0600 <unfinished ...>
101 openat(AT_FDCWD, \"/dev/null\", O_RDWR) = 4
102 <... openat resumed>) = 5
103 mkdir(\"/tmp/d\", 0700) = -1 EEXIST (File exists)
103 renameat2(AT_FDCWD, \"a\", AT_FDCWD, \"b\", 0) = 0
101 --- SIGTERM {si_signo=SIGTERM, si_code=SI_USER, si_pid=1, si_uid=0} ---
101 +++ exited with 0 +++
";
    let calls = parse(log);
    assert_eq!(calls.len(), 6, "{calls:#?}");
    assert_eq!(calls[0].path(), Some("/etc/ld.so.cache"));
    assert!(calls[0].ok() && !calls[1].ok());
    let w = writes(&calls);
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(w[0].contains("/tmp/x") && w[1].contains("renameat2"), "{w:#?}");
}

#[test]
fn relay_and_ephemeral_nodes_write_nothing() {
    if skip_unless(have("strace"), "strace is not installed (apt-get install strace)") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (pr, pa, pb) = (free_udp_addr(1), free_udp_addr(2), free_udp_addr(3));
    let logs = [dir.path().join("relay.log"), dir.path().join("a.log"), dir.path().join("b.log")];

    let mut relay_cmd = traced(&logs[0], &["relay".into(), "--no-mdns".into(), "--listen".into(), pr.to_string()]);
    relay_cmd.stdin(Stdio::null()).stdout(Stdio::null());
    // Nothing to find under HOME either.
    let home = tempfile::tempdir().expect("tempdir");
    relay_cmd.env("HOME", home.path()).env_remove("XDG_DATA_HOME").env_remove("XDG_RUNTIME_DIR");
    let mut relay = Proc::spawn("relay", relay_cmd);
    let node = |name: &str, log: &Path, listen, peer| {
        let mut args = vec!["rpc".to_owned()];
        args.extend(loopback_args(listen, &[peer]));
        let mut c = traced(log, &args);
        c.env("HOME", home.path()).env_remove("XDG_DATA_HOME").env_remove("XDG_RUNTIME_DIR");
        Node::spawn(name, c)
    };
    let mut a = node("A", &logs[1], pa, pr);
    let mut b = node("B", &logs[2], pb, pr);
    let (code_a, code_b) = (a.code(), b.code());

    // A full exchange: send, receive, receipt; both ways; contacts too (kept in RAM).
    a.ok("contacts.add", json!({"name": "bob", "code": code_b}));
    let id = a.send("bob", "nothing on disk");
    let r = b.wait_received("nothing on disk", DELIVERY);
    assert_eq!(r["code"], json!(code_a));
    a.wait_delivered(&id, DELIVERY);
    b.ok("contacts.add", json!({"name": "alice", "code": code_a}));
    b.ok("contacts.rename", json!({"name": "alice", "new_name": "Alice"}));
    let id = b.send("Alice", "nor here");
    a.wait_received("nor here", DELIVERY);
    b.wait_delivered(&id, DELIVERY);
    // Stay up past a few maintenance ticks (where a node with a file saves its address book).
    std::thread::sleep(Duration::from_millis(1500));

    // Clean exits: stdin closed for the nodes, SIGTERM for the relay (strace passes it on).
    assert!(a.shutdown(Duration::from_secs(10)).success(), "A: {}", a.proc.stderr());
    assert!(b.shutdown(Duration::from_secs(10)).success(), "B: {}", b.proc.stderr());
    relay.signal_group(Signal::SIGTERM);
    let st = relay.wait_exit(Duration::from_secs(10)).expect("the relay did not stop on SIGTERM");
    assert!(st.success(), "relay: {st:?}\n{}", relay.stderr());

    let left: Vec<_> = std::fs::read_dir(home.path()).expect("read HOME").collect();
    assert!(left.is_empty(), "something was made under HOME: {left:?}");
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let calls = parse(&text);
        // The trace worked: the dynamic loader opened something for reading.
        assert!(
            calls.iter().any(|c| c.name == "openat" && c.ok()),
            "{}: no successful openat traced: {}",
            log.display(),
            ferry_tests::tail(&text, 20)
        );
        let bad = writes(&calls);
        assert!(bad.is_empty(), "{} wrote to disk:\n{}", log.display(), bad.join("\n"));
        eprintln!(
            "{}: {} calls traced, none writing",
            log.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
            calls.len()
        );
    }
}
