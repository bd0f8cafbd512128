//! The run as a picture: an SVG with two charts over the run's seconds,
//! drawn from the report's time series.
//!
//! - top: 2xx latency p50 and p99 of each second (from the intended send
//!   time), in ms on a logarithmic axis;
//! - bottom: requests due and requests ended per second, by outcome.
//!
//! Phase boundaries are grey vertical lines on both, with each phase's
//! name at the top of the first. Only plotters' SVG
//! backend is used, with text left to the SVG viewer, so no system fonts
//! are needed.

use plotters::prelude::*;

use crate::LoadgenError;
use crate::record::{Outcome, Report};

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 760;

fn color(outcome: Outcome) -> RGBColor {
    match outcome {
        Outcome::Success => RGBColor(0x2c, 0xa0, 0x2c),
        Outcome::Throttled => RGBColor(0xff, 0x7f, 0x0e),
        Outcome::ServerError => RGBColor(0xd6, 0x27, 0x28),
        Outcome::OtherStatus => RGBColor(0x94, 0x67, 0xbd),
        Outcome::Timeout => RGBColor(0x8c, 0x56, 0x4b),
        Outcome::ConnectionError => RGBColor(0xe3, 0x77, 0xc2),
        Outcome::Dropped => RGBColor(0x7f, 0x7f, 0x7f),
    }
}

fn failed(e: impl std::fmt::Debug) -> LoadgenError {
    LoadgenError::Internal(format!("cannot draw the plot: {e:?}"))
}

