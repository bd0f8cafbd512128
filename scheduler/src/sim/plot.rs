//! The SVG plot of a simulation: offered load, p99 latency and failure
//! rate over time for every policy side by side, then, per policy, the
//! share of each tier over time. Drawn with plotters' SVG backend only; the
//! text is SVG `<text>`, so no font files are read.

use std::path::Path;

use plotters::prelude::*;

use super::{SimError, SimOutput};

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// One panel: a line per series of `(x, y)` points.
struct Panel<'a> {
    title: String,
    y_label: &'a str,
    series: Vec<(String, Vec<(f64, f64)>)>,
    y_max: Option<f64>,
}

fn plot_error<E: std::fmt::Display>(error: E) -> SimError {
    SimError::Plot(error.to_string())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel<'_>,
    x_max: f64,
) -> Result<(), SimError>
where
    DB::ErrorType: 'static,
{
    let data_max = panel
        .series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max);
    let y_max = panel.y_max.unwrap_or_else(|| (data_max * 1.1).max(1e-9));
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(32)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max.max(1e-9), 0.0..y_max)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc(panel.y_label)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(plot_error)?;
    for (i, (name, points)) in panel.series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))
            .map_err(plot_error)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// The panels of `output`.
fn panels(output: &SimOutput) -> Vec<Panel<'static>> {
    let mid = |start: f64, end: f64| (start + end) / 2.0;
    let mut panels = Vec::new();
    let Some(first) = output.runs.first() else {
        return panels;
    };
    panels.push(Panel {
        title: format!("Offered load: {}", output.schedule),
        y_label: "requests/s",
        series: vec![(
            "offered".into(),
            first
                .buckets
                .iter()
                .map(|b| (mid(b.start_s, b.end_s), b.offered_per_s))
                .collect(),
        )],
        y_max: None,
    });
    let per_run = |value: fn(&super::report::Bucket) -> f64| {
        output
            .runs
            .iter()
            .map(|r| {
                (
                    r.label.clone(),
                    r.buckets
                        .iter()
                        .filter(|b| b.arrivals > 0)
                        .map(|b| (mid(b.start_s, b.end_s), value(b)))
                        .collect(),
                )
            })
            .collect::<Vec<_>>()
    };
    panels.push(Panel {
        title: "p99 latency of successful requests".into(),
        y_label: "ms",
        series: per_run(|b| b.p99_ms),
        y_max: None,
    });
    panels.push(Panel {
        title: "Failed requests".into(),
        y_label: "% of arrivals",
        series: per_run(|b| b.failure_rate * 100.0),
        y_max: Some(100.0),
    });
    for run in &output.runs {
        let series = run
            .backends
            .iter()
            .enumerate()
            .map(|(i, backend)| {
                (
                    backend.name.clone(),
                    run.buckets
                        .iter()
                        .filter(|b| b.arrivals > 0)
                        .map(|b| {
                            let served = b.served.get(i).copied().unwrap_or(0);
                            (
                                mid(b.start_s, b.end_s),
                                served as f64 / b.arrivals as f64 * 100.0,
                            )
                        })
                        .collect(),
                )
            })
            .chain(std::iter::once((
                "failed".to_owned(),
                run.buckets
                    .iter()
                    .filter(|b| b.arrivals > 0)
                    .map(|b| (mid(b.start_s, b.end_s), b.failure_rate * 100.0))
                    .collect(),
            )))
            .collect();
        panels.push(Panel {
            title: format!("{}: where requests went", run.label),
            y_label: "% of arrivals",
            series,
            y_max: Some(100.0),
        });
    }
    panels
}

/// The plot as SVG text.
pub fn svg(output: &SimOutput) -> Result<String, SimError> {
    let panels = panels(output);
    let x_max = output
        .runs
        .iter()
        .flat_map(|r| r.buckets.last().map(|b| b.end_s))
        .fold(0.0_f64, f64::max);
    let height = 260 * u32::try_from(panels.len().max(1)).unwrap_or(1);
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (960, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let areas = root.split_evenly((panels.len().max(1), 1));
        for (panel, area) in panels.iter().zip(areas.iter()) {
            draw_panel(area, panel, x_max)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(text)
}

/// Writes the plot to `path`.
pub fn write_svg(output: &SimOutput, path: &Path) -> Result<(), SimError> {
    let text = svg(output)?;
    std::fs::write(path, text).map_err(|source| SimError::Write {
        path: path.to_owned(),
        source,
    })
}
