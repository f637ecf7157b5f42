//! Deterministic multi-node tests: real routers and endpoints wired in
//! memory by `ferry_proto::testing::Net` (a virtual clock, a seeded RNG,
//! latency per link). Every run of a test is the same run.

use ferry_proto::endpoint::{ContactState, DeliveryState, Event, MAX_TEXT, SendError};
use ferry_proto::envelope::Identity;
use ferry_proto::router::{Config, FrameError, LinkCaps, LinkId, Outcome, Router};
use ferry_proto::testing::{Net, TestEndpoint as Ep, TestNode, TestRouter, UDP, key};
use ferry_proto::wire::{
    self, Frame, HelloRepr, Kind, MessageFrame, MessageId, ReceiptRepr, SizeClass, SummaryRepr, WireError,
};
use ferry_proto::{Duration, Instant, Node};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn two_contacts_talk_both_ways_with_receipts() {
    let mut net = Net::new(1);
    let (a, b, pa, pb) = net.two_contacts();
    net.connect(a, b);
    let m1 = net.send(a, b, "hello from a");
    net.run_for(secs(5));
    assert_eq!(net.received(b), vec![(pa, true, "hello from a".to_owned())]);
    assert_eq!(net.states(a, m1), vec![DeliveryState::Queued, DeliveryState::Sent, DeliveryState::Delivered]);
    // The reply and the next messages use the tagged (contact) path once
    // each side has heard from the other.
    let m2 = net.send(b, a, "hi a");
    net.run_for(secs(5));
    assert_eq!(net.received(a), vec![(pb, true, "hi a".to_owned())]);
    assert_eq!(net.states(b, m2).last(), Some(&DeliveryState::Delivered));
    let before = net.captured.len();
    let m3 = net.send(a, b, "now tagged");
    net.run_for(secs(5));
    assert!(net.captured[before..].iter().any(|f| wire::classify(f) == Ok(Kind::Contact)), "a has heard b: tags");
    assert_eq!(net.states(a, m3).last(), Some(&DeliveryState::Delivered));
    assert_eq!(net.received(b).len(), 2);
    // Delivered messages are gone from the routers.
    assert_eq!(net.router(a).held(), 0);
    assert_eq!(net.router(b).held(), 0);
}

#[test]
fn receipts_wait_50_to_500_ms_and_leave_together_on_a_grid() {
    let mut net = Net::new(7);
    let (a, b, _, _) = net.two_contacts();
    net.connect(a, b);
    let first = net.now;
    // 16 messages (the test endpoint's outbox), 3 ms apart.
    for i in 0..16 {
        net.send(a, b, &format!("m{i}"));
        net.run_for(Duration::from_millis(3));
    }
    let last = net.now;
    net.run_for(secs(5));
    assert_eq!(net.received(b).len(), 16);
    let from_b: Vec<Instant> = net.receipts_sent.iter().filter(|r| r.1 == b).map(|r| r.0).collect();
    assert_eq!(from_b.len(), 16, "one receipt per message");
    for t in &from_b {
        assert_eq!(t.millis() % ferry_proto::endpoint::RECEIPT_GRID_MS, 0, "on the grid");
    }
    // Wire latency is 5 ms each way: arrival is 5 ms after sending.
    assert!(from_b.iter().min().unwrap().millis() >= first.millis() + 5 + 50);
    assert!(from_b.iter().max().unwrap().millis() <= last.millis() + 5 + 500);
    let mut distinct = from_b.clone();
    distinct.dedup();
    assert!(distinct.len() < from_b.len(), "receipts due in the same 25 ms leave together");
}

#[test]
fn line_of_eight_with_a_ble_sized_hop() {
    let mut net = Net::new(2);
    let a = net.endpoint();
    let relays: Vec<usize> = (0..6).map(|_| net.relay(Config::DEFAULT)).collect();
    let h = net.endpoint();
    let chain: Vec<usize> = std::iter::once(a).chain(relays.iter().copied()).chain(std::iter::once(h)).collect();
    for (i, w) in chain.windows(2).enumerate() {
        // One hop is BLE-like: 20-byte MTU, small frames only.
        let caps = if i == 3 { LinkCaps { mtu: 20, broadcast: false, max_class: SizeClass::Small } } else { UDP };
        net.connect_with(w[0], w[1], caps);
    }
    let pa = net.pk(a);
    let id = net.send(a, h, "across eight nodes");
    net.run_for(secs(30));
    assert_eq!(net.received(h), vec![(pa, false, "across eight nodes".to_owned())]);
    assert_eq!(net.states(a, id).last(), Some(&DeliveryState::Delivered));
    for r in &relays {
        assert_eq!(net.router(*r).held(), 0, "relay {r} dropped its copy after the receipt");
    }
}

#[test]
fn partition_that_heals() {
    let mut net = Net::new(3);
    let a = net.endpoint();
    let r1 = net.relay(Config::DEFAULT);
    let r2 = net.relay(Config::DEFAULT);
    let d = net.endpoint();
    net.connect(a, r1);
    net.connect(r2, d);
    let id = net.send(a, d, "wait for the bridge");
    net.run_for(secs(60));
    assert!(net.received(d).is_empty());
    assert_eq!(net.states(a, id).last(), Some(&DeliveryState::Sent));
    net.connect(r1, r2); // the partition heals: summaries carry it over
    net.run_for(secs(30));
    assert_eq!(net.received(d).len(), 1);
    assert_eq!(net.states(a, id).last(), Some(&DeliveryState::Delivered));
}

#[test]
fn a_carrier_bridges_islands_never_connected_at_once() {
    let mut net = Net::new(4);
    let a = net.endpoint();
    let b = net.relay(Config::DEFAULT);
    let c = net.relay(Config::DEFAULT);
    let d = net.endpoint();
    let bus = net.relay(Config::DEFAULT);
    net.connect(a, b);
    net.connect(c, d);
    let id = net.send(a, d, "via the bus");
    net.run_for(secs(10));
    net.connect(bus, b); // the bus at camp one
    net.run_for(secs(10));
    net.disconnect(bus, b);
    net.run_for(secs(600)); // driving
    assert!(net.received(d).is_empty());
    net.connect(bus, c); // the bus at camp two
    net.run_for(secs(10));
    assert_eq!(net.received(d).len(), 1, "the carrier delivered it");
    // The receipt goes back the same way on the bus's next trip.
    net.disconnect(bus, c);
    net.run_for(secs(600));
    net.connect(bus, b);
    net.run_for(secs(10));
    assert_eq!(net.states(a, id).last(), Some(&DeliveryState::Delivered));
    assert_eq!(net.router(b).held(), 0);
}

