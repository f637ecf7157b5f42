//! `ferry chat`: a line-based chat over the JSON-RPC API, attached to a
//! running daemon or to a node of its own.
//!
//! Everything received is passed through [`crate::sanitize`] before it is
//! printed: no control characters, escape sequences or bidi overrides from
//! the air reach the terminal.

use std::collections::HashMap;
use std::io::Write as _;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::app::{self, AppError};
use crate::cli::Cli;
use crate::rpc;
use crate::sanitize::one_line;

const HELP: &str = "\
commands:
  /to NAME|CODE        talk to a contact (or a code)
  /add NAME CODE       add a contact
  /rename OLD NEW      rename a contact
  /remove NAME         remove a contact
  /block NAME|CODE     block a contact or a stranger
  /contacts            list contacts
  /peers               list links
  /me                  show your contact code
  /quit                leave (also Ctrl-D)
anything else is sent to the current conversation";

struct Client<W> {
    writer: W,
    next_id: u64,
    waiting: HashMap<u64, &'static str>,
    to: Option<String>,
    sent: HashMap<String, usize>,
    count: usize,
    to_block: Option<String>,
    to_pick: Option<String>,
    early: Vec<(String, String)>,
}

fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

/// The time a message says it was sent, in the machine's time zone ("14:03"), with the date when it is not
/// today ("Dec 04 14:03"). Without a known time zone (no `/etc/localtime`, no `TZ`), UTC and says so.
fn clock(unix: u64, now: jiff::Timestamp) -> String {
    let (tz, utc) = match jiff::tz::TimeZone::try_system() {
        Ok(tz) => (tz, false),
        Err(_) => (jiff::tz::TimeZone::UTC, true),
    };
    clock_in(unix, now, &tz, utc)
}

fn clock_in(unix: u64, now: jiff::Timestamp, tz: &jiff::tz::TimeZone, say_utc: bool) -> String {
    let Some(t) = i64::try_from(unix).ok().and_then(|s| jiff::Timestamp::from_second(s).ok()) else {
        return "?".to_owned();
    };
    let (t, now) = (t.to_zoned(tz.clone()), now.to_zoned(tz.clone()));
    let mut text =
        if t.date() == now.date() { t.strftime("%H:%M").to_string() } else { t.strftime("%b %d %H:%M").to_string() };
    if say_utc {
        text.push_str(" UTC");
    }
    text
}

/// What a delivery state means, for a person: "sent" only says that a neighbour (a relay, or the recipient if
/// in range) took the message, not that it arrived.
fn state_text(state: &str) -> String {
    match state {
        "sent" => "handed to the mesh (not delivered yet)".to_owned(),
        "delivered" => "delivered".to_owned(),
        "expired" => "expired undelivered (its lifetime ran out)".to_owned(),
        other => one_line(other),
    }
}

