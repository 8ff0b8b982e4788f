//! Interactive plotly figures for sweeps and flows, and one self-contained offline HTML report
//! (plotly.js embedded once, no CDN).

use plotly::common::{ErrorData, ErrorType, Fill, Line, Marker, Mode, Title};
use plotly::layout::{Axis, Layout};
use plotly::{HeatMap, Plot, Scatter};

use crate::error::Result;
use crate::flows::Flow;
use crate::sweep::SweepResult;
use crate::systems::Energy;

fn layout(title: &str, x: &str, y: &str) -> Layout {
    Layout::new()
        .title(Title::with_text(title))
        .x_axis(Axis::new().title(Title::with_text(x)))
        .y_axis(Axis::new().title(Title::with_text(y)))
        .height(420)
}

/// An estimate with a ±1 SE band, and the exact curve when given.
fn band_plot(
    t: &[f64],
    v: &[f64],
    se: &[f64],
    exact: Option<&Vec<f64>>,
    name: &str,
    title: &str,
) -> Plot {
    let mut p = Plot::new();
    let hi: Vec<f64> = v.iter().zip(se).map(|(a, b)| a + b).collect();
    let lo: Vec<f64> = v.iter().zip(se).map(|(a, b)| a - b).collect();
    p.add_trace(
        Scatter::new(t.to_vec(), lo)
            .mode(Mode::Lines)
            .line(Line::new().width(0.0))
            .show_legend(false)
            .name("−1 se"),
    );
    p.add_trace(
        Scatter::new(t.to_vec(), hi)
            .mode(Mode::Lines)
            .line(Line::new().width(0.0))
            .fill(Fill::ToNextY)
            .fill_color("rgba(31,119,180,0.25)")
            .name("±1 se"),
    );
    p.add_trace(
        Scatter::new(t.to_vec(), v.to_vec())
            .mode(Mode::LinesMarkers)
            .name(name),
    );
    if let Some(e) = exact {
        p.add_trace(
            Scatter::new(t.to_vec(), e.clone())
                .mode(Mode::Lines)
                .line(Line::new().dash(plotly::common::DashType::Dash))
                .name("exact"),
        );
    }
    p.set_layout(layout(title, "temperature T", name));
    p
}

/// ⟨U⟩(T) with its error band and the exact curve.
pub fn energy_plot(r: &SweepResult) -> Plot {
    band_plot(
        &r.temperatures,
        &r.u,
        &r.u_se,
        r.exact.as_ref().map(|e| &e.u),
        "⟨U⟩",
        &format!("internal energy, {}", r.system),
    )
}

/// C_V(T): fluctuation estimate with band, d⟨U⟩/dT points with error bars, exact curve.
pub fn heat_capacity_plot(r: &SweepResult) -> Plot {
    let mut p = band_plot(
        &r.temperatures,
        &r.cv,
        &r.cv_se,
        r.exact.as_ref().map(|e| &e.cv),
        "C_V",
        &format!("heat capacity, {}", r.system),
    );
    p.add_trace(
        Scatter::new(r.temperatures.clone(), r.cv_deriv.clone())
            .mode(Mode::Markers)
            .marker(Marker::new().size(5))
            .error_y(ErrorData::new(ErrorType::Data).array(r.cv_deriv_se.clone()))
            .name("d⟨U⟩/dT"),
    );
    p
}

/// ESS fraction against T.
pub fn ess_plot(r: &SweepResult) -> Plot {
    let mut p = Plot::new();
    p.add_trace(
        Scatter::new(r.temperatures.clone(), r.ess_fraction.clone())
            .mode(Mode::LinesMarkers)
            .name("ESS / N"),
    );
    p.add_trace(
        Scatter::new(
            vec![r.temperatures[0], *r.temperatures.last().unwrap()],
            vec![crate::estimators::TRUST_ESS_FRACTION; 2],
        )
        .mode(Mode::Lines)
        .line(Line::new().dash(plotly::common::DashType::Dot))
        .name("trust threshold"),
    );
    p.set_layout(
        layout("effective sample size fraction", "temperature T", "ESS / N")
            .y_axis(Axis::new().range(vec![0.0, 1.05])),
    );
    p
}

/// Training loss against step.
pub fn loss_plot(history: &[(usize, f64, f64)]) -> Plot {
    let mut p = Plot::new();
    let pts: Vec<&(usize, f64, f64)> = history.iter().filter(|h| h.2.is_finite()).collect();
    p.add_trace(
        Scatter::new(
            pts.iter().map(|h| h.0).collect(),
            pts.iter().map(|h| h.2).collect(),
        )
        .mode(Mode::Lines)
        .name("loss"),
    );
    p.set_layout(layout("training loss  E[log q + U/T]", "step", "loss"));
    p
}