#[test]
fn stranger_message_is_delivered_and_receipted() {
    let mut net = Net::new(5);
    let a = net.endpoint();
    let b = net.endpoint(); // b never adds a
    net.connect(a, b);
    let pa = net.pk(a);
    let id = net.send(a, b, "you don't know me");
    net.run_for(secs(5));
    assert_eq!(net.received(b), vec![(pa, false, "you don't know me".to_owned())]);
    assert_eq!(net.states(a, id).last(), Some(&DeliveryState::Delivered));
    // Still not a contact: a's next message keeps the first-contact path.
    let before = net.captured.len();
    net.send(a, b, "again");
    net.run_for(secs(5));
    assert!(net.captured[before..].iter().all(|f| wire::classify(f) == Ok(Kind::FirstContact)));
    assert_eq!(net.received(b).len(), 2);
}

#[test]
fn long_text_travels_in_parts_and_too_long_is_refused() {
    let mut net = Net::new(6);
    let a = net.endpoint();
    let r = net.relay(Config::DEFAULT);
    let b = net.endpoint();
    net.connect(a, r);
    net.connect(r, b);
    let text: String = "ünïcödé text, ".chars().cycle().take(2500).collect();
    assert!(text.len() > 3000);
    let id = net.send(a, b, &text);
    net.run_for(secs(10));
    let got = net.received(b);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2, text);
    assert_eq!(net.states(a, id).last(), Some(&DeliveryState::Delivered));
    let too_long = "x".repeat(MAX_TEXT + 1);
    assert_eq!(net.try_send(a, b, &too_long), Err(SendError::TooLong { max: MAX_TEXT }));
    assert_eq!(net.try_send(a, b, &"y".repeat(MAX_TEXT)).map(|_| ()), Ok(()));
}

#[test]
fn tampered_frames_and_flipped_ids_are_rejected() {
    let mut net = Net::new(7);
    let a = net.endpoint();
    let b = net.endpoint();
    let r = net.relay(Config::DEFAULT);
    net.connect(a, r);
    net.send(a, b, "original");
    net.run_for(secs(2));
    let frame = net.captured.last().unwrap().clone();
    net.connect(r, b); // b will now be reachable
    // 1. Flip a bit of the id: refused before dedup or store.
    let mut f = frame.clone();
    f[7] ^= 0x01;
    assert_eq!(net.inject(b, r, &f), Err(FrameError::Wire(WireError::BadId)));
    // 2. Flip a bit in the sealed body: the id no longer matches.
    let mut f = frame.clone();
    f[100] ^= 0x80;
    assert_eq!(net.inject(b, r, &f), Err(FrameError::Wire(WireError::BadId)));
    // 3. Flip a body bit and recompute the id, as a forger can: a new,
    //    valid-looking frame that relays carry but the recipient never opens.
    let mut f = frame.clone();
    f[150] ^= 0x01;
    MessageFrame::new_unchecked(&mut f[..]).fill_id();
    assert!(net.inject(b, r, &f).is_ok());
    // 4. A changed commitment (with a fresh id): opens nowhere either.
    let mut f = frame.clone();
    f[25] ^= 0x01;
    MessageFrame::new_unchecked(&mut f[..]).fill_id();
    assert!(net.inject(b, r, &f).is_ok());
    net.run_for(secs(5));
    // Only the untampered original is delivered, once.
    assert_eq!(net.received(b).iter().map(|m| m.2.as_str()).collect::<Vec<_>>(), vec!["original"]);
}

#[test]
fn replays_are_never_delivered_twice() {
    let mut net = Net::new(8);
    let a = net.endpoint();
    let b = net.endpoint();
    let r = net.relay(Config::DEFAULT);
    net.ep(a).set_lifetime_secs(120);
    net.connect(a, r);
    net.connect(r, b);
    net.send(a, b, "once only");
    net.run_for(secs(5));
    assert_eq!(net.received(b).len(), 1);
    let frame = net.captured[0].clone();
    // Replay at once: the routers' tombstones drop it.
    assert!(matches!(net.inject(b, r, &frame), Ok(())));
    // Replay after every router forgot it, with the lifetime field reset
    // (it is not authenticated: relays change it).
    net.run_for(secs(600));
    let mut f = frame.clone();
    MessageFrame::new_unchecked(&mut f[..]).set_lifetime_secs(120);
    assert!(MessageFrame::new_checked(&f[..]).unwrap().check_id().is_ok(), "lifetime is outside the id");
    net.inject(b, r, &f).unwrap();
    net.run_for(secs(10));
    assert_eq!(net.received(b).len(), 1, "the endpoint remembered what it opened");
}

/// More texts than the replay table holds (256 in the test endpoint), then
/// every one of them replayed once the routers have forgotten them: the
/// table evicts its oldest in batches and raises its floor, and nothing is
/// shown twice.
#[test]
fn replays_past_a_full_replay_table_are_never_delivered_twice() {
    let mut net = Net::new(9);
    let a = net.endpoint();
    let b = net.endpoint();
    net.ep(a).set_lifetime_secs(120);
    net.connect(a, b);
    let total = 400;
    for i in 0..total {
        net.unix += 1;
        net.send(a, b, &format!("text {i}"));
        if i % 8 == 7 {
            net.run_for(secs(2));
        }
    }
    net.run_for(secs(5));
    let texts: Vec<String> = net.received(b).into_iter().map(|r| r.2).collect();
    let mut seen = std::collections::BTreeSet::new();
    let dups: Vec<&String> = texts.iter().filter(|t| !seen.insert(*t)).collect();
    assert!(dups.is_empty(), "shown twice without any replay: {dups:?}");
    assert_eq!(texts.len(), total);
    // Every frame that crossed the wire (a few were sent twice).
    let frames = net.captured.clone();
    assert!(frames.len() >= total);
    net.run_for(secs(600));
    for f in &frames {
        let mut f = f.clone();
        MessageFrame::new_unchecked(&mut f[..]).set_lifetime_secs(120);
        let _ = net.inject(b, a, &f);
        net.run_for(Duration::from_millis(20));
    }
    net.run_for(secs(10));
    let got = net.received(b);
    let twice: Vec<&String> = got[total..].iter().map(|r| &r.2).collect();
    assert!(twice.is_empty(), "shown twice: {twice:?}");
}

/// A stranger fills the replay table with texts dated far in the future;
/// the floor it pushes up is the strangers' own: a contact's text sent
/// afterwards (dated today) is still shown, and so is a stranger's replay
/// never shown twice.
#[test]
fn a_stranger_flooding_the_replay_table_cannot_silence_contacts() {
    let mut net = Net::new(11);
    let (a, b, _, _) = net.two_contacts();
    let s = net.endpoint();
    net.connect(a, b);
    net.connect(s, b);
    // Refused texts are never receipted: let them expire soon, to make room in the stranger's outbox.
    net.ep(s).set_lifetime_secs(3);
    let today = net.unix;
    net.unix = 4_000_000_000;
    for i in 0..300 {
        net.unix += 1;
        let _ = net.try_send(s, b, &format!("from the future {i}"));
        if i % 8 == 7 {
            net.run_for(secs(2));
        }
    }
    net.run_for(secs(5));
    // Texts dated that far ahead of B's clock are held apart, a bounded number of them (SPEC §4.5);
    // the rest are refused, and counted.
    let shown = net.received(b).len();
    assert!((200..=256).contains(&shown), "{shown} far-future texts shown");
    assert!(net.ep(b).endpoint_stats().too_far_ahead > 0);
    net.unix = today;
    net.send(a, b, "still heard");
    net.run_for(secs(5));
    assert_eq!(net.received(b).last().map(|r| r.2.as_str()), Some("still heard"));
}

