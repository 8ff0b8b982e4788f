//! The sweep's trust checks: a temperature is **trusted** when every check passes.
//!
//! Local (the flow's own samples at T, see [`crate::estimators`]):
//! * `finite`: no sample with a non-finite energy or density;
//! * `ess`: Kish ESS / N ≥ 0.1;
//! * `pareto_k`, `pareto_k_cv`: PSIS k̂ of the weights and of w·(U − ⟨U⟩)² below
//!   min(1 − 1/log₁₀ S, ½) (finite variance: the estimates use the raw weights).
//!
//! Across the grid (neighbouring temperatures a < b, h = T_b − T_a, Δβ = 1/T_b − 1/T_a;
//! Hermite's two-point rule, exact for cubics, with the derivatives the samples give):
//! * `cv_vs_dudt`: ⟨U⟩_b − ⟨U⟩_a = ∫ C_V dT ≈ h/2 (C_a + C_b) + h²/12 (C'_a − C'_b),
//!   C' = dC_V/dT;
//! * `logz_vs_u`: log Z_b − log Z_a = −∫ ⟨U⟩ dβ ≈ −Δβ/2 (U_a + U_b) − Δβ²/12 (U'_a − U'_b),
//!   U' = d⟨U⟩/dβ = −T² C_V. Intervals where log Z was not estimated are left out.
//!
//!   The value is the largest |z| over the temperature's intervals, z = residual / its
//!   standard error (from the covariance of each temperature's estimates; temperatures are
//!   sampled independently); the check fails beyond [`Z_LIMIT`]. A tenth of the Hermite
//!   correction term is added to the error as an allowance for the rule's own error.
//!
//! Where flow-MCMC replaced importance sampling (see [`super::flow_mcmc`]), `ess`, `pareto_k`
//! and `pareto_k_cv` give way to `mcmc_acceptance` (≥ 0.2), `mcmc_stuck_chains` (≤ 1 % of
//! the chains accept under 10 % of their proposals), `mcmc_split` (the chains' ⟨U⟩ over the
//! first and the second half of their kept steps agree within [`Z_LIMIT`]) and `mcmc_starts`
//! (the chains started from the flow's draws and those started from the witness's
//! configurations agree on ⟨U⟩ and C_V within [`Z_LIMIT`]; fails without a witness).
//!
//! Where sequential Monte Carlo replaced importance sampling (see [`mod@crate::mcmc::smc`]), the
//! local checks are `finite`, `smc_hysteresis` (the cooling and heating passes' ⟨U⟩ agree
//! within [`Z_LIMIT`] of their replica spread) and `smc_settled` (the burn-in the passes
//! descend from stopped because the mean energy stopped drifting, not at its cap), and
//! `missed_mass` and `missed_bias` (properties of the flow's weights) do not apply.
//!
//! Where parallel tempering replaced the estimate (see [`super::temper`]), the local checks are
//! `finite`, `pt_round_trips` (round trips per ladder ≥ 4) and `pt_split` (the ladders' ⟨U⟩
//! over the first and the second half of their sweeps agree within [`Z_LIMIT`]), and
//! `missed_mass` and `missed_bias` do not apply. Its witness is not the parallel-tempering one
//! below, which shares its algorithm and so its blind spots (a ladder that never crosses a
//! barrier agrees with itself), but sequential Monte Carlo ([`annealing_witness`]: `witness_u`,
//! `witness_cv`, `witness_resolution`, `witness_hysteresis`, `witness_settled`,
//! `witness_start`).
//!
//! Against the witness (independent parallel tempering, [`super::witness`]), whose ladder
//! has a rung at every temperature of the grid, at T itself:
//! * `witness_u`, `witness_cv`: |flow − witness| / √(se²_flow + se²_witness) ≤
//!   [`WITNESS_Z_LIMIT`];
//! * `missed_mass`: Boltzmann mass beyond the flow's largest weight ≤ [`MISSED_MASS_LIMIT`];
//! * `missed_bias`: how far that mass would move ⟨U⟩ and C_V ([`super::witness::Missed`]),
//!   in the estimate's standard errors, ≤ [`MISSED_BIAS_LIMIT`]: a small mass far in the tail
//!   moves C_V by much;
//! * `witness_mixing`: round trips ≥ ladders (a witness that does not mix is no evidence);
//! * `witness_observables` (only with `--observe`): every observable's ⟨O⟩ agrees with the
//!   witness's (from its configurations at T, ladders as replicas) within [`WITNESS_Z_LIMIT`]
//!   ([`observables_witness`]; for tempered points, with the anneal's). Observables also enter
//!   `mcmc_split`, `mcmc_starts`, `pt_split` and `smc_hysteresis`, each the largest of ⟨U⟩'s
//!   (and C_V's) and every observable's: an observable may relax slower than U (the topological
//!   charge of a gauge field does).
//!
//! Jointly: `joint` — Σ z² over the temperature's z-valued checks (`cv_vs_dudt`,
//! `logz_vs_u`, `witness_u`, `witness_cv`; a grid check, the largest of two intervals, enters
//! as z² − 2 ln 2) within the χ²_k quantile at the false-alarm rate of one |z| = 4: several
//! comparisons each just inside its limit are together a disagreement (measured: a mixture at
//! T = 0.845 passed with z = 3.6, 3.1 and 3.3 and C_V 5 % low).

