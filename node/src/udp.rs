//! The UDP link: one socket for everything, batched I/O through quinn-udp
//! (recvmmsg and GRO in, GSO out), and errors that are counted and ignored.
//!
//! By default the socket is bound to `[::]` with `IPV6_V6ONLY` off, so that
//! one random port serves IPv4 and IPv6 peers; on a host without IPv6 it is
//! `0.0.0.0`. Peers are always named by their plain address: IPv4-mapped
//! IPv6 addresses are turned back into IPv4 on receipt and mapped again on
//! send.

use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;

/// Datagrams read per batch.
pub const BATCH: usize = 16;
/// Largest datagram we expect (a large frame is 1200 bytes).
pub const MAX_DATAGRAM: usize = 1280;
/// The send scratch holds one GSO batch: at most 64 datagrams.
const SEND_SCRATCH: usize = 64 * MAX_DATAGRAM;

/// Counts of what went wrong, never fatal.
#[derive(Debug, Default)]
pub struct Errors {
    /// Send errors (ECONNREFUSED, ENETUNREACH, EMSGSIZE, ...).
    pub send: AtomicU64,
    /// Receive errors.
    pub recv: AtomicU64,
}

/// The node's UDP socket.
#[derive(Debug)]
pub struct Udp {
    sock: tokio::net::UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    v6: bool,
    /// Error counters.
    pub errors: Errors,
}

/// Buffers for one receive batch.
pub struct RecvBufs {
    bufs: Vec<Vec<u8>>,
    metas: [RecvMeta; BATCH],
}

impl std::fmt::Debug for RecvBufs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecvBufs")
    }
}

fn plain(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), a.port()),
            None => addr,
        },
        v4 => v4,
    }
}

