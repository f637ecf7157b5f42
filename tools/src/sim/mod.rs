//! `ferry-sim`: a deterministic discrete-event simulator that runs the real
//! `ferry-proto` router (never a model of it) in many simulated nodes.
//!
//! The pieces: [`scenario`] (the TOML file), [`world`] (positions, range,
//! walls, mobility), [`engine`] (the clock, the event queue, the link model
//! and the nodes) and [`report`] (the metrics file and the summary). A run
//! of the router is always paired with a run of naive flooding on the same
//! graph, traffic and seed, the baseline every figure is compared with.

pub mod engine;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod world;

use std::time::Instant as WallClock;

use engine::{Mode, Setup, Sim, SimEndpoint, relay_bytes};
use report::{Perf, Report};
use scenario::Scenario;

/// Stack for the simulation thread: routers are built by value before they
/// are boxed, which takes more than the default 2 MiB in debug builds.
const STACK: usize = 256 << 20;

/// Run a scenario with a seed: the router, then (if the scenario asks) naive
/// flooding. The router run uses up to two threads if `threads` allows
/// (the metrics are the same); the baselines one. `progress` gets (phase,
/// simulated second) now and then; phase 0 is the router run, 1 the
/// flooding run. Fails only if the simulation thread cannot be started.
pub fn simulate(
    sc: &Scenario,
    seed: u64,
    threads: usize,
    progress: &mut (dyn FnMut(u8, u64) + Send),
) -> std::io::Result<(Report, Perf)> {
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name("ferry-sim".into())
            .stack_size(STACK)
            .spawn_scoped(s, move || simulate_here(sc, seed, threads, progress))?;
        match h.join() {
            Ok(r) => Ok(r),
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

fn simulate_here(
    sc: &Scenario,
    seed: u64,
    threads: usize,
    progress: &mut (dyn FnMut(u8, u64) + Send),
) -> (Report, Perf) {
    let t0 = WallClock::now();
    let setup = Setup::new(sc, seed);
    let sim = Sim::new(&setup, Mode::Router, threads);
    let setup_wall = t0.elapsed().as_secs_f64();
    let t1 = WallClock::now();
    let (router, prof) = sim.run(&mut |t| progress(0, t));
    let router_wall = t1.elapsed().as_secs_f64();
    let t2 = WallClock::now();
    let flood = sc.baseline.then(|| Sim::new(&setup, Mode::Flood, threads).run(&mut |t| progress(1, t)).0);
    let counter = sc.baseline_counter.map(|k| {
        let mode = Mode::Counter { k, delay: sc.baseline_counter_delay_ms * 1000 };
        Sim::new(&setup, mode, threads).run(&mut |t| progress(2, t)).0
    });
    let flood_wall = t2.elapsed().as_secs_f64();
    let perf = Perf {
        router_wall_secs: router_wall,
        router_frame_events_per_sec: router.frame_events as f64 / router_wall.max(1e-9),
        flood_wall_secs: flood_wall,
        router_handle_frame_secs: prof.handle_frame.as_secs_f64(),
        router_handle_frame_per_sec: router.frame_events as f64 / prof.handle_frame.as_secs_f64().max(1e-9),
        router_handle_timeout_secs: prof.handle_timeout.as_secs_f64(),
        setup_wall_secs: setup_wall,
        threads: prof.lanes,
    };
    let report = Report {
        scenario: sc.name.clone(),
        seed,
        nodes: sc.nodes,
        endpoints: setup.endpoints.len() as u32,
        side_m: (setup.world.side * 10.0).round() / 10.0,
        positions: setup
            .world
            .pos
            .iter()
            .map(|p| [(p[0] * 10.0).round() / 10.0, (p[1] * 10.0).round() / 10.0])
            .collect(),
        mean_degree: (setup.world.mean_degree() * 100.0).round() / 100.0,
        largest_component: setup.largest_component,
        fast_dh: cfg!(feature = "fast-dh"),
        relay_bytes: relay_bytes(sc.relay),
        endpoint_bytes: core::mem::size_of::<SimEndpoint>() + relay_bytes(sc.relay),
        router,
        flood,
        counter,
    };
    (report, perf)
}