use std::collections::BTreeMap;

use serde::Serialize;

use super::witness::{Missed, Witness};
use crate::estimators::psis::k_threshold;
use crate::estimators::{Estimate, Thermo, TRUST_ESS_FRACTION};

/// |z| beyond which the grid's consistency residuals fail (62 of them on a 32-point grid).
pub const Z_LIMIT: f64 = 4.0;
/// |z| beyond which the flow and the witness disagree. Every grid temperature is compared
/// (⟨U⟩ and C_V: 64 comparisons on a 32-point grid), so a limit of 3 would fire by chance in
/// one sweep out of six; 4, as for the grid's residuals, in one out of 250.
pub const WITNESS_Z_LIMIT: f64 = 4.0;
/// The most a witness's standard error may exceed the error of the estimate it checks, for ⟨U⟩
/// and for C_V, where the witness is the anneal checking tempering (`witness_resolution`): a
/// z-test against a witness ρ times less precise sees only biases beyond 4√(1 + ρ²) of the
/// estimate's own errors, ~20 at ρ = 5 (measured: a ladder rigged to miss a well, ⟨U⟩ 25 of its
/// errors and C_V 35 % off at T_min, passed as trusted against an anneal whose ⟨U⟩ error was
/// 6.6× its own). The anneal that checks tempering pools replicas until it resolves the
/// tempered points, within the anneal's budgets ([`crate::sweep::methods::anneal`]); 3 was
/// beyond those budgets where tempering reached C_V within 1 %.
pub const WITNESS_RESOLUTION: f64 = 5.0;
/// Smallest acceptance of a flow-MCMC estimate.
pub const MCMC_MIN_ACCEPTANCE: f64 = 0.2;
/// Largest tolerated fraction of stuck flow-MCMC chains.
pub const MCMC_MAX_STUCK: f64 = 0.01;
/// Largest tolerated Boltzmann mass beyond the flow's largest weight.
pub const MISSED_MASS_LIMIT: f64 = 0.01;
/// Largest tolerated change of ⟨U⟩ or C_V by that mass, in the estimate's standard errors: an
/// error bar that leaves out a bias of up to one of itself still covers (at most √2 too
/// small). Measured: a mixture (σ = 0.25, seed 3 of the trust tests) at T = 0.845 missed
/// 0.3 % of the mass, under the 1 % limit, and its C_V came out 3.5 SE (3.5 %) low with every
/// other check passing; the change of C_V its missed configurations make, estimated from the
/// witness's, was 3.51 SE.
pub const MISSED_BIAS_LIMIT: f64 = 1.0;

/// χ²_k quantiles at the false-alarm rate of one |z| > 4 (p = 6.3·10⁻⁵), k = 1 … 6.
const CHI2_LIMIT: [f64; 6] = [16.0, 19.33, 22.06, 24.5, 26.77, 28.91];
/// The checks whose values are |z| scores, combined by [`joint`], and whether each is the
/// largest over a temperature's (up to) two grid intervals.
const Z_CHECKS: [(&str, bool); 4] = [
    ("cv_vs_dudt", true),
    ("logz_vs_u", true),
    ("witness_u", false),
    ("witness_cv", false),
];