/// Cell centres of a 70×60 grid on a 2-D box, and the points as rows (x fastest).
fn grid_2d(bounds: [(f64, f64); 2]) -> (Vec<f64>, Vec<f64>, ndarray::Array2<f64>) {
    let (nx, ny) = (70usize, 60usize);
    let axis = |(lo, hi): (f64, f64), n: usize| -> Vec<f64> {
        (0..n)
            .map(|i| lo + (hi - lo) * (i as f64 + 0.5) / n as f64)
            .collect()
    };
    let (xs, ys) = (axis(bounds[0], nx), axis(bounds[1], ny));
    let pts =
        ndarray::Array2::from_shape_fn(
            (nx * ny, 2),
            |(k, c)| if c == 0 { xs[k % nx] } else { ys[k / nx] },
        );
    (xs, ys, pts)
}

/// Rows of a grid's values (y-major) for a heat map.
fn grid_rows(values: &[f64], nx: usize) -> Vec<Vec<f64>> {
    values.chunks(nx).map(|r| r.to_vec()).collect()
}

/// Heat map of a 2-D flow's density q(x | cond) on the box `bounds`.
pub fn density_heatmap(
    flow: &Flow,
    cond: &[f64],
    bounds: [(f64, f64); 2],
    title: &str,
) -> Result<Plot> {
    let (xs, ys, pts) = grid_2d(bounds);
    let q: Vec<f64> = flow
        .log_prob(pts.view(), cond)?
        .iter()
        .map(|l| l.exp())
        .collect();
    let mut p = Plot::new();
    let nx = xs.len();
    p.add_trace(HeatMap::new(xs, ys, grid_rows(&q, nx)).name("q(x)"));
    p.set_layout(layout(title, "x", "y"));
    Ok(p)
}

/// For a 2-D system: flow density and exact Boltzmann density at temperature `t` on a grid,
/// side by side, with flow samples over the flow density.
pub fn density_plots(
    flow: &Flow,
    energy: &dyn Energy,
    t: f64,
    n_samples: usize,
    seed: u64,
) -> Result<Vec<Plot>> {
    let b = energy.bounds().unwrap_or_else(|| vec![(-4.0, 4.0); 2]);
    let bounds = [b[0], b[1]];
    let mut pf = density_heatmap(flow, &[t], bounds, &format!("flow density at T = {t:.2}"))?;
    let mut rng = crate::rng::seeded(seed);
    let s = flow.sample(n_samples, &[t], &mut rng)?;
    pf.add_trace(
        Scatter::new(s.column(0).to_vec(), s.column(1).to_vec())
            .mode(Mode::Markers)
            .marker(Marker::new().size(2).color("rgba(255,255,255,0.5)"))
            .name("flow samples"),
    );
    let (xs, ys, pts) = grid_2d(bounds);
    let log_z = crate::exact::quadrature(energy, &[t])
        .ok()
        .map(|r| r[0].log_z)
        .unwrap_or(0.0);
    let p: Vec<f64> = pts
        .rows()
        .into_iter()
        .map(|r| (-energy.energy(&[r[0], r[1]]) / t - log_z).exp())
        .collect();
    let mut pe = Plot::new();
    let nx = xs.len();
    pe.add_trace(HeatMap::new(xs, ys, grid_rows(&p, nx)).name("exp(−U/T)/Z"));
    pe.set_layout(layout(
        &format!("exact Boltzmann density at T = {t:.2}"),
        "x",
        "y",
    ));
    Ok(vec![pf, pe])
}

/// Every figure of a sweep (densities for 2-D systems at T_min, the middle and T_max).
pub fn sweep_figures(r: &SweepResult, flow: &Flow, energy: &dyn Energy) -> Result<Vec<Plot>> {
    let mut figs = vec![energy_plot(r), heat_capacity_plot(r), ess_plot(r)];
    if !r.loss_history.is_empty() {
        figs.push(loss_plot(&r.loss_history));
    }
    if energy.dim() == 2 {
        let ts = &r.temperatures;
        for t in [ts[0], ts[ts.len() / 2], *ts.last().unwrap()] {
            figs.extend(density_plots(flow, energy, t, 1500, 7)?);
        }
    }
    Ok(figs)
}

/// One self-contained HTML page (works offline: plotly.js is embedded once).
pub fn report_html(title: &str, preamble: &str, figs: &[Plot]) -> String {
    let mut body = String::new();
    for (i, f) in figs.iter().enumerate() {
        body += &format!(
            "<div class=\"fig\">{}</div>\n",
            f.to_inline_html(Some(&format!("fig{i}")))
        );
    }
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\n{}\n<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}} .fig{{display:inline-block;width:540px}} pre{{font-size:11px}}</style></head>\n<body><h1>{title}</h1>\n<pre>{}</pre>\n{body}</body></html>\n",
        Plot::offline_js_sources(),
        html_escape(preamble)
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
