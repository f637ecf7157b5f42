//! The packet inspector: what a relay (or anyone on the LAN or the air) can
//! see of Ferry frames, field by field, printed by `proto`'s own decoder
//! ([`PrettyPrinter`]). Frames come as hex, as a file, or from a pcap or
//! pcapng capture (`tcpdump -w`), where the UDP payloads are inspected.
//!
//! Nothing here panics on input: bad hex, truncated captures and packets
//! that are not Ferry's each get a line that says what is wrong.

use std::fmt::Write as _;
use std::net::IpAddr;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use ferry_proto::wire::{Frame, Kind, PrettyPrinter, SizeClass, classify};
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};

/// The mDNS port: its datagrams are counted, not decoded.
const MDNS_PORT: u16 = 5353;

/// What went wrong with an input as a whole.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InspectError {
    /// Not hexadecimal.
    #[error("not hex: {0}")]
    BadHex(String),
    /// Not a pcap or pcapng file, or a broken one.
    #[error("not a readable capture: {0}")]
    BadCapture(String),
}

/// Parse hex: whitespace, `:` and `-` separators and a `0x` prefix are
/// allowed; an odd number of digits or any other character is an error.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, InspectError> {
    let t = text.trim();
    let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
    let digits: Vec<u8> = t.bytes().filter(|b| !b.is_ascii_whitespace() && *b != b':' && *b != b'-').collect();
    if let Some(bad) = digits.iter().find(|b| !b.is_ascii_hexdigit()) {
        return Err(InspectError::BadHex(format!("unexpected character {:?}", char::from(*bad))));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(InspectError::BadHex(format!("odd number of hex digits ({})", digits.len())));
    }
    // Every byte is an ASCII hex digit here, so each pair is valid.
    Ok(digits
        .chunks(2)
        .filter_map(|pair| std::str::from_utf8(pair).ok().and_then(|s| u8::from_str_radix(s, 16).ok()))
        .collect())
}

/// One frame, printed.
pub fn frame(bytes: &[u8]) -> String {
    PrettyPrinter(bytes).to_string()
}

/// One raw binary frame, printed.
pub fn raw(data: &[u8]) -> (String, Tally) {
    let mut tally = Tally::default();
    tally.count(data);
    (format!("{}\n", frame(data)), tally)
}

/// Whether `text` looks like hex frames (one per line) rather than binary.
pub fn looks_like_hex(data: &[u8]) -> bool {
    std::str::from_utf8(data).is_ok_and(|s| {
        s.lines().any(|l| !l.trim().is_empty())
            && s.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || parse_hex(l).is_ok())
    })
}

/// Hex frames, one per line (`#` starts a comment line): each printed, or
/// an error line for a line that is not hex.
pub fn hex_lines(text: &str) -> (String, Tally) {
    let mut out = String::new();
    let mut tally = Tally::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_hex(line) {
            Ok(bytes) => {
                tally.count(&bytes);
                let _ = writeln!(out, "line {}: {}", n + 1, frame(&bytes));
            }
            Err(e) => {
                tally.bad_input += 1;
                let _ = writeln!(out, "line {}: {e}", n + 1);
            }
        }
    }
    (out, tally)
}

/// Counts of what was seen.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Ferry frames by kind: contact, first contact, receipt, hello,
    /// summary, segment.
    pub frames: [u64; 6],
    /// Datagrams or inputs that are not Ferry frames.
    pub not_ferry: u64,
    /// mDNS datagrams (counted, not decoded).
    pub mdns: u64,
    /// Packets that are not UDP (or could not be sliced).
    pub other: u64,
    /// Input lines that were not hex.
    pub bad_input: u64,
}

impl Tally {
    fn count(&mut self, bytes: &[u8]) {
        let i = match (classify(bytes), Frame::parse(bytes)) {
            (Ok(Kind::Contact), Ok(_)) => 0,
            (Ok(Kind::FirstContact), Ok(_)) => 1,
            (Ok(Kind::Receipt), Ok(_)) => 2,
            (Ok(Kind::Hello), Ok(_)) => 3,
            (Ok(Kind::Summary), Ok(_)) => 4,
            (Ok(Kind::Segment), Ok(_)) => 5,
            _ => {
                self.not_ferry += 1;
                return;
            }
        };
        if let Some(c) = self.frames.get_mut(i) {
            *c += 1;
        }
    }

    /// One line: what was seen.
    pub fn line(&self) -> String {
        let [c, f, r, h, s, g] = self.frames;
        format!(
            "Ferry frames: {} (messages between contacts {c}, first contact {f}, receipts {r}, hellos {h}, \
             summaries {s}, segments {g}); not Ferry: {}; mDNS: {}; other packets: {}; bad input lines: {}",
            c + f + r + h + s + g,
            self.not_ferry,
            self.mdns,
            self.other,
            self.bad_input
        )
    }
}