/// Add the `joint` check: Σ z² over the z-valued checks present with a finite value, against
/// the χ² quantile for their number (see the module doc). A grid check's value is the largest
/// of two intervals' |z|, whose tail is twice a single one's: it enters as z² − 2 ln 2, the
/// z² of the single |z| with the same tail probability (to 5 % in z beyond |z| = 2).
pub fn joint(c: &mut Checks) {
    let z2: Vec<f64> = Z_CHECKS
        .iter()
        .filter_map(|(n, max_of_two)| c.get(*n).map(|ch| (ch.value, *max_of_two)))
        .filter(|(v, _)| v.is_finite())
        .map(|(v, max_of_two)| {
            if max_of_two {
                (v * v - 2.0 * std::f64::consts::LN_2).max(0.0)
            } else {
                v * v
            }
        })
        .collect();
    if z2.is_empty() {
        return;
    }
    let chi2: f64 = z2.iter().sum();
    let limit = CHI2_LIMIT[z2.len().min(CHI2_LIMIT.len()) - 1];
    put(c, "joint", chi2, limit, chi2 <= limit);
}

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    /// Whether it passed.
    pub pass: bool,
    /// The number it rests on.
    pub value: f64,
    /// The limit it was held to.
    pub limit: f64,
}

/// Checks of one temperature, by name.
pub type Checks = BTreeMap<String, Check>;

fn put(c: &mut Checks, name: &str, value: f64, limit: f64, pass: bool) {
    c.insert(name.to_string(), Check { pass, value, limit });
}

/// The local checks of one temperature.
pub fn local(th: &Thermo) -> Checks {
    let mut c = Checks::new();
    let kt = k_threshold(th.n);
    put(&mut c, "finite", th.n_bad as f64, 0.0, th.n_bad == 0);
    put(
        &mut c,
        "ess",
        th.ess_fraction,
        TRUST_ESS_FRACTION,
        th.ess_fraction >= TRUST_ESS_FRACTION,
    );
    put(&mut c, "pareto_k", th.pareto_k, kt, th.pareto_k < kt);
    put(
        &mut c,
        "pareto_k_cv",
        th.pareto_k_cv,
        kt,
        th.pareto_k_cv < kt,
    );
    c
}

/// The check of a temperature no method has estimated yet: `estimated`, failing.
pub fn unestimated() -> Checks {
    let mut c = Checks::new();
    put(&mut c, "estimated", 0.0, 1.0, false);
    c
}

/// The local checks of a temperature estimated by flow-MCMC: finite energies, acceptance
/// ≥ [`MCMC_MIN_ACCEPTANCE`], at most [`MCMC_MAX_STUCK`] of the chains stuck (accepting under
/// 10 % of proposals).
pub fn local_chains(th: &Thermo, ch: &super::flow_mcmc::ChainEstimate) -> Checks {
    let mut c = Checks::new();
    put(&mut c, "finite", th.n_bad as f64, 0.0, th.n_bad == 0);
    put(
        &mut c,
        "mcmc_acceptance",
        ch.acceptance,
        MCMC_MIN_ACCEPTANCE,
        ch.acceptance >= MCMC_MIN_ACCEPTANCE,
    );
    put(
        &mut c,
        "mcmc_stuck_chains",
        ch.stuck_fraction,
        MCMC_MAX_STUCK,
        ch.stuck_fraction <= MCMC_MAX_STUCK,
    );
    put(&mut c, "mcmc_split", ch.split, Z_LIMIT, ch.split <= Z_LIMIT);
    put(
        &mut c,
        "mcmc_starts",
        ch.starts,
        Z_LIMIT,
        ch.starts <= Z_LIMIT,
    );
    c
}

/// The local checks of a temperature estimated by sequential Monte Carlo
/// ([`mod@crate::mcmc::smc`]): finite energies, the cooling and heating passes agreeing
/// (`smc_hysteresis` ≤ [`Z_LIMIT`]) and their equilibrations settled (`smc_settled`,
/// [`crate::mcmc::SmcPoint::settled`]: a relaxation cut short at the burn-in's cap is carried
/// by both passes, where the hysteresis cannot see it).
pub fn local_smc(th: &Thermo, p: &crate::mcmc::SmcPoint) -> Checks {
    let mut c = Checks::new();
    put(&mut c, "finite", th.n_bad as f64, 0.0, th.n_bad == 0);
    put(
        &mut c,
        "smc_hysteresis",
        p.hysteresis,
        Z_LIMIT,
        p.hysteresis <= Z_LIMIT,
    );
    put_settled(&mut c, "smc_settled", Some(p));
    c
}