impl<W: AsyncWrite + Unpin> Client<W> {
    async fn call(&mut self, method: &str, params: Value, purpose: &'static str) -> std::io::Result<()> {
        self.next_id += 1;
        self.waiting.insert(self.next_id, purpose);
        let line = json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}).to_string();
        self.writer.write_all(line.as_bytes()).await?;
        self.writer.write_all(b"\n").await?;
        self.writer.flush().await
    }

    async fn command(&mut self, line: &str) -> std::io::Result<bool> {
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or("");
        let args: Vec<&str> = words.collect();
        match (cmd, args.as_slice()) {
            ("/quit" | "/exit", _) => return Ok(false),
            ("/help", _) => out(HELP),
            ("/me", _) => self.call("identity", json!({}), "me").await?,
            ("/peers", _) => self.call("peers", json!({}), "peers").await?,
            ("/contacts", _) => self.call("contacts.list", json!({}), "contacts").await?,
            ("/add", [name, code]) => self.call("contacts.add", json!({"name": name, "code": code}), "ok").await?,
            ("/rename", [old, new]) => {
                self.call("contacts.rename", json!({"name": old, "new_name": new}), "ok").await?;
            }
            ("/remove", [name]) => self.call("contacts.remove", json!({"name": name}), "ok").await?,
            ("/block", [who]) => {
                if who.starts_with("ferry1") {
                    self.call("contacts.block", json!({"code": who}), "ok").await?;
                } else {
                    // Resolve a name through the contact list first.
                    self.call("contacts.list", json!({}), "block").await?;
                    self.to_block = Some((*who).to_owned());
                }
            }
            ("/to", [who]) => {
                if who.starts_with("ferry1") {
                    match ferry_proto::envelope::PeerKey::from_code(who) {
                        Ok(_) => {
                            self.to = Some((*who).to_owned());
                            out(&format!("now talking to {}", one_line(who)));
                        }
                        Err(e) => out(&format!("not a valid contact code ({e}); check it and try again")),
                    }
                } else {
                    // A name must be a contact: ask for the list, answer when it comes.
                    self.call("contacts.list", json!({}), "to").await?;
                    self.to_pick = Some((*who).to_owned());
                }
            }
            (c, _) if c.starts_with('/') => out("unknown command or wrong arguments; /help lists them"),
            _ => match self.to.clone() {
                Some(to) => self.call("send", json!({"to": to, "text": line}), "send").await?,
                None => out("pick a conversation first: /to NAME"),
            },
        }
        Ok(true)
    }

    async fn server_line(&mut self, line: &str) -> std::io::Result<()> {
        let Ok(v) = serde_json::from_str::<Value>(line) else { return Ok(()) };
        if let Some(method) = v.get("method").and_then(Value::as_str) {
            let p = &v["params"];
            match method {
                "received" => {
                    let from = one_line(p["from"].as_str().unwrap_or("?"));
                    let text = crate::sanitize::for_terminal(p["text"].as_str().unwrap_or(""));
                    let when = clock(p["sent_at"].as_u64().unwrap_or(0), jiff::Timestamp::now());
                    let text = text.replace('\n', "\n    ");
                    if p["contact"].as_bool().unwrap_or(false) {
                        out(&format!("[{when}] {from}: {text}"));
                    } else {
                        out(&format!("[{when}] request from {from}:\n    {text}"));
                        out(&format!("    (/add NAME {from} to accept, /block {from} to block)"));
                    }
                }
                "status" => {
                    let id = p["id"].as_str().unwrap_or("").to_owned();
                    let state = one_line(p["state"].as_str().unwrap_or("?"));
                    match self.sent.get(&id) {
                        Some(n) if state != "queued" => out(&format!("  message #{n} {}", state_text(&state))),
                        Some(_) => {}
                        // The notification can overtake the answer to `send`.
                        None => self.early.push((id, state)),
                    }
                }
                _ => {}
            }
            return Ok(());
        }
        let id = v.get("id").and_then(Value::as_u64).unwrap_or(0);
        let purpose = self.waiting.remove(&id).unwrap_or("");
        if let Some(err) = v.get("error") {
            out(&format!("error: {}", one_line(err["message"].as_str().unwrap_or("?"))));
            return Ok(());
        }
        let r = &v["result"];
        match purpose {
            "me" => out(&format!("your code: {}", one_line(r["code"].as_str().unwrap_or("")))),
            "peers" => {
                let list = r.as_array().cloned().unwrap_or_default();
                out(&format!("{} link(s)", list.len()));
                for p in list {
                    out(&format!(
                        "  {} ({}), up {} s{}",
                        one_line(p["kind"].as_str().unwrap_or("?")),
                        one_line(p["found_by"].as_str().unwrap_or("?")),
                        p["age_secs"].as_u64().unwrap_or(0),
                        if p["validated"].as_bool() == Some(true) { "" } else { ", not yet answering" }
                    ));
                }
            }
            "contacts" | "block" | "to" => {
                let list = r.as_array().cloned().unwrap_or_default();
                if purpose == "to" {
                    let want = self.to_pick.take().unwrap_or_default();
                    if list.iter().any(|c| c["name"].as_str() == Some(&want)) {
                        out(&format!("now talking to {}", one_line(&want)));
                        self.to = Some(want);
                    } else {
                        out(&format!(
                            "no contact named {}: /contacts lists them, /add NAME CODE adds one, /to CODE writes to a code",
                            one_line(&want)
                        ));
                    }
                    return Ok(());
                }
                if purpose == "block" {
                    let want = self.to_block.take().unwrap_or_default();
                    match list.iter().find(|c| c["name"].as_str() == Some(&want)) {
                        Some(c) => {
                            let code = c["code"].as_str().unwrap_or("").to_owned();
                            self.call("contacts.block", json!({"code": code}), "ok").await?;
                        }
                        None => out("no such contact"),
                    }
                    return Ok(());
                }
                if list.is_empty() {
                    out("no contacts yet: /add NAME CODE");
                }
                for c in list {
                    out(&format!(
                        "  {}  {}",
                        one_line(c["name"].as_str().unwrap_or("")),
                        one_line(c["code"].as_str().unwrap_or(""))
                    ));
                }
            }
            "send" => {
                self.count += 1;
                let id = r["id"].as_str().unwrap_or("").to_owned();
                self.sent.insert(id.clone(), self.count);
                out(&format!("  message #{} queued", self.count));
                let early: Vec<(String, String)> = std::mem::take(&mut self.early);
                for (eid, state) in early {
                    if eid == id {
                        if state != "queued" {
                            out(&format!("  message #{} {}", self.count, state_text(&state)));
                        }
                    } else if self.early.len() < 64 {
                        self.early.push((eid, state));
                    }
                }
            }
            _ => out("ok"),
        }
        Ok(())
    }
}

