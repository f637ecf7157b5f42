//! An in-process mesh: Alice and Bob, and three relays between them that
//! are never all connected at once. Real sealing, routing and receipts;
//! virtual time, so it runs in a blink.

use ferry_proto::endpoint::{Endpoint, Event};
use ferry_proto::envelope::Identity;
use ferry_proto::router::{Config, LinkCaps, LinkId, Router};
use ferry_proto::wire::{self, MAX_FRAME_LEN, PrettyPrinter, SizeClass};
use ferry_proto::{Duration, Instant, Node as FerryNode};
use rand::SeedableRng;
use rand::rngs::StdRng;

type DemoRouter = Router<256, 64, 1024, 8, 128, 4>;
type DemoEndpoint = Endpoint<Box<DemoRouter>, 16, 256, 16, 256>;

enum Node {
    Person(&'static str, Box<DemoEndpoint>),
    Relay(&'static str, Box<DemoRouter>),
}

impl Node {
    fn name(&self) -> &'static str {
        match self {
            Node::Person(n, _) | Node::Relay(n, _) => n,
        }
    }

    /// The face both kinds show: the demo drives them the same way.
    fn core(&mut self) -> &mut dyn FerryNode {
        match self {
            Node::Person(_, e) => &mut **e,
            Node::Relay(_, r) => &mut **r,
        }
    }
}

struct Mesh {
    nodes: Vec<Node>,
    links: Vec<(usize, usize)>,
    now: Instant,
    rng: StdRng,
    first_frame_shown: bool,
}

const UDP: LinkCaps = LinkCaps { mtu: 1280, broadcast: false, max_class: SizeClass::Large };
const BLE: LinkCaps = LinkCaps { mtu: 20, broadcast: false, max_class: SizeClass::Small };

impl Mesh {
    fn link(&mut self, a: usize, b: usize, caps: LinkCaps) {
        println!("  [{}] {} <-> {} come in range", self.now, self.nodes[a].name(), self.nodes[b].name());
        self.links.push((a, b));
        for (x, y) in [(a, b), (b, a)] {
            let link = LinkId(y as u32);
            let ok = self.nodes[x].core().handle_link_up(self.now, &mut self.rng, link, caps);
            assert!(ok, "link table full");
        }
    }

    fn unlink(&mut self, a: usize, b: usize) {
        println!("  [{}] {} <-> {} out of range", self.now, self.nodes[a].name(), self.nodes[b].name());
        self.links.retain(|&l| l != (a, b) && l != (b, a));
        for (x, y) in [(a, b), (b, a)] {
            self.nodes[x].core().handle_link_down(self.now, LinkId(y as u32));
        }
    }

    /// Run `secs` of virtual time in 10 ms steps.
    fn run(&mut self, secs: u64) {
        let end = self.now.saturating_add(Duration::from_secs(secs));
        let mut buf = [0u8; MAX_FRAME_LEN];
        while self.now < end {
            let mut wire_frames = Vec::new();
            for (i, n) in self.nodes.iter_mut().enumerate() {
                let core = n.core();
                core.handle_timeout(self.now, &mut self.rng);
                while let Some(t) = core.poll_transmit(self.now, &mut buf) {
                    wire_frames.push((i, t.link.0 as usize, buf[..t.len].to_vec()));
                }
            }
            for (from, to, bytes) in wire_frames {
                if !self.links.iter().any(|&l| l == (from, to) || l == (to, from)) {
                    continue;
                }
                if !self.first_frame_shown && wire::classify(&bytes) == Ok(wire::Kind::FirstContact) {
                    self.first_frame_shown = true;
                    println!("\n  What a relay sees of Alice's message (all it can read):");
                    for line in PrettyPrinter(&bytes).to_string().lines() {
                        println!("    {line}");
                    }
                    println!();
                }
                let _ = self.nodes[to].core().handle_frame(self.now, &mut self.rng, LinkId(from as u32), &bytes);
            }
            for n in self.nodes.iter_mut() {
                let name = n.name();
                while let Some(ev) = n.core().poll_event() {
                    match ev {
                        Event::Received(r) => println!(
                            "  [{}] {name} received from {}: \"{}\"",
                            self.now,
                            if r.contact { "a contact" } else { "a stranger" },
                            r.text
                        ),
                        Event::Status { state, .. } => println!("  [{}] {name}'s message is {state:?}", self.now),
                        _ => {}
                    }
                }
            }
            self.now = self.now.saturating_add(Duration::from_millis(10));
        }
    }

    fn held(&self) -> String {
        self.nodes
            .iter()
            .filter_map(|n| match n {
                Node::Relay(name, r) => Some(format!("{name}: {}", r.held())),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn run() {
    let mut rng = StdRng::seed_from_u64(rand::random());
    let alice = Identity::generate(&mut rng);
    let bob = Identity::generate(&mut rng);
    println!("Ferry demo: a mesh in one process, real crypto and routing, virtual time.\n");
    println!("Alice's contact code: {}", alice.code());
    println!("Bob's contact code:   {}\n", bob.code());
    let bob_key = bob.public();
    let mk = || Box::new(DemoRouter::new(Config::DEFAULT));
    let mut mesh = Mesh {
        nodes: vec![
            Node::Person("Alice", Box::new(DemoEndpoint::new(alice, mk()))),
            Node::Relay("relay-1", mk()),
            Node::Relay("dongle", mk()),
            Node::Relay("bus", mk()),
            Node::Person("Bob", Box::new(DemoEndpoint::new(bob, mk()))),
        ],
        links: Vec::new(),
        now: Instant::ZERO,
        rng,
        first_frame_shown: false,
    };
    let (a, r1, dongle, bus, b) = (0, 1, 2, 3, 4);
    mesh.link(a, r1, UDP);
    mesh.link(r1, dongle, BLE);
    mesh.run(1);
    let Node::Person(_, alice_ep) = &mut mesh.nodes[a] else { unreachable!() };
    let text = "Water and medics at the north gate. Pass it on.";
    println!("  [{}] Alice sends to Bob (not yet in contact): \"{text}\"", mesh.now);
    alice_ep.send(mesh.now, &mut mesh.rng, 1_800_000_000, &bob_key, text).expect("send");
    mesh.run(3);
    println!("  relays holding ciphertext: {}", mesh.held());
    mesh.link(bus, dongle, BLE);
    mesh.run(3);
    mesh.unlink(bus, dongle);
    println!("  ... the bus drives to the other camp (relays holding: {}) ...", mesh.held());
    mesh.run(60);
    mesh.link(bus, b, UDP);
    mesh.run(5);
    println!("  ... the bus drives back with Bob's receipt ...");
    mesh.unlink(bus, b);
    mesh.run(60);
    mesh.link(bus, dongle, BLE);
    mesh.run(5);
    println!("\n  relays holding ciphertext after the receipt passed: {}", mesh.held());
    println!("\nNo relay ever saw who wrote to whom, and none keeps anything after the receipt.");
}