/// Whether the anneal's own checks at a point pass, as [`local_smc`] holds it to them beside
/// `finite`: `smc_hysteresis` (NaN fails) and `smc_settled`.
pub fn smc_sound(p: &crate::mcmc::SmcPoint) -> bool {
    p.hysteresis <= Z_LIMIT && p.settled
}

/// `name` (`smc_settled`, `witness_settled`): 0 where the anneal's equilibrations stopped
/// because the mean energy stopped drifting, 1 where one stopped at its cap or there is no
/// anneal (limit 0).
fn put_settled(c: &mut Checks, name: &str, p: Option<&crate::mcmc::SmcPoint>) {
    let settled = p.is_some_and(|p| p.settled);
    put(c, name, if settled { 0.0 } else { 1.0 }, 0.0, settled);
}

/// The local checks of a temperature estimated by parallel tempering ([`super::temper`]):
/// finite energies, round trips per ladder ≥ [`super::temper::TRIPS_PER_LADDER`] and the
/// ladders' first and second halves agreeing (`pt_split` ≤ [`Z_LIMIT`]).
pub fn local_tempering(th: &Thermo, p: &super::temper::TemperPoint) -> Checks {
    let mut c = Checks::new();
    put(&mut c, "finite", th.n_bad as f64, 0.0, th.n_bad == 0);
    let trips = super::temper::TRIPS_PER_LADDER;
    put(
        &mut c,
        "pt_round_trips",
        p.round_trips_per_ladder,
        trips,
        p.round_trips_per_ladder >= trips,
    );
    put(&mut c, "pt_split", p.split, Z_LIMIT, p.split <= Z_LIMIT);
    c
}

/// `witness_u`, `witness_cv`: the estimate's ⟨U⟩ and C_V agree with a witness's, |z| ≤
/// [`WITNESS_Z_LIMIT`] (whichever algorithm the witness is).
fn put_agreement(c: &mut Checks, z_u: f64, z_cv: f64) {
    put(c, "witness_u", z_u, WITNESS_Z_LIMIT, z_u <= WITNESS_Z_LIMIT);
    put(
        c,
        "witness_cv",
        z_cv,
        WITNESS_Z_LIMIT,
        z_cv <= WITNESS_Z_LIMIT,
    );
}

/// The witness checks of a temperature estimated by parallel tempering, against sequential
/// Monte Carlo ([`mod@crate::mcmc::smc`]) at T — another algorithm: the anneal carries the
/// populations of separated modes in its weights, where a ladder must cross between them, so a
/// ladder that never crosses a barrier does not agree with it:
/// * `witness_u`, `witness_cv`: |tempering − anneal| / √(se²_tempering + se²_anneal) ≤
///   [`WITNESS_Z_LIMIT`];
/// * `witness_resolution`: the anneal's standard errors of ⟨U⟩ and C_V at most
///   [`WITNESS_RESOLUTION`] times tempering's ([`resolution`]; a witness that cannot see a
///   bias of many of the estimate's errors is no evidence for them);
/// * `witness_hysteresis`: the anneal's cooling and heating passes agree at T within
///   [`Z_LIMIT`] (an anneal that lags behind is no evidence);
/// * `witness_settled`: the anneal's burn-in (at T_min also its dwell) stopped because the
///   mean energy stopped drifting, not at its cap ([`crate::mcmc::SmcPoint::settled`]);
/// * `witness_start`: the anneal at T_max, where it starts (from the flow's draws, then local
///   moves), agrees with the parallel-tempering witness there, whose ladder reaches 2 T_max
///   (`start_z`: the larger |z| of ⟨U⟩ and C_V, ≤ [`WITNESS_Z_LIMIT`]): an anneal whose start
///   misses a mode behind a barrier misses it at every temperature below, and its two passes
///   agree all the same (measured: a double well, b = 12, from a flow trained 20 steps that
///   covered one well: C_V 0.50 against 0.68–0.94 at every temperature, hysteresis ≤ 1.2).
///
/// Without an anneal (interrupted) or a witness every one fails.
pub fn annealing_witness(th: &Thermo, p: Option<&crate::mcmc::SmcPoint>, start_z: f64) -> Checks {
    let mut c = Checks::new();
    let ok = start_z <= WITNESS_Z_LIMIT;
    put(&mut c, "witness_start", start_z, WITNESS_Z_LIMIT, ok);
    let inf = f64::INFINITY;
    let (zu, zc, hy, res) = p.map_or((inf, inf, inf, inf), |p| {
        let m = &p.thermo;
        (
            z(th.u.value, th.u.se, m.u.value, m.u.se),
            z(th.cv.value, th.cv.se, m.cv.value, m.cv.se),
            if p.hysteresis.is_nan() {
                inf
            } else {
                p.hysteresis
            },
            resolution(th, m),
        )
    });
    put_agreement(&mut c, zu, zc);
    let resolved = res <= WITNESS_RESOLUTION;
    put(
        &mut c,
        "witness_resolution",
        res,
        WITNESS_RESOLUTION,
        resolved,
    );
    put(&mut c, "witness_hysteresis", hy, Z_LIMIT, hy <= Z_LIMIT);
    put_settled(&mut c, "witness_settled", p);
    c
}

