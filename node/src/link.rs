//! Datagram links behind one small trait, so that the node runs the same
//! over UDP and over an in-memory network (for fast daemon tests). A link
//! names its peers by its own address type and says what it can carry
//! ([`LinkCaps`]). Serial ports are the node's other link kind (event
//! driven, `crate::serial`); every link of every kind is one entry of the
//! node's link table, keyed by kind and address.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use ferry_proto::router::LinkCaps;
use tokio::sync::mpsc;

use crate::node::UDP_CAPS;

/// Datagrams in one byte arena, each with its peer (of address type `A`).
#[derive(Debug)]
pub struct Datagrams<A = SocketAddr> {
    pub(crate) bytes: Vec<u8>,
    pub(crate) frames: Vec<(A, Range<usize>)>,
}

impl<A> Default for Datagrams<A> {
    fn default() -> Self {
        Datagrams { bytes: Vec::new(), frames: Vec::new() }
    }
}

impl<A: Copy> Datagrams<A> {
    /// Forget everything (keeping the memory).
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.frames.clear();
    }

    /// Room for `bytes` bytes without growing: an arena that never grows is
    /// never reallocated, so no copy of what it held is left in freed memory.
    pub fn with_capacity(bytes: usize) -> Self {
        Datagrams { bytes: Vec::with_capacity(bytes), frames: Vec::new() }
    }

    /// Wipe what it holds, then forget it: frames it carried leave no copy
    /// in this buffer (SPEC §8).
    pub fn wipe(&mut self) {
        // The arena stays allocated: a plain memset cannot be dropped.
        self.bytes.fill(0);
        self.clear();
    }

    /// Add one datagram.
    pub fn push(&mut self, peer: A, bytes: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        self.frames.push((peer, start..self.bytes.len()));
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Datagram `i`.
    pub fn get(&self, i: usize) -> Option<(A, &[u8])> {
        let (peer, r) = self.frames.get(i)?;
        Some((*peer, self.bytes.get(r.clone())?))
    }
}

/// A datagram link: one local address, datagrams to and from peers named
/// by address. Errors are the link's business (counted, never fatal).
pub trait Link: Send + Sync + 'static {
    /// How the link names a peer (a socket address; for BLE it would be a
    /// connection handle, because BLE addresses rotate).
    type Addr: Copy + Eq + Hash + Debug + Send + Sync + 'static;
    /// Receive buffers the link wants to keep between calls.
    type Bufs: Send;
    /// What a link of this kind carries (MTU, broadcast or not).
    fn caps(&self) -> LinkCaps;
    /// The local address peers reach us at.
    fn local_addr(&self) -> Self::Addr;
    /// Fresh receive buffers.
    fn bufs(&self) -> Self::Bufs;
    /// Wait for at least one datagram and append what came to `inbox`.
    fn recv<'a>(
        &'a self,
        bufs: &'a mut Self::Bufs,
        inbox: &'a mut Datagrams<Self::Addr>,
    ) -> impl Future<Output = ()> + Send + 'a;
    /// Send `out` (batched where the link can).
    fn send<'a>(
        &'a self,
        out: &'a Datagrams<Self::Addr>,
        scratch: &'a mut Vec<u8>,
    ) -> impl Future<Output = ()> + Send + 'a;
    /// Move to a new local address (a new random port), leaving the old
    /// one: peers that still send there are lost to this link until they
    /// greet the new address. Links that cannot say so.
    fn rebind(&mut self) -> std::io::Result<()> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}