/// An idle node sleeps until its earliest deadline: holding one message
/// that lives 120 s, with no link, its next timer is that message's end
/// (not a sweep every second), and then the message expires on time.
#[test]
fn an_idle_node_wakes_only_at_its_next_deadline() {
    let mut net = Net::new(12);
    let a = net.endpoint();
    let b = net.endpoint();
    net.ep(a).set_lifetime_secs(120);
    let sent_at = net.now;
    let id = net.send(a, b, "nobody near");
    assert_eq!(net.router(a).poll_timeout(), Some(sent_at.saturating_add(secs(120))));
    net.run_for(secs(119));
    assert_eq!(net.router(a).held(), 1);
    net.run_for(secs(2));
    assert_eq!(net.router(a).held(), 0);
    assert_eq!(net.states(a, id).last(), Some(&DeliveryState::Expired));
}

/// A neighbour that floods fresh, well-formed messages gets `far_rate` of
/// them through with their full budget; the rest go on with `near_hops`
/// (2), so in a line f - r1 - r2 - r3 - r4 - r5 the flood dies out after
/// r3, while an honest text from the far end still crosses the line.
#[test]
fn a_flooding_neighbour_reaches_only_a_few_hops() {
    let mut net = Net::new(13);
    let config = Config { far_rate: 5, far_burst: 20, ..Config::DEFAULT };
    let f = net.relay(config);
    let r: Vec<usize> = (0..5).map(|_| net.relay(config)).collect();
    let (a, b, _, _) = net.two_contacts();
    net.connect(f, r[0]);
    for w in r.windows(2) {
        net.connect(w[0], w[1]);
    }
    net.connect(a, r[4]);
    net.connect(b, r[0]);
    net.run_for(secs(2));
    let mut junk = [0u8; 240];
    for i in 0..400u32 {
        rand::RngExt::fill(&mut net.rng, &mut junk[..]);
        let mut commit = [0u8; wire::COMMIT_LEN];
        commit[..4].copy_from_slice(&i.to_le_bytes());
        let mut m = MessageFrame::new_unchecked(&mut junk[..]);
        m.emit_header(Kind::FirstContact, wire::MAX_HOPS_DEFAULT, 3600, &commit);
        m.fill_id();
        net.inject(r[0], f, &junk).unwrap();
        net.run_for(Duration::from_millis(5));
    }
    net.run_for(secs(5));
    let seen = |net: &Net, n: usize| net.router(n).stats().frames_in;
    assert!(net.router(r[0]).stats().shortened >= 350, "{:?}", net.router(r[0]).stats());
    // r1 forwards all 400 (most with 2 hops left), r2 all of them with 1,
    // r3 passes on only the ones that kept their budget.
    assert!(seen(&net, r[2]) >= 400);
    assert!(seen(&net, r[4]) < 150, "the flood reached the end of the line: {}", seen(&net, r[4]));
    let id = net.send(a, b, "through the flooded line");
    net.run_for(secs(10));
    assert_eq!(net.received(b).last().map(|t| t.2.as_str()), Some("through the flooded line"));
    assert_eq!(net.states(a, id).last(), Some(&DeliveryState::Delivered));
}

/// A relay whose store is configured down to 3 small slots never holds
/// more, and still carries all ten messages across as its slots free up.
#[test]
fn a_store_budget_below_the_compiled_size_is_respected() {
    let mut net = Net::new(10);
    let a = net.endpoint();
    let b = net.endpoint();
    let r = net.relay(Config { store_slots: (3, 1), ..Config::DEFAULT });
    net.connect(a, r);
    for i in 0..10 {
        net.send(a, b, &format!("budget {i}"));
        net.run_for(Duration::from_millis(200));
        assert!(net.router(r).held() <= 3, "held {}", net.router(r).held());
    }
    net.connect(r, b);
    for _ in 0..120 {
        net.run_for(secs(1));
        assert!(net.router(r).held() <= 3);
    }
    assert_eq!(net.received(b).len(), 10);
}

#[test]
fn a_forged_receipt_erases_nothing() {
    let mut net = Net::new(9);
    let a = net.endpoint();
    let r = net.relay(Config::DEFAULT);
    let b = net.endpoint();
    net.connect(a, r);
    let id = net.send(a, b, "keep me");
    net.run_for(secs(2));
    assert!(net.router(r).holds(&id));
    let mut buf = [0u8; wire::RECEIPT_LEN];
    for i in 0..100u8 {
        let forged = ReceiptRepr { level: 5, lifetime_secs: 100, id, secret: [i; 12] };
        forged.emit(&mut buf).unwrap();
        assert_eq!(net.inject(r, a, &buf), Err(FrameError::UnverifiedReceipt));
    }
    assert!(net.router(r).holds(&id), "still held after 100 forged receipts");
    // A receipt for an id the relay never saw is not forwarded either.
    let other = ReceiptRepr { level: 5, lifetime_secs: 100, id: MessageId([9; 16]), secret: [1; 12] };
    other.emit(&mut buf).unwrap();
    assert_eq!(net.inject(r, a, &buf), Err(FrameError::UnverifiedReceipt));
    net.connect(r, b);
    net.run_for(secs(10));
    assert_eq!(net.received(b).len(), 1);
    assert_eq!(net.states(a, id).last(), Some(&DeliveryState::Delivered));
    assert!(!net.router(r).holds(&id));
}

#[test]
fn spoofed_hello_and_summary_get_no_amplification() {
    let mut net = Net::new(10);
    let a = net.endpoint();
    let r = net.relay(Config::DEFAULT);
    let b = net.endpoint();
    net.connect(a, r);
    for i in 0..12 {
        net.send(a, b, &format!("message {i}"));
    }
    net.run_for(secs(5));
    assert_eq!(net.router(r).held(), 12);
    // A spoofed source: the relay has a link to "victim" (an address that
    // never answers). The attacker sends hellos that do not echo the
    // relay's nonce, and summary frames asking for everything.
    let victim = 99usize;
    let now = net.now;
    let TestNode::Relay(rr) = &mut net.nodes[r] else { unreachable!() };
    assert!(rr.handle_link_up(now, &mut net.rng, LinkId(victim as u32), UDP));
    let mut received = 0u64;
    let mut sent = 0u64;
    let mut out = [0u8; wire::MAX_FRAME_LEN];
    let mut hello = [0u8; wire::HELLO_LEN];
    let mut summary = [0u8; wire::SUMMARY_LEN];
    for i in 0..50u8 {
        let TestNode::Relay(rr) = &mut net.nodes[r] else { unreachable!() };
        HelloRepr { nonce: [i; 16], echo: [0; 16] }.emit(&mut hello).unwrap();
        let _ = rr.route_frame(now, LinkId(victim as u32), &hello);
        received += hello.len() as u64;
        SummaryRepr { seq: i, last: true, fingerprints: &[] }.emit(&mut summary).unwrap();
        assert_eq!(
            rr.route_frame(now, LinkId(victim as u32), &summary).err(),
            Some(FrameError::Unexpected),
            "a summary from an unvalidated address is refused"
        );
        received += summary.len() as u64;
        while let Some(t) = rr.poll_transmit(now, &mut out) {
            if t.link == LinkId(victim as u32) {
                sent += t.len as u64;
                assert_eq!(wire::classify(&out[..t.len]), Ok(Kind::Hello), "only hellos before validation");
            }
        }
    }
    assert!(sent <= 3 * received, "sent {sent} to an unvalidated address for {received} received");
    // And exactly: no stored message went to the victim.
    assert!(sent <= (50 + 1) * wire::HELLO_LEN as u64);
}

