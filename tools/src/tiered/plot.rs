//! A hand-written SVG latency plot: latency (log scale) against percentile (log scale of
//! 1 / (1 - q), so that 90%, 99% and 99.9% are evenly spaced), one polyline per series.
//! Written by hand to keep a plotting crate and its build time out of the tools.

use std::fmt::Write;

/// One line of the plot.
pub struct Series {
    pub name: String,
    /// (quantile in [0, 1], latency in ms), quantiles ascending.
    pub points: Vec<(f64, f64)>,
}

/// A horizontal reference line, such as the injected GET latency.
pub struct Mark {
    pub label: String,
    pub ms: f64,
}

pub struct Plot {
    pub title: String,
    pub series: Vec<Series>,
    pub marks: Vec<Mark>,
}

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 540.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 230.0;
/// Vertical distance between two lines of text.
const LINE: f64 = 15.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
/// Distinguishable colours (Okabe-Ito), in series order.
const COLORS: [&str; 7] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000",
];
/// Latencies below this (0.1 µs) are drawn at it: a log scale has no zero.
const FLOOR_MS: f64 = 1e-4;
/// Quantiles closer to 1 than this are drawn at it: 1 / (1 - 1) is infinite.
const MAX_NINES: f64 = 9.0;

/// Position of quantile `q` on the x axis, in "nines": 0.9 -> 1, 0.99 -> 2.
pub fn nines(q: f64) -> f64 {
    (-(1.0 - q).max(10f64.powf(-MAX_NINES)).log10()).max(0.0)
}

/// Escapes text for SVG content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The label of percentile tick `k` nines: 0%, 90%, 99%, 99.9%, ...
fn percentile_label(k: u32) -> String {
    match k {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        k => format!("99.{}%", "9".repeat(k as usize - 2)),
    }
}

/// The label of latency 10^e ms, in the unit that keeps it a whole number.
fn latency_label(e: i32) -> String {
    let ns = 10f64.powi(e + 6);
    let (value, unit) = if ns >= 1e9 {
        (ns / 1e9, "s")
    } else if ns >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns >= 1e3 {
        (ns / 1e3, "µs")
    } else {
        (ns, "ns")
    };
    format!("{} {unit}", value.round())
}

/// The plot as an SVG document.
pub fn svg(plot: &Plot) -> String {
    let values = plot
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(plot.marks.iter().map(|m| m.ms))
        .map(|ms| ms.max(FLOOR_MS));
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo_e, hi_e) = if lo > hi {
        (-3, 2)
    } else {
        let lo_e = lo.log10().floor() as i32;
        (lo_e, (hi.log10().ceil() as i32).max(lo_e + 1))
    };
    let top_nines = plot
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| nines(p.0)))
        .fold(3.0f64, f64::max)
        .ceil();

    let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |q: f64| LEFT + nines(q) / top_nines * pw;
    let y = |ms: f64| {
        let t = (ms.max(FLOOR_MS).log10() - lo_e as f64) / (hi_e - lo_e) as f64;
        TOP + ph - t * ph
    };

    let mut s = String::new();
    // `write!` into a String cannot fail.
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="15">{}</text>"#,
        LEFT + pw / 2.0,
        escape(&plot.title)
    );

    // Grid and tick labels.
    for e in lo_e..=hi_e {
        let yy = y(10f64.powi(e));
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            yy + 4.0,
            escape(&latency_label(e))
        );
    }
    let mut ticks: Vec<(f64, String)> = (0..=top_nines as u32)
        .map(|k| (1.0 - 10f64.powi(-(k as i32)), percentile_label(k)))
        .collect();
    ticks.insert(1, (0.5, "50%".into()));
    for (q, label) in ticks {
        let xx = x(q);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 18.0,
            escape(&label)
        );
    }
    // Axes and their titles.
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + pw / 2.0,
        HEIGHT - 16.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(20 {:.1}) rotate(-90)" text-anchor="middle">latency</text>"#,
        TOP + ph / 2.0
    );

    // Reference lines, dashed across the plot, labelled beside it at their height; labels that
    // would overlap are pushed down and joined to their line by a thin connector.
    let lx = LEFT + pw + 12.0;
    let mut marks: Vec<(f64, &Mark)> = plot.marks.iter().map(|m| (y(m.ms), m)).collect();
    marks.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut next_free = f64::MIN;
    for (yy, m) in marks {
        let label_y = (yy + 4.0).max(next_free);
        next_free = label_y + LINE;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#888" stroke-dasharray="6 4"/><line x1="{:.1}" y1="{yy:.1}" x2="{:.1}" y2="{:.1}" stroke="#bbb"/><text x="{lx:.1}" y="{label_y:.1}" fill="#555">{}</text>"##,
            LEFT + pw,
            LEFT + pw,
            lx - 2.0,
            label_y - 4.0,
            escape(&m.label)
        );
    }

    // The series, and their legend beside the plot below the reference labels.
    let legend_top = (TOP + 10.0).max(next_free + LINE);
    for (i, series) in plot.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = series
            .points
            .iter()
            .map(|&(q, ms)| format!("{:.1},{:.1}", x(q), y(ms)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let ly = legend_top + 22.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly:.1}" x2="{}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/><text x="{}" y="{:.1}">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            escape(&series.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plot() -> Plot {
        Plot {
            title: "a <b> & \"c\"".into(),
            series: vec![
                Series {
                    name: "hot".into(),
                    points: vec![(0.0, 0.001), (0.5, 0.002), (0.999, 0.01)],
                },
                Series {
                    name: "cold & slow".into(),
                    points: vec![(0.0, 20.0), (0.99, 40.0), (1.0, 90.0)],
                },
            ],
            marks: vec![Mark {
                label: "GET <20 ms>".into(),
                ms: 20.0,
            }],
        }
    }

    #[test]
    fn svg_is_well_formed_with_one_polyline_per_series() {
        let s = svg(&plot());
        assert!(s.starts_with("<svg "), "{s}");
        assert!(s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains("a &lt;b&gt; &amp; &quot;c&quot;"));
        assert!(s.contains("cold &amp; slow") && s.contains("GET &lt;20 ms&gt;"));
        // No raw markup characters leaked from the text.
        assert!(!s.contains("<b>") && !s.contains("& "));
        assert_eq!(s.matches("<text").count(), s.matches("</text>").count());
        // Every coordinate is a finite number.
        assert!(!s.contains("NaN") && !s.contains("inf"));
    }

    #[test]
    fn axes_are_logarithmic() {
        assert!((nines(0.9) - 1.0).abs() < 1e-9);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
        assert_eq!(nines(1.0), MAX_NINES);
        assert_eq!(nines(0.0), 0.0);
        assert_eq!(percentile_label(0), "0%");
        assert_eq!(percentile_label(2), "99%");
        assert_eq!(percentile_label(4), "99.99%");
        assert_eq!(latency_label(-3), "1 µs");
        assert_eq!(latency_label(1), "10 ms");
        assert_eq!(latency_label(-4), "100 ns");
        assert_eq!(latency_label(3), "1 s");
    }

    #[test]
    fn empty_plot_still_renders() {
        let s = svg(&Plot {
            title: String::new(),
            series: vec![],
            marks: vec![],
        });
        assert!(s.starts_with("<svg") && s.contains("</svg>"));
    }
}
