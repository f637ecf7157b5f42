//! Plots of a run, router against naive flooding, each as SVG and PNG:
//! delivery ratio over time, latency CDF, transmissions over time (with the
//! transmissions per delivered message in the title), store occupancy.
//!
//! Text is drawn with `ab_glyph` from a TrueType font read at run time
//! (`FERRY_SIM_FONT`, else DejaVu Sans or Liberation Sans where Debian puts
//! them), so no fontconfig is needed. Without a font there are no plots (the
//! metrics file has every number they show).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::report::{Report, RunReport};

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

static FONT: OnceLock<Result<(), String>> = OnceLock::new();

/// Register a font for plotters under "sans-serif", once.
fn font() -> Result<(), String> {
    FONT.get_or_init(|| {
        let mut paths: Vec<PathBuf> = std::env::var_os("FERRY_SIM_FONT").map(PathBuf::from).into_iter().collect();
        paths.extend(FONTS.iter().map(PathBuf::from));
        for p in &paths {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(());
                }
            }
        }
        Err("no TrueType font found for the plots (set FERRY_SIM_FONT to a .ttf file)".to_owned())
    })
    .clone()
}

type Series = (String, RGBColor, Vec<(f64, f64)>);

fn runs(report: &Report) -> Vec<(&RunReport, RGBColor)> {
    let mut v = vec![(&report.router, RGBColor(200, 40, 40))];
    if let Some(f) = &report.flood {
        v.push((f, RGBColor(40, 80, 200)));
    }
    if let Some(c) = &report.counter {
        v.push((c, RGBColor(30, 150, 60)));
    }
    v
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let points = series.iter().flat_map(|s| s.2.iter());
    let (mut x1, mut y1) = (1e-9f64, 1e-9f64);
    for &(x, y) in points {
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x1 * 1.02, 0.0..y1 * 1.05)
        .map_err(err)?;
    chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw().map_err(err)?;
    for (name, color, pts) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn both(dir: &Path, stem: &str, title: &str, xl: &str, yl: &str, s: &[Series]) -> Result<Vec<PathBuf>, String> {
    let svg = dir.join(format!("{stem}.svg"));
    draw(SVGBackend::new(&svg, (900, 540)).into_drawing_area(), title, xl, yl, s)?;
    let png = dir.join(format!("{stem}.png"));
    draw(BitMapBackend::new(&png, (900, 540)).into_drawing_area(), title, xl, yl, s)?;
    Ok(vec![svg, png])
}

/// Write the four plots (SVG and PNG each) to `dir`; the files written.
pub fn write_plots(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, String> {
    font()?;
    let mut files = Vec::new();
    let name = &report.scenario;
    // Delivery ratio over time.
    let s: Vec<Series> = runs(report)
        .into_iter()
        .map(|(r, c)| {
            let total = f64::from(r.messages.max(1));
            let pts = r.timeline.iter().map(|x| (x.t as f64, f64::from(x.delivered) / total)).collect();
            (r.mode.clone(), c, pts)
        })
        .collect();
    let title = format!("{name}: delivered / all messages");
    files.extend(both(dir, "delivery", &title, "simulated time (s)", "delivery ratio", &s)?);
    // Latency CDF.
    let s: Vec<Series> = runs(report)
        .into_iter()
        .map(|(r, c)| {
            let total = f64::from(r.messages.max(1));
            let pts =
                r.latency_ms.iter().enumerate().map(|(i, &l)| (l as f64 / 1000.0, (i + 1) as f64 / total)).collect();
            (r.mode.clone(), c, pts)
        })
        .collect();
    let title = format!("{name}: latency CDF (of all messages)");
    files.extend(both(dir, "latency_cdf", &title, "latency (s)", "share delivered within", &s)?);
    // Transmissions over time.
    let s: Vec<Series> = runs(report)
        .into_iter()
        .map(|(r, c)| {
            let pts = r.timeline.iter().map(|x| (x.t as f64, x.tx as f64)).collect();
            (format!("{} ({:.0} per delivered)", r.mode, r.tx_per_delivered), c, pts)
        })
        .collect();
    let title = format!("{name}: transmissions (all frames)");
    files.extend(both(dir, "transmissions", &title, "simulated time (s)", "frames sent", &s)?);
    // Store occupancy.
    let s: Vec<Series> = runs(report)
        .into_iter()
        .flat_map(|(r, c)| {
            let mean = r.timeline.iter().map(|x| (x.t as f64, x.held_mean)).collect();
            let max = r.timeline.iter().map(|x| (x.t as f64, f64::from(x.held_max))).collect();
            let light = RGBColor(c.0 / 2 + 120, c.1 / 2 + 120, c.2 / 2 + 120);
            [(format!("{} mean", r.mode), c, mean), (format!("{} max", r.mode), light, max)]
        })
        .collect();
    let title = format!("{name}: messages held per node (flooding: queued)");
    files.extend(both(dir, "store", &title, "simulated time (s)", "messages", &s)?);
    Ok(files)
}