#[test]
fn flooding_neighbour_does_not_stop_honest_traffic() {
    let mut net = Net::new(11);
    let a = net.endpoint();
    let b = net.endpoint();
    let config = Config { link_rate: 200, link_burst: 200, ..Config::DEFAULT };
    let r = net.relay(config);
    let flooder = net.relay(Config::DEFAULT);
    net.connect(a, r);
    net.connect(r, b);
    net.connect(flooder, r);
    net.run_for(secs(2));
    let mut delivered_ids = Vec::new();
    let mut body = vec![0u8; SizeClass::Small.frame_len()];
    for round in 0..20u32 {
        // 1,000 valid-looking junk messages per round from the flooder.
        for i in 0..1000u32 {
            body.iter_mut().for_each(|b| *b = 0);
            let mut f = MessageFrame::new_unchecked(&mut body[..]);
            f.emit_header(Kind::FirstContact, 10, 3600, &[7; 12]);
            f.sealed_mut()[..8].copy_from_slice(&(round * 1000 + i).to_le_bytes().repeat(2));
            f.fill_id();
            let _ = net.inject(r, flooder, &body);
        }
        delivered_ids.push(net.send(a, b, &format!("honest {round}")));
        net.run_for(secs(1));
    }
    net.run_for(secs(30));
    let got = net.received(b).len();
    assert!(got >= 19, "honest delivery {got}/20 under a flood");
    let stats = net.router(r).stats();
    assert!(stats.rate_limited > 10_000, "the flood was rate limited: {stats:?}");
    assert!(net.router(r).held() <= 80);
}

#[test]
fn link_validation_and_summaries_on_reconnect() {
    // Two relays that meet repeatedly exchange only what the other lacks.
    let mut net = Net::new(12);
    let a = net.endpoint();
    let r1 = net.relay(Config::DEFAULT);
    let r2 = net.relay(Config::DEFAULT);
    let far = net.endpoint();
    net.connect(a, r1);
    for i in 0..10 {
        net.send(a, far, &format!("m{i}"));
    }
    net.run_for(secs(5));
    net.connect(r1, r2);
    net.run_for(secs(5));
    assert_eq!(net.router(r2).held(), 10);
    let first = net.sent.get(&(r1, r2)).copied().unwrap_or_default();
    net.disconnect(r1, r2);
    net.connect(r1, r2);
    net.run_for(secs(5));
    let second = net.sent.get(&(r1, r2)).copied().unwrap_or_default();
    let messages_resent = (second.1 - first.1) / SizeClass::Small.frame_len() as u64;
    // Hello(s) and one summary frame, no message again.
    assert!(second.0 - first.0 <= 3, "frames on reconnect: {}", second.0 - first.0);
    assert!(messages_resent <= 1, "r2 already had everything");
}

#[test]
fn runs_are_deterministic() {
    fn run(seed: u64) -> (Vec<(u64, u64)>, usize) {
        let mut net = Net::new(seed);
        let a = net.endpoint();
        let r = net.relay(Config::DEFAULT);
        let b = net.endpoint();
        net.connect(a, r);
        net.connect(r, b);
        for i in 0..5 {
            net.send(a, b, &format!("{i}"));
        }
        net.run_for(secs(20));
        (net.sent.values().copied().collect(), net.received(b).len())
    }
    assert_eq!(run(42), run(42));
}

#[test]
fn relay_outcome_reports_new_duplicate_and_bad() {
    let mut r = Box::new(TestRouter::new(Config::DEFAULT));
    let mut rng = StdRng::seed_from_u64(1);
    let now = Instant::from_millis(0);
    assert!(r.handle_link_up(now, &mut rng, LinkId(1), UDP));
    let mut f = vec![0u8; 240];
    let mut m = MessageFrame::new_unchecked(&mut f[..]);
    m.emit_header(Kind::Contact, 9, 100, &[1; 12]);
    let id = m.fill_id();
    assert!(matches!(r.route_frame(now, LinkId(1), &f), Ok(Outcome::NewMessage { id: i, .. }) if i == id));
    assert!(matches!(r.route_frame(now, LinkId(1), &f), Ok(Outcome::Duplicate(i)) if i == id));
    assert!(matches!(r.route_frame(now, LinkId(2), &f), Err(FrameError::UnknownLink)));
    assert!(matches!(Frame::parse(&f[..239]), Err(WireError::BadLength)));
}

#[test]
fn one_sided_link_up_still_validates_both_ways() {
    for delay in [0u64, 500, 1_500, 3_000, 20_000] {
        let mut net = Net::new(13);
        let a = net.endpoint();
        let b = net.endpoint();
        let pa = net.pk(a);
        net.half_connect(a, b);
        let id = net.send(a, b, "before you knew me");
        net.run_for(Duration::from_millis(delay));
        net.half_connect(b, a);
        net.run_for(secs(10));
        assert_eq!(net.received(b), vec![(pa, false, "before you knew me".to_owned())], "delay {delay} ms");
        assert_eq!(net.states(a, id).last(), Some(&DeliveryState::Delivered), "delay {delay} ms");
        assert!(net.router(a).links().all(|l| l.validated) && net.router(b).links().all(|l| l.validated));
    }
}

/// Two linked contacts, A already sending to B under tags (B wrote first, then A sent 6 tagged texts,
/// all delivered): (a, b, A's key, B's key).
fn tagging_contacts(net: &mut Net) -> (usize, usize, ferry_proto::envelope::PeerKey, ferry_proto::envelope::PeerKey) {
    let (a, b, pa, pb) = net.two_contacts();
    net.connect(a, b);
    net.send(b, a, "hi");
    net.run_for(secs(5));
    for i in 0..6 {
        net.send(a, b, &format!("tagged {i}"));
        net.run_for(secs(5));
    }
    assert_eq!(net.received(b).len(), 6);
    (a, b, pa, pb)
}

