//! Training curves as one SVG in the run folder: one chart per [`Panel`],
//! stacked vertically (loss per step, evaluation per epoch, collapse
//! monitors, ...).
//!
//! Drawn with plotters' SVG backend, which writes text as SVG `<text>`
//! elements: no font files are needed. Non-finite points are skipped; empty
//! series and single points are drawn without fuss.
//!
//! ```
//! use selfsup_core::plot::{plot_curves, Panel, Series, SeriesStyle};
//! let dir = tempfile::tempdir().unwrap();
//! let loss = Series {
//!     name: "loss".into(),
//!     points: (0..100).map(|i| (i as f64, 1.0 / (1.0 + i as f64))).collect(),
//!     style: SeriesStyle::Smoothed,
//! };
//! let panel = Panel { title: "training loss".into(), x_label: "step".into(), series: vec![loss] };
//! plot_curves(&dir.path().join("curves.svg"), "simclr", &[panel]).unwrap();
//! ```
use crate::{Error, Result};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How a [`Series`] is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeriesStyle {
    /// A solid line through the points (a dot for a single point).
    Line,
    /// Noisy per-step values: the raw points as a light line plus a trailing
    /// moving average (window: a tenth of the points, between 1 and 100) in
    /// full colour. Lines of more than 2000 points are drawn strided.
    Smoothed,
    /// A reference level (e.g. a baseline), dashed; a single point becomes a
    /// horizontal line across the whole chart.
    Reference,
}

/// One named curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// `(x, y)` points in drawing order; non-finite ones are skipped.
    pub points: Vec<(f64, f64)>,
    /// How to draw it.
    pub style: SeriesStyle,
}

/// One chart: a title, an x-axis label and its curves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Panel {
    /// Caption above the chart.
    pub title: String,
    /// Label of the x axis (`step`, `epoch`, ...).
    pub x_label: String,
    /// The curves, drawn in order with distinct colours.
    pub series: Vec<Series>,
}

const WIDTH: u32 = 960;
const PANEL_HEIGHT: u32 = 300;
const TITLE_HEIGHT: u32 = 40;
/// Points drawn per line at most; longer series are strided.
const MAX_DRAWN_POINTS: usize = 2000;
/// Colours that read well on white, in drawing order.
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Writes `panels` as one SVG to `path`, under `title`. The file is written
/// to a temporary sibling first and renamed, so a reader never sees half a
/// plot. An empty `panels` gives a title-only image.
pub fn plot_curves(path: &Path, title: &str, panels: &[Panel]) -> Result<()> {
    let height = TITLE_HEIGHT + PANEL_HEIGHT * panels.len().max(1) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| {
            Error::io(
                path,
                std::io::Error::other(format!("drawing the plot: {e}")),
            )
        };
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let body = root
            .titled(title, ("sans-serif", 22))
            .map_err(|e| err(&e))?;
        for (panel, area) in panels
            .iter()
            .zip(body.split_evenly((panels.len().max(1), 1)))
        {
            draw_panel(&area, panel).map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    let tmp = path.with_extension("svg.tmp");
    std::fs::write(&tmp, svg).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

type DrawResult<T> = std::result::Result<T, DrawingAreaErrorKind<std::io::Error>>;

fn draw_panel(area: &DrawingArea<SVGBackend<'_>, Shift>, panel: &Panel) -> DrawResult<()> {
    let finite: Vec<Vec<(f64, f64)>> = panel
        .series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect()
        })
        .collect();
    let all = || finite.iter().flatten();
    let (x0, x1) = span(all().map(|p| p.0), 0.0);
    let (y0, y1) = span(all().map(|p| p.1), 0.05);

    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(panel.x_label.as_str())
        .light_line_style(WHITE.mix(0.0))
        .draw()?;

    for (i, (series, pts)) in panel.series.iter().zip(&finite).enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let legend = move |(x, y): (i32, i32)| {
            PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
        };
        match series.style {
            SeriesStyle::Line => {
                if pts.len() == 1 {
                    chart.draw_series(std::iter::once(Circle::new(pts[0], 3, colour.filled())))?;
                }
                chart
                    .draw_series(LineSeries::new(thin(pts), colour.stroke_width(2)))?
                    .label(series.name.as_str())
                    .legend(legend);
            }
            SeriesStyle::Smoothed => {
                let window = (pts.len() / 10).clamp(1, 100);
                chart.draw_series(LineSeries::new(thin(pts), colour.mix(0.25).stroke_width(1)))?;
                if pts.len() == 1 {
                    chart.draw_series(std::iter::once(Circle::new(pts[0], 3, colour.filled())))?;
                }
                let name = if window > 1 {
                    format!("{} (moving average of {window})", series.name)
                } else {
                    series.name.clone()
                };
                chart
                    .draw_series(LineSeries::new(
                        thin(&moving_average(pts, window)),
                        colour.stroke_width(2),
                    ))?
                    .label(name)
                    .legend(legend);
            }
            SeriesStyle::Reference => {
                let line = if pts.len() == 1 {
                    vec![(x0, pts[0].1), (x1, pts[0].1)]
                } else {
                    pts.clone()
                };
                chart
                    .draw_series(DashedLineSeries::new(line, 6, 4, colour.stroke_width(2)))?
                    .label(series.name.as_str())
                    .legend(move |(x, y)| {
                        DashedPathElement::new(
                            vec![(x, y), (x + 20, y)],
                            4,
                            3,
                            colour.stroke_width(2),
                        )
                    });
            }
        }
    }
    if !panel.series.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.4))
            .draw()?;
    }
    Ok(())
}