/// The larger ratio of a witness's standard error to an estimate's, of ⟨U⟩ and of C_V (∞
/// where one is not finite or the estimate's is 0).
pub fn resolution(est: &Thermo, witness: &Thermo) -> f64 {
    let ratio = |e: Estimate, w: Estimate| {
        let r = w.se / e.se;
        if r.is_finite() {
            r
        } else {
            f64::INFINITY
        }
    };
    ratio(est.u, witness.u).max(ratio(est.cv, witness.cv))
}

/// `witness_observables` (with observables, [`crate::observables`]): the largest |z| between the
/// estimate's ⟨O⟩ and a witness's, over the observables, ≤ [`WITNESS_Z_LIMIT`]; the witness is
/// the parallel-tempering one, or the anneal where tempering made the estimate (`None`: none
/// there, and the check fails; so does an observable that is not finite).
pub fn observables_witness(est: &[Estimate], witness: Option<&[Estimate]>) -> Checks {
    let worst = witness.map_or(f64::INFINITY, |w| {
        (est.iter().zip(w))
            .map(|(a, b)| z(a.value, a.se, b.value, b.se))
            .fold(0.0, f64::max)
    });
    let mut c = Checks::new();
    let pass = worst <= WITNESS_Z_LIMIT;
    put(&mut c, "witness_observables", worst, WITNESS_Z_LIMIT, pass);
    c
}

/// z of a residual of estimates at two temperatures: coefficients `ca` on (⟨U⟩, C_V,
/// dC_V/dT, log Z) at a and `cb` at b, and an allowance `model` for the rule's own error.
fn z_of(a: &Thermo, b: &Thermo, ca: [f64; 4], cb: [f64; 4], model: f64) -> f64 {
    // Terms with a zero coefficient drop out (log Z may be NaN: not estimated).
    let val = |th: &Thermo, c: [f64; 4]| {
        [th.u.value, th.cv.value, th.dcv_dt.value, th.log_z.value]
            .iter()
            .zip(c)
            .filter(|(_, k)| *k != 0.0)
            .map(|(v, k)| k * v)
            .sum::<f64>()
    };
    let resid = val(a, ca) + val(b, cb);
    let se = (a.combination_se(ca).powi(2) + b.combination_se(cb).powi(2) + model * model).sqrt();
    if resid == 0.0 {
        0.0
    } else {
        resid.abs() / se
    }
}

