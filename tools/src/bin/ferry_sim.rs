//! `ferry-sim`: run a mesh scenario with the real router, against naive
//! flooding on the same graph and seed.
//!
//! ```text
//! ferry-sim run scenarios/small.toml --seed 1 --out out/small
//! ferry-sim sweep scenarios/small.toml --seeds 1..5 --out out/sweep
//! ferry-sim sweep scenarios/mobile-churn.toml --seeds 1..3 --set router_config.resync_ms=2000,15000
//! ```
//!
//! `run` prints a summary and writes `metrics.json` (deterministic: same
//! scenario and seed, same bytes), `perf.json` (wall-clock figures) and the
//! plots (`delivery`, `latency_cdf`, `transmissions`, `store`, each `.svg`
//! and `.png`) to `--out`. `sweep` runs every seed of a range (and every value of a
//! parameter given with `--set`) and writes one directory per run plus
//! `sweep.csv`.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry_tools::sim::plot::write_plots;
use ferry_tools::sim::report::{Perf, Report};
use ferry_tools::sim::scenario::Scenario;
use ferry_tools::sim::simulate;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser, Debug)]
#[command(name = "ferry-sim", about = "Deterministic mesh simulator running the real Ferry router")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one scenario with one seed.
    Run {
        /// The scenario file (TOML).
        file: PathBuf,
        /// The seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Directory for metrics.json and perf.json.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Threads for the router run: 1 or 2 (more count as 2); the
        /// metrics are the same. Default: the machine's cores.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Run one scenario with every seed of a range `A..B` (B excluded),
    /// and with every value of one parameter (`--set KEY=V1,V2,...`).
    Sweep {
        /// The scenario file (TOML).
        file: PathBuf,
        /// Seeds, `A..B`.
        #[arg(long, default_value = "1..4")]
        seeds: String,
        /// A parameter to sweep: a dotted key and comma-separated TOML
        /// values, e.g. `router_config.resync_ms=2000,5000,15000`.
        #[arg(long)]
        set: Option<String>,
        /// Directory for one subdirectory per seed and sweep.csv.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Threads for each router run: 1 or 2 (more count as 2; the runs
        /// of a sweep go one after the other). Default: the machine's cores.
        #[arg(long)]
        threads: Option<usize>,
    },
}

fn parse_range(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once("..")?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a < b).then_some((a, b))
}

fn run_one(sc: &Scenario, seed: u64, threads: usize) -> Result<(Report, Perf), String> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(sc.duration_secs);
        if let Ok(style) = ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} simulated s ({elapsed})") {
            b.set_style(style.progress_chars("=> "));
        }
        b
    });
    let mut phase_seen = 0u8;
    let mut progress = |phase: u8, t: u64| {
        if let Some(b) = &bar {
            if phase != phase_seen || t == 1 {
                phase_seen = phase;
                b.set_prefix(match phase {
                    0 => "router",
                    1 => "flooding",
                    _ => "counter",
                });
                b.reset();
            }
            b.set_position(t);
        }
    };
    let out =
        simulate(sc, seed, threads, &mut progress).map_err(|e| format!("cannot start the simulation thread: {e}"));
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    out
}

fn write_outputs(dir: &Path, report: &Report, perf: &Perf) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let metrics = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    let path = dir.join("metrics.json");
    std::fs::write(&path, metrics + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let perf = serde_json::to_string_pretty(perf).map_err(|e| e.to_string())?;
    let path = dir.join("perf.json");
    std::fs::write(&path, perf + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    if let Err(e) = write_plots(report, dir) {
        eprintln!("ferry-sim: no plots: {e}");
    }
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

fn real_main() -> Result<(), String> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { file, seed, out, threads } => {
            let threads = threads.unwrap_or_else(cores);
            let sc = Scenario::load(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let (report, perf) = run_one(&sc, seed, threads)?;
            print!("{}", report.table(Some(&perf)));
            if let Some(dir) = out {
                write_outputs(&dir, &report, &perf)?;
            }
        }
        Cmd::Sweep { file, seeds, set, out, threads } => {
            let threads = threads.unwrap_or_else(cores);
            let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let (a, b) = parse_range(&seeds).ok_or_else(|| format!("--seeds {seeds}: expected A..B with A < B"))?;
            // (label, scenario) for every value of the swept parameter.
            let mut variants = Vec::new();
            match &set {
                None => {
                    let sc = Scenario::from_toml(&text).map_err(|e| format!("{}: {e}", file.display()))?;
                    variants.push((String::new(), sc));
                }
                Some(set) => {
                    let (key, values) =
                        set.split_once('=').ok_or_else(|| format!("--set {set}: expected KEY=V1,V2,..."))?;
                    for v in values.split(',') {
                        let sc = Scenario::from_toml_with(&text, key, v.trim())
                            .map_err(|e| format!("{} with {key}={v}: {e}", file.display()))?;
                        variants.push((format!("{key}={}", v.trim()), sc));
                    }
                }
            }
            let mut csv = String::from(
                "param,seed,router_delivery,router_tx,router_tx_per_delivered,router_p50_ms,router_p90_ms,flood_delivery,flood_tx,flood_tx_per_delivered,flood_p50_ms,wall_secs\n",
            );
            for (label, sc) in &variants {
                for seed in a..b {
                    if !label.is_empty() {
                        println!("== {label}");
                    }
                    let (report, perf) = run_one(sc, seed, threads)?;
                    print!("{}", report.table(Some(&perf)));
                    let r = &report.router;
                    let (fd, ft, ftd, fp) = report.flood.as_ref().map_or((0.0, 0, 0.0, 0), |f| {
                        (f.delivery_ratio, f.tx.total, f.tx_per_delivered, f.latency_p50_ms)
                    });
                    csv.push_str(&format!(
                        "{label},{seed},{},{},{},{},{},{fd},{ft},{ftd},{fp},{:.2}\n",
                        r.delivery_ratio,
                        r.tx.total,
                        r.tx_per_delivered,
                        r.latency_p50_ms,
                        r.latency_p90_ms,
                        perf.router_wall_secs + perf.flood_wall_secs
                    ));
                    if let Some(dir) = &out {
                        let sub = if label.is_empty() { dir.clone() } else { dir.join(label.replace('/', "_")) };
                        write_outputs(&sub.join(format!("seed-{seed}")), &report, &perf)?;
                    }
                }
            }
            if let Some(dir) = &out {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                let path = dir.join("sweep.csv");
                std::fs::write(&path, &csv).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
            print!("{csv}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
