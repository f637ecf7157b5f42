//! The packet inspector against the published vectors (SPEC §9) carried in
//! a real pcap, plus junk: every frame is recognised, everything else is
//! counted, and nothing panics.

use std::process::Command;

use etherparse::PacketBuilder;
use ferry_tools::inspect::{self, InspectError};
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use proptest::prelude::*;

/// The hex of a named entry of the vectors file (continuation lines are
/// indented).
fn vector(name: &str) -> Vec<u8> {
    let text = include_str!("../../proto/tests/vectors/ferry-v1.txt");
    let mut hex = String::new();
    let mut inside = false;
    for line in text.lines() {
        if inside {
            if line.starts_with(' ') {
                hex.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some(rest) = line.strip_prefix(name)
            && rest.starts_with("  ")
        {
            hex.push_str(rest.trim());
            inside = true;
        }
    }
    inspect::parse_hex(&hex).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn first_contact() -> Vec<u8> {
    // The first "frame" entry is the first-contact message.
    vector("frame")
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(sport, dport);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

fn pcap(packets: &[Vec<u8>]) -> Vec<u8> {
    let header = PcapHeader { datalink: DataLink::ETHERNET, ..Default::default() };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for (i, p) in packets.iter().enumerate() {
        let ts = std::time::Duration::from_millis(i as u64 * 10);
        w.write_packet(&PcapPacket::new(ts, p.len() as u32, p)).unwrap();
    }
    w.into_writer()
}

#[test]
fn vectors_in_a_capture_are_decoded_and_the_rest_counted() {
    let tcp = {
        let b = PacketBuilder::ethernet2([2; 6], [3; 6]).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(1, 2, 3, 4);
        let mut out = Vec::new();
        b.write(&mut out, b"not udp").unwrap();
        out
    };
    let packets = vec![
        udp(40000, 40001, &first_contact()),
        udp(40000, 40001, &vector("receipt")),
        udp(40000, 40001, &vector("hello")),
        udp(40000, 40001, &vector("summary")),
        udp(40000, 40001, &vector("receipt segment 1")),
        udp(5353, 5353, b"\x00\x00\x84\x00 an mDNS answer"),
        udp(40000, 40001, b"\xff\xffjunk that is not a frame"),
        tcp,
    ];
    let (out, tally) = inspect::capture(&pcap(&packets)).unwrap();
    assert_eq!(tally.frames, [0, 1, 1, 1, 1, 1], "{out}");
    assert_eq!((tally.not_ferry, tally.mdns, tally.other), (1, 1, 1), "{out}");
    assert!(out.contains("message (first contact)"), "{out}");
    assert!(out.contains("a2a68fb69c93e7352d5368cca51d0dd2 (valid)"), "{out}");
    assert!(out.contains("receipt, 33 bytes"), "{out}");
    assert!(out.contains("not a Ferry frame"), "{out}");
    assert!(out.contains("10.0.0.1:40000 -> 10.0.0.2:40001"), "{out}");
    assert!(!out.contains("an mDNS answer"));
}

/// Captured on the sender before segmentation, a GSO send is one UDP
/// payload holding several equal-length frames: each is decoded.
#[test]
fn a_gso_batch_is_split_into_its_frames() {
    let mut batch = vector("receipt");
    batch.extend(vector("receipt"));
    batch.extend(vector("hello"));
    let fc = first_contact();
    let two = [fc.clone(), fc].concat();
    let (out, tally) = inspect::capture(&pcap(&[udp(1, 2, &batch), udp(1, 2, &two)])).unwrap();
    assert_eq!(tally.frames, [0, 2, 2, 1, 0, 0], "{out}");
    assert_eq!(tally.not_ferry, 0);
    assert!(out.contains("a batch (GSO) of 3 frames of 33 bytes"), "{out}");
    // Junk that is a multiple of 33 bytes stays junk.
    let (_, tally) = inspect::capture(&pcap(&[udp(1, 2, &[0xee; 66])])).unwrap();
    assert_eq!(tally.not_ferry, 1);
}

#[test]
fn a_truncated_capture_keeps_what_came_before() {
    let mut data = pcap(&[udp(1, 2, &vector("receipt")), udp(1, 2, &vector("hello"))]);
    data.truncate(data.len() - 10);
    let (out, tally) = inspect::capture(&data).unwrap();
    assert_eq!(tally.frames[2], 1);
    assert!(out.contains("capture ends early after 1 packets"), "{out}");
}

#[test]
fn not_a_capture_is_a_clear_error() {
    assert!(matches!(inspect::capture(b"hello"), Err(InspectError::BadCapture(_))));
    assert!(matches!(inspect::capture(&[]), Err(InspectError::BadCapture(_))));
}

#[test]
fn a_flipped_bit_shows_as_an_invalid_id() {
    let mut f = first_contact();
    let last = f.len() - 1;
    f[last] ^= 1;
    let out = inspect::frame(&f);
    assert!(out.contains("INVALID"), "{out}");
}

#[test]
fn the_command_line() {
    let bin = env!("CARGO_BIN_EXE_ferry-inspect");
    let hex: String = vector("receipt").iter().map(|b| format!("{b:02x}")).collect();
    let ok = Command::new(bin).arg(&hex).output().unwrap();
    assert!(ok.status.success());
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(stdout.contains("receipt, 33 bytes") && stdout.contains("receipts 1"), "{stdout}");

    let bad = Command::new(bin).arg("zz").output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("not hex"));

    let missing = Command::new(bin).args(["--pcap", "/nonexistent/capture.pcap"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/capture.pcap"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cap.pcap");
    std::fs::write(&path, pcap(&[udp(1, 2, &first_contact())])).unwrap();
    let cap = Command::new(bin).arg("--pcap").arg(&path).output().unwrap();
    assert!(cap.status.success());
    assert!(String::from_utf8_lossy(&cap.stdout).contains("first contact 1"));

    let usage = Command::new(bin).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

proptest! {
    #[test]
    fn random_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = inspect::capture(&data);
        let _ = inspect::frame(&data);
        let _ = inspect::hex_lines(&String::from_utf8_lossy(&data));
        // A valid header followed by random packet bytes.
        let mut cap = pcap(&[]);
        cap.extend_from_slice(&data);
        let _ = inspect::capture(&cap);
    }

    #[test]
    fn random_udp_payloads_are_reported_not_fatal(payload in proptest::collection::vec(any::<u8>(), 0..1300)) {
        let (_, tally) = inspect::capture(&pcap(&[udp(9, 9, &payload)])).unwrap();
        prop_assert_eq!(tally.frames.iter().sum::<u64>() + tally.not_ferry, 1);
    }
}
