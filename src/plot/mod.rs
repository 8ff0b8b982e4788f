//! Interactive plotly figures for sweeps and flows, and one self-contained offline HTML report
//! (plotly.js embedded once, no CDN).

use plotly::common::{ErrorData, ErrorType, Fill, Line, Marker, Mode, Title, Visible};
use plotly::layout::{Axis, Layout, Slider, SliderCurrentValue, SliderMethod, SliderStep};
use plotly::{Bar, HeatMap, Plot, Scatter};

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
    // With `--peak`: T* and C_V(T*) as a point with both error bars.
    if let Some(peak) = r.cv_peak.as_ref().and_then(|c| c.peak) {
        p.add_trace(
            Scatter::new(vec![peak.t.value], vec![peak.cv.value])
                .mode(Mode::Markers)
                .marker(
                    Marker::new()
                        .size(9)
                        .symbol(plotly::common::MarkerSymbol::Diamond),
                )
                .error_x(ErrorData::new(ErrorType::Data).array(vec![peak.t.se]))
                .error_y(ErrorData::new(ErrorType::Data).array(vec![peak.cv.se]))
                .name("peak T*"),
        );
    }
    p
}

/// Each observable's ⟨O⟩(T) with its error band and, where known, the exact curve (`--observe`,
/// [`crate::observables`]).
pub fn observable_plots(r: &SweepResult) -> Vec<Plot> {
    (r.observables.iter())
        .map(|o| {
            band_plot(
                &r.temperatures,
                &o.value,
                &o.se,
                o.exact.as_ref(),
                &o.label(),
                &format!("{}, {}", o.label(), r.system),
            )
        })
        .collect()
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

/// A density histogram of `values` binned here (`bins` equal bins over their range), so a
/// figure holds `bins` bars instead of every value: pass big sample sets through this.
pub fn binned(values: &[f64], bins: usize, name: &str) -> Box<Bar<f64, f64>> {
    let v: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let (lo, hi) = v
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    let bins = bins.max(1);
    let width = if hi > lo {
        (hi - lo) / bins as f64
    } else {
        1.0
    };
    let mut counts = vec![0usize; bins];
    for x in &v {
        counts[(((x - lo) / width) as usize).min(bins - 1)] += 1;
    }
    let n = v.len().max(1) as f64;
    let centres: Vec<f64> = (0..bins).map(|i| lo + (i as f64 + 0.5) * width).collect();
    let density: Vec<f64> = counts.iter().map(|&c| c as f64 / (n * width)).collect();
    Bar::new(centres, density)
        .width(width)
        .opacity(0.45)
        .name(name)
}

/// A named sample for [`distributions`]: (name, values, weights summing to 1 or `None`).
pub type NamedSample<'a> = (&'a str, &'a [f64], Option<&'a [f64]>);

/// The densities of several samples on common bins, one line each: `sets` holds (name,
/// values, weights) with weights summing to 1 (`None`: equal). The `bins` equal bins span the
/// central 99.8 % of all the finite values (a few overlapping pairs at 10¹⁵ would otherwise
/// squeeze everything into one bin); values outside count in the normalisation but are not
/// drawn.
pub fn distributions(title: &str, x_label: &str, sets: &[NamedSample], bins: usize) -> Plot {
    let all = sets.iter().flat_map(|(_, v, _)| v.iter().copied());
    let (lo, hi) = central_range(all, 0.001);
    let bins = bins.max(1);
    let width = if hi > lo {
        (hi - lo) / bins as f64
    } else {
        1.0
    };
    let centres: Vec<f64> = (0..bins).map(|i| lo + (i as f64 + 0.5) * width).collect();
    let mut p = Plot::new();
    for (name, values, weights) in sets {
        let mut mass = vec![0.0; bins];
        let equal = 1.0 / values.len().max(1) as f64;
        for (j, &x) in values.iter().enumerate() {
            let w = weights.map_or(equal, |w| w[j]);
            if x.is_finite() && x >= lo && x <= hi {
                mass[(((x - lo) / width) as usize).min(bins - 1)] += w;
            }
        }
        let density: Vec<f64> = mass.iter().map(|m| m / width).collect();
        p.add_trace(
            Scatter::new(centres.clone(), density)
                .mode(Mode::Lines)
                .name(*name),
        );
    }
    p.set_layout(layout(title, x_label, "density"));
    p
}