#[test]
fn saved_tag_counters_survive_a_restart() {
    let mut net = Net::new(14);
    let (a, b, _, pb) = tagging_contacts(&mut net);
    let saved = net.ep(a).contact_state(&pb).unwrap();
    assert!(saved.heard && saved.tx_next >= 6, "{saved:?}");
    net.restart(a);
    let now = net.now;
    net.ep(a).restore_contact(now, pb, saved).unwrap();
    let before = net.captured.len();
    let id = net.send(a, b, "after the restart");
    net.run_for(secs(10));
    assert!(net.captured[before..].iter().any(|f| wire::classify(f) == Ok(Kind::Contact)));
    assert_eq!(net.received(b).last().map(|m| m.2.as_str()), Some("after the restart"));
    assert_eq!(net.states(a, id).last(), Some(&DeliveryState::Delivered));
}

#[test]
fn peer_restart_on_the_same_link_gets_what_was_sent_while_it_was_down() {
    let mut net = Net::new(15);
    let a = net.endpoint();
    let b = net.endpoint();
    net.connect(a, b);
    let id = net.send(a, b, "first");
    net.run_for(secs(5));
    assert_eq!(net.states(a, id).last(), Some(&DeliveryState::Delivered));
    net.wires.get_mut(&key(a, b)).unwrap().up = false;
    let id = net.send(a, b, "while you were away");
    net.run_for(secs(2));
    assert_eq!(net.states(a, id).last(), Some(&DeliveryState::Sent));
    net.wires.get_mut(&key(a, b)).unwrap().up = true;
    net.restart(b);
    net.run_for(secs(10));
    assert_eq!(net.received(b).last().map(|m| m.2.as_str()), Some("while you were away"));
    assert_eq!(net.states(a, id).last(), Some(&DeliveryState::Delivered));
}

#[test]
fn unacknowledged_texts_get_no_receipt() {
    let mut net = Net::new(16);
    let a = net.endpoint();
    let b = net.endpoint();
    net.ep(b).set_auto_receipts(false);
    net.ep(a).set_lifetime_secs(60);
    net.connect(a, b);
    let shown = net.send(a, b, "acknowledge me");
    let refused = net.send(a, b, "not this one");
    net.run_for(secs(3));
    let acks: Vec<_> = net.events[b]
        .iter()
        .filter_map(|e| match e {
            Event::Received(r) => Some((r.text.as_str().to_owned(), r.ack)),
            _ => None,
        })
        .collect();
    assert_eq!(acks.len(), 2);
    let now = net.now;
    let ack = acks.iter().find(|(t, _)| t == "acknowledge me").unwrap().1;
    let TestNode::End(e) = &mut net.nodes[b] else { unreachable!() };
    e.acknowledge(now, &mut net.rng, &ack);
    net.run_for(secs(120));
    assert_eq!(net.states(a, shown).last(), Some(&DeliveryState::Delivered));
    assert_eq!(net.states(a, refused).last(), Some(&DeliveryState::Expired));
    assert_eq!(net.received(b).len(), 2, "each shown once");
}

#[test]
fn a_lossy_link_loses_nothing_in_the_end() {
    let mut net = Net::new(17);
    let a = net.endpoint();
    let r = net.relay(Config::DEFAULT);
    let b = net.endpoint();
    net.connect(a, r);
    net.connect(r, b);
    net.run_for(secs(2));
    for w in net.wires.values_mut() {
        w.loss = 300; // 30% of frames vanish, in both directions
    }
    let ids: Vec<MessageId> = (0..10).map(|i| net.send(a, b, &format!("lossy {i}"))).collect();
    net.run_for(secs(240));
    let mut got: Vec<String> = net.received(b).into_iter().map(|m| m.2).collect();
    got.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("lossy {i}")).collect();
    want.sort();
    assert_eq!(got, want, "every message once, after resync rounds");
    for id in ids {
        assert_eq!(net.states(a, id).last(), Some(&DeliveryState::Delivered));
    }
}

/// The receipt policy is the endpoint's (SPEC §5): a stranger's texts beyond 5 a minute are not shown and
/// get no receipt (their sender sees them expire, never a false "delivered"); a blocked code gets nothing
/// shown and nothing receipted; a named contact is not limited.
#[test]
fn strangers_over_their_rate_and_blocked_codes_are_not_shown_or_receipted() {
    let mut net = Net::new(21);
    let a = net.endpoint();
    let b = net.endpoint();
    net.connect(a, b);
    net.ep(a).set_lifetime_secs(60);
    net.ep(b).set_stranger_rate(5, 60);
    let ids: Vec<MessageId> = (0..8).map(|i| net.send(a, b, &format!("stranger #{i}"))).collect();
    net.run_for(secs(90));
    assert_eq!(net.received(b).len(), 5, "a stranger gets 5 a minute");
    let delivered = ids.iter().filter(|&&id| net.states(a, id).contains(&DeliveryState::Delivered)).count();
    assert_eq!(delivered, 5, "only what was shown is receipted");
    for &id in &ids {
        let s = net.states(a, id);
        assert!(s.contains(&DeliveryState::Delivered) ^ s.contains(&DeliveryState::Expired), "{s:?}");
    }
    assert_eq!(net.ep(b).endpoint_stats().over_rate, 3);
    // Blocked: nothing more is shown, even after the minute is over.
    let key_a = net.ep(a).identity().public();
    net.ep(b).block(&key_a).unwrap();
    let id = net.send(a, b, "blocked");
    net.run_for(secs(90));
    assert_eq!(net.received(b).len(), 5);
    assert!(net.states(a, id).contains(&DeliveryState::Expired));
    assert_eq!(net.ep(b).endpoint_stats().blocked, 1);
    // A named contact is not limited.
    net.ep(b).unblock(&key_a);
    let now = net.now;
    net.ep(b).add_contact(now, key_a).unwrap();
    for i in 0..8 {
        net.send(a, b, &format!("contact #{i}"));
    }
    net.run_for(secs(30));
    assert_eq!(net.received(b).len(), 13);
}

/// A text split into parts whose later part cannot be stored (the node's own quota is full) fails as a
/// whole and leaves nothing behind: no part in the store or on the air, nothing in the outbox, no tag
/// number used (issue 11). Then a text that fits still goes.
#[test]
fn a_multi_part_send_that_fails_halfway_leaves_nothing_behind() {
    let mut rng = StdRng::seed_from_u64(31);
    let me = Identity::generate(&mut rng);
    let peer = Identity::generate(&mut rng).public();
    let mut ep = Ep::new(me, Box::new(TestRouter::new(Config { own_quota: 2, ..Config::DEFAULT })));
    let now = Instant::from_millis(1_000);
    let caps = LinkCaps { mtu: 1500, broadcast: false, max_class: SizeClass::Large };
    assert!(ep.handle_link_up(now, &mut rng, LinkId(1), caps));
    let long = "z".repeat(MAX_TEXT);
    assert_eq!(ep.send(now, &mut rng, 1_700_000_000, &peer, &long), Err(SendError::StoreFull));
    assert_eq!(ep.router().held(), 0, "parts of the failed text stayed in the store");
    let mut buf = [0u8; 1500];
    while let Some(t) = ep.poll_transmit(now, &mut buf) {
        assert!(
            !matches!(wire::classify(&buf[..t.len]), Ok(Kind::Contact | Kind::FirstContact)),
            "a part of the failed text went on the air"
        );
    }
    while let Some(ev) = ep.poll_event() {
        assert!(!matches!(ev, Event::Status { .. }), "a status for a text that was refused: {ev:?}");
    }
    let id = ep.send(now, &mut rng, 1_700_000_000, &peer, "short").expect("a text that fits still goes");
    assert_eq!(ep.router().held(), 1);
    let _ = id;
}