/// The range of `values`, padded by `pad` of its width on each side; a
/// degenerate range is widened so that the chart still has an extent.
fn span(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    let width = hi - lo;
    // Relative test: (lo, hi) = (1e12, 1e12 + 1e-6) is a point too.
    if width <= 1e-9 * lo.abs().max(hi.abs()).max(1e-300) {
        let half = if lo == 0.0 { 1.0 } else { 0.1 * lo.abs() };
        return (lo - half, hi + half);
    }
    (lo - pad * width, hi + pad * width)
}

/// At most about [`MAX_DRAWN_POINTS`] of `pts`, evenly strided, always
/// keeping the last one (keeps the SVG small for long runs).
fn thin(pts: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let stride = pts.len().div_ceil(MAX_DRAWN_POINTS).max(1);
    let mut out: Vec<(f64, f64)> = pts.iter().copied().step_by(stride).collect();
    if let (Some(&last), Some(&kept)) = (pts.last(), out.last()) {
        if last != kept {
            out.push(last);
        }
    }
    out
}

/// Trailing moving average over `window` points (fewer at the start).
fn moving_average(pts: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(pts.len());
    let mut sum = 0.0;
    for (i, &(x, y)) in pts.iter().enumerate() {
        sum += y;
        if i >= window {
            sum -= pts[i - window].1;
        }
        out.push((x, sum / (i + 1).min(window) as f64));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, points: Vec<(f64, f64)>, style: SeriesStyle) -> Series {
        Series {
            name: name.into(),
            points,
            style,
        }
    }

    #[test]
    fn writes_an_svg_with_every_series_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.svg");
        let loss: Vec<(f64, f64)> = (0..500)
            .map(|i| {
                (
                    i as f64,
                    2.0 / (1.0 + i as f64 / 50.0) + 0.1 * ((i * 7919) % 13) as f64 / 13.0,
                )
            })
            .collect();
        let panels = vec![
            Panel {
                title: "training loss".into(),
                x_label: "step".into(),
                series: vec![series("loss", loss, SeriesStyle::Smoothed)],
            },
            Panel {
                title: "evaluation".into(),
                x_label: "epoch".into(),
                series: vec![
                    series(
                        "knn_top1",
                        vec![(1.0, 0.3), (2.0, 0.45), (3.0, f64::NAN), (4.0, 0.6)],
                        SeriesStyle::Line,
                    ),
                    series(
                        "baseline_raw_pixels",
                        vec![(1.0, 0.35)],
                        SeriesStyle::Reference,
                    ),
                ],
            },
            Panel {
                title: "collapse <monitors>".into(),
                x_label: "epoch".into(),
                series: vec![
                    series("std_ratio", vec![(1.0, 0.9)], SeriesStyle::Line),
                    series("rank_ratio", vec![], SeriesStyle::Line),
                ],
            },
        ];
        plot_curves(&path, "simclr & friends", &panels).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        for name in [
            "loss (moving average of 50)",
            "knn_top1",
            "baseline_raw_pixels",
            "std_ratio",
            "rank_ratio",
            "training loss",
            "epoch",
            "simclr &amp; friends",
            "collapse &lt;monitors&gt;",
        ] {
            assert!(svg.contains(name), "{name} missing");
        }
        assert!(
            !svg.to_lowercase().contains("nan"),
            "non-finite points are skipped"
        );
        assert!(!dir.path().join("curves.svg.tmp").exists());
    }

    #[test]
    fn empty_and_degenerate_panels_do_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.svg");
        let panels = vec![
            Panel {
                title: "nothing".into(),
                x_label: "step".into(),
                series: vec![],
            },
            Panel {
                title: "only garbage".into(),
                x_label: "step".into(),
                series: vec![
                    series(
                        "inf",
                        vec![(f64::INFINITY, 1.0), (1.0, f64::NAN)],
                        SeriesStyle::Smoothed,
                    ),
                    series("ref", vec![], SeriesStyle::Reference),
                ],
            },
            Panel {
                title: "one point each".into(),
                x_label: "epoch".into(),
                series: vec![
                    series("a", vec![(0.0, 0.0)], SeriesStyle::Line),
                    series("b", vec![(0.0, 0.0)], SeriesStyle::Smoothed),
                    series("c", vec![(1e12, 5.0), (1e12, 5.0)], SeriesStyle::Reference),
                ],
            },
        ];
        plot_curves(&path, "edge cases", &panels).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 0);
        plot_curves(&path, "no panels", &[]).unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("no panels"));
    }

    #[test]
    fn unwritable_path_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("curves.svg");
        let e = plot_curves(&path, "t", &[]).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
    }

    #[test]
    fn long_runs_keep_the_svg_small() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.svg");
        let loss: Vec<(f64, f64)> = (0..200_000)
            .map(|i| (i as f64, 1.0 + (i % 17) as f64))
            .collect();
        let panel = Panel {
            title: "loss".into(),
            x_label: "step".into(),
            series: vec![series("loss", loss, SeriesStyle::Smoothed)],
        };
        plot_curves(&path, "long", &[panel]).unwrap();
        let bytes = std::fs::metadata(&path).unwrap().len();
        assert!(bytes < 200_000, "{bytes} bytes");
        let pts: Vec<(f64, f64)> = (0..4001).map(|i| (i as f64, 0.0)).collect();
        let t = thin(&pts);
        assert!(t.len() <= MAX_DRAWN_POINTS + 1 && t.len() > MAX_DRAWN_POINTS / 2);
        assert_eq!(t.last(), pts.last());
        assert_eq!(thin(&pts[..5]), pts[..5].to_vec());
    }

    #[test]
    fn moving_average_and_span() {
        let pts: Vec<(f64, f64)> = [1.0, 2.0, 3.0, 4.0]
            .iter()
            .enumerate()
            .map(|(i, &y)| (i as f64, y))
            .collect();
        let ma: Vec<f64> = moving_average(&pts, 2).into_iter().map(|p| p.1).collect();
        assert_eq!(ma, vec![1.0, 1.5, 2.5, 3.5]);
        assert_eq!(span([2.0, 2.0].into_iter(), 0.05), (1.8, 2.2));
        assert_eq!(span(std::iter::empty(), 0.05), (0.0, 1.0));
        assert_eq!(span([0.0, 10.0].into_iter(), 0.0), (0.0, 10.0));
    }
}
