//! Observables: functions O(x) of a configuration whose Boltzmann average
//!
//! ```text
//! ⟨O⟩(T) = ∫ O(x) e^{−U(x)/T} dx / Z(T)
//! ```
//!
//! a sweep estimates at every temperature beside ⟨U⟩, from the same samples and with the same
//! error model as ⟨U⟩: importance sampling's self-normalised mean Σ w_i O_i / Σ w_i with its
//! delta-method error, flow-MCMC's equal-weight mean over its chains with one batch per chain
//! ([`crate::estimators::Weights::mean_grouped`]), tempering's ladders and the anneal's replicas
//! ([`crate::estimators::mean_replicas`]). An observable is a Rust closure on the coordinates
//! ([`Observable::new`]) or on the coordinates and the temperature
//! ([`Observable::at_temperature`]: O(x, T), averaged at each T as it stands), an expression
//! typed as text in the grammar of `--energy` with `T` besides ([`Observable::parse`]: `x0`,
//! `r2 = x0^2 + x1^2`, `x0^2/T`), or one a system defines, by its name
//! ([`crate::systems::Energy::observables`]: `abs_m` on φ⁴, `q2` on U(1), `rg2` on a chain,
//! `helicity` on XY).
//!
//! The systems' own: the magnetisation per site |M|/V = |Σ_x φ_x|/V, M²/V (whose average is
//! the susceptibility χ₂ on a finite lattice, where ⟨M⟩ = 0) and M⁴/V² on φ⁴ and XY; the
//! helicity modulus on XY; the mean plaquette ⟨cos θ_P⟩ and the squared topological charge Q²
//! (Q = Σ_P wrap(θ_P)/2π; ⟨Q²⟩/V the topological susceptibility) on U(1); the squared radius of
//! gyration R_g² = (1/n) Σ_i |r_i − r_com|² on a chain (with the squared end-to-end distance)
//! and a cluster.
//!
//! A **derived quantity** ([`Derived`]) is a function of several averages and T,
//!
//! ```text
//! f(⟨O_1⟩, …, ⟨O_K⟩, T),   e.g. the Binder cumulant U₄ = 1 − ⟨M⁴⟩ / 3⟨M²⟩²,
//! ```
//!
//! estimated by the jackknife over the estimates' groups, bias-corrected, with its error
//! ([`crate::estimators::Influence::combine`]), so the averages' correlation is kept.

use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{input_err, Result};
use crate::estimators::{Estimate, Influence};
use crate::systems::expression::Expression;
use crate::systems::Energy;

/// O(x, T).
type Closure = dyn Fn(&[f64], f64) -> f64 + Send + Sync;
type Exact = dyn Fn(f64) -> Result<f64> + Send + Sync;

/// A named function of a configuration.
#[derive(Clone)]
pub struct Observable {
    name: String,
    /// None: the system's own observable of that name, found by [`resolve`].
    f: Option<Arc<Closure>>,
    /// Coordinates it reads, where known (an expression's highest index plus one).
    reads: Option<usize>,
    /// ⟨O⟩ at a temperature exactly, where the system knows it.
    exact: Option<Arc<Exact>>,
}

impl std::fmt::Debug for Observable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Observable({:?})", self.name)
    }
}

impl Observable {
    /// The observable `name` computed by `f` from a configuration's coordinates:
    /// `Observable::new("r²", |x| x[0] * x[0] + x[1] * x[1])`.
    pub fn new(name: &str, f: impl Fn(&[f64]) -> f64 + Send + Sync + 'static) -> Observable {
        Observable::at_temperature(name, move |x, _| f(x))
    }

    /// The observable `name` computed by `f` from a configuration and the temperature it is
    /// averaged at, O(x, T): ⟨O(·, T)⟩_T at each T. The XY model's helicity modulus
    /// Υ = ⟨E⟩/V − ⟨I²⟩/(V T) is one (the mean of (E − I²/T)/V).
    pub fn at_temperature(
        name: &str,
        f: impl Fn(&[f64], f64) -> f64 + Send + Sync + 'static,
    ) -> Observable {
        Observable {
            name: name.trim().to_string(),
            f: Some(Arc::new(f)),
            reads: None,
            exact: None,
        }
    }