/// Events a driver does not drain are counted, never lost silently (issue 11): 40 own messages handed to a
/// link make 40 `Sent` events for a queue of 32.
#[test]
fn events_beyond_the_queue_are_counted() {
    let mut rng = StdRng::seed_from_u64(41);
    let mut r: Box<Router<64, 8, 256, 4, 64, 2>> = Box::new(Router::new(Config { own_quota: 48, ..Config::DEFAULT }));
    let now = Instant::from_millis(1_000);
    let caps = LinkCaps { mtu: 1500, broadcast: true, max_class: SizeClass::Large };
    assert!(r.handle_link_up(now, &mut rng, LinkId(1), caps));
    for i in 0..40u32 {
        let mut m = vec![0u8; SizeClass::Small.frame_len()];
        let mut f = MessageFrame::new_unchecked(&mut m[..]);
        f.emit_header(Kind::Contact, 9, 100, &[1; 12]);
        f.sealed_mut()[..4].copy_from_slice(&i.to_le_bytes());
        f.fill_id();
        r.submit(now, &m).unwrap();
    }
    let mut buf = [0u8; 1500];
    while r.poll_transmit(now, &mut buf).is_some() {}
    assert_eq!(r.stats().events_dropped, 8);
    let mut n = 0;
    while r.poll_event().is_some() {
        n += 1;
    }
    assert_eq!(n, 32);
}

/// Issue 12: a stranger who fills the replay table with texts dated at the end of time must not shut
/// out every other stranger. `sent_at` is the sender's word; once more far-future texts had come than the
/// table holds (256 here), the strangers' replay floor jumped to 2^64 - 1 and every stranger's text was
/// refused from then on. An honest stranger's text dated now must still be shown, and the far-future
/// texts must never be shown twice.
#[test]
fn far_future_texts_do_not_shut_out_strangers() {
    let mut net = Net::new(41);
    let (mallory, b, honest) = (net.endpoint(), net.endpoint(), net.endpoint());
    net.connect(mallory, b);
    net.connect(honest, b);
    // Refused texts are never receipted: let them expire soon, to make room in Mallory's outbox.
    net.ep(mallory).set_lifetime_secs(3);
    let to = net.pk(b);
    let mut sent = 0;
    while sent < 300 {
        for _ in 0..16 {
            let now = net.now;
            let TestNode::End(e) = &mut net.nodes[mallory] else { unreachable!() };
            e.send(now, &mut net.rng, u64::MAX - sent, &to, &format!("from the end of time #{sent}")).unwrap();
            sent += 1;
        }
        net.run_for(secs(5));
    }
    let shown_before = net.received(b).len();
    net.send(honest, b, "dated now");
    net.run_for(secs(10));
    assert!(
        net.received(b).iter().any(|(_, _, t)| t == "dated now"),
        "an honest stranger's text dated now was refused after a flood of far-future texts"
    );
    // Nothing is shown twice: replay every message frame B was sent once more.
    let frames = net.captured.clone();
    let shown = net.received(b).len();
    for f in &frames {
        let _ = net.inject(b, mallory, f);
    }
    net.run_for(secs(10));
    assert_eq!(net.received(b).len(), shown, "a replayed text was shown again");
    assert!(shown_before <= 300);
}

/// Issue 12: while first-contact trials wait for their link's budget, the endpoint asked to be woken at
/// a time long past (the refill time of any link's bucket, even one with nothing waiting), so a driver
/// spun at 100% CPU without getting anywhere (here the harness stops with "livelock").
#[test]
fn waiting_trials_do_not_spin_the_driver() {
    let mut net = Net::new(43);
    let (a, b, mallory) = (net.endpoint(), net.endpoint(), net.endpoint());
    net.connect(a, b);
    net.connect(mallory, b);
    net.ep(b).set_first_contact_rate(10);
    // A's link gets a trial bucket, then stays quiet.
    net.send(a, b, "hello once");
    net.run_for(secs(2));
    // Mallory sends more first-contact texts than B's budget for its link takes at once.
    for i in 0..16 {
        net.send(mallory, b, &format!("trial {i}"));
    }
    net.run_for(secs(10));
    assert_eq!(net.received(b).len(), 17, "every text is opened in the end");
}

/// Issue 12: strangers cannot destroy a contact's half-received long text. Only a few long texts can be
/// put together at once; four strangers' first parts used to push a contact's text out (the oldest went),
/// and its remaining parts could never complete it. Room is kept for contacts.
#[test]
fn strangers_cannot_push_out_a_contacts_long_text() {
    let mut net = Net::new(44);
    let (a, b, _, _) = net.two_contacts();
    let strangers: Vec<usize> = (0..6).map(|_| net.endpoint()).collect();
    net.connect(a, b);
    for &s in &strangers {
        net.connect(s, b);
    }
    net.run_for(secs(1));
    // Every wire is slow: what is sent now arrives in 10 s, unless the test lets it through sooner.
    for w in net.wires.values_mut() {
        w.latency = secs(10);
    }
    // Let the first `n` frames from `from` to B (in sending order) arrive in a moment.
    let hurry = |net: &mut Net, from: usize, n: usize| {
        let now = net.now;
        let mut mine: Vec<usize> = (0..net.flights.len()).filter(|&i| net.flights[i].from == from).collect();
        mine.sort_by_key(|&i| net.flights[i].at);
        for &i in mine.iter().take(n) {
            net.flights[i].at = now.saturating_add(Duration::from_millis(1));
        }
    };
    let long = |tag: &str| -> String { format!("{tag}: ") + &"a long text in several parts, ".repeat(40) };
    net.send(a, b, &long("from a contact"));
    net.run_for(Duration::from_millis(1));
    hurry(&mut net, a, 1);
    net.run_for(secs(1));
    // Each stranger's first part only: each starts a long text that waits for the rest.
    for &s in &strangers {
        net.send(s, b, &long("from a stranger"));
    }
    net.run_for(Duration::from_millis(1));
    for &s in &strangers {
        hurry(&mut net, s, 1);
    }
    net.run_for(secs(1));
    // Now everything else arrives.
    net.run_for(secs(30));
    let texts: Vec<String> = net.received(b).into_iter().map(|r| r.2).collect();
    assert!(
        texts.iter().any(|t| t.starts_with("from a contact")),
        "the contact's long text was pushed out by strangers' parts (shown: {})",
        texts.len()
    );
}