/// Attach only to a daemon of this user: the socket, its directory and the
/// process at the other end must all be ours. Anything else could show a
/// stranger's code as "your code" and take the user's texts (issue 12).
fn trusted_daemon(path: &std::path::Path, stream: &UnixStream) -> Result<(), AppError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let me = nix::unistd::geteuid().as_raw();
    let refuse = |why: String| {
        Err(AppError::Message(format!(
            "the daemon socket {} {why}: not attaching (it could show another code as yours and read what you \
             type). Use your own daemon's socket, or no --socket",
            path.display()
        )))
    };
    let meta = std::fs::symlink_metadata(path)?;
    if meta.uid() != me {
        return refuse(format!("belongs to another user (uid {})", meta.uid()));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let d = std::fs::metadata(dir)?;
        if d.uid() != me || d.permissions().mode() & 0o022 != 0 {
            return refuse("is in a directory another user owns or may write to".to_owned());
        }
    }
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == me => Ok(()),
        Ok(cred) => refuse(format!("is served by another user (uid {})", cred.uid())),
        Err(e) => refuse(format!("does not say who serves it ({e})")),
    }
}

/// Run the chat.
pub async fn run(cli: &Cli) -> Result<(), AppError> {
    // Attach to a daemon if one answers; else run our own node.
    let attached = match app::socket_path(cli) {
        Ok(path) => match UnixStream::connect(&path).await {
            Ok(stream) => {
                trusted_daemon(&path, &stream)?;
                Some(stream)
            }
            Err(_) => None,
        },
        Err(_) => None,
    };
    match attached {
        Some(stream) => {
            out("attached to the running ferry daemon");
            let (r, w) = stream.into_split();
            session(BufReader::new(r), w, None).await
        }
        None => {
            let (handle, stop, task) = app::start(cli, app::endpoint_mode(cli)?)?;
            let (client_side, server_side) = tokio::io::duplex(1 << 16);
            let (sr, sw) = tokio::io::split(server_side);
            let server = tokio::spawn(rpc::serve(BufReader::new(sr), sw, handle.clone()));
            let (cr, cw) = tokio::io::split(client_side);
            let result = session(BufReader::new(cr), cw, Some(&handle)).await;
            let pending = crate::node::pending(&handle).await;
            if pending > 0 {
                out(&format!(
                    "{pending} sent message(s) not yet delivered are dropped now: the outbox is kept only while ferry runs \
                     (run `ferry daemon` to keep a node up)"
                ));
            }
            server.abort();
            let _ = stop.send(true);
            let _ = task.await;
            result
        }
    }
}

async fn session<R, W>(server: R, writer: W, own: Option<&crate::node::Handle>) -> Result<(), AppError>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut client = Client {
        writer,
        next_id: 0,
        waiting: HashMap::new(),
        to: None,
        sent: HashMap::new(),
        count: 0,
        to_block: None,
        to_pick: None,
        early: Vec::new(),
    };
    let _ = own;
    out("ferry chat: /help for commands");
    client.call("identity", json!({}), "me").await?;
    // Both are read by `next_line`, which loses nothing when the other
    // branch wins (`read_line` into a buffer that is cleared did). A typed
    // line is taken only when every call before it has its answer, so lines
    // that come together (pasted, piped) are handled in order: a text after
    // "/to bob" goes to bob.
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut server = server.lines();
    // How long typed lines wait for the answers before them: a daemon that
    // never answers must not freeze the chat (`/quit` still works).
    const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
    let mut waited_since: Option<tokio::time::Instant> = None;
    loop {
        if client.waiting.is_empty() {
            waited_since = None;
        } else if waited_since.is_none() {
            waited_since = Some(tokio::time::Instant::now());
        }
        let give_up = async {
            match waited_since {
                Some(t) => tokio::time::sleep_until(t + ANSWER_WAIT).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = give_up => {
                out(&format!(
                    "the daemon has not answered for {} s (busy, or stuck): going on without its answer; /quit leaves",
                    ANSWER_WAIT.as_secs()
                ));
                client.waiting.clear();
            }
            input = stdin.next_line(), if client.waiting.is_empty() => match input? {
                Some(l) => {
                    let l = l.trim();
                    if l.is_empty() { continue; }
                    if !client.command(l).await? { break; }
                }
                None => break,
            },
            line = server.next_line() => match line? {
                Some(line) => client.server_line(line.trim_end()).await?,
                None => {
                    out("the daemon went away");
                    break;
                }
            },
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_local_with_the_date_when_not_today() {
        let tz = jiff::tz::TimeZone::fixed(jiff::tz::offset(2));
        // 2026-12-05 12:30:00 UTC is 14:30 at UTC+2.
        let now = jiff::Timestamp::from_second(1_796_473_800).unwrap();
        assert_eq!(clock_in(1_796_473_800, now, &tz, false), "14:30");
        assert_eq!(clock_in(1_796_473_800 - 86_400, now, &tz, false), "Dec 04 14:30");
        assert_eq!(clock_in(1_796_473_800, now, &jiff::tz::TimeZone::UTC, true), "12:30 UTC");
        assert_eq!(clock_in(u64::MAX, now, &tz, false), "?");
    }

    #[test]
    fn sent_is_never_shown_as_a_bare_word() {
        assert_eq!(state_text("sent"), "handed to the mesh (not delivered yet)");
        assert_eq!(state_text("delivered"), "delivered");
        assert!(state_text("expired").starts_with("expired"));
        assert_eq!(state_text("x\u{1b}[2J"), one_line("x\u{1b}[2J"));
    }
}
