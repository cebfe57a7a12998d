//! A latency-by-percentile plot as a small hand-written SVG: the x axis is
//! `log10(1 / (1 - p))`, so 90%, 99%, 99.9%… are evenly spaced and the tail is visible;
//! the y axis is latency in µs.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// The x axis runs to 99.999% (five nines).
const NINES_N: u32 = 5;
const NINES: f64 = NINES_N as f64;
/// Points per decade of `1 / (1 - p)`.
const STEPS_PER_NINE: u32 = 40;

/// Renders the SVG for `h` (values in ns) with `title` on top.
#[must_use]
pub fn svg(hist: &Histogram<u64>, title: &str) -> String {
    // Points (x in nines, y in µs), the last at the maximum.
    let mut points: Vec<(f64, f64)> = Vec::new();
    if !hist.is_empty() {
        for i in 0..=(NINES_N * STEPS_PER_NINE) {
            let x = f64::from(i) / f64::from(STEPS_PER_NINE);
            let q = 1.0 - 10f64.powf(-x);
            points.push((x, super::report::micros(hist.value_at_quantile(q))));
        }
    }
    let top = nice_ceiling(points.iter().map(|p| p.1).fold(0.0, f64::max));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + x / NINES * plot_w;
    let py = |y: f64| TOP + plot_h - y / top * plot_h;

    let mut doc = String::new();
    // Writing into a String cannot fail.
    let _ = writeln!(
        doc,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        doc,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        doc,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Grid and x labels: 0%, 90%, 99%, ...
    for nines in 0..=NINES_N {
        let xpos = px(f64::from(nines));
        let label = if nines == 0 {
            "0%".to_owned()
        } else {
            let decimals = nines.saturating_sub(2) as usize;
            let pct = 100.0 - 100.0 * 10f64.powf(-f64::from(nines));
            format!("{pct:.decimals$}%")
        };
        let _ = writeln!(
            doc,
            r##"<line x1="{xpos:.1}" y1="{TOP}" x2="{xpos:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            TOP + plot_h
        );
        let _ = writeln!(
            doc,
            r#"<text x="{xpos:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            TOP + plot_h + 18.0
        );
    }
    // y labels: five steps.
    for i in 0..=5 {
        let v = top * f64::from(i) / 5.0;
        let y = py(v);
        let _ = writeln!(
            doc,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            doc,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            short(v)
        );
    }
    let _ = writeln!(
        doc,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0
    );
    let _ = writeln!(
        doc,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">round-trip time (µs)</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    if !points.is_empty() {
        let mut path = String::new();
        for (x, y) in &points {
            let _ = write!(path, "{:.1},{:.1} ", px(*x), py(*y));
        }
        let _ = writeln!(
            doc,
            r##"<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/>"##,
            path.trim_end()
        );
    }
    let _ = writeln!(doc, "</svg>");
    doc
}

/// The smallest 1, 2 or 5 × 10^k at or above `v` (1 for an empty plot).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

fn short(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal XML well-formedness check: tags nest and close, attributes are quoted.
    fn well_formed(doc: &str) -> Result<usize, String> {
        let mut stack: Vec<String> = Vec::new();
        let mut elements = 0;
        let mut rest = doc;
        while let Some(open) = rest.find('<') {
            let after = &rest[open + 1..];
            let close = after.find('>').ok_or("unterminated tag")?;
            let tag = &after[..close];
            rest = &after[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let top = stack.pop().ok_or(format!("</{name}> closes nothing"))?;
                if top != name.trim() {
                    return Err(format!("</{name}> closes <{top}>"));
                }
                continue;
            }
            elements += 1;
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name = body.split_whitespace().next().ok_or("empty tag")?;
            if !body.matches('"').count().is_multiple_of(2) {
                return Err(format!("unbalanced quotes in <{name}>"));
            }
            if !self_closing {
                stack.push(name.to_owned());
            }
        }
        if stack.is_empty() {
            Ok(elements)
        } else {
            Err(format!("unclosed {stack:?}"))
        }
    }

    #[test]
    fn svg_is_well_formed_and_has_the_curve() {
        let mut h = crate::loadgen::histogram();
        for us in 1..=10_000u64 {
            h.record(us * 100).unwrap();
        }
        let doc = svg(&h, "echo <64 B> & more");
        assert!(doc.starts_with("<svg"));
        assert!(doc.trim_end().ends_with("</svg>"));
        let n = well_formed(&doc).unwrap();
        assert!(n > 20, "{n} elements");
        assert!(doc.contains("<polyline"));
        assert!(doc.contains("&lt;64 B&gt; &amp; more"));
        assert!(doc.contains(">99.9%<"), "x labels: {doc}");
        // The curve has one point per step and rises (latency grows with the percentile).
        let pts = doc
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let ys: Vec<f64> = pts
            .split_whitespace()
            .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
            .collect();
        assert_eq!(ys.len(), 5 * 40 + 1);
        assert!(
            ys.windows(2).all(|w| w[1] <= w[0] + 1e-9),
            "y (SVG downwards) never grows"
        );
    }

    #[test]
    fn empty_histogram_still_renders() {
        let doc = svg(&crate::loadgen::histogram(), "empty");
        well_formed(&doc).unwrap();
        assert!(!doc.contains("<polyline"));
        assert!((nice_ceiling(0.0) - 1.0).abs() < f64::EPSILON);
        assert!((nice_ceiling(37.0) - 50.0).abs() < f64::EPSILON);
        assert!((nice_ceiling(100.0) - 100.0).abs() < f64::EPSILON);
    }
}
