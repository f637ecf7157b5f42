//! Serial links: a tty (USB CDC-ACM dongle, UART, pty) as one more link of
//! the node's router (`--serial PATH[:BAUD]`, SPEC §10).
//!
//! Each port runs in a task of its own: it opens the device (raw mode, the
//! given baud rate, an exclusive `flock`), reads bytes through the COBS/CRC
//! deframer into a [`Session`] (link hellos and credits), and hands the
//! Ferry frames to the node task as [`PortEvent`]s. The node pulls frames for
//! the port from the router only while the port's queue has room, and the
//! port writes them only while the peer has granted credit: a slow peer never
//! makes anything grow. When the device goes away (unplugged, the other end
//! closed) the port reports `Down` and tries to open it again every 2 s,
//! saying once why it cannot; the node goes on with its other links.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use ferry_proto::Instant;
use ferry_proto::link::serial::{self, MaxDeframer};
use ferry_proto::link::{LinkEvent, MAX_LINK_FRAME, Session, SessionConfig, SessionStats};
use nix::sys::termios::{self, BaudRate, SetArg};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::time::Instant as TokioInstant;
use zeroize::Zeroize;

/// Ferry frames the node may hand a port ahead of its line: the port takes
/// them as credit allows, and the node pulls more when told `Ready`.
pub const PORT_QUEUE: usize = 4;
/// Type-0 frames this side lets the peer send before it has handled them.
const WINDOW: u16 = 8;
/// How often a missing or busy device is tried again.
const REOPEN: StdDuration = StdDuration::from_secs(2);

/// One `--serial` argument: a device and its baud rate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialSpec {
    /// The device (`/dev/ttyACM0`, a pty, a symlink to one).
    pub path: PathBuf,
    /// Line rate; ignored by USB CDC-ACM and ptys, needed by UARTs.
    pub baud: u32,
}

/// The baud rates `--serial PATH:BAUD` accepts.
const BAUDS: [(u32, BaudRate); 12] = [
    (9_600, BaudRate::B9600),
    (19_200, BaudRate::B19200),
    (38_400, BaudRate::B38400),
    (57_600, BaudRate::B57600),
    (115_200, BaudRate::B115200),
    (230_400, BaudRate::B230400),
    (460_800, BaudRate::B460800),
    (921_600, BaudRate::B921600),
    (1_000_000, BaudRate::B1000000),
    (2_000_000, BaudRate::B2000000),
    (3_000_000, BaudRate::B3000000),
    (4_000_000, BaudRate::B4000000),
];

/// The default line rate.
pub const DEFAULT_BAUD: u32 = 115_200;

impl std::str::FromStr for SerialSpec {
    type Err = String;

    /// `PATH` or `PATH:BAUD` (the suffix after the last `:` is a baud rate
    /// only if it is all digits).
    fn from_str(s: &str) -> Result<Self, String> {
        let (path, baud) = match s.rsplit_once(':') {
            Some((p, b)) if !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()) => {
                let baud: u32 = b.parse().map_err(|_| format!("baud rate {b} is too large"))?;
                (p, baud)
            }
            _ => (s, DEFAULT_BAUD),
        };
        if path.is_empty() {
            return Err("empty device path".to_owned());
        }
        if !BAUDS.iter().any(|(b, _)| *b == baud) {
            let known: Vec<String> = BAUDS.iter().map(|(b, _)| b.to_string()).collect();
            return Err(format!("unsupported baud rate {baud} (one of {})", known.join(", ")));
        }
        Ok(SerialSpec { path: PathBuf::from(path), baud })
    }
}

/// What a port tells the node.
#[derive(Debug)]
pub enum PortEvent {
    /// The link session is up: bring the router's link up with this MTU.
    Up {
        /// Index of the port (order of `--serial`).
        port: usize,
        /// The peer's MTU.
        mtu: u16,
    },
    /// The session restarted or the device went away: take the link down.
    Down {
        /// Index of the port.
        port: usize,
    },
    /// A Ferry frame from the peer.
    Frame {
        /// Index of the port.
        port: usize,
        /// The frame.
        bytes: Vec<u8>,
    },
    /// The port's queue has room again: pull frames for it.
    Ready {
        /// Index of the port.
        port: usize,
    },
}