    /// The same with its exact average ⟨O⟩(T) (a system's closed form or series).
    pub fn with_exact(
        mut self,
        exact: impl Fn(f64) -> Result<f64> + Send + Sync + 'static,
    ) -> Observable {
        self.exact = Some(Arc::new(exact));
        self
    }

    /// ⟨O⟩ at temperature `t` exactly, where known ([`Observable::with_exact`]; for 1-D and 2-D
    /// systems the sweep integrates any observable by quadrature instead).
    pub fn exact(&self, t: f64) -> Option<Result<f64>> {
        self.exact.as_ref().map(|e| e(t))
    }

    /// `EXPR` or `NAME=EXPR`, EXPR in `x0, x1, …` as `--energy` takes it and the temperature
    /// `T` (named by its text when no name is given): `x0`, `x0^2`, `r = sqrt(x0^2 + x1^2)`,
    /// `x0^2/T`; or a bare name other
    /// than a coordinate (`abs_m`): the system's own observable of that name, which the sweep
    /// looks up ([`resolve`]).
    pub fn parse(text: &str) -> Result<Observable> {
        let word = text.trim();
        let coordinate = word
            .strip_prefix('x')
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
        let identifier = word.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if identifier && !coordinate {
            return Ok(Observable {
                name: word.to_string(),
                f: None,
                reads: None,
                exact: None,
            });
        }
        let (name, expr) = match text.split_once('=') {
            Some((n, e)) => (n.trim(), e.trim()),
            None => (text.trim(), text.trim()),
        };
        if name.is_empty() {
            return input_err(format!("observable {text:?} has no name before '='"));
        }
        let e = Expression::parse_observable(expr)
            .map_err(|e| e.context(format!("observable {name:?}")))?;
        let reads = e.coordinates();
        let mut o = Observable::at_temperature(name, move |x, t| e.eval_at(x, t));
        o.reads = Some(reads);
        Ok(o)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// O(x, T) (NaN for a system's observable not yet [`resolve`]d).
    pub fn eval(&self, x: &[f64], t: f64) -> f64 {
        self.f.as_ref().map_or(f64::NAN, |f| f(x, t))
    }
}

/// A quantity derived from the observables' averages at each temperature,
/// f(⟨O_1⟩, …, ⟨O_K⟩, T), such as a Binder ratio `1 - m4/(3*m2^2)` or a variance
/// `x2 - x0^2`: the expression names the observables (and `T`), and its error follows from
/// theirs by the jackknife over their groups, with their correlation ([`Influence::combine`]).
#[derive(Clone, Debug)]
pub struct Derived {
    name: String,
    expr: Expression,
    /// How many observables there were when it was parsed (its variables index the first
    /// ones; more may follow).
    of: usize,
}

impl Derived {
    /// `NAME = EXPR` over the `observables`' names and `T`: `binder = 1 - m4/(3*m2^2)`.
    pub fn parse(text: &str, observables: &[Observable]) -> Result<Derived> {
        let Some((name, expr)) = text.split_once('=') else {
            return input_err(format!(
                "a derived quantity is NAME = EXPR over the observables, got {text:?}"
            ));
        };
        let name = name.trim();
        let names: Vec<&str> = observables.iter().map(|o| o.name()).collect();
        if taken(name) || names.contains(&name) {
            return input_err(format!(
                "a derived quantity needs a name other than T, the sweep's own columns (U, Cv, logZ, F, S, …) and the observables', got {name:?}"
            ));
        }
        let expr = Expression::parse_named(expr.trim(), &names)
            .map_err(|e| e.context(format!("derived quantity {name:?}")))?;
        Ok(Derived {
            name: name.to_string(),
            expr,
            of: observables.len(),
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The observables it uses, by index.
    pub fn uses(&self) -> Vec<usize> {
        (0..self.of).filter(|&k| self.expr.uses(k)).collect()
    }

    /// Whether it can be evaluated on `n` observables (it was parsed over the first ones).
    pub fn check(&self, n: usize) -> Result<()> {
        if n < self.of {
            return input_err(format!(
                "derived quantity {:?} was parsed over {} observables, the sweep has {n}",
                self.name, self.of
            ));
        }
        Ok(())
    }

    /// f at temperature `t` from every observable's estimate there (all from the same
    /// samples), with its error; NaN where one it uses is not estimated.
    pub fn estimate(&self, parts: &[Influence], t: f64) -> Result<Estimate> {
        self.check(parts.len())?;
        let used = self.uses();
        let refs: Vec<&Influence> = used.iter().map(|&k| &parts[k]).collect();
        let mut all = vec![0.0; self.of];
        Influence::combine(&refs, |m| {
            for (&k, v) in used.iter().zip(m) {
                all[k] = *v;
            }
            self.expr.eval_at(&all, t)
        })
    }

    /// f at `t` from the observables' exact values, where every one it uses has one.
    pub fn exact(&self, exact: &[Option<f64>], t: f64) -> Option<f64> {
        let mut m = vec![0.0; self.of];
        for k in self.uses() {
            m[k] = (*exact.get(k)?)?;
        }
        Some(self.expr.eval_at(&m, t))
    }
}

/// The observables and derived quantities of `--observe` and `--derive` flags, in order.
pub fn parse_flags(
    observe: &[String],
    derive: &[String],
) -> Result<(Vec<Observable>, Vec<Derived>)> {
    let obs = (observe.iter())
        .map(|o| Observable::parse(o))
        .collect::<Result<Vec<_>>>()?;
    let derived = (derive.iter())
        .map(|d| Derived::parse(d, &obs))
        .collect::<Result<_>>()?;
    Ok((obs, derived))
}

/// The observables for `energy`: each named one ([`Observable::parse`]'s bare names) replaced
/// by the system's own of that name, then [`check`]ed. Errors name what the system has.
pub fn resolve(obs: &[Observable], energy: &dyn Energy) -> Result<Vec<Observable>> {
    let own = energy.observables();
    let out = (obs.iter())
        .map(|o| match &o.f {
            Some(_) => Ok(o.clone()),
            None => own
                .iter()
                .find(|s| s.name == o.name)
                .cloned()
                .ok_or_else(|| {
                    let names: Vec<&str> = own.iter().map(|s| s.name.as_str()).collect();
                    crate::Error::Input(format!(
                        "{} has no observable {:?} ({}); an expression in x0, x1, … also serves",
                        energy.name(),
                        o.name,
                        if names.is_empty() {
                            "it defines none".to_string()
                        } else {
                            format!("it has {}", names.join(", "))
                        }
                    ))
                }),
        })
        .collect::<Result<Vec<_>>>()?;
    check(&out, energy.dim())?;
    Ok(out)
}

/// Names an observable or a derived quantity cannot take: the temperature and the sweep's own
/// columns, in the order its CSV writes them (the CSV would otherwise have two columns of one
/// name).
pub const RESERVED: &[&str] = &[
    "T",
    "U",
    "U_se",
    "U_exact",
    "Cv",
    "Cv_se",
    "Cv_exact",
    "Cv_deriv",
    "Cv_deriv_se",
    "logZ",
    "logZ_se",
    "logZ_exact",
    "F",
    "S",
    "ess_fraction",
    "pareto_k",
    "samples_used",
    "method",
    "target_reached",
    "trusted",
    "failed_checks",
];

/// Whether `name` is empty or [`RESERVED`].
fn taken(name: &str) -> bool {
    name.is_empty() || RESERVED.contains(&name)
}

/// Names that are present, distinct and not [`RESERVED`], and expressions that read only
/// coordinates below `dim`.
pub fn check(obs: &[Observable], dim: usize) -> Result<()> {
    for (i, o) in obs.iter().enumerate() {
        if taken(&o.name) {
            return input_err(format!(
                "an observable needs a name other than {:?} (T and the sweep's own columns U, Cv, logZ, F, S, … are taken)",
                o.name
            ));
        }
        if obs[..i].iter().any(|p| p.name == o.name) {
            return input_err(format!("two observables are named {:?}", o.name));
        }
        if let Some(r) = o.reads.filter(|&r| r > dim) {
            return input_err(format!(
                "observable {:?} uses x{} but the system has {dim} coordinates",
                o.name,
                r - 1
            ));
        }
    }
    Ok(())
}

/// Every observable at every row of `flat` (rows of `dim` coordinates) at temperature `t`, in
/// parallel: `values[k][i]` is observable k at row i.
pub fn evaluate(obs: &[Observable], flat: &[f64], dim: usize, t: f64) -> Vec<Vec<f64>> {
    obs.iter()
        .map(|o| flat.par_chunks(dim).map(|x| o.eval(x, t)).collect())
        .collect()
}

/// Each observable's exact ⟨O⟩ at `temps`: by quadrature for 1-D and 2-D systems, else the
/// observable's own ([`Observable::exact`]) where it has one, else None.
pub fn exact_curves(
    obs: &[Observable],
    energy: &dyn Energy,
    temps: &[f64],
) -> Result<Vec<Option<Vec<f64>>>> {
    if obs.is_empty() {
        return Ok(Vec::new());
    }
    if energy.dim() <= 2 {
        let fs: Vec<_> = obs.iter().map(|o| |x: &[f64], t| o.eval(x, t)).collect();
        let q = crate::exact::quadrature_expectations(energy, temps, &fs)?;
        return Ok(q
            .into_iter()
            .map(|c| Some(c.into_iter().map(|v| v.0).collect()))
            .collect());
    }
    (obs.iter())
        .map(|o| match &o.exact {
            Some(e) => temps.iter().map(|&t| e(t)).collect::<Result<_>>().map(Some),
            None => Ok(None),
        })
        .collect()
}

/// The squared radius of gyration R_g² = (1/n) Σ_i |r_i − r_com|² of n particles of `k`
/// coordinates each (`x` = r_0, r_1, …).
pub fn gyration(x: &[f64], k: usize) -> f64 {
    let n = (x.len() / k.max(1)) as f64;
    let com: Vec<f64> = (0..k)
        .map(|c| x.iter().skip(c).step_by(k).sum::<f64>() / n)
        .collect();
    x.chunks(k)
        .map(|r| {
            r.iter()
                .zip(&com)
                .map(|(a, c)| (a - c).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names and expressions parse; a missing name, a repeated one, `T`, a coordinate the
    /// system lacks and a bad expression are refused with what is wrong.
    #[test]
    fn observables_parse_and_are_checked() {
        let r = Observable::parse(" r2 = x0^2 + x1^2 ").unwrap();
        assert_eq!(r.name(), "r2");
        assert_eq!(r.eval(&[3.0, 4.0], 1.0), 25.0);
        let x = Observable::parse("x1").unwrap();
        assert_eq!(x.name(), "x1");
        let v = evaluate(&[r.clone(), x.clone()], &[1.0, 2.0, 3.0, 4.0], 2, 1.0);
        assert_eq!(v, vec![vec![5.0, 25.0], vec![2.0, 4.0]]);
        assert!(check(&[r.clone(), x.clone()], 2).is_ok());
        let err = |r: Result<()>| r.unwrap_err().to_string();
        assert!(err(check(std::slice::from_ref(&x), 1)).contains("uses x1"));
        assert!(err(check(&[r.clone(), r.clone()], 2)).contains("two observables"));
        assert!(check(&[Observable::new("T", |x| x[0])], 1).is_err());
        let s = check(&[Observable::new("S", |x| x[0])], 1).unwrap_err();
        assert!(s.to_string().contains("sweep's own columns"), "{s}");
        let b = Observable::parse("b = x0^2 / T").unwrap();
        assert_eq!(b.eval(&[2.0], 4.0), 1.0);
        assert_eq!(evaluate(&[b], &[2.0, 4.0], 1, 0.5), vec![vec![8.0, 32.0]]);
        let err = Observable::parse("m = x0 + TT").unwrap_err().to_string();
        assert!(
            err.contains("observable \"m\": expression, column 6: unknown name \"TT\"")
                && err.contains("the temperature T"),
            "{err}"
        );
        assert!(Observable::parse("=x0").is_err());
        assert!(Observable::parse("m = x0 +").is_err());
        let c = Observable::new("closure", |x| x[0] - x[1]);
        assert_eq!(c.eval(&[1.0, 3.0], 1.0), -2.0);
        assert!(
            check(&[c], 1).is_ok(),
            "a closure's reach is not known in advance"
        );
    }

    /// A bare name is the system's own observable, found by `resolve`; an unknown one is an
    /// error that lists what the system has.
    #[test]
    fn systems_observables_are_found_by_name() {
        let phi4 = crate::systems::build("phi4", &["L=2"]).unwrap();
        let asked = [
            Observable::parse("abs_m").unwrap(),
            Observable::parse("x3").unwrap(),
        ];
        assert!(asked[0].eval(&[1.0; 4], 1.0).is_nan(), "not yet resolved");
        let got = resolve(&asked, phi4.as_ref()).unwrap();
        // M = 4 on V = 4 sites: |M|/V = 1; M²/V = 4.
        assert_eq!(got[0].eval(&[1.0; 4], 1.0), 1.0);
        assert_eq!(got[1].eval(&[0.0, 0.0, 0.0, 2.5], 1.0), 2.5);
        let m = [
            Observable::parse("m2").unwrap(),
            Observable::parse("m4").unwrap(),
        ];
        let m = resolve(&m, phi4.as_ref()).unwrap();
        // M = 2 on V = 4 sites: M²/V = 1, M⁴/V² = 1; M = 4: 4 and 16.
        assert_eq!(m[0].eval(&[1.0, -1.0, 1.0, 1.0], 1.0), 1.0);
        assert_eq!(m[1].eval(&[1.0, -1.0, 1.0, 1.0], 1.0), 1.0);
        assert_eq!(m[1].eval(&[1.0; 4], 1.0), 16.0);
        let err = resolve(&[Observable::parse("q2").unwrap()], phi4.as_ref()).unwrap_err();
        assert!(err.to_string().contains("it has abs_m, m2"), "{err}");
        let dw = crate::systems::build::<&str>("double-well-1d", &[]).unwrap();
        let err = resolve(&[Observable::parse("abs_m").unwrap()], dw.as_ref()).unwrap_err();
        assert!(err.to_string().contains("defines none"), "{err}");
        let u1 = crate::systems::build("u1", &["L=2"]).unwrap();
        let got = resolve(&[Observable::parse("plaquette").unwrap()], u1.as_ref()).unwrap();
        assert_eq!(got[0].eval(&[0.0; 8], 1.0), 1.0);
    }

    /// A derived quantity names the observables (with `_`) and T; a missing `=`, a name that is
    /// T or an observable's, and an unknown variable are refused with what is wrong; its exact
    /// value follows from the observables' where those it uses have one.
    #[test]
    fn derived_quantities_parse_over_the_observables() {
        let obs = [
            Observable::parse("abs_m").unwrap(),
            Observable::parse("m2").unwrap(),
            Observable::parse("x0").unwrap(),
        ];
        let d = Derived::parse(" chi = (m2 - 4*abs_m^2) / T ", &obs).unwrap();
        assert_eq!(d.name(), "chi");
        assert_eq!(d.exact(&[Some(0.5), Some(2.0), None], 2.0), Some(0.5));
        assert_eq!(d.exact(&[None, Some(2.0), None], 2.0), None);
        let v = Derived::parse("v = x0 * 2", &obs).unwrap();
        assert_eq!(v.exact(&[None, None, Some(1.5)], 1.0), Some(3.0));
        let err = |t: &str| Derived::parse(t, &obs).unwrap_err().to_string();
        assert!(err("m2 - abs_m").contains("NAME = EXPR"));
        assert!(err("T = m2").contains("name other than T"));
        assert!(err("m2 = abs_m").contains("name other than T"));
        let e = err("b = 1 - m4/(3*m2^2)");
        assert!(
            e.contains("unknown name \"m4\"") && e.contains("abs_m, m2, x0"),
            "{e}"
        );
        assert!(v.check(2).is_err() && v.check(4).is_ok());
    }

    /// R_g² of two particles 2 apart is 1, in any dimension and wherever they sit.
    #[test]
    fn gyration_is_the_mean_squared_distance_from_the_centre() {
        assert!((gyration(&[0.0, 0.0, 2.0, 0.0], 2) - 1.0).abs() < 1e-15);
        assert!((gyration(&[5.0, 1.0, 1.0, 5.0, 1.0, 3.0], 3) - 1.0).abs() < 1e-15);
        assert_eq!(gyration(&[3.0, 3.0, 3.0], 3), 0.0);
    }
}