impl Udp {
    /// Bind `listen`, or `[::]:0` (falling back to `0.0.0.0:0`).
    pub fn bind(listen: Option<SocketAddr>) -> io::Result<Self> {
        let sock = match listen {
            Some(addr) => Self::socket(addr)?,
            None => match Self::socket(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0)) {
                Ok(s) => s,
                Err(_) => Self::socket(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0))?,
            },
        };
        let local = sock.local_addr()?.as_socket().ok_or_else(|| io::Error::other("no local address"))?;
        let std_sock: std::net::UdpSocket = sock.into();
        let state = UdpSocketState::new((&std_sock).into())?;
        let sock = tokio::net::UdpSocket::from_std(std_sock)?;
        Ok(Udp { sock, state, local, v6: local.is_ipv6(), errors: Errors::default() })
    }

    fn socket(addr: SocketAddr) -> io::Result<Socket> {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            s.set_only_v6(false)?;
        }
        s.set_nonblocking(true)?;
        // Room for bursts (the kernel caps this at net.core.rmem_max); a
        // datagram dropped here is sent again by the next summary round.
        let _ = s.set_recv_buffer_size(4 << 20);
        let _ = s.set_send_buffer_size(4 << 20);
        s.bind(&addr.into())?;
        Ok(s)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Fresh receive buffers sized for this socket's GRO.
    pub fn recv_bufs(&self) -> RecvBufs {
        let size = (self.state.gro_segments().max(1) * MAX_DATAGRAM).min(64 * 1024);
        RecvBufs { bufs: (0..BATCH).map(|_| vec![0u8; size]).collect(), metas: [RecvMeta::default(); BATCH] }
    }

    /// Wait for datagrams and call `each(from, bytes)` for every one of the
    /// batch. Errors are counted and swallowed (an ICMP error from one peer
    /// must not stop the node).
    pub async fn recv(&self, bufs: &mut RecvBufs, mut each: impl FnMut(SocketAddr, &[u8])) {
        loop {
            if self.sock.readable().await.is_err() {
                self.errors.recv.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let mut iovs: Vec<IoSliceMut<'_>> = bufs.bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            // A batch shorter than BATCH drained the socket: report
            // WouldBlock to tokio so that it clears readiness now, instead
            // of one more recvmmsg that finds nothing. (tokio only clears
            // it if no new readiness event came in the meantime, so no
            // wake-up is lost.)
            let mut got = None;
            let res = self.sock.try_io(Interest::READABLE, || {
                let n = self.state.recv((&self.sock).into(), &mut iovs, &mut bufs.metas)?;
                got = Some(n);
                if n < BATCH { Err(io::ErrorKind::WouldBlock.into()) } else { Ok(n) }
            });
            match (res, got) {
                (_, Some(n)) => {
                    for (meta, buf) in bufs.metas.iter().zip(bufs.bufs.iter_mut()).take(n) {
                        let from = plain(meta.addr);
                        let stride = meta.stride.max(1);
                        let used = meta.len.min(buf.len());
                        for chunk in buf[..used].chunks(stride) {
                            each(from, chunk);
                        }
                        // `each` copied what it needs: no copy stays here.
                        buf[..used].fill(0);
                    }
                    return;
                }
                (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => continue,
                _ => {
                    self.errors.recv.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.sock.try_io(Interest::WRITABLE, || self.state.try_send((&self.sock).into(), transmit))
    }

    fn wire_addr(&self, to: SocketAddr) -> SocketAddr {
        match (self.v6, to) {
            (true, SocketAddr::V4(a)) => SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0).into(),
            _ => to,
        }
    }

    /// Send datagrams, batching runs of equal-length datagrams to the same
    /// peer into one GSO send. `frames` are (destination, range of `arena`). Errors
    /// are counted and ignored; a full socket buffer waits for room.
    pub async fn send_all(&self, arena: &[u8], frames: &[(SocketAddr, Range<usize>)], scratch: &mut Vec<u8>) {
        let max_segments = self.state.max_gso_segments().clamp(1, 64);
        // Never grown (so never reallocated with frames in it), wiped after.
        scratch.reserve(SEND_SCRATCH.saturating_sub(scratch.len()));
        self.send_batches(arena, frames, scratch, max_segments).await;
        scratch.fill(0);
        scratch.clear();
    }

    async fn send_batches(
        &self,
        arena: &[u8],
        frames: &[(SocketAddr, Range<usize>)],
        scratch: &mut Vec<u8>,
        max_segments: usize,
    ) {
        let bytes = |r: &Range<usize>| arena.get(r.clone()).unwrap_or(&[]);
        let mut i = 0;
        while let Some((dest, r)) = frames.get(i) {
            let dest = *dest;
            let first = bytes(r);
            let len = first.len();
            scratch.fill(0);
            scratch.clear();
            scratch.extend_from_slice(first);
            let mut n = 1;
            i += 1;
            while n < max_segments {
                match frames.get(i) {
                    Some((d, r)) if *d == dest && bytes(r).len() == len => {
                        scratch.extend_from_slice(bytes(r));
                        i += 1;
                        n += 1;
                    }
                    _ => break,
                }
            }
            let transmit = Transmit {
                destination: self.wire_addr(dest),
                ecn: None,
                contents: scratch,
                segment_size: (n > 1).then_some(len),
                src_ip: None,
            };
            loop {
                if self.sock.writable().await.is_err() {
                    self.errors.send.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                match self.try_send(&transmit) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(_) => {
                        // ECONNREFUSED, ENETUNREACH, EMSGSIZE...: counted, never fatal.
                        self.errors.send.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batched_send_and_receive_on_loopback() {
        let a = Udp::bind(Some("127.0.0.1:0".parse().unwrap())).unwrap();
        let b = Udp::bind(Some("127.0.0.1:0".parse().unwrap())).unwrap();
        let frames: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 240]).collect();
        let arena: Vec<u8> = frames.concat();
        let ranges: Vec<_> = (0..10).map(|i| (b.local_addr(), i * 240..(i + 1) * 240)).collect();
        let mut scratch = Vec::new();
        a.send_all(&arena, &ranges, &mut scratch).await;
        let mut got = Vec::new();
        let mut bufs = b.recv_bufs();
        while got.len() < 10 {
            b.recv(&mut bufs, |from, bytes| {
                assert_eq!(from, a.local_addr());
                got.push(bytes.to_vec());
            })
            .await;
        }
        assert_eq!(got, frames);
    }

    #[tokio::test]
    async fn errors_are_counted_not_fatal() {
        let a = Udp::bind(Some("127.0.0.1:0".parse().unwrap())).unwrap();
        // Nothing listens there: ICMP port unreachable comes back.
        let dead: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut scratch = Vec::new();
        for _ in 0..3 {
            a.send_all(&[1u8; 33], &[(dead, 0..33)], &mut scratch).await;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Still usable.
        let b = Udp::bind(Some("127.0.0.1:0".parse().unwrap())).unwrap();
        a.send_all(&[2u8; 33], &[(b.local_addr(), 0..33)], &mut scratch).await;
        let mut bufs = b.recv_bufs();
        let mut n = 0;
        b.recv(&mut bufs, |_, _| n += 1).await;
        assert_eq!(n, 1);
    }

    #[test]
    fn mapped_addresses_are_plain() {
        let m: SocketAddr = "[::ffff:10.0.0.1]:5".parse().unwrap();
        assert_eq!(plain(m), "10.0.0.1:5".parse::<SocketAddr>().unwrap());
    }
}
