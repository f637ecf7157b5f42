//! A serial line between two processes, made of two pseudo-terminals: each
//! node opens one pty's slave (through a symlink the test controls, as a
//! udev name would be), and a thread here copies bytes between the two
//! masters, optionally spoiling them on the way (bursts of garbage, flipped
//! bits, stray delimiters). Dropping the wire closes both masters: to the
//! nodes the device has gone away, as when a dongle is unplugged.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::pty::openpty;
use nix::sys::termios;

/// How bytes are spoiled on the way, per chunk read from a side.
#[derive(Clone, Copy, Debug, Default)]
pub struct Noise {
    /// Chance (0..=1000 per mille) that a burst of 1–64 random bytes goes
    /// in before a chunk.
    pub garbage_permille: u32,
    /// Chance per mille that one random bit of a chunk is flipped.
    pub flip_permille: u32,
    /// Seed of the noise.
    pub seed: u64,
}

/// Counters of what the wire did.
#[derive(Debug, Default)]
pub struct WireStats {
    /// Bytes carried, both ways.
    pub bytes: AtomicU64,
    /// Garbage bursts put in.
    pub bursts: AtomicU64,
    /// Bits flipped.
    pub flips: AtomicU64,
}

/// A pty pair per side and the copying threads.
#[derive(Debug)]
pub struct Wire {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// What the wire did so far.
    pub stats: Arc<WireStats>,
    // The slaves stay open here too, so that a side that closes its device
    // and opens it again finds the pty still there.
    _slaves: [OwnedFd; 2],
}

fn slave_name(slave: &OwnedFd) -> PathBuf {
    nix::unistd::ttyname(slave.as_fd()).expect("the pty slave has a name")
}

/// Point `link` at `target`, replacing what it pointed at atomically.
pub fn point(link: &Path, target: &Path) {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).expect("make a symlink");
    std::fs::rename(&tmp, link).expect("move the symlink into place");
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn copy(from: OwnedFd, to: OwnedFd, noise: Noise, seed: u64, stop: Arc<AtomicBool>, stats: Arc<WireStats>) {
    let mut rng = Rng(seed | 1);
    let mut reader = File::from(from);
    let mut writer = File::from(to);
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(50u16)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(_) => break,
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => continue,
            Ok(n) => n,
            // EIO: no process has the slave open right now (a node between
            // closing and opening its device). Wait and read again.
            Err(_) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            }
        };
        let chunk = &mut buf[..n];
        if rng.below(1000) < u64::from(noise.flip_permille) {
            let bit = rng.below(n as u64 * 8);
            chunk[(bit / 8) as usize] ^= 1 << (bit % 8);
            stats.flips.fetch_add(1, Ordering::Relaxed);
        }
        if rng.below(1000) < u64::from(noise.garbage_permille) {
            let len = 1 + rng.below(64) as usize;
            let garbage: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let _ = writer.write_all(&garbage);
            stats.bursts.fetch_add(1, Ordering::Relaxed);
        }
        if writer.write_all(chunk).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl Wire {
    /// A new line; `links` are the two device paths (symlinks) the nodes use.
    pub fn new(links: [&Path; 2], noise: Noise) -> Wire {
        let a = openpty(None, None).expect("openpty");
        let b = openpty(None, None).expect("openpty");
        // Not inherited by the nodes this test spawns (openpty does not set
        // close-on-exec): a node holding a master would keep the line "up"
        // after the wire is dropped.
        for fd in [&a.master, &a.slave, &b.master, &b.slave] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).expect("set close-on-exec");
        }
        // Raw from the start: a cooked pty would echo what arrives before a
        // node has opened its side.
        for slave in [&a.slave, &b.slave] {
            let mut t = termios::tcgetattr(slave).expect("tcgetattr");
            termios::cfmakeraw(&mut t);
            termios::tcsetattr(slave, termios::SetArg::TCSANOW, &t).expect("tcsetattr");
        }
        point(links[0], &slave_name(&a.slave));
        point(links[1], &slave_name(&b.slave));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(WireStats::default());
        let dup = |fd: &OwnedFd| fd.try_clone().expect("dup a pty master");
        let mut threads = Vec::new();
        for (from, to, seed) in [(dup(&a.master), dup(&b.master), noise.seed), (b.master, a.master, !noise.seed)] {
            let (stop, stats) = (stop.clone(), stats.clone());
            threads.push(std::thread::spawn(move || copy(from, to, noise, seed, stop, stats)));
        }
        Wire { stop, threads, stats, _slaves: [a.slave, b.slave] }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
