//! `ferry-mdns-flood`: a hostile neighbour for the mDNS tests (issue 12). It announces `--count` fake
//! `_ferry._udp` instances, pointing in turn at `--ports` ports from `--port` on `--addr` (the victim of
//! any reflection), and counts the datagrams that reach those ports, printing (on stderr) `received N from SRC` lines as they come and
//! `registered N` once every instance is announced.
//!
//! ferry-mdns-flood --count 1100 --addr 10.77.1.9 --port 40000 --ports 16

use std::collections::HashMap;
use std::net::{IpAddr, UdpSocket};
use std::time::Duration;

use mdns_sd::{ServiceDaemon, ServiceInfo};

fn arg(args: &[String], name: &str) -> String {
    let i = args.iter().position(|a| a == name).unwrap_or_else(|| panic!("{name} is required"));
    args.get(i + 1).cloned().unwrap_or_else(|| panic!("{name} needs a value"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count: usize = arg(&args, "--count").parse().expect("--count: a number");
    let addr: IpAddr = arg(&args, "--addr").parse().expect("--addr: an IP address");
    let port: u16 = arg(&args, "--port").parse().expect("--port: a port");
    let ports: u16 = arg(&args, "--ports").parse().expect("--ports: a number");
    let socks: Vec<UdpSocket> = (0..ports)
        .map(|i| {
            let s = UdpSocket::bind((addr, port + i)).expect("bind a victim's port");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let daemon = ServiceDaemon::new().expect("mDNS daemon");
    for i in 0..count {
        let info = ServiceInfo::new(
            "_ferry._udp.local.",
            &format!("fake-{i:05}"),
            &format!("fake-{i:05}.local."),
            addr,
            port + (i % usize::from(ports)) as u16,
            &[("v", "1")][..],
        )
        .expect("service info");
        // The daemon's command queue is bounded: wait for room.
        let mut info = Some(info);
        while let Some(i) = info.take() {
            match daemon.register(i.clone()) {
                Ok(()) => {}
                Err(mdns_sd::Error::Again) => {
                    std::thread::sleep(Duration::from_millis(20));
                    info = Some(i);
                }
                Err(e) => panic!("register: {e}"),
            }
        }
    }
    eprintln!("registered {count}");
    let mut seen: HashMap<IpAddr, usize> = HashMap::new();
    let mut buf = [0u8; 2048];
    loop {
        let mut idle = true;
        for sock in &socks {
            while let Ok((_, from)) = sock.recv_from(&mut buf) {
                idle = false;
                let n = seen.entry(from.ip()).or_default();
                *n += 1;
                eprintln!("received {n} from {}", from.ip());
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