/// The two grid checks at every temperature (needs ≥ 2 temperatures).
pub fn grid(th: &[Thermo]) -> Vec<Checks> {
    let n = th.len();
    let mut z_cv = vec![0.0f64; n];
    // NaN: no interval with log Z on both sides (the check does not apply).
    let mut z_z = vec![f64::NAN; n];
    for i in 0..n.saturating_sub(1) {
        let (a, b) = (&th[i], &th[i + 1]);
        let h = b.t - a.t;
        // U_b − U_a − h/2 (C_a + C_b) − h²/12 (C'_a − C'_b)
        let corr = h * h / 12.0 * (a.dcv_dt.value - b.dcv_dt.value);
        let zc = z_of(
            a,
            b,
            [-1.0, -h / 2.0, -h * h / 12.0, 0.0],
            [1.0, -h / 2.0, h * h / 12.0, 0.0],
            0.1 * corr.abs(),
        );
        // log Z_b − log Z_a + Δβ/2 (U_a + U_b) + Δβ²/12 (U'_a − U'_b),  U' = −T² C_V
        let db = 1.0 / b.t - 1.0 / a.t;
        let k = db * db / 12.0;
        let corr_z = k * (-a.t * a.t * a.cv.value + b.t * b.t * b.cv.value);
        let zz = z_of(
            a,
            b,
            [db / 2.0, -k * a.t * a.t, 0.0, -1.0],
            [db / 2.0, k * b.t * b.t, 0.0, 1.0],
            0.1 * corr_z.abs(),
        );
        // log Z not estimated (annealing without a trusted anchor): nothing to compare.
        let no_z = a.log_z.value.is_nan() || b.log_z.value.is_nan();
        for j in [i, i + 1] {
            z_cv[j] = z_cv[j].max(if zc.is_nan() { f64::INFINITY } else { zc });
            if no_z {
                continue;
            }
            z_z[j] = z_z[j].max(if zz.is_nan() { f64::INFINITY } else { zz });
        }
    }
    (0..n)
        .map(|i| {
            let mut c = Checks::new();
            put(&mut c, "cv_vs_dudt", z_cv[i], Z_LIMIT, z_cv[i] <= Z_LIMIT);
            let ok = z_z[i].is_nan() || z_z[i] <= Z_LIMIT;
            put(&mut c, "logz_vs_u", z_z[i], Z_LIMIT, ok);
            c
        })
        .collect()
}

/// What the witness says at one rung on the grid.
#[derive(Clone, Debug, Serialize)]
pub struct WitnessPoint {
    /// Rung temperature.
    pub t: f64,
    /// Witness ⟨U⟩ and its error.
    pub u: f64,
    /// Its standard error.
    pub u_se: f64,
    /// Witness C_V.
    pub cv: f64,
    /// Its standard error.
    pub cv_se: f64,
    /// |z| of the flow's ⟨U⟩ against it.
    pub z_u: f64,
    /// |z| of the flow's C_V against it.
    pub z_cv: f64,
    /// Mass beyond the flow's largest weight.
    pub missed_mass: f64,
    /// The change of ⟨U⟩ and C_V that mass makes, in the estimate's standard errors (the
    /// larger of the two).
    pub missed_bias: f64,
}

/// |a − b| / √(sa² + sb²), infinite where undefined.
pub fn z(a: f64, sa: f64, b: f64, sb: f64) -> f64 {
    let z = (a - b).abs() / (sa * sa + sb * sb).sqrt();
    if z.is_nan() {
        f64::INFINITY
    } else {
        z
    }
}

/// Compare the flow with the witness at each rung on the grid (`missed[k]`: missed mass at
/// rung k): every temperature gets the checks of its own rung.
pub fn witness(th: &[Thermo], w: &Witness, missed: &[Missed]) -> (Vec<Checks>, Vec<WitnessPoint>) {
    let mut points: Vec<Option<WitnessPoint>> = vec![None; w.rungs.len()];
    for (k, gi) in w.grid_index.iter().enumerate() {
        if let Some(i) = *gi {
            let (f, m) = (&th[i], &w.thermo[k]);
            points[k] = Some(WitnessPoint {
                t: w.rungs[k],
                u: m.u.value,
                u_se: m.u.se,
                cv: m.cv.value,
                cv_se: m.cv.se,
                z_u: z(f.u.value, f.u.se, m.u.value, m.u.se),
                z_cv: z(f.cv.value, f.cv.se, m.cv.value, m.cv.se),
                missed_mass: missed[k].mass,
                missed_bias: (missed[k].u / f.u.se)
                    .abs()
                    .max((missed[k].cv / f.cv.se).abs()),
            });
        }
    }
    let mixing_ok = w.round_trips >= w.ladders;
    let checks = (0..th.len())
        .map(|i| {
            let mut c = Checks::new();
            let p = w.rung_of(i).and_then(|k| points[k].as_ref());
            let inf = f64::INFINITY;
            let (zu, zc, mm, mb) = p.map_or((inf, inf, f64::NAN, f64::NAN), |p| {
                (p.z_u, p.z_cv, p.missed_mass, p.missed_bias)
            });
            put_agreement(&mut c, zu, zc);
            put(
                &mut c,
                "missed_mass",
                mm,
                MISSED_MASS_LIMIT,
                mm <= MISSED_MASS_LIMIT,
            );
            put(
                &mut c,
                "missed_bias",
                mb,
                MISSED_BIAS_LIMIT,
                mb <= MISSED_BIAS_LIMIT,
            );
            put(
                &mut c,
                "witness_mixing",
                w.round_trips as f64,
                w.ladders as f64,
                mixing_ok,
            );
            c
        })
        .collect();
    (checks, points.into_iter().flatten().collect())
}