/// What `peers` and `stats` say about a port.
#[derive(Clone, Debug, Default)]
pub struct PortStatus {
    /// The device is open.
    pub open: bool,
    /// Why it is not (the last error), if it is not.
    pub problem: Option<String>,
    /// Times the device was opened.
    pub opens: u64,
    /// Link frames read with a good CRC.
    pub frames_in: u64,
    /// Runs between delimiters dropped (noise, bad CRC, overlong).
    pub dropped: u64,
    /// Of those, CRC mismatches.
    pub crc_errors: u64,
    /// Link frames refused by the link-frame parser.
    pub malformed: u64,
    /// Ferry frames written.
    pub frames_out: u64,
    /// The current session's counters.
    pub session: SessionStats,
}

/// The node's side of a port.
#[derive(Debug)]
pub struct Port {
    /// The `--serial` argument.
    pub spec: SerialSpec,
    /// Ferry frames to send (bounded: [`PORT_QUEUE`]).
    pub tx: mpsc::Sender<Vec<u8>>,
    /// Shared counters.
    pub status: Arc<Mutex<PortStatus>>,
}

/// Start the task of port `index`.
pub fn spawn(index: usize, spec: SerialSpec, events: mpsc::Sender<PortEvent>) -> Port {
    let (tx, rx) = mpsc::channel(PORT_QUEUE);
    let status = Arc::new(Mutex::new(PortStatus::default()));
    tokio::spawn(run(index, spec.clone(), rx, events, status.clone()));
    Port { spec, tx, status }
}

fn set_status(status: &Mutex<PortStatus>, f: impl FnOnce(&mut PortStatus)) {
    if let Ok(mut s) = status.lock() {
        f(&mut s);
    }
}

/// Open the device: read/write, not our controlling terminal, non-blocking,
/// an exclusive lock (another Ferry or a terminal program that locks it means
/// "busy"), raw mode at the baud rate.
fn open(spec: &SerialSpec) -> Result<(File, nix::fcntl::Flock<File>), String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(&spec.path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "no such device (not plugged in?)".to_owned(),
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (add yourself to the group that owns it, often `dialout`)".to_owned()
            }
            _ => e.to_string(),
        })?;
    // An exclusive advisory lock, on a duplicate of the descriptor (the lock
    // belongs to the open file, so it holds while the port is open and goes
    // when the returned guard does).
    let clone = file.try_clone().map_err(|e| e.to_string())?;
    let lock = nix::fcntl::Flock::lock(clone, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| format!("busy: another program holds it ({e})"))?;
    let mut t = termios::tcgetattr(&file).map_err(|e| format!("not a terminal device: {e}"))?;
    termios::cfmakeraw(&mut t);
    let rate = BAUDS.iter().find(|(b, _)| *b == spec.baud).map_or(BaudRate::B115200, |(_, r)| *r);
    termios::cfsetspeed(&mut t, rate).map_err(|e| format!("cannot set {} baud: {e}", spec.baud))?;
    termios::tcsetattr(&file, SetArg::TCSANOW, &t).map_err(|e| format!("cannot set raw mode: {e}"))?;
    Ok((file, lock))
}

async fn run(
    index: usize,
    spec: SerialSpec,
    mut rx: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Sender<PortEvent>,
    status: Arc<Mutex<PortStatus>>,
) {
    let mut rng: rand::rngs::StdRng = rand::make_rng();
    let shown = spec.path.display().to_string();
    let mut last_problem: Option<String> = None;
    loop {
        match open(&spec) {
            Ok((file, _lock)) => {
                tracing::info!("serial {shown}: open at {} baud", spec.baud);
                last_problem = None;
                set_status(&status, |s| {
                    s.open = true;
                    s.problem = None;
                    s.opens = s.opens.saturating_add(1);
                });
                let why = drive(index, file, &mut rx, &events, &status, &mut rng).await;
                set_status(&status, |s| {
                    s.open = false;
                    s.problem = Some(why.clone());
                });
                if events.is_closed() {
                    return;
                }
                tracing::warn!("serial {shown}: {why}; trying to open it again every {} s", REOPEN.as_secs());
            }
            Err(problem) => {
                if last_problem.as_ref() != Some(&problem) {
                    tracing::warn!(
                        "serial {shown}: {problem}; trying again every {} s (the node goes on with its other links)",
                        REOPEN.as_secs()
                    );
                }
                set_status(&status, |s| s.problem = Some(problem.clone()));
                last_problem = Some(problem);
            }
        }
        // Frames for a closed port are dropped (the router offers them
        // again in a later summary round); nothing queues up meanwhile.
        let deadline = TokioInstant::now() + REOPEN;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                f = rx.recv() => if f.is_none() { return },
            }
        }
        if events.is_closed() {
            return;
        }
    }
}