/// The UDP datagram in a captured packet: (source, destination, payload).
fn udp_of(link: DataLink, data: &[u8]) -> Option<(IpAddr, u16, IpAddr, u16, &[u8])> {
    let sliced = match link {
        DataLink::ETHERNET => SlicedPacket::from_ethernet(data).ok()?,
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(data).ok()?,
        DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(data).ok()?,
        // `tcpdump -i any`: a 20-byte SLL2 header, then IP.
        DataLink::LINUX_SLL2 => SlicedPacket::from_ip(data.get(20..)?).ok()?,
        // BSD loopback: a 4-byte address family, then IP.
        DataLink::NULL | DataLink::LOOP => SlicedPacket::from_ip(data.get(4..)?).ok()?,
        _ => return None,
    };
    let (src, dst) = match sliced.net? {
        NetSlice::Ipv4(v4) => (IpAddr::V4(v4.header().source_addr()), IpAddr::V4(v4.header().destination_addr())),
        NetSlice::Ipv6(v6) => (IpAddr::V6(v6.header().source_addr()), IpAddr::V6(v6.header().destination_addr())),
        _ => return None,
    };
    match sliced.transport? {
        TransportSlice::Udp(u) => Some((src, u.source_port(), dst, u.destination_port(), u.payload())),
        _ => None,
    }
}

fn packet(out: &mut String, tally: &mut Tally, n: u64, secs: f64, link: DataLink, data: &[u8]) {
    let Some((src, sport, dst, dport, payload)) = udp_of(link, data) else {
        tally.other += 1;
        return;
    };
    if sport == MDNS_PORT || dport == MDNS_PORT {
        tally.mdns += 1;
        return;
    }
    let head = format!(
        "#{n} {secs:.6} {} -> {} UDP {} bytes",
        std::net::SocketAddr::new(src, sport),
        std::net::SocketAddr::new(dst, dport),
        payload.len()
    );
    if let Some(size) = gso_batch(payload) {
        // Captured on the sending host before segmentation: one datagram
        // per `size` bytes on the wire.
        let _ = writeln!(out, "{head}: a batch (GSO) of {} frames of {size} bytes", payload.len() / size);
        for (i, f) in payload.chunks(size).enumerate() {
            tally.count(f);
            let _ = writeln!(out, "  frame {}:\n{}", i + 1, indent(&indent(&frame(f))));
        }
        return;
    }
    tally.count(payload);
    let _ = writeln!(out, "{head}\n{}", indent(&frame(payload)));
}

/// The frame size, if `payload` is not one frame but several of one fixed
/// size back to back: a GSO send captured before segmentation (the node
/// batches equal-length frames to one peer).
fn gso_batch(payload: &[u8]) -> Option<usize> {
    if Frame::parse(payload).is_ok() {
        return None;
    }
    [ferry_proto::wire::RECEIPT_LEN, SizeClass::Small.frame_len(), SizeClass::Large.frame_len()]
        .into_iter()
        .filter(|&size| payload.len() > size && payload.len().is_multiple_of(size))
        .find(|&size| payload.chunks(size).all(|f| Frame::parse(f).is_ok()))
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

/// Every UDP payload of a pcap or pcapng capture, printed. A capture that
/// breaks off part-way keeps what came before and says where it broke.
pub fn capture(data: &[u8]) -> Result<(String, Tally), InspectError> {
    let mut out = String::new();
    let mut tally = Tally::default();
    let is_ng = data.get(..4) == Some(&[0x0a, 0x0d, 0x0d, 0x0a][..]);
    if is_ng {
        let mut reader = PcapNgReader::new(data).map_err(|e| InspectError::BadCapture(e.to_string()))?;
        let mut n = 0u64;
        while let Some(block) = reader.next_block() {
            let block = match block {
                Ok(b) => b,
                Err(e) => {
                    let _ = writeln!(out, "capture ends early after {n} packets: {e}");
                    break;
                }
            };
            let (iface, ts, bytes) = match block {
                Block::EnhancedPacket(p) => (p.interface_id, p.timestamp.as_secs_f64(), p.data.into_owned()),
                Block::SimplePacket(p) => (0, 0.0, p.data.into_owned()),
                _ => continue,
            };
            n += 1;
            let link = reader.interfaces().get(iface as usize).map(|i| i.linktype).unwrap_or(DataLink::ETHERNET);
            packet(&mut out, &mut tally, n, ts, link, &bytes);
        }
    } else {
        let mut reader = PcapReader::new(data).map_err(|e| InspectError::BadCapture(e.to_string()))?;
        let link = reader.header().datalink;
        let mut n = 0u64;
        while let Some(p) = reader.next_packet() {
            let p = match p {
                Ok(p) => p,
                Err(e) => {
                    let _ = writeln!(out, "capture ends early after {n} packets: {e}");
                    break;
                }
            };
            n += 1;
            packet(&mut out, &mut tally, n, p.timestamp.as_secs_f64(), link, &p.data);
        }
    }
    Ok((out, tally))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_forms() {
        assert_eq!(parse_hex("0x0a0B"), Ok(vec![10, 11]));
        assert_eq!(parse_hex("0a:0b-0c 0d"), Ok(vec![10, 11, 12, 13]));
        assert!(matches!(parse_hex("abc"), Err(InspectError::BadHex(_))));
        assert!(matches!(parse_hex("zz"), Err(InspectError::BadHex(_))));
        assert!(looks_like_hex(b"# comment\n0a0b\n\n0c0d\n"));
        assert!(!looks_like_hex(&[0xff, 0x00, 0x10]));
    }
}