/// The empirical `tail` and 1 − `tail` quantiles of the finite `values` ((0, 0) when none is).
fn central_range(values: impl Iterator<Item = f64>, tail: f64) -> (f64, f64) {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let q = |f: f64| {
        v.get((f * (v.len().max(1) - 1) as f64) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    (q(tail), q(1.0 - tail))
}

/// The box a density is drawn on: the system's hint, else the central 99 % of flow samples at
/// `t` per coordinate, widened by a quarter on each side.
fn plot_box(flow: &Flow, energy: &dyn Energy, t: f64) -> Result<Vec<(f64, f64)>> {
    if let Some(b) = energy.bounds() {
        return Ok(b);
    }
    let s = flow.sample(4000, &[t], &mut crate::rng::seeded(11))?;
    Ok(s.columns()
        .into_iter()
        .map(|c| {
            let (lo, hi) = central_range(c.iter().copied(), 0.005);
            let pad = 0.25 * (hi - lo).max(1e-3);
            (lo - pad, hi + pad)
        })
        .collect())
}

/// exp(−U/T − log Z) at `pts` (rows), Z by quadrature (1-D and 2-D systems).
fn boltzmann_density(energy: &dyn Energy, t: f64, pts: &ndarray::Array2<f64>) -> Vec<f64> {
    let log_z = crate::exact::quadrature(energy, &[t])
        .ok()
        .map(|r| r[0].log_z)
        .unwrap_or(0.0);
    pts.rows()
        .into_iter()
        .map(|r| (-energy.energy(&r.to_vec()) / t - log_z).exp())
        .collect()
}

fn vis(show: bool) -> Visible {
    if show {
        Visible::True
    } else {
        Visible::False
    }
}

fn check_plot_dim(energy: &dyn Energy) -> Result<()> {
    match energy.dim() {
        1 | 2 => Ok(()),
        d => crate::error::input_err(format!(
            "density plots are drawn for 1-D and 2-D systems; this one has {d} coordinates"
        )),
    }
}

/// Flow density and exact Boltzmann density at temperature `t`: for a 2-D system two heat maps
/// (flow samples over the flow's), for a 1-D system one plot with both curves and a histogram
/// of flow samples. Other dimensions are an error.
pub fn density_plots(
    flow: &Flow,
    energy: &dyn Energy,
    t: f64,
    n_samples: usize,
    seed: u64,
) -> Result<Vec<Plot>> {
    check_plot_dim(energy)?;
    let b = plot_box(flow, energy, t)?;
    let mut rng = crate::rng::seeded(seed);
    let s = flow.sample(n_samples, &[t], &mut rng)?;
    if energy.dim() == 1 {
        let [flow_q, exact] = curves_1d(flow, energy, t, b[0])?;
        let mut p = Plot::new();
        p.add_trace(binned(&s.column(0).to_vec(), 60, "flow samples"));
        p.add_trace(flow_q);
        p.add_trace(exact);
        p.set_layout(layout(&format!("densities at T = {t:.2}"), "x", "density"));
        return Ok(vec![p]);
    }
    let bounds = [b[0], b[1]];
    let mut pf = density_heatmap(flow, &[t], bounds, &format!("flow density at T = {t:.2}"))?;
    pf.add_trace(
        Scatter::new(s.column(0).to_vec(), s.column(1).to_vec())
            .mode(Mode::Markers)
            .marker(Marker::new().size(2).color("rgba(255,255,255,0.5)"))
            .name("flow samples"),
    );
    let (xs, ys, pts) = grid_2d(bounds);
    let p = boltzmann_density(energy, t, &pts);
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

/// A 1-D system's flow density q(x|T) and exact density exp(−U/T)/Z on `interval`, as lines.
fn curves_1d(
    flow: &Flow,
    energy: &dyn Energy,
    t: f64,
    interval: (f64, f64),
) -> Result<[Box<Scatter<f64, f64>>; 2]> {
    let xs = grid_1d(interval);
    let pts = ndarray::Array2::from_shape_vec((xs.len(), 1), xs.clone())
        .map_err(|e| crate::Error::Engine(e.to_string()))?;
    let q: Vec<f64> = flow
        .log_prob(pts.view(), &[t])?
        .iter()
        .map(|l| l.exp())
        .collect();
    let exact = boltzmann_density(energy, t, &pts);
    Ok([
        Scatter::new(xs.clone(), q)
            .mode(Mode::Lines)
            .name("flow q(x|T)"),
        Scatter::new(xs, exact)
            .mode(Mode::Lines)
            .line(Line::new().dash(plotly::common::DashType::Dash))
            .name("exp(−U/T)/Z"),
    ])
}

/// 200 cell centres on an interval.
fn grid_1d((lo, hi): (f64, f64)) -> Vec<f64> {
    (0..200)
        .map(|i| lo + (hi - lo) * (i as f64 + 0.5) / 200.0)
        .collect()
}

/// The flow's density q(x | T) with a **temperature slider**: drag T and watch the modes fill.
/// 2-D: a heat map per temperature; 1-D: q and the exact density per temperature. One box (at
/// the highest T) for every frame, so the frames compare.
pub fn density_slider(flow: &Flow, energy: &dyn Energy, temps: &[f64]) -> Result<Plot> {
    check_plot_dim(energy)?;
    let Some(&t_hi) = temps.iter().max_by(|a, b| a.total_cmp(b)) else {
        return crate::error::input_err("a slider needs at least one temperature");
    };
    let b = plot_box(flow, energy, t_hi)?;
    let mut p = Plot::new();
    let per_t = if energy.dim() == 1 { 2 } else { 1 };
    for (k, &t) in temps.iter().enumerate() {
        let show = k == 0;
        if energy.dim() == 1 {
            for c in curves_1d(flow, energy, t, b[0])? {
                p.add_trace(c.visible(vis(show)));
            }
        } else {
            let (xs, ys, pts) = grid_2d([b[0], b[1]]);
            let q: Vec<f64> = flow
                .log_prob(pts.view(), &[t])?
                .iter()
                .map(|l| l.exp())
                .collect();
            let nx = xs.len();
            p.add_trace(
                HeatMap::new(xs, ys, grid_rows(&q, nx))
                    .name(format!("q(x|T={t:.2})"))
                    .visible(vis(show)),
            );
        }
    }
    let n = temps.len() * per_t;
    let steps: Vec<SliderStep> = temps
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let visible: Vec<bool> = (0..n).map(|i| i / per_t == k).collect();
            SliderStep::new()
                .label(format!("{t:.2}"))
                .method(SliderMethod::Update)
                .args(serde_json::json!([{ "visible": visible }, { "title": { "text": format!("flow density at T = {t:.2}") } }]))
        })
        .collect();
    let slider = Slider::new()
        .active(0)
        .steps(steps)
        .current_value(SliderCurrentValue::new().prefix("T = "));
    let y = if energy.dim() == 1 { "density" } else { "y" };
    p.set_layout(
        layout(&format!("flow density at T = {:.2}", temps[0]), "x", y)
            .sliders(vec![slider])
            .height(520),
    );
    Ok(p)
}

/// At most 16 temperatures, evenly picked from a grid (the slider's frames).
pub fn slider_temperatures(ts: &[f64]) -> Vec<f64> {
    let k = ts.len().min(16);
    (0..k)
        .map(|i| ts[i * (ts.len() - 1) / (k - 1).max(1)])
        .collect()
}

/// Every figure of a sweep (for 1-D and 2-D systems also the density slider and densities at
/// T_min, the middle and T_max).
pub fn sweep_figures(r: &SweepResult, flow: &Flow, energy: &dyn Energy) -> Result<Vec<Plot>> {
    let mut figs = vec![energy_plot(r), heat_capacity_plot(r)];
    figs.extend(observable_plots(r));
    figs.push(ess_plot(r));
    if !r.loss_history.is_empty() {
        figs.push(loss_plot(&r.loss_history));
    }
    if matches!(energy.dim(), 1 | 2) {
        let ts = &r.temperatures;
        figs.push(density_slider(flow, energy, &slider_temperatures(ts))?);
        for t in [ts[0], ts[ts.len() / 2], ts[ts.len() - 1]] {
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
