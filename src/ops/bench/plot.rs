//! SVG plots of a `bench serve` run that any browser opens, without Python:
//! latency CDFs (TTFT, TPOT, E2E), output throughput over time and the ITL
//! histogram. Plain SVG 1.1: axes with round ticks, one polyline or bar
//! set per series, a legend.

use super::serve::ServeReport;

const W: f64 = 720.0;
const H: f64 = 420.0;
const L: f64 = 70.0;
const R: f64 = 20.0;
const T: f64 = 40.0;
const B: f64 = 50.0;
const COLORS: &[&str] = &["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// A "nice" tick step for a range.
fn step(span: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    mag * if n < 1.5 {
        1.0
    } else if n < 3.5 {
        2.0
    } else if n < 7.5 {
        5.0
    } else {
        10.0
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

struct Frame {
    xmax: f64,
    ymax: f64,
    svg: String,
}

impl Frame {
    fn new(title: &str, xlabel: &str, ylabel: &str, xmax: f64, ymax: f64) -> Frame {
        let (xs, ys) = (step(xmax), step(ymax));
        let xmax = (xmax / xs).ceil().max(1.0) * xs;
        let ymax = (ymax / ys).ceil().max(1.0) * ys;
        let mut f = Frame {
            xmax,
            ymax,
            svg: format!(
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
                 <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
                 <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
                 <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{}</text>\n",
                W / 2.0,
                esc(title),
                L + (W - L - R) / 2.0,
                H - 12.0,
                esc(xlabel),
                T + (H - T - B) / 2.0,
                T + (H - T - B) / 2.0,
                esc(ylabel)
            ),
        };
        let mut x = 0.0;
        while x <= xmax + xs * 1e-9 {
            let px = f.px(x);
            f.svg += &format!(
                "<line x1=\"{px:.1}\" y1=\"{T}\" x2=\"{px:.1}\" y2=\"{}\" stroke=\"#eee\"/><text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                H - B,
                H - B + 16.0,
                fmt(x)
            );
            x += xs;
        }
        let mut y = 0.0;
        while y <= ymax + ys * 1e-9 {
            let py = f.py(y);
            f.svg += &format!(
                "<line x1=\"{L}\" y1=\"{py:.1}\" x2=\"{}\" y2=\"{py:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
                W - R,
                L - 6.0,
                py + 4.0,
                fmt(y)
            );
            y += ys;
        }
        f.svg += &format!(
            "<rect x=\"{L}\" y=\"{T}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n",
            W - L - R,
            H - T - B
        );
        f
    }

    fn px(&self, x: f64) -> f64 {
        L + x / self.xmax * (W - L - R)
    }

    fn py(&self, y: f64) -> f64 {
        H - B - y / self.ymax * (H - T - B)
    }

    fn line(&mut self, i: usize, label: &str, pts: &[(f64, f64)]) {
        let c = COLORS[i % COLORS.len()];
        let p: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", self.px(*x), self.py(*y)))
            .collect();
        self.svg += &format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\n",
            p.join(" ")
        );
        self.legend(i, label);
    }

    fn legend(&mut self, i: usize, label: &str) {
        let c = COLORS[i % COLORS.len()];
        let y = T + 16.0 + 18.0 * i as f64;
        self.svg += &format!(
            "<rect x=\"{}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{c}\"/><text x=\"{}\" y=\"{:.1}\">{}</text>\n",
            W - R - 150.0,
            y - 10.0,
            W - R - 132.0,
            y,
            esc(label)
        );
    }

    fn finish(mut self) -> String {
        self.svg += "</svg>\n";
        self.svg
    }
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        format!("{v:.2}").trim_end_matches('0').to_string()
    }
}

fn cdf(values: &[f64]) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    let mut pts = vec![(0.0, 0.0)];
    for (i, x) in v.iter().enumerate() {
        pts.push((*x, i as f64 / n));
        pts.push((*x, (i + 1) as f64 / n));
    }
    pts
}

/// (file name, SVG text) of each plot.
pub fn plots(r: &ServeReport) -> Vec<(&'static str, String)> {
    let ok: Vec<usize> = (0..r.errors.len())
        .filter(|&i| r.errors[i].is_empty())
        .collect();
    let ms = |v: &[f64]| -> Vec<f64> { ok.iter().map(|&i| v[i] * 1000.0).collect() };
    let ttft = ms(&r.ttfts);
    let e2e = ms(&r.latencies);
    let tpot: Vec<f64> = ok
        .iter()
        .filter(|&&i| r.output_lens[i] > 1)
        .map(|&i| (r.latencies[i] - r.ttfts[i]) / (r.output_lens[i] - 1) as f64 * 1000.0)
        .collect();
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let mut out = Vec::new();

    let mut f = Frame::new(
        "Latency CDF",
        "ms",
        "fraction of requests",
        max(&ttft).max(max(&e2e)).max(1.0),
        1.0,
    );
    for (i, (label, v)) in [("TTFT", &ttft), ("TPOT", &tpot), ("E2E", &e2e)]
        .iter()
        .enumerate()
    {
        f.line(i, label, &cdf(v));
    }
    out.push(("latency-cdf.svg", f.finish()));

    let tps = &r.llmtool.output_tokens_per_s;
    let mut f = Frame::new(
        "Output throughput over time",
        "seconds since start",
        "output tokens/s",
        tps.len().max(1) as f64,
        max(tps).max(1.0),
    );
    let pts: Vec<(f64, f64)> = tps
        .iter()
        .enumerate()
        .flat_map(|(i, &v)| [(i as f64, v), (i as f64 + 1.0, v)])
        .collect();
    f.line(0, "output tok/s", &pts);
    out.push(("throughput.svg", f.finish()));

    let itl: Vec<f64> = ok
        .iter()
        .flat_map(|&i| r.itls[i].iter().map(|x| x * 1000.0))
        .collect();
    let top = max(&itl).max(1e-3);
    let bins = 40usize;
    let mut counts = vec![0usize; bins];
    for x in &itl {
        counts[((x / top * bins as f64) as usize).min(bins - 1)] += 1;
    }
    let mut f = Frame::new(
        "Inter-token latency",
        "ms",
        "chunks",
        top,
        counts.iter().copied().max().unwrap_or(1).max(1) as f64,
    );
    let w = top / bins as f64;
    for (b, &c) in counts.iter().enumerate() {
        let (x0, x1) = (f.px(b as f64 * w), f.px((b + 1) as f64 * w));
        let (y0, y1) = (f.py(c as f64), f.py(0.0));
        f.svg += &format!(
            "<rect x=\"{x0:.1}\" y=\"{y0:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>\n",
            (x1 - x0 - 1.0).max(0.5),
            y1 - y0,
            COLORS[0]
        );
    }
    f.legend(0, "ITL");
    out.push(("itl-histogram.svg", f.finish()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(step(100.0), 20.0);
        assert_eq!(step(7.0), 1.0);
        assert_eq!(step(0.3), 0.05);
        assert_eq!(fmt(0.25), "0.25");
        assert_eq!(fmt(3.0), "3");
    }
}