/// The SVG document of `report`.
#[allow(clippy::cast_precision_loss)]
pub fn svg(report: &Report) -> Result<String, LoadgenError> {
    let series = &report.time_series;
    let seconds = series.len().max(1) as f64;
    let x_end = seconds.max(report.duration_s).max(1.0);
    let latencies: Vec<f64> = series
        .iter()
        .flat_map(|s| [s.latency_p50_us, s.latency_p99_us])
        .flatten()
        .map(|us| us as f64 / 1000.0)
        .collect();
    let y_min = latencies
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .clamp(0.001, 1.0)
        / 1.5;
    let y_max = latencies.iter().copied().fold(1.0, f64::max) * 1.5;
    let count_max = series
        .iter()
        .flat_map(|s| {
            Outcome::ALL
                .iter()
                .map(|&o| s.ended.get(o))
                .chain([s.due])
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.1;
    let boundaries: Vec<f64> = report.per_phase.iter().skip(1).map(|p| p.start_s).collect();
    // Each point sits at the middle of its second.
    let at = |second: u64| second as f64 + 0.5;

    let mut document = String::new();
    {
        let root = SVGBackend::with_string(&mut document, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        let (top, bottom) = root.split_vertically(HEIGHT / 2);

        let mut chart = ChartBuilder::on(&top)
            .caption(
                "2xx latency per second (from intended send time)",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_end, (y_min..y_max).log_scale())
            .map_err(failed)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("ms")
            .draw()
            .map_err(failed)?;
        for &x in &boundaries {
            chart
                .draw_series(LineSeries::new(
                    [(x, y_min), (x, y_max)],
                    BLACK.mix(0.35).stroke_width(1),
                ))
                .map_err(failed)?;
        }
        // Each phase's name at its start, at the top of the chart.
        let names = report.per_phase.iter().map(|p| {
            Text::new(
                p.name.clone(),
                (p.start_s + x_end * 0.005, y_max / 1.15),
                ("sans-serif", 12).into_font().color(&BLACK.mix(0.6)),
            )
        });
        chart.draw_series(names).map_err(failed)?;
        let p50 = RGBColor(0x1f, 0x77, 0xb4);
        let p99 = RGBColor(0xd6, 0x27, 0x28);
        for (name, colour, pick) in [("p50", p50, 0usize), ("p99", p99, 1usize)] {
            let points: Vec<(f64, f64)> = series
                .iter()
                .filter_map(|s| {
                    let value = if pick == 0 {
                        s.latency_p50_us
                    } else {
                        s.latency_p99_us
                    };
                    value.map(|us| (at(s.second), us as f64 / 1000.0))
                })
                .collect();
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(failed)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(failed)?;

        let mut chart = ChartBuilder::on(&bottom)
            .caption(
                "requests per second: due, and ended by outcome",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_end, 0.0..count_max)
            .map_err(failed)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("requests")
            .draw()
            .map_err(failed)?;
        for &x in &boundaries {
            chart
                .draw_series(LineSeries::new(
                    [(x, 0.0), (x, count_max)],
                    BLACK.mix(0.35).stroke_width(1),
                ))
                .map_err(failed)?;
        }
        let due: Vec<(f64, f64)> = series
            .iter()
            .map(|s| (at(s.second), s.due as f64))
            .collect();
        chart
            .draw_series(LineSeries::new(due, BLACK.stroke_width(1)))
            .map_err(failed)?
            .label("due")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK));
        for outcome in Outcome::ALL {
            if report.counts.get(outcome) == 0 {
                continue;
            }
            let colour = color(outcome);
            let points: Vec<(f64, f64)> = series
                .iter()
                .map(|s| (at(s.second), s.ended.get(outcome) as f64))
                .collect();
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(failed)?
                .label(outcome.label())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(failed)?;
        root.present().map_err(failed)?;
    }
    Ok(document)
}

/// One named line of an [`xy_svg`] panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub name: String,
    /// `(x, y)` points, drawn in the order given; non-positive values are
    /// left out (both axes are logarithmic).
    pub points: Vec<(f64, f64)>,
}

/// One chart of an [`xy_svg`] document.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub caption: String,
    pub x_desc: String,
    pub y_desc: String,
    pub lines: Vec<Line>,
    /// A horizontal reference line (a latency limit, say), dashed grey.
    pub limit: Option<(String, f64)>,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
];

/// Panels stacked vertically, each a log-log chart of lines with markers
/// at the points (latency against offered rate, for instance): the same
/// SVG backend and style as [`svg`], for comparisons across runs.
pub fn xy_svg(panels: &[Panel]) -> Result<String, LoadgenError> {
    let rows = u32::try_from(panels.len().max(1)).unwrap_or(1);
    let height = (HEIGHT / 2) * rows;
    let mut document = String::new();
    {
        let root = SVGBackend::with_string(&mut document, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        for (panel, area) in panels
            .iter()
            .zip(root.split_evenly((panels.len().max(1), 1)))
        {
            draw_panel(&area, panel)?;
        }
        root.present().map_err(failed)?;
    }
    Ok(document)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
) -> Result<(), LoadgenError>
where
    DB::ErrorType: 'static,
{
    let positive = |&(x, y): &(f64, f64)| x > 0.0 && y > 0.0 && x.is_finite() && y.is_finite();
    let points: Vec<(f64, f64)> = panel
        .lines
        .iter()
        .flat_map(|l| l.points.iter().copied().filter(positive))
        .chain(panel.limit.iter().map(|(_, y)| (f64::NAN, *y)))
        .collect();
    let range = |values: &mut dyn Iterator<Item = f64>| {
        let (low, high) = values
            .filter(|v| v.is_finite() && *v > 0.0)
            .fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        if low.is_finite() {
            (low / 1.5, high * 1.5)
        } else {
            (0.1, 10.0)
        }
    };
    let (x_min, x_max) = range(&mut points.iter().map(|p| p.0));
    let (y_min, y_max) = range(&mut points.iter().map(|p| p.1));
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d((x_min..x_max).log_scale(), (y_min..y_max).log_scale())
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc(panel.x_desc.as_str())
        .y_desc(panel.y_desc.as_str())
        .draw()
        .map_err(failed)?;
    if let Some((name, y)) = &panel.limit {
        let grey = BLACK.mix(0.45);
        chart
            .draw_series(DashedLineSeries::new(
                [(x_min, *y), (x_max, *y)],
                6,
                4,
                grey.stroke_width(1),
            ))
            .map_err(failed)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], grey));
    }
    for (index, line) in panel.lines.iter().enumerate() {
        let colour = PALETTE[index % PALETTE.len()];
        let points: Vec<(f64, f64)> = line.points.iter().copied().filter(positive).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(failed)?
            .label(line.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, colour.filled())),
            )
            .map_err(failed)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xy_panels_draw_lines_and_skip_non_positive_points() {
        let panel = Panel {
            caption: "p99 against offered rate".into(),
            x_desc: "requests/s".into(),
            y_desc: "ms".into(),
            lines: vec![
                Line {
                    name: "a".into(),
                    points: vec![(100.0, 1.0), (200.0, 2.0), (0.0, 3.0)],
                },
                Line {
                    name: "empty".into(),
                    points: vec![],
                },
            ],
            limit: Some(("50 ms".into(), 50.0)),
        };
        let svg = xy_svg(&[panel.clone(), panel]).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("p99 against offered rate"));
        assert!(svg.contains("50 ms"));
        assert!(xy_svg(&[]).unwrap().starts_with("<svg"));
    }
}
