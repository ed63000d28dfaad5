//! `ringcast-loadtest plot`: SVG charts from saved run reports.
//!
//! Reads every `*.json` file in `--input` (default `reports/`, where `loadtest/run.sh` writes
//! `SCENARIO-TARGET.json`), keeps the last line of each file that is a `run --json` report
//! (an object with a `mode` field; `compare-*.json` files and anything else are skipped), and
//! writes two charts to `--out` (default `docs/`):
//!
//! - `latency-cdf.svg`: one panel per scenario with a publish run, one step curve per target:
//!   the share of delivered events at or below a latency. The x axis is the latency (µs, log
//!   scale); the y axis is in "nines" (90 %, 99 %, 99.9 %, …) so the tail is visible, with the
//!   maximum on top. From the report's `latency_cdf` points when present (50 quantiles of the
//!   HDR histogram); reports without them give only p50, p90, p99, p99.9 and max, drawn as
//!   marked points joined by steps (a lower bound of the true curve; the legend says
//!   "percentiles").
//! - `throughput.svg`: `delivered_per_s`, one panel per scenario with its own scale (a paced
//!   scenario delivers orders of magnitude less than a max-rate one), one bar per target
//!   (ringcast, baseline, then any other) with the value over it.
//!
//! The target's name comes from the file name: `SCENARIO-TARGET.json` gives `TARGET` when the
//! report's `scenario` is `SCENARIO`, otherwise the whole file stem is used. Only the SVG
//! backend is used, and its text needs no font: the SVG names the font family and the viewer
//! draws it (label widths are estimated).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use std::ops::Range;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

/// Chart width, pixels.
const WIDTH: u32 = 960;
/// Height of one latency panel, pixels.
const PANEL_HEIGHT: u32 = 380;
/// Height of the throughput chart, pixels.
const BAR_HEIGHT: u32 = 420;
/// Narrowest throughput panel (one per scenario), pixels.
const PANEL_MIN_WIDTH: u32 = 240;
/// The y value ("nines") at which the maximum (quantile 1) is drawn.
const Y_MAX_AT: f64 = 5.5;
/// Quantiles above 1 − 10^−5 are drawn at 5 nines (except the maximum itself).
const NINES_CAP: f64 = 5.0;

#[derive(Debug, Clone, clap::Args)]
pub struct PlotArgs {
    /// Directory of run reports (`*.json`, one `run --json` line each)
    #[arg(long, default_value = "reports")]
    pub input: PathBuf,
    /// Directory to write `latency-cdf.svg` and `throughput.svg` into (created if missing)
    #[arg(long, default_value = "docs")]
    pub out: PathBuf,
}

/// What the charts need of one run report.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    scenario: String,
    target: String,
    delivered_per_s: Option<f64>,
    /// `(latency_us, quantile)`, ascending; empty without latency.
    cdf: Vec<(f64, f64)>,
    /// `cdf` is the histogram's `latency_cdf`, not just the percentiles.
    full_cdf: bool,
}

/// Reads the reports and writes both charts; prints the paths written.
pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    let runs = load_dir(&args.input)?;
    if runs.is_empty() {
        bail!(
            "no run reports (`run --json` lines) in {}",
            args.input.display()
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    let cdf_path = args.out.join("latency-cdf.svg");
    if draw_latency(&runs, &cdf_path)? {
        println!("wrote {}", cdf_path.display());
    } else {
        eprintln!(
            "plot: no report with latency figures, {} not written",
            cdf_path.display()
        );
    }
    let bar_path = args.out.join("throughput.svg");
    if draw_throughput(&runs, &bar_path)? {
        println!("wrote {}", bar_path.display());
    } else {
        eprintln!(
            "plot: no report with delivered_per_s, {} not written",
            bar_path.display()
        );
    }
    Ok(())
}

/// Every run report in `dir`, sorted by scenario, then target (ringcast, baseline, others).
fn load_dir(dir: &Path) -> anyhow::Result<Vec<Run>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
        .collect();
    files.sort();
    let mut runs = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(run) = text.lines().rev().find_map(|line| parse_run(line, &stem)) {
            runs.push(run);
        }
    }
    runs.sort_by(|a, b| {
        (
            a.scenario.as_str(),
            target_rank(&a.target),
            a.target.as_str(),
        )
            .cmp(&(
                b.scenario.as_str(),
                target_rank(&b.target),
                b.target.as_str(),
            ))
    });
    Ok(runs)
}