/// Whether every check passed.
pub fn all_pass(c: &Checks) -> bool {
    c.values().all(|c| c.pass)
}

/// One line saying what failed and where (temperature ranges per check), or that all passed.
pub fn verdict(temps: &[f64], checks: &[Checks]) -> String {
    let n = temps.len();
    let bad = checks.iter().filter(|c| !all_pass(c)).count();
    if bad == 0 {
        return format!("all {n} temperatures trusted: every check passed");
    }
    let mut names: Vec<&String> = checks.iter().flat_map(|c| c.keys()).collect();
    names.sort();
    names.dedup();
    let mut parts = Vec::new();
    for name in names {
        // Not every temperature has every check (flow-MCMC ones have their own).
        let failed: Vec<(usize, &Check)> = (0..n)
            .filter_map(|i| checks[i].get(name).filter(|c| !c.pass).map(|c| (i, c)))
            .collect();
        let Some((_, first)) = failed.first() else {
            continue;
        };
        let worst = failed
            .iter()
            .map(|(_, c)| c.value)
            .filter(|v| !v.is_nan())
            .fold(f64::NEG_INFINITY, f64::max);
        let idx: Vec<usize> = failed.iter().map(|(i, _)| *i).collect();
        parts.push(format!(
            "{name} fails at {} (worst {worst:.3}, limit {})",
            ranges(temps, &idx),
            first.limit
        ));
    }
    format!("{bad} of {n} temperatures untrusted: {}", parts.join("; "))
}

