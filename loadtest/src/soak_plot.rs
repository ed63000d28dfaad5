//! `ringcast-loadtest plot-soak`: the gateway's RSS and open descriptors over a soak, from the
//! CSV that `run --samples-csv` writes (`t_s,phase,rss_kib,fds,clients`), as one SVG with two
//! panels sharing the time axis: RSS in MiB (top) and descriptors (bottom, with the load test's
//! open connections). The measured window is shaded; the warm-up before it is not.

use std::path::PathBuf;

use anyhow::{Context, bail};
use plotters::prelude::*;

use crate::soak::{self, Phase, Point};

const WIDTH: u32 = 960;
const HEIGHT: u32 = 640;

#[derive(Debug, Clone, clap::Args)]
pub struct PlotSoakArgs {
    /// The samples (`run --samples-csv`)
    #[arg(long)]
    pub csv: PathBuf,
    /// The SVG to write
    #[arg(long, default_value = "docs/soak.svg")]
    pub out: PathBuf,
    /// Chart title
    #[arg(
        long,
        default_value = "ringcast soak: gateway RSS and open descriptors"
    )]
    pub title: String,
}

pub fn run(args: PlotSoakArgs) -> anyhow::Result<()> {
    let points = soak::read_csv(&args.csv)?;
    if points.len() < 2 {
        bail!("{}: fewer than two samples", args.csv.display());
    }
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    draw(&points, &args)?;
    println!("wrote {}", args.out.display());
    Ok(())
}

fn draw(points: &[Point], args: &PlotSoakArgs) -> anyhow::Result<()> {
    let t_max = points.iter().map(|p| p.t_s).fold(1.0f64, f64::max);
    let window: Vec<f64> = points
        .iter()
        .filter(|p| p.phase == Phase::Window)
        .map(|p| p.t_s)
        .collect();
    let shade = window.first().zip(window.last()).map(|(&a, &b)| (a, b));

    let root = SVGBackend::new(&args.out, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(&args.title, ("sans-serif", 20)).map_err(err)?;
    let (top, bottom) = root.split_vertically(HEIGHT / 2 - 20);

    let mib: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.t_s, p.rss_kib as f64 / 1024.0))
        .collect();
    let rss_hi = mib.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..rss_hi)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("RSS (MiB)")
        .light_line_style(RGBColor(240, 240, 240))
        .draw()
        .map_err(err)?;
    if let Some((a, b)) = shade {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(a, 0.0), (b, rss_hi)],
                RGBColor(235, 243, 250).filled(),
            )))
            .map_err(err)?;
    }
    let blue = RGBColor(31, 119, 180);
    chart
        .draw_series(LineSeries::new(mib.iter().copied(), blue.stroke_width(2)))
        .map_err(err)?
        .label("gateway RSS")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue));
    chart
        .draw_series(
            mib.iter()
                .map(|&(x, y)| Circle::new((x, y), 2, blue.filled())),
        )
        .map_err(err)?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(err)?;

    let fd_hi = points
        .iter()
        .map(|p| p.fds.max(p.clients as u64) as f64)
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..fd_hi)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds (shaded: the measured window, after the warm-up)")
        .y_desc("count")
        .light_line_style(RGBColor(240, 240, 240))
        .draw()
        .map_err(err)?;
    if let Some((a, b)) = shade {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(a, 0.0), (b, fd_hi)],
                RGBColor(235, 243, 250).filled(),
            )))
            .map_err(err)?;
    }
    let red = RGBColor(214, 39, 40);
    let green = RGBColor(44, 160, 44);
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.t_s, p.fds as f64)),
            red.stroke_width(2),
        ))
        .map_err(err)?
        .label("gateway open descriptors")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red));
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.t_s, p.clients as f64)),
            green.stroke_width(1),
        ))
        .map_err(err)?
        .label("load test's open connections")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], green));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_both_panels() {
        let dir = std::env::temp_dir().join(format!("soak-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("s.csv");
        let pt = |t_s, phase, rss_kib, fds, clients| Point {
            t_s,
            phase,
            rss_kib,
            fds,
            clients,
        };
        let points = vec![
            pt(0.0, Phase::Before, 5_000, 20, 0),
            pt(10.0, Phase::Warmup, 90_000, 19_020, 19_000),
            pt(20.0, Phase::Window, 100_000, 19_020, 19_000),
            pt(30.0, Phase::Window, 100_100, 19_020, 19_000),
            pt(32.0, Phase::Left, 60_000, 20, 0),
        ];
        soak::write_csv(&points, &csv).unwrap();
        let out = dir.join("soak.svg");
        run(PlotSoakArgs {
            csv: csv.clone(),
            out: out.clone(),
            title: "t".into(),
        })
        .unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.contains("RSS (MiB)") && svg.contains("open descriptors"));
        soak::write_csv(&points[..1], &csv).unwrap();
        assert!(
            run(PlotSoakArgs {
                csv,
                out,
                title: "t".into()
            })
            .is_err()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
