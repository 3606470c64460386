//! The samples drawn as one PNG: six panels over time (memory, descriptors,
//! store, p99 latency, throughput, errors), drawn in process with plotters
//! and a TrueType font read from a file.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::{MIB, Sample, SoakError};

/// Where Debian's fonts-dejavu-core puts its sans-serif font.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// One line of a panel: its label and its points (seconds, value).
type Line = (String, Vec<(f64, f64)>);

/// Draws `samples` into a PNG at `path`, `title` on top, with the font in
/// `font` (the bytes of a TrueType file).
pub fn draw(samples: &[Sample], font: Vec<u8>, title: &str, path: &Path) -> Result<(), SoakError> {
    // plotters keeps registered fonts for the life of the process.
    register_font("sans-serif", FontStyle::Normal, Box::leak(font.into_boxed_slice()))
        .map_err(|_| SoakError::Plot("the font file is not a TrueType font".to_owned()))?;
    let root = BitMapBackend::new(path, (1500, 1300)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let root = root.titled(title, ("sans-serif", 26)).map_err(plot_error)?;
    let panels = root.split_evenly((3, 2));
    let over = |f: &dyn Fn(&Sample) -> f64| samples.iter().map(|s| (s.t, f(s))).collect::<Vec<_>>();
    let per_op = |f: &dyn Fn(&crate::OpPoint) -> Option<f64>| -> Vec<Line> {
        let mut names: Vec<&str> = samples.iter().flat_map(|s| s.ops.iter().map(|o| o.op.as_str())).collect();
        names.sort_unstable();
        names.dedup();
        names
            .into_iter()
            .map(|op| {
                let points =
                    samples.iter().filter_map(|s| s.ops.iter().find(|o| o.op == op).and_then(f).map(|v| (s.t, v)));
                (op.to_owned(), points.collect())
            })
            .collect()
    };
    let mib = |b: u64| b as f64 / MIB;
    let contents: [(&str, Vec<Line>); 6] = [
        (
            "resident memory (MiB)",
            vec![
                ("server".into(), over(&|s| mib(s.server.rss_bytes))),
                ("agent".into(), over(&|s| mib(s.agent.rss_bytes))),
                ("verifier + load".into(), over(&|s| mib(s.verifier.rss_bytes))),
            ],
        ),
        (
            "open file descriptors",
            vec![
                ("server".into(), over(&|s| s.server.fds as f64)),
                ("agent".into(), over(&|s| s.agent.fds as f64)),
                ("verifier + load".into(), over(&|s| s.verifier.fds as f64)),
            ],
        ),
        (
            "server store (MiB)",
            vec![
                ("sled files".into(), over(&|s| mib(s.store_bytes))),
                ("audit log".into(), over(&|s| mib(s.audit_bytes))),
            ],
        ),
        ("p99 latency per interval (ms)", per_op(&|o| o.p99_ms)),
        ("completed per second", per_op(&|o| Some(o.per_sec))),
        ("errors per interval", per_op(&|o| Some(o.errors as f64))),
    ];
    for (area, (caption, lines)) in panels.iter().zip(contents) {
        panel(area, caption, &lines)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    lines: &[Line],
) -> Result<(), SoakError> {
    let points = lines.iter().flat_map(|(_, p)| p);
    let x_max = points.clone().map(|p| p.0).fold(1.0, f64::max);
    let y_max = points.map(|p| p.1).fold(0.0, f64::max);
    let y_max = if y_max > 0.0 { y_max * 1.15 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .label_style(("sans-serif", 14))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(plot_error)?;
    for (index, (label, points)) in lines.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
            .map_err(plot_error)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

fn plot_error(e: impl std::fmt::Display) -> SoakError {
    SoakError::Plot(e.to_string())
}
