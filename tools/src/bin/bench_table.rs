//! `ferry-bench-table DIR`: one markdown table of every benchmark figure,
//! its target and its reference, from what `scripts/bench.sh` left in DIR:
//!
//! - `core.txt`: the output of `cargo bench -p ferry-proto --bench core`
//!   (the size rows it prints), with criterion's estimates read from
//!   `CRITERION` (default `target/criterion`, or `--criterion PATH`);
//! - `relay.md`: the output of `ferry-relay-bench`;
//! - `sim-NAME/metrics.json` and `perf.json`: `ferry-sim run --out` of the
//!   scenarios `reference`, `partition-carrier` and `flooder`.
//!
//! A missing input leaves its rows as "not run". The figures are read, not
//! re-measured: this only gathers them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;

struct Row {
    figure: String,
    measured: String,
    target: String,
    reference: String,
}

fn row(figure: &str, measured: Option<String>, target: &str, reference: &str) -> Row {
    Row {
        figure: figure.to_owned(),
        measured: measured.unwrap_or_else(|| "not run".to_owned()),
        target: target.to_owned(),
        reference: reference.to_owned(),
    }
}

/// Elements per second of a criterion benchmark (every group here counts
/// one element per iteration).
fn rate(criterion: &Path, id: &str) -> Option<f64> {
    let text = std::fs::read_to_string(criterion.join(id).join("new").join("estimates.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let ns = v["mean"]["point_estimate"].as_f64()?;
    (ns > 0.0).then(|| 1e9 / ns)
}

fn per_sec(r: f64) -> String {
    if r >= 1e7 {
        format!("{:.1} M/s", r / 1e6)
    } else if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e4 {
        format!("{:.0} k/s", r / 1e3)
    } else {
        let n = r.round() as u64;
        if n >= 1000 { format!("{},{:03}/s", n / 1000, n % 1000) } else { format!("{n}/s") }
    }
}

/// The measured column of the row of a markdown table whose first cell
/// starts with `first`.
fn cell(text: &str, first: &str, col: usize) -> Option<String> {
    text.lines().filter(|l| l.starts_with('|')).find_map(|l| {
        let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
        (cells.first()?.starts_with(first)).then(|| cells.get(col).map(|c| (*c).to_owned())).flatten()
    })
}

fn core_rows(dir: &Path, criterion: &Path, rows: &mut Vec<Row>) {
    let core = std::fs::read_to_string(dir.join("core.txt")).unwrap_or_default();
    rows.push(row(
        "overhead bytes per message between contacts",
        cell(&core, "overhead bytes per message between contacts", 1),
        "≤ 100",
        "Reticulum/LXMF ≈ 214 (destination in clear)",
    ));
    rows.push(row(
        "overhead bytes, first contact",
        cell(&core, "overhead bytes of a first-contact", 1),
        "reported",
        "",
    ));
    rows.push(row(
        "text bytes in one 240-byte frame, between contacts",
        cell(&core, "text bytes in one Small frame, between contacts", 1),
        "≥ 140",
        "",
    ));
    let r = |id: &str| rate(criterion, id);
    rows.push(row(
        "seal + open pairs per core, between contacts",
        r("seal_open/contact").map(per_sec),
        "≥ 3,000/s",
        "",
    ));
    rows.push(row(
        "seal + open pairs per core, first contact",
        r("seal_open/first_contact").map(per_sec),
        "reported",
        "",
    ));
    rows.push(row(
        "\"not for me\" per core, tagged, 1,000 contacts",
        r("not_for_me/tagged_1000").map(per_sec),
        "≥ 1 M/s",
        "",
    ));
    let fc = match (r("not_for_me/first_contact"), r("x25519/dh")) {
        (Some(f), Some(dh)) => Some(format!("{} = {:.0}% of X25519 ({})", per_sec(f), 100.0 * f / dh, per_sec(dh))),
        _ => None,
    };
    rows.push(row("\"not for me\" per core, first contact", fc, "≥ 80% of X25519", ""));
    rows.push(row("router: duplicates dropped per core", r("router/duplicate").map(per_sec), "≥ 1 M/s", ""));
    rows.push(row("router: frames forwarded per core (store full)", r("router/forward").map(per_sec), "≥ 200 k/s", ""));
}

fn relay_rows(dir: &Path, rows: &mut Vec<Row>) {
    let relay = std::fs::read_to_string(dir.join("relay.md")).unwrap_or_default();
    let m = |first: &str| cell(&relay, first, 1);
    rows.push(row("relay bench: messages per second (A → relay → B)", m("msg/s"), "≥ 2,000", "Reticulum/LXMF 116–169"));
    rows.push(row(
        "relay bench: relay CPU per 1,000 messages",
        m("relay CPU per 1,000"),
        "≤ 0.020 s",
        "Reticulum/LXMF 0.58–0.85 s (raw packets 0.23–0.26 s)",
    ));
    rows.push(row("relay bench: relay peak RSS", m("relay peak RSS"), "≤ 10 MB", "Reticulum 41 MiB"));
    rows.push(row(
        "relay bench: latency p50 / p99",
        m("p50 / p99"),
        "p50 ≤ 1 ms unloaded",
        "Reticulum/LXMF p50 2–6 ms",
    ));
    // "Median: 4,000 msg/s, relay CPU 0.029 s per 1,000 messages (target ...), peak RSS ..."
    let raw = relay.lines().find(|l| l.starts_with("Median:")).map(|l| {
        let l = l.trim_start_matches("Median: ");
        match l.split_once(" (target") {
            Some((head, _)) => head.to_owned(),
            None => l.to_owned(),
        }
    });
    rows.push(row("relay alone, one datagram per wake-up (`--raw`)", raw, "reported", ""));
}

/// A scenario's figures from `DIR/sim-NAME/metrics.json` and `perf.json`.
struct Sim {
    metrics: Value,
    perf: Value,
}

impl Sim {
    fn read(dir: &Path, name: &str) -> Option<Sim> {
        let read = |f: &str| -> Option<Value> {
            serde_json::from_str(&std::fs::read_to_string(dir.join(format!("sim-{name}")).join(f)).ok()?).ok()
        };
        Some(Sim { metrics: read("metrics.json")?, perf: read("perf.json")? })
    }

    fn pct(&self, run: &str, key: &str) -> Option<String> {
        self.metrics[run][key].as_f64().map(|x| format!("{:.1}%", 100.0 * x))
    }

    /// Delivery, and transmissions as a share of naive flooding's.
    fn delivery_and_cost(&self) -> Option<String> {
        let router = self.metrics["router"]["tx"]["total"].as_f64()?;
        let flood = self.metrics["flood"]["tx"]["total"].as_f64()?;
        let msg = self.metrics["router"]["tx"]["message"].as_f64()?;
        Some(format!(
            "{} delivered; {:.0}% of flooding's transmissions ({:.0}% messages, {:.0}% receipts and the rest)",
            self.pct("router", "delivery_ratio")?,
            100.0 * router / flood,
            100.0 * msg / flood,
            100.0 * (router - msg) / flood,
        ))
    }

    fn flood_delivery(&self) -> String {
        self.pct("flood", "delivery_ratio").map(|d| format!("naive flooding delivers {d}")).unwrap_or_default()
    }
}

fn sim_rows(dir: &Path, rows: &mut Vec<Row>) {
    let reference = Sim::read(dir, "reference");
    let r = reference.as_ref();
    // `--quick` runs a smaller version: say which ran.
    let which = r
        .and_then(|s| Some(format!("`{}`, {} nodes", s.metrics["scenario"].as_str()?, s.metrics["nodes"].as_u64()?)))
        .unwrap_or_else(|| "`reference`, 10,000 nodes".to_owned());
    rows.push(row(
        &format!("simulator: wall time of the {which}"),
        r.and_then(|s| {
            let total = s.perf["setup_wall_secs"].as_f64()?
                + s.perf["router_wall_secs"].as_f64()?
                + s.perf["flood_wall_secs"].as_f64()?;
            Some(format!("{total:.0} s (router run {:.0} s)", s.perf["router_wall_secs"].as_f64()?))
        }),
        "< 2 min",
        "",
    ));
    rows.push(row(
        "simulator: frame events per second (router run)",
        r.and_then(|s| {
            let rate = per_sec(s.perf["router_frame_events_per_sec"].as_f64()?);
            let threads = s.perf["threads"].as_u64().unwrap_or(1);
            let dh = if s.metrics["fast_dh"].as_bool()? { "the DH stand-in" } else { "real X25519" };
            Some(format!("{rate} ({threads} thread{}, {dh})", if threads == 1 { "" } else { "s" }))
        }),
        "≥ 1 M/s",
        "",
    ));
    rows.push(row(
        &format!("{which}: delivery, and transmissions against naive flooding"),
        r.and_then(Sim::delivery_and_cost),
        "≥ 99%, ≤ 50%",
        &r.map(Sim::flood_delivery).unwrap_or_default(),
    ));
    let carriers = Sim::read(dir, "partition-carrier");
    rows.push(row(
        "partitions bridged only by carriers: delivery",
        carriers.as_ref().and_then(|s| s.pct("router", "delivery_ratio")),
        "reported",
        &carriers.as_ref().map(Sim::flood_delivery).unwrap_or_default(),
    ));
    // One seed says little here (100 messages, one flooder placed by the
    // seed): bench.sh runs a sweep over seeds.
    let flooder = sweep_delivery(&dir.join("sim-flooder").join("sweep.csv"))
        .or_else(|| Sim::read(dir, "flooder").and_then(|s| s.pct("router", "delivery_ratio")));
    rows.push(row("honest delivery with a neighbour flooding at 10× link capacity", flooder, "≥ 95%", ""));
}

/// Mean and lowest router delivery over the seeds of a `ferry-sim sweep`
/// (`sweep.csv`: `param,seed,router_delivery,...`).
fn sweep_delivery(csv: &Path) -> Option<String> {
    let text = std::fs::read_to_string(csv).ok()?;
    let mut lines = text.lines();
    let col = lines.next()?.split(',').position(|h| h == "router_delivery")?;
    let d: Vec<f64> = lines.filter_map(|l| l.split(',').nth(col)?.parse().ok()).collect();
    let min = d.iter().copied().reduce(f64::min)?;
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    Some(format!("mean {:.1}%, lowest {:.0}% (seeds 1–{})", 100.0 * mean, 100.0 * min, d.len()))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut dir = None;
    let mut criterion = PathBuf::from("target/criterion");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--criterion" => match it.next() {
                Some(p) => criterion = PathBuf::from(p),
                None => {
                    eprintln!("ferry-bench-table: --criterion needs a path");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("usage: ferry-bench-table DIR [--criterion PATH]");
                return ExitCode::SUCCESS;
            }
            other if dir.is_none() => dir = Some(PathBuf::from(other)),
            other => {
                eprintln!("ferry-bench-table: unexpected argument {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!("usage: ferry-bench-table DIR [--criterion PATH]");
        return ExitCode::from(2);
    };
    let mut rows = Vec::new();
    core_rows(&dir, &criterion, &mut rows);
    relay_rows(&dir, &mut rows);
    sim_rows(&dir, &mut rows);
    println!("| figure | measured | target | reference |");
    println!("|---|---|---|---|");
    for r in rows {
        println!("| {} | {} | {} | {} |", r.figure, r.measured, r.target, r.reference);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_and_rates() {
        let md = "| figure | measured | target |\n|---|---|---|\n| msg/s | 3,517 | ≥ 2,000 |\n";
        assert_eq!(cell(md, "msg/s", 1).as_deref(), Some("3,517"));
        assert_eq!(cell(md, "nothing", 1), None);
        assert_eq!(per_sec(6536.4), "6,536/s");
        assert_eq!(per_sec(999.0), "999/s");
        assert_eq!(per_sec(31_200_000.0), "31.2 M/s");
        assert_eq!(per_sec(204_000.0), "204 k/s");
    }

    #[test]
    fn sweep_mean_and_lowest() {
        let dir = std::env::temp_dir().join(format!("ferry-bench-table-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("sweep.csv");
        std::fs::write(&csv, "param,seed,router_delivery,router_tx\n,1,0.98,5\n,2,0.92,6\n,3,1,7\n").unwrap();
        assert_eq!(sweep_delivery(&csv).as_deref(), Some("mean 96.7%, lowest 92% (seeds 1–3)"));
        assert_eq!(sweep_delivery(&dir.join("none.csv")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