/// ringcast first, baseline second, the rest after.
fn target_rank(target: &str) -> u8 {
    match target {
        "ringcast" => 0,
        "baseline" => 1,
        _ => 2,
    }
}

/// One `run --json` line of the file `stem`, or `None` when the line is not one.
fn parse_run(line: &str, stem: &str) -> Option<Run> {
    let v: Value = serde_json::from_str(line.trim()).ok()?;
    let obj = v.as_object()?;
    obj.get("mode")?.as_str()?;
    let scenario = obj
        .get("scenario")
        .and_then(Value::as_str)
        .unwrap_or(stem)
        .to_string();
    let target = stem
        .strip_prefix(scenario.as_str())
        .and_then(|rest| rest.strip_prefix('-'))
        .filter(|t| !t.is_empty())
        .unwrap_or(stem)
        .to_string();
    let num = |key: &str| obj.get(key).and_then(Value::as_f64);

    let listed: Vec<(f64, f64)> = obj
        .get("latency_cdf")
        .and_then(Value::as_array)
        .map(|points| {
            points
                .iter()
                .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    let (cdf, full_cdf) = if listed.is_empty() {
        let percentiles = [
            ("latency_p50_us", 0.5),
            ("latency_p90_us", 0.9),
            ("latency_p99_us", 0.99),
            ("latency_p999_us", 0.999),
            ("latency_max_us", 1.0),
        ];
        let points = percentiles
            .iter()
            .filter_map(|&(key, q)| Some((num(key)?, q)))
            .collect();
        (points, false)
    } else {
        (listed, true)
    };
    Some(Run {
        scenario,
        target,
        delivered_per_s: num("delivered_per_s"),
        cdf,
        full_cdf,
    })
}

/// An `f64` axis (linear or log) with ticks, labels and mesh lines exactly at the given values.
/// (plotters' `with_key_points` on an `f64` range loses the label formatter support, and its
/// log axis puts a light line at every 1..9 multiple.)
struct Ticks<A> {
    axis: A,
    ticks: Vec<f64>,
}

impl<A: Ranged<ValueType = f64>> Ranged for Ticks<A> {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.axis.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.axis.range()
    }
}

/// A linear axis over `range` with ticks at `ticks`.
fn linear_axis(range: Range<f64>, ticks: Vec<f64>) -> Ticks<RangedCoordf64> {
    Ticks {
        axis: range.into(),
        ticks,
    }
}

/// A log axis over `lo..hi` with ticks at 1, 2, 5 × 10^k (only 10^k past four decades).
fn log_axis(lo: f64, hi: f64) -> Ticks<LogCoord<f64>> {
    let mults: &[f64] = if hi / lo > 1e4 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let ticks = (lo.log10().floor() as i32..=hi.log10().ceil() as i32)
        .flat_map(|k| mults.iter().map(move |m| m * 10f64.powi(k)))
        .filter(|v| (lo..=hi).contains(v))
        .collect();
    Ticks {
        axis: (lo..hi).log_scale().into(),
        ticks,
    }
}

/// The y coordinate of quantile `q`: its nines, −log10(1 − q), capped; the maximum on top.
fn nines(q: f64) -> f64 {
    if q >= 1.0 {
        Y_MAX_AT
    } else {
        (-(1.0 - q.max(0.0)).log10()).min(NINES_CAP)
    }
}

/// The step curve through `(latency, quantile)` points: the share at or below `x` is at least
/// the quantile of the last point at or left of `x`. Returns `(latency, nines)` vertices.
fn step_path(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut path = Vec::with_capacity(points.len() * 2 + 1);
    let mut prev_y = 0.0;
    for &(x, q) in points {
        let x = x.max(1.0);
        path.push((x, prev_y));
        prev_y = nines(q);
        path.push((x, prev_y));
    }
    path
}

/// The colour of a target: ringcast blue, baseline orange-red, others from a palette.
fn color(target: &str, index: usize) -> RGBColor {
    match target {
        "ringcast" => RGBColor(31, 119, 180),
        "baseline" => RGBColor(214, 39, 40),
        _ => {
            let others = [
                RGBColor(44, 160, 44),
                RGBColor(148, 103, 189),
                RGBColor(140, 86, 75),
                RGBColor(227, 119, 194),
                RGBColor(127, 127, 127),
            ];
            others[index % others.len()]
        }
    }
}

/// A latency in µs as axis text: `500 µs`, `2 ms`, `1.5 s`.
fn format_us(us: f64) -> String {
    let (v, unit) = if us >= 1e6 {
        (us / 1e6, "s")
    } else if us >= 1e3 {
        (us / 1e3, "ms")
    } else {
        (us, "µs")
    };
    let digits = if v >= 10.0 || v.fract().abs() < 1e-9 {
        0
    } else {
        1
    };
    format!("{v:.digits$} {unit}")
}

/// A rate as bar text: `850`, `12.3k`, `1.25M`.
fn format_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// The y-axis text of a nines value.
fn format_nines(y: f64) -> String {
    if y >= Y_MAX_AT - 1e-9 {
        return "max".into();
    }
    let pct = 100.0 * (1.0 - 10f64.powf(-y));
    let decimals = (y.round() as usize).saturating_sub(2);
    format!("{pct:.decimals$} %")
}

/// Draws the latency CDFs; `false` (and nothing written) when no run has latency figures.
fn draw_latency(runs: &[Run], path: &Path) -> anyhow::Result<bool> {
    let with_latency: Vec<&Run> = runs.iter().filter(|r| !r.cdf.is_empty()).collect();
    let scenarios: Vec<&str> = with_latency
        .iter()
        .map(|r| r.scenario.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if scenarios.is_empty() {
        return Ok(false);
    }
    let height = PANEL_HEIGHT * scenarios.len() as u32;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let panels = root.split_evenly((scenarios.len(), 1));
    for (panel, scenario) in panels.iter().zip(&scenarios) {
        let mine: Vec<&Run> = with_latency
            .iter()
            .copied()
            .filter(|r| r.scenario == *scenario)
            .collect();
        draw_latency_panel(panel, scenario, &mine)?;
    }
    root.present().map_err(plot_err)?;
    Ok(true)
}

fn draw_latency_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    scenario: &str,
    runs: &[&Run],
) -> anyhow::Result<()> {
    let xs = runs.iter().flat_map(|r| r.cdf.iter().map(|p| p.0.max(1.0)));
    let (lo, hi) = xs.fold((f64::MAX, 1.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (lo, hi) = ((lo / 1.5).max(1.0), (hi * 1.5).max(lo * 10.0));
    let y_points = vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, Y_MAX_AT];

    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{scenario}: publish-to-receive latency CDF"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(
            log_axis(lo, hi),
            linear_axis(0.0..Y_MAX_AT + 0.15, y_points),
        )
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("latency")
        .y_desc("events at or below")
        .x_label_formatter(&|x| format_us(*x))
        .y_label_formatter(&|y| format_nines(*y))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(plot_err)?;

    for (i, run) in runs.iter().enumerate() {
        let c = color(&run.target, i);
        let style = ShapeStyle::from(&c).stroke_width(2);
        let label = if run.full_cdf {
            run.target.clone()
        } else {
            format!("{} (percentiles)", run.target)
        };
        chart
            .draw_series(LineSeries::new(step_path(&run.cdf), style))
            .map_err(plot_err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        if !run.full_cdf {
            let marks = run
                .cdf
                .iter()
                .map(|&(x, q)| Circle::new((x.max(1.0), nines(q)), 3, c.filled()));
            chart.draw_series(marks).map_err(plot_err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

/// Draws delivered msgs/s, one panel per scenario (each with its own scale: a paced scenario
/// delivers orders of magnitude less than a max-rate one) and one bar per target; `false`
/// (nothing written) when no run has the figure.
fn draw_throughput(runs: &[Run], path: &Path) -> anyhow::Result<bool> {
    let rated: Vec<&Run> = runs
        .iter()
        .filter(|r| r.delivered_per_s.is_some())
        .collect();
    let scenarios: Vec<&str> = rated
        .iter()
        .map(|r| r.scenario.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if scenarios.is_empty() {
        return Ok(false);
    }
    let width = WIDTH.max(PANEL_MIN_WIDTH * scenarios.len() as u32);
    let root = SVGBackend::new(path, (width, BAR_HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root
        .titled("Delivered messages per second", ("sans-serif", 20))
        .map_err(plot_err)?;
    let panels = root.split_evenly((1, scenarios.len()));
    for (panel, scenario) in panels.iter().zip(&scenarios) {
        let mine: Vec<(&str, f64)> = rated
            .iter()
            .filter(|r| r.scenario == *scenario)
            .filter_map(|r| Some((r.target.as_str(), r.delivered_per_s?)))
            .collect();
        draw_throughput_panel(panel, scenario, &mine)?;
    }
    root.present().map_err(plot_err)?;
    Ok(true)
}

fn draw_throughput_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    scenario: &str,
    bars: &[(&str, f64)],
) -> anyhow::Result<()> {
    let n = bars.len();
    let top = bars.iter().map(|b| b.1).fold(0.0f64, f64::max).max(1.0) * 1.15;
    let centers: Vec<f64> = (0..n).map(|i| i as f64 + 0.5).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(scenario, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(64)
        .build_cartesian_2d(linear_axis(0.0..n as f64, centers), 0.0..top)
        .map_err(plot_err)?;
    let names: Vec<String> = bars.iter().map(|b| b.0.to_string()).collect();
    let x_label = move |x: &f64| {
        names
            .get(x.floor().max(0.0) as usize)
            .cloned()
            .unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("delivered msgs/s")
        .x_label_formatter(&x_label)
        .y_label_formatter(&|y| format_rate(*y))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()
        .map_err(plot_err)?;
    let text_style = TextStyle::from(("sans-serif", 13).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    for (i, &(target, v)) in bars.iter().enumerate() {
        let c = color(target, i);
        let (x0, x1) = (i as f64 + 0.15, i as f64 + 0.85);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x0, 0.0), (x1, v)],
                c.filled(),
            )))
            .map_err(plot_err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                format_rate(v),
                (i as f64 + 0.5, v),
                text_style.clone(),
            )))
            .map_err(plot_err)?;
    }
    Ok(())
}

/// plotters' errors borrow the backend's error type; keep only the message.
fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_run_line_and_names_the_target_from_the_file() {
        let line = r#"{"scenario":"fanout-latency","mode":"publish","delivered_per_s":2000.0,
            "latency_p50_us":100,"latency_p90_us":200,"latency_p99_us":300,
            "latency_p999_us":400,"latency_max_us":500,"latency_cdf":null}"#
            .replace('\n', "");
        let run = parse_run(&line, "fanout-latency-baseline").unwrap();
        assert_eq!(run.scenario, "fanout-latency");
        assert_eq!(run.target, "baseline");
        assert_eq!(run.delivered_per_s, Some(2000.0));
        assert!(!run.full_cdf);
        assert_eq!(
            run.cdf,
            vec![
                (100.0, 0.5),
                (200.0, 0.9),
                (300.0, 0.99),
                (400.0, 0.999),
                (500.0, 1.0)
            ]
        );
        assert!(parse_run(r#"{"scenario":"x","floor":{}}"#, "compare-x").is_none());
        assert!(parse_run("not json", "x").is_none());

        let full = r#"{"scenario":null,"mode":"publish","latency_cdf":[[5,0.0],[9,1.0]]}"#;
        let run = parse_run(full, "adhoc").unwrap();
        assert_eq!(
            (run.scenario.as_str(), run.target.as_str()),
            ("adhoc", "adhoc")
        );
        assert!(run.full_cdf);
        assert_eq!(run.cdf, vec![(5.0, 0.0), (9.0, 1.0)]);
    }

    #[test]
    fn step_path_and_axis_text() {
        let path = step_path(&[(100.0, 0.5), (200.0, 0.9), (300.0, 1.0)]);
        let y = |q: f64| nines(q);
        assert_eq!(
            path,
            vec![
                (100.0, 0.0),
                (100.0, y(0.5)),
                (200.0, y(0.5)),
                (200.0, y(0.9)),
                (300.0, y(0.9)),
                (300.0, Y_MAX_AT)
            ]
        );
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert_eq!(nines(0.999_999_9), NINES_CAP);
        assert_eq!(format_nines(0.0), "0 %");
        assert_eq!(format_nines(1.0), "90 %");
        assert_eq!(format_nines(3.0), "99.9 %");
        assert_eq!(format_nines(Y_MAX_AT), "max");
        assert_eq!(format_us(500.0), "500 µs");
        assert_eq!(format_us(2500.0), "2.5 ms");
        assert_eq!(format_rate(12_345.0), "12.3k");
        assert_eq!(
            log_axis(150.0, 3000.0).ticks,
            vec![200.0, 500.0, 1000.0, 2000.0]
        );
        assert_eq!(log_axis(1.0, 1e6).ticks.len(), 7);
    }

    #[test]
    fn renders_both_charts_into_a_directory() {
        let dir = std::env::temp_dir().join(format!("ringcast-plot-test-{}", std::process::id()));
        let input = dir.join("reports");
        std::fs::create_dir_all(&input).unwrap();
        let line = |p50: u64, rate: f64, cdf: &str| {
            format!(
                r#"{{"scenario":"fanout-latency","mode":"publish","delivered_per_s":{rate},"latency_p50_us":{p50},"latency_p90_us":{},"latency_p99_us":{},"latency_p999_us":{},"latency_max_us":{},"latency_cdf":{cdf}}}"#,
                p50 * 2,
                p50 * 3,
                p50 * 4,
                p50 * 5
            )
        };
        std::fs::write(
            input.join("fanout-latency-ringcast.json"),
            line(100, 20_000.0, "[[10,0.0],[100,0.5],[300,0.99],[500,1.0]]"),
        )
        .unwrap();
        std::fs::write(
            input.join("fanout-latency-baseline.json"),
            line(900, 15_000.0, "null"),
        )
        .unwrap();
        std::fs::write(input.join("compare-fanout-latency.json"), r#"{"floor":{}}"#).unwrap();
        let out = dir.join("docs");
        run(PlotArgs {
            input: input.clone(),
            out: out.clone(),
        })
        .unwrap();
        let cdf = std::fs::read_to_string(out.join("latency-cdf.svg")).unwrap();
        assert!(cdf.starts_with("<svg"), "{}", &cdf[..cdf.len().min(200)]);
        assert!(cdf.contains("fanout-latency: publish-to-receive latency CDF"));
        assert!(cdf.contains("baseline (percentiles)"));
        let bars = std::fs::read_to_string(out.join("throughput.svg")).unwrap();
        assert!(bars.contains("20.0k") && bars.contains("15.0k") && bars.contains("ringcast"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