impl Link for crate::udp::Udp {
    type Addr = SocketAddr;
    type Bufs = crate::udp::RecvBufs;
    fn caps(&self) -> LinkCaps {
        UDP_CAPS
    }
    fn local_addr(&self) -> SocketAddr {
        crate::udp::Udp::local_addr(self)
    }
    fn bufs(&self) -> Self::Bufs {
        self.recv_bufs()
    }
    fn recv<'a>(&'a self, bufs: &'a mut Self::Bufs, inbox: &'a mut Datagrams) -> impl Future<Output = ()> + Send + 'a {
        crate::udp::Udp::recv(self, bufs, move |from, bytes| inbox.push(from, bytes))
    }
    fn send<'a>(&'a self, out: &'a Datagrams, scratch: &'a mut Vec<u8>) -> impl Future<Output = ()> + Send + 'a {
        self.send_all(&out.bytes, &out.frames, scratch)
    }
    fn rebind(&mut self) -> std::io::Result<()> {
        // The same family, any address, a new random port.
        let any = match self.local_addr() {
            SocketAddr::V4(_) => SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0),
            SocketAddr::V6(_) => SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), 0),
        };
        *self = crate::udp::Udp::bind(Some(any))?;
        Ok(())
    }
}

type Wire = mpsc::Sender<(SocketAddr, Vec<u8>)>;

/// An in-memory network: links made from it reach each other by address.
/// Like UDP it is lossy when a receiver falls behind (its queue is bounded).
#[derive(Debug, Default)]
pub struct MemNet {
    peers: Mutex<HashMap<SocketAddr, Wire>>,
    next: AtomicU16,
}

/// One endpoint of a [`MemNet`].
#[derive(Debug)]
pub struct MemLink {
    addr: SocketAddr,
    net: Arc<MemNet>,
    rx: tokio::sync::Mutex<mpsc::Receiver<(SocketAddr, Vec<u8>)>>,
}

impl MemNet {
    /// A new, empty network.
    pub fn new() -> Arc<Self> {
        Arc::new(MemNet::default())
    }

    /// A new link with its own address.
    pub fn link(self: &Arc<Self>) -> MemLink {
        let port = self.next.fetch_add(1, Ordering::Relaxed).wrapping_add(1000);
        let addr = SocketAddr::new(Ipv4Addr::new(10, 0, 0, 1).into(), port);
        let (tx, rx) = mpsc::channel(4096);
        if let Ok(mut peers) = self.peers.lock() {
            peers.insert(addr, tx);
        }
        MemLink { addr, net: Arc::clone(self), rx: tokio::sync::Mutex::new(rx) }
    }
}

impl Drop for MemLink {
    fn drop(&mut self) {
        if let Ok(mut peers) = self.net.peers.lock() {
            peers.remove(&self.addr);
        }
    }
}

impl Link for MemLink {
    type Addr = SocketAddr;
    type Bufs = ();
    /// The same as UDP's: the in-memory network stands in for it.
    fn caps(&self) -> LinkCaps {
        UDP_CAPS
    }
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    fn bufs(&self) {}
    async fn recv(&self, _: &mut (), inbox: &mut Datagrams) {
        let mut rx = self.rx.lock().await;
        match rx.recv().await {
            Some((from, bytes)) => inbox.push(from, &bytes),
            None => std::future::pending::<()>().await,
        }
        while inbox.len() < 64 {
            match rx.try_recv() {
                Ok((from, bytes)) => inbox.push(from, &bytes),
                Err(_) => break,
            }
        }
    }
    fn send<'a>(&'a self, out: &'a Datagrams, _: &'a mut Vec<u8>) -> impl Future<Output = ()> + Send + 'a {
        let wires: Vec<(Option<Wire>, Vec<u8>)> = {
            let peers = self.net.peers.lock().ok();
            (0..out.len())
                .filter_map(|i| out.get(i))
                .map(|(to, b)| (peers.as_ref().and_then(|p| p.get(&to).cloned()), b.to_vec()))
                .collect()
        };
        let from = self.addr;
        async move {
            for (wire, bytes) in wires {
                // A full queue or an unknown address drops the datagram,
                // as UDP would.
                if let Some(w) = wire {
                    let _ = w.try_send((from, bytes));
                }
            }
        }
    }
}