/// Most bytes queued for the line at once: what one fill of the queue puts
/// there (control frames, then Ferry frames while credit lasts), a few large
/// frames' worth.
const OUT_HIGH: usize = 8 * 1024;

/// Run one opened device until it fails; returns why.
///
/// One loop serves the line both ways: bytes for it wait in `out` and go as
/// the device takes them, and reading never stops meanwhile. (A driver that
/// blocked in a write while the peer blocked in its own write would
/// deadlock on a line with small buffers, such as a pty.)
async fn drive(
    index: usize,
    file: File,
    rx: &mut mpsc::Receiver<Vec<u8>>,
    events: &mpsc::Sender<PortEvent>,
    status: &Mutex<PortStatus>,
    rng: &mut rand::rngs::StdRng,
) -> String {
    // `AsyncFd::new` is deprecated because a `T: AsRawFd` could close its fd
    // while registered; here `T` is an owned `File` that lives exactly as long
    // as the registration, which is the sound case (the replacement,
    // `register`, is `unsafe`, and this crate forbids unsafe code).
    #[allow(deprecated)]
    let fd = match AsyncFd::new(file) {
        Ok(fd) => fd,
        Err(e) => return format!("cannot watch the device: {e}"),
    };
    let start = TokioInstant::now();
    let now = || Instant::from_millis(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX));
    let mut session = Session::new(now(), rng, SessionConfig { mtu: MAX_LINK_FRAME as u16 - 2, window: WINDOW });
    let mut deframer = Box::new(MaxDeframer::new());
    let mut link_buf = vec![0u8; MAX_LINK_FRAME];
    let mut wire = vec![0u8; serial::encoded_len(MAX_LINK_FRAME)];
    let mut rbuf = vec![0u8; 4096];
    let mut out: Vec<u8> = Vec::with_capacity(OUT_HIGH + wire.len());
    let mut out_pos = 0;
    let mut pending: Option<Vec<u8>> = None;
    let mut up = false;
    let why = 'line: loop {
        // Fill the line's queue: hellos and grants first, then the router's
        // frames while credit lasts.
        if out_pos == out.len() {
            // Written: no copy stays here (it never grows past its first
            // capacity, so it is never reallocated either).
            out.zeroize();
            out_pos = 0;
        }
        let mut took = false;
        while out.len() < OUT_HIGH {
            let n = match session.poll_transmit(&mut link_buf) {
                Ok(Some(n)) => n,
                Ok(None) => {
                    if !session.may_send() {
                        break;
                    }
                    let mut frame = match pending.take() {
                        Some(f) => f,
                        None => match rx.try_recv() {
                            Ok(f) => f,
                            Err(_) => break,
                        },
                    };
                    took = true;
                    let sent = session.send_frame(now(), &frame, &mut link_buf);
                    frame.zeroize();
                    match sent {
                        Ok(n) => {
                            set_status(status, |s| s.frames_out = s.frames_out.saturating_add(1));
                            n
                        }
                        // Too long for the peer: dropped (a summary round
                        // offers it again, segmented to the new MTU).
                        Err(e) => {
                            tracing::debug!("serial: a frame was not sent: {e}");
                            continue;
                        }
                    }
                }
                Err(e) => break 'line format!("link frame: {e}"),
            };
            let encoded = serial::encode(link_buf.get(..n).unwrap_or_default(), &mut wire);
            link_buf.as_mut_slice().zeroize();
            match encoded {
                Ok(w) => out.extend_from_slice(wire.get(..w).unwrap_or_default()),
                Err(e) => break 'line format!("framing: {e}"),
            }
            wire.as_mut_slice().zeroize();
        }
        if took {
            // Room in the queue again: let the node pull more.
            let _ = events.try_send(PortEvent::Ready { port: index });
        }
        while let Some(ev) = session.poll_event() {
            let ev = match ev {
                LinkEvent::Up { peer_mtu } => {
                    up = true;
                    PortEvent::Up { port: index, mtu: peer_mtu }
                }
                LinkEvent::Down => {
                    up = false;
                    PortEvent::Down { port: index }
                }
            };
            if events.send(ev).await.is_err() {
                return "the node stopped".to_owned();
            }
        }
        set_status(status, |s| s.session = session.stats());
        let wake = session.poll_timeout().map(|t| start + StdDuration::from_millis(t.millis()));
        let writing = out_pos < out.len();
        tokio::select! {
            r = fd.readable() => {
                let mut guard = match r {
                    Ok(g) => g,
                    Err(e) => break e.to_string(),
                };
                match guard.try_io(|inner| inner.get_ref().read(&mut rbuf)) {
                    Ok(Ok(0)) => break "the other end closed the line".to_owned(),
                    Ok(Ok(n)) => {
                        let mut input = rbuf.get(..n).unwrap_or_default();
                        while let Some(run) = deframer.feed(&mut input) {
                            let Ok(bytes) = run else { continue };
                            match session.handle_bytes(now(), bytes) {
                                Ok(Some(frame)) => {
                                    let ev = PortEvent::Frame { port: index, bytes: frame.to_vec() };
                                    if events.send(ev).await.is_err() {
                                        return "the node stopped".to_owned();
                                    }
                                    session.release(1);
                                }
                                Ok(None) => {}
                                Err(_) => set_status(status, |s| s.malformed = s.malformed.saturating_add(1)),
                            }
                        }
                        if let Some(read) = rbuf.get_mut(..n) {
                            read.zeroize();
                        }
                        let d = deframer.stats();
                        set_status(status, |s| {
                            s.frames_in = d.frames;
                            s.dropped = d.dropped;
                            s.crc_errors = d.crc_errors;
                        });
                    }
                    // A tty whose other end went away reads EIO.
                    Ok(Err(e)) => break e.to_string(),
                    Err(_would_block) => {}
                }
            }
            w = fd.writable(), if writing => {
                let mut guard = match w {
                    Ok(g) => g,
                    Err(e) => break e.to_string(),
                };
                match guard.try_io(|inner| inner.get_ref().write(out.get(out_pos..).unwrap_or_default())) {
                    Ok(Ok(0)) => break "the device took no bytes".to_owned(),
                    Ok(Ok(n)) => out_pos = out_pos.saturating_add(n).min(out.len()),
                    Ok(Err(e)) => break e.to_string(),
                    Err(_would_block) => {}
                }
            }
            f = rx.recv(), if pending.is_none() => match f {
                Some(f) => pending = Some(f),
                None => return "the node stopped".to_owned(),
            },
            () = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => session.handle_timeout(now(), rng),
        }
    };
    // Forget what the deframer and the buffers held.
    deframer.reset();
    out.zeroize();
    if let Some(f) = pending.as_mut() {
        f.zeroize();
    }
    finish(index, up, events, why).await
}

async fn finish(index: usize, up: bool, events: &mpsc::Sender<PortEvent>, why: String) -> String {
    if up {
        let _ = events.send(PortEvent::Down { port: index }).await;
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_specs_parse() {
        let s: SerialSpec = "/dev/ttyACM0".parse().unwrap();
        assert_eq!(s, SerialSpec { path: "/dev/ttyACM0".into(), baud: DEFAULT_BAUD });
        let s: SerialSpec = "/dev/ttyUSB1:921600".parse().unwrap();
        assert_eq!(s, SerialSpec { path: "/dev/ttyUSB1".into(), baud: 921_600 });
        // A colon in the path that is not followed by digits stays in it.
        let s: SerialSpec = "/dev/serial/by-id/usb-Nordic:x".parse().unwrap();
        assert_eq!(s.path, PathBuf::from("/dev/serial/by-id/usb-Nordic:x"));
        assert!("/dev/ttyS0:12345".parse::<SerialSpec>().unwrap_err().contains("unsupported baud rate"));
        assert!(":115200".parse::<SerialSpec>().is_err());
        assert!("/dev/ttyS0:99999999999".parse::<SerialSpec>().is_err());
    }
}
