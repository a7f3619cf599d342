//! The latency-under-load chart: p50 and p99 against calls in flight (left), calls per
//! second against calls in flight (right), one colour per stack; each point is the median of
//! the rounds, with a bar from the smallest to the largest round.
//!
//! Drawn with plotters' SVG backend only: text goes into the file as `<text>` elements for
//! the viewer to render, so no font library is linked.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::BoxError;
use crate::report::{Results, Spread, thousands};
use crate::stacks::Stack;
use crate::workload::{IN_FLIGHT, Workload};

/// The chart's file name, beside the report, in the default configuration.
pub(crate) const FILE_NAME: &str = "load-curve.svg";
/// The chart's file name without its extension: another configuration's chart is
/// `load-curve-<configuration>.svg`.
pub(crate) const FILE_STEM: &str = "load-curve";

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 520;

/// The figures of `Workload::Load` this chart draws: p50 and p99 (indices 1 and 2), calls/s (0).
const CALLS_PER_SECOND: usize = 0;
const P50: usize = 1;
const P99: usize = 2;

fn colour(stack: Stack) -> RGBColor {
    match stack {
        Stack::Rpc => RGBColor(214, 39, 40),
        Stack::Tonic => RGBColor(31, 119, 180),
        Stack::Tarpc => RGBColor(44, 160, 44),
        Stack::Raw => RGBColor(90, 90, 90),
        Stack::RpcTls => RGBColor(255, 127, 14),
        Stack::TonicTls => RGBColor(23, 190, 207),
    }
}

/// The points of one figure for one stack: (index of the in-flight value, spread).
fn points(results: &Results, stack: Stack, figure: usize) -> Vec<(f64, Spread)> {
    IN_FLIGHT
        .iter()
        .enumerate()
        .filter_map(|(i, &n)| Some((i as f64, results.spread(Workload::Load(n), stack, figure)?)))
        .collect()
}

/// Writes the chart to `path`.
pub(crate) fn write(
    path: &Path,
    results: &Results,
    stacks: &[Stack],
    subtitle: &str,
) -> Result<(), BoxError> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let root =
        root.titled(&format!("Latency under load, one connection ({subtitle})"), ("sans-serif", 20))?;
    let (left, right) = root.split_horizontally(WIDTH / 2);
    latency(&left, results, stacks)?;
    throughput(&right, results, stacks)?;
    root.present()?;
    Ok(())
}

/// The x axis: the in-flight values, evenly spaced (they are powers of 8).
fn in_flight_label(x: &f64) -> String {
    IN_FLIGHT.get(x.round() as usize).map(u64::to_string).unwrap_or_default()
}

fn x_range() -> std::ops::Range<f64> {
    -0.25..(IN_FLIGHT.len() as f64 - 0.75)
}

fn latency(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    results: &Results,
    stacks: &[Stack],
) -> Result<(), BoxError> {
    let all: Vec<Spread> = stacks
        .iter()
        .flat_map(|&stack| [P50, P99].into_iter().flat_map(move |figure| points(results, stack, figure)))
        .map(|(_, spread)| spread)
        .collect();
    let low = all.iter().map(|s| s.min).fold(f64::INFINITY, f64::min).max(0.1);
    let high = all.iter().map(|s| s.max).fold(0.0, f64::max).max(low * 2.0);
    let mut chart = ChartBuilder::on(area)
        .caption("p50 (solid) and p99 (dashed) latency, µs", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_range(), (low / 1.5..high * 1.5).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(IN_FLIGHT.len())
        .x_label_formatter(&in_flight_label)
        .x_desc("calls in flight")
        .y_desc("µs")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for &stack in stacks {
        let colour = colour(stack);
        let p50 = points(results, stack, P50);
        let p99 = points(results, stack, P99);
        chart
            .draw_series(LineSeries::new(p50.iter().map(|&(x, s)| (x, s.median)), colour.stroke_width(2)))?
            .label(stack.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(DashedLineSeries::new(
            p99.iter().map(|&(x, s)| (x, s.median)),
            6,
            4,
            colour.stroke_width(2),
        ))?;
        for series in [&p50, &p99] {
            chart.draw_series(series.iter().map(|&(x, s)| Circle::new((x, s.median), 3, colour.filled())))?;
            chart.draw_series(
                series
                    .iter()
                    .map(|&(x, s)| PathElement::new(vec![(x, s.min), (x, s.max)], colour.stroke_width(1))),
            )?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

fn throughput(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    results: &Results,
    stacks: &[Stack],
) -> Result<(), BoxError> {
    let high = stacks
        .iter()
        .flat_map(|&stack| points(results, stack, CALLS_PER_SECOND))
        .map(|(_, spread)| spread.max)
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption("throughput, calls/s", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(x_range(), 0.0..high * 1.1)?;
    chart
        .configure_mesh()
        .x_labels(IN_FLIGHT.len())
        .x_label_formatter(&in_flight_label)
        .x_desc("calls in flight")
        .y_desc("calls/s")
        .y_label_formatter(&|y| thousands(*y))
        .draw()?;
    for &stack in stacks {
        let colour = colour(stack);
        let rate = points(results, stack, CALLS_PER_SECOND);
        chart
            .draw_series(LineSeries::new(rate.iter().map(|&(x, s)| (x, s.median)), colour.stroke_width(2)))?
            .label(stack.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(rate.iter().map(|&(x, s)| Circle::new((x, s.median), 3, colour.filled())))?;
        chart.draw_series(
            rate.iter().map(|&(x, s)| PathElement::new(vec![(x, s.min), (x, s.max)], colour.stroke_width(1))),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}