/// Issue 12: on a validated link, a hello with a new nonce (from the peer's address, maybe spoofed)
/// reset the link's salt and started a full summary round at once, every time: 660 bytes in gave 77 KB
/// out. What a node sends in answer to what it received stays within 3× on validated links too.
#[test]
fn fresh_hellos_on_a_validated_link_get_no_amplification() {
    let mut net = Net::new(45);
    let senders: Vec<usize> = (0..4).map(|_| net.endpoint()).collect();
    let r = net.relay(Config::DEFAULT);
    let (peer, nobody) = (net.endpoint(), net.endpoint());
    for &s in &senders {
        net.connect(s, r);
    }
    // The relay holds 60 messages for someone far away.
    for &s in &senders {
        for i in 0..15 {
            net.send(s, nobody, &format!("for later {i}"));
        }
    }
    net.run_for(secs(5));
    assert_eq!(net.router(r).held(), 60);
    net.connect(r, peer);
    net.run_for(secs(5));
    // A validated link; everything the peer lacked has been offered. Now hellos with fresh nonces from the
    // peer's address, 20 of them, one every 100 ms.
    let before = net.sent.get(&(r, peer)).map_or(0, |s| s.1);
    let mut received = 0u64;
    let mut hello = [0u8; wire::HELLO_LEN];
    for i in 0..20u8 {
        HelloRepr { nonce: [i.wrapping_add(100); 16], echo: [0; 16] }.emit(&mut hello).unwrap();
        let _ = net.inject(r, peer, &hello);
        received += hello.len() as u64;
        net.run_for(Duration::from_millis(100));
    }
    let sent = net.sent.get(&(r, peer)).map_or(0, |s| s.1) - before;
    assert!(sent <= 3 * received, "sent {sent} bytes on the link for {received} bytes of hellos");
}

/// Issue 12 (SPEC §6.4/§6.5 disagreed): on a point-to-point link a node never pushes a message back on
/// the link it came in on, whether it came before the link was validated, in the first summary round or
/// later. (Broadcast links still rebroadcast on the link a frame came from: that is how a radio relays.)
#[test]
fn a_message_never_goes_back_on_the_point_to_point_link_it_came_from() {
    let mut net = Net::new(46);
    let a = net.endpoint();
    let r = net.relay(Config::DEFAULT);
    let b = net.endpoint();
    // A sends before its link to R is even up, then at once, then later; B comes much later.
    let early: Vec<MessageId> = (0..3).map(|i| net.send(a, b, &format!("early {i}"))).collect();
    net.connect(a, r);
    let first: Vec<MessageId> = (0..3).map(|i| net.send(a, b, &format!("first {i}"))).collect();
    net.run_for(secs(40));
    let later: Vec<MessageId> = (0..3).map(|i| net.send(a, b, &format!("later {i}"))).collect();
    net.run_for(secs(40));
    net.connect(r, b);
    net.run_for(secs(20));
    assert_eq!(net.received(b).len(), 9);
    let ids: Vec<MessageId> = early.iter().chain(&first).chain(&later).copied().collect();
    let back: Vec<_> = net.message_log.iter().filter(|(from, to, _)| *from == r && *to == a).collect();
    assert!(back.is_empty(), "R sent {} message frames back to A ({} of A's): {back:?}", back.len(), ids.len());
}

/// The same when the frame comes before the link is validated (a peer that sends at once after its
/// hello, as a second implementation did): R must not offer or push it back in the first summary round.
#[test]
fn a_frame_from_before_validation_does_not_go_back_either() {
    // A frame to carry: made in one network, carried into another.
    let mut net = Net::new(47);
    let (a, b, _, _) = net.two_contacts();
    net.connect(a, b);
    net.send(a, b, "made elsewhere");
    net.run_for(secs(2));
    let frame = net.captured[0].clone();
    let id = MessageFrame::new_checked(&frame[..]).unwrap().id();

    let mut net = Net::new(48);
    let peer = net.endpoint();
    let r = net.relay(Config::DEFAULT);
    net.connect(peer, r);
    // Before any hello has crossed: the frame arrives on R's link from the peer.
    let _ = net.inject(r, peer, &frame);
    net.run_for(secs(40));
    let back = net.message_log.iter().filter(|(from, to, m)| *from == r && *to == peer && *m == id).count();
    assert_eq!(back, 0, "R sent the frame back to the peer it came from ({back} times)");
}

/// Issue 12: the first-contact budget (trial decryptions, one X25519 each) holds per node, not only per
/// link: with a bucket per link, six links bought six times the work (and links from many source ports,
/// many times more). Here B tries 2 a second per link; six strangers' links flood it for 10 s.
#[test]
fn the_first_contact_budget_holds_per_node() {
    let mut net = Net::new(50);
    let b = net.endpoint();
    let flooders: Vec<usize> = (0..6).map(|_| net.endpoint()).collect();
    for &f in &flooders {
        net.connect(f, b);
    }
    net.run_for(secs(1));
    net.ep(b).set_first_contact_rate(2);
    for round in 0..5 {
        for &f in &flooders {
            for i in 0..16 {
                let _ = net.try_send(f, b, &format!("knock {round} {i}"));
            }
        }
        net.run_for(secs(2));
    }
    let opened = net.received(b).len();
    // Per node: 2 x 2 a second over 10 s, plus the buckets' first fill (the node's and each link's).
    assert!(opened <= 4 * 10 + 4 + 6 * 2, "{opened} first contacts opened in 10 s");
}

/// Issue 12, "the trial queue drops a deferred trial and never retries it": an honest first contact
/// deferred for want of tokens sits in the queue of 512 trials; a flood of first-contact junk then pushes
/// it out. The message itself stays in B's store and is never offered to B again (B has it), so unless
/// the dropped trial comes back, A's text is never opened and expires. (The junk that comes before A's
/// text is small and what follows is large and comes in one burst, so that this test's small store
/// keeps A's text and the queue overflows, as with a daemon's store of thousands: junk evicted from the
/// store is skipped at no cost.)
fn first_contact_under_a_trial_flood(flood_on_the_same_link: bool) {
    let mut net = Net::new(12);
    let a = net.endpoint();
    let b = net.endpoint();
    let r = net.relay(Config::DEFAULT);
    let others: Vec<usize> = (0..4).map(|_| net.relay(Config::DEFAULT)).collect();
    net.connect(a, r);
    net.connect(r, b);
    for &o in &others {
        net.connect(o, b);
    }
    net.run_for(secs(1));
    net.ep(b).set_first_contact_rate(2);
    let mut seq = 0u32;
    let mut junk = |net: &mut Net, from: usize, n: u32, class: SizeClass| {
        let mut body = vec![0u8; class.frame_len()];
        for _ in 0..n {
            seq += 1;
            body.iter_mut().for_each(|b| *b = 0);
            let mut f = MessageFrame::new_unchecked(&mut body[..]);
            f.emit_header(Kind::FirstContact, 10, 3600, &[9; 12]);
            // Key id 0 (B's identity key): each one costs B a real trial.
            f.sealed_mut()[1..9].copy_from_slice(&seq.to_le_bytes().repeat(2));
            f.fill_id();
            let _ = net.inject(b, from, &body);
        }
    };
    let flooder = if flood_on_the_same_link { r } else { others[0] };
    // Four links' junk waits for B's tokens, more than the node's rate can serve (2 a second per
    // link, 4 per node): A's text then waits behind it.
    for &o in &others {
        junk(&mut net, o, 10, SizeClass::Small);
    }
    let id = net.send(a, b, "knock knock");
    net.run_for(Duration::from_millis(300));
    assert!(net.received(b).is_empty(), "the text should be waiting for a token");
    // 600 more junk trials in one burst (within the link's frame burst): a daemon's store keeps them
    // all, and the queue of 512 overflows.
    junk(&mut net, flooder, 600, SizeClass::Large);
    assert!(net.router(b).holds(&id), "B holds A's message");
    net.run_for(secs(600));
    let got = net.received(b);
    assert!(
        got.iter().any(|(_, _, t)| t == "knock knock"),
        "A's first contact was never opened: {:?}",
        net.states(a, id)
    );
    // Every mark was handed back or went with its message.
    assert_eq!(net.router(b).untried(), 0);
}