/// "T = 0.5–0.74, 2.1" for the temperatures at `idx` (runs of neighbours joined).
pub fn ranges(temps: &[f64], idx: &[usize]) -> String {
    let mut out = Vec::new();
    let mut k = 0;
    while k < idx.len() {
        let start = k;
        while k + 1 < idx.len() && idx[k + 1] == idx[k] + 1 {
            k += 1;
        }
        out.push(if k == start {
            format!("{:.3}", temps[idx[start]])
        } else {
            format!("{:.3}–{:.3}", temps[idx[start]], temps[idx[k]])
        });
        k += 1;
    }
    format!("T = {}", out.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pass: bool, value: f64) -> Check {
        Check {
            pass,
            value,
            limit: 0.7,
        }
    }

    /// Temperatures with different sets of checks (importance vs flow-MCMC) share a verdict;
    /// failing runs of neighbours read as ranges.
    #[test]
    fn verdict_names_checks_and_ranges() {
        let temps = [1.0, 1.5, 2.0, 2.5];
        let mut c = vec![Checks::new(); 4];
        for (i, k) in [0.9, 0.8, 0.1, 1.2].into_iter().enumerate() {
            put(&mut c[i], "pareto_k", k, 0.7, k < 0.7);
        }
        c[1] = Checks::new();
        c[1].insert("mcmc_acceptance".into(), check(true, 0.9));
        let v = verdict(&temps, &c);
        assert_eq!(
            v,
            "2 of 4 temperatures untrusted: pareto_k fails at T = 1.000, 2.500 (worst 1.200, limit 0.7)"
        );
        c[0].insert("pareto_k".into(), check(true, 0.1));
        c[3].insert("pareto_k".into(), check(true, 0.1));
        assert!(verdict(&temps, &c).starts_with("all 4 temperatures trusted"));
        assert_eq!(ranges(&temps, &[0, 1, 3]), "T = 1.000–1.500, 2.500");
    }

    /// A thermodynamic estimate with these ⟨U⟩ and C_V (the rest NaN).
    fn thermo(u: Estimate, cv: Estimate) -> Thermo {
        Thermo {
            u,
            cv,
            ..Thermo::unestimated(1.0)
        }
    }

    /// An anneal's point with these estimates, its passes agreeing (hysteresis 0.5).
    fn smc_point(thermo: Thermo, settled: bool) -> crate::mcmc::SmcPoint {
        crate::mcmc::SmcPoint {
            t: 1.0,
            thermo,
            hysteresis: 0.5,
            acceptance: 0.3,
            correlation: 0.3,
            observables: Vec::new(),
            settled,
        }
    }

    /// The anneal that checks a tempered point resolves it only with standard errors within
    /// [`WITNESS_RESOLUTION`] times the point's, for ⟨U⟩ and for C_V: an agreeing anneal 4×
    /// less precise passes, one 6× less precise in C_V alone fails (its z-test could not see
    /// a bias of 20 of the point's errors), as do an error that is not finite and no anneal.
    #[test]
    fn a_witness_must_resolve_the_estimate_it_checks() {
        let e = |value, se| Estimate { value, se };
        let est = thermo(e(1.0, 0.01), e(2.0, 0.02));
        let point = |u_se: f64, cv_se: f64| smc_point(thermo(e(1.0, u_se), e(2.0, cv_se)), true);
        let check = |p: Option<&crate::mcmc::SmcPoint>| {
            annealing_witness(&est, p, 1.0)["witness_resolution"].clone()
        };
        let resolved = check(Some(&point(0.04, 0.02)));
        assert!(resolved.pass && (resolved.value - 4.0).abs() < 1e-12);
        let coarse = check(Some(&point(0.01, 0.12)));
        assert!(!coarse.pass && (coarse.value - 6.0).abs() < 1e-12);
        assert!(!check(Some(&point(f64::NAN, 0.02))).pass);
        assert!(!check(None).pass);
        assert_eq!(resolution(&est, &est), 1.0);
    }

    /// An anneal whose burn-in stopped at its cap is no estimate and no witness: `smc_settled`
    /// and `witness_settled` fail for it (and without an anneal), pass for a settled one.
    #[test]
    fn an_unsettled_anneal_is_neither_trusted_nor_a_witness() {
        let e = |value, se| Estimate { value, se };
        let est = thermo(e(1.0, 0.01), e(2.0, 0.02));
        for settled in [true, false] {
            let p = smc_point(est, settled);
            assert_eq!(local_smc(&est, &p)["smc_settled"].pass, settled);
            let w = annealing_witness(&est, Some(&p), 1.0);
            assert_eq!(w["witness_settled"].pass, settled);
            assert!(w["witness_hysteresis"].pass);
        }
        assert!(!annealing_witness(&est, None, 1.0)["witness_settled"].pass);
    }

    /// Observables agree within the witness's limit or fail on the worst of them; no witness,
    /// or an observable that is not finite, fails.
    #[test]
    fn observables_are_held_to_their_witness() {
        let e = |value, se| Estimate { value, se };
        let est = [e(1.0, 0.1), e(5.0, 0.3)];
        let value = |c: &Checks| c["witness_observables"].clone();
        let agree = value(&observables_witness(
            &est,
            Some(&[e(1.1, 0.1), e(5.0, 0.4)]),
        ));
        assert!(agree.pass && (agree.value - 0.1 / 0.02f64.sqrt()).abs() < 1e-12);
        let apart = value(&observables_witness(
            &est,
            Some(&[e(1.0, 0.1), e(7.5, 0.4)]),
        ));
        assert!(
            !apart.pass && (apart.value - 5.0).abs() < 1e-12,
            "{apart:?}"
        );
        assert!(!value(&observables_witness(&est, None)).pass);
        let nan = [e(f64::NAN, f64::NAN), e(5.0, 0.3)];
        assert!(!value(&observables_witness(&nan, Some(&est))).pass);
    }
}