#[test]
fn a_first_contact_is_opened_after_a_trial_flood_on_another_link() {
    first_contact_under_a_trial_flood(false);
}

#[test]
fn a_first_contact_is_opened_after_a_trial_flood_on_its_own_link() {
    first_contact_under_a_trial_flood(true);
}

/// A peer that restarts twice within `HELLO_RENEW_MIN` (5 s): its second nonce is proven (its hello
/// echoes ours) but arrives while renewals are rate-limited. The peer, validated by our answer, takes
/// the salt of its new nonce; unless we take that nonce too once the 5 s are over, the two sides keep
/// different salts, every summary misreads the other, and each resync pushes again what the peer holds.
#[test]
fn a_peer_restarting_twice_within_five_seconds_ends_with_the_same_salt() {
    let mut net = Net::new(21);
    let a = net.endpoint();
    let b = net.endpoint();
    let c = net.endpoint();
    net.connect(a, b);
    net.run_for(secs(2));
    // A message for C, who is never there: A and B both carry it.
    let id = net.send(a, c, "for someone away");
    net.run_for(secs(2));
    assert!(net.router(b).holds(&id));
    net.restart(b);
    net.run_for(secs(1));
    net.restart(b);
    net.run_for(secs(20));
    assert!(net.router(b).holds(&id), "B carries the message again after its restarts");
    let dups = |net: &Net| net.router(a).stats().duplicates + net.router(b).stats().duplicates;
    let before = dups(&net);
    // Six resync rounds.
    net.run_for(secs(90));
    let pushed_again = dups(&net) - before;
    assert_eq!(pushed_again, 0, "summaries misread each other: {pushed_again} copies pushed again in 90 s");
}

/// Issue 13: counters never go back. A driver that (re)states a contact with older or empty counters
/// (the daemon's `contacts.add` for a peer already exchanged with by code did, with zeros) must not make
/// the endpoint reuse a tag: the next message would carry a tag the recipient has used, never open, and
/// expire. Restoring merges: the sender's numbers only go up, and the receiving window only forward.
#[test]
fn restating_a_contact_with_older_counters_never_reuses_a_tag() {
    let mut net = Net::new(15);
    let (a, b, pa, pb) = tagging_contacts(&mut net);
    let now = net.now;
    // Both sides restated with empty counters (a re-add at each end).
    net.ep(a).restore_contact(now, pb, ContactState::default()).unwrap();
    net.ep(b).restore_contact(now, pa, ContactState::default()).unwrap();
    let before = net.captured.len();
    for i in 0..3 {
        let id = net.send(a, b, &format!("after the re-add {i}"));
        net.run_for(secs(10));
        assert_eq!(net.received(b).last().map(|m| m.2.clone()), Some(format!("after the re-add {i}")));
        assert_eq!(net.states(a, id).last(), Some(&DeliveryState::Delivered));
    }
    // Still between contacts: tagged, not first contact.
    let first = net.captured[before..].iter().filter(|f| wire::classify(f) == Ok(Kind::FirstContact)).count();
    assert_eq!(first, 0, "the re-add sent {first} texts back to the first-contact path");
    let state = net.ep(a).contact_state(&pb).unwrap();
    assert!(state.heard && state.tx_next >= 9, "{state:?}");
}

/// Issue 13: a sender that runs ahead of its receipts (more than half a tag window unacknowledged)
/// falls back to first contact; every such message is counted.
#[test]
fn running_out_of_tags_is_counted() {
    let mut net = Net::new(16);
    let (a, b, _, _) = net.two_contacts();
    net.connect(a, b);
    net.send(b, a, "hi");
    net.run_for(secs(5));
    assert_eq!(net.ep(a).endpoint_stats().tag_fallbacks, 0);
    // Twelve at once: eight may go tagged before a receipt comes back.
    for i in 0..12 {
        net.send(a, b, &format!("burst {i}"));
    }
    assert_eq!(net.ep(a).endpoint_stats().tag_fallbacks, 4);
    net.run_for(secs(10));
    assert_eq!(net.received(b).len(), 12);
    // With the receipts back, tags again.
    net.send(a, b, "after the burst");
    assert_eq!(net.ep(a).endpoint_stats().tag_fallbacks, 4);
}

/// First-contact frames whose key id names no key of ours (SPEC §4.2: only `0` today) are refused without
/// any Diffie-Hellman, so they must not take first-contact tokens either: junk with a wrong key id would
/// otherwise spend, for free, the budget an honest first contact needs.
#[test]
fn frames_for_an_unknown_key_id_take_no_first_contact_token() {
    let mut net = Net::new(17);
    let a = net.endpoint();
    let b = net.endpoint();
    let (x, y) = (net.relay(Config::DEFAULT), net.relay(Config::DEFAULT));
    net.connect(a, b);
    net.connect(x, b);
    net.connect(y, b);
    net.run_for(secs(1));
    net.ep(b).set_first_contact_rate(2);
    let mut body = vec![0u8; SizeClass::Small.frame_len()];
    for (i, from) in [x, y].into_iter().cycle().take(20).enumerate() {
        body.iter_mut().for_each(|b| *b = 0);
        let mut f = MessageFrame::new_unchecked(&mut body[..]);
        f.emit_header(Kind::FirstContact, 10, 3600, &[5; 12]);
        let sealed = f.sealed_mut();
        sealed[0] = 0xff; // key id: none of ours
        sealed[1..5].copy_from_slice(&(i as u32).to_le_bytes());
        f.fill_id();
        let _ = net.inject(b, from, &body);
    }
    net.send(a, b, "not held up");
    net.run_for(Duration::from_millis(100));
    assert!(
        net.received(b).iter().any(|(_, _, t)| t == "not held up"),
        "an honest first contact waited behind frames for a key id B does not have"
    );
}
