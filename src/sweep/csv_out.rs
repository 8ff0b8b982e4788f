//! The sweep as a table for pandas, R or a spreadsheet: one row per temperature.
//!
//! Columns, in this order (the `*_exact` ones only where an exact reference exists):
//! `T, U, U_se, U_exact, Cv, Cv_se, Cv_exact, Cv_deriv, Cv_deriv_se, logZ, logZ_se,
//! logZ_exact, F, S, ess_fraction, pareto_k, samples_used, method, target_reached, trusted,
//! failed_checks` (`failed_checks`: the names of the checks that fail, `;`-separated), then for
//! each observable `NAME, NAME_se, NAME_exact`.
//! Numbers that are not finite are written empty.

use super::report::SweepResult;
use crate::error::{Error, Result};

impl SweepResult {
    /// The CSV text (see the module doc for the columns).
    pub fn to_csv(&self) -> Result<String> {
        let e = self.exact.as_ref();
        // The sweep's own columns, which no observable may be named after; `*_exact` only
        // with an exact reference.
        let mut header: Vec<&str> = (crate::observables::RESERVED.iter().copied())
            .filter(|c| e.is_some() || !c.ends_with("_exact"))
            .collect();
        let observed: Vec<String> = (self.observables.iter())
            .flat_map(|o| {
                let exact = o.exact.as_ref().map(|_| format!("{}_exact", o.name));
                [o.name.clone(), format!("{}_se", o.name)]
                    .into_iter()
                    .chain(exact)
            })
            .collect();
        header.extend(observed.iter().map(String::as_str));
        let mut w = csv::Writer::from_writer(Vec::new());
        let io = |e: csv::Error| Error::Io(e.to_string());
        w.write_record(&header).map_err(io)?;
        let num = |v: f64| {
            if v.is_finite() {
                v.to_string()
            } else {
                String::new()
            }
        };
        for i in 0..self.temperatures.len() {
            let mut row = vec![num(self.temperatures[i]), num(self.u[i]), num(self.u_se[i])];
            row.extend(e.map(|e| num(e.u[i])));
            row.extend([num(self.cv[i]), num(self.cv_se[i])]);
            row.extend(e.map(|e| num(e.cv[i])));
            row.extend([
                num(self.cv_deriv[i]),
                num(self.cv_deriv_se[i]),
                num(self.log_z[i]),
                num(self.log_z_se[i]),
            ]);
            row.extend(e.map(|e| num(e.log_z[i])));
            let failed: Vec<&str> = self.checks[i]
                .iter()
                .filter(|(_, c)| !c.pass)
                .map(|(n, _)| n.as_str())
                .collect();
            row.extend([
                num(self.f[i]),
                num(self.s[i]),
                num(self.ess_fraction[i]),
                num(self.pareto_k[i]),
                self.samples_used[i].to_string(),
                self.method[i].clone(),
                self.target_reached[i].to_string(),
                self.trusted[i].to_string(),
                failed.join(";"),
            ]);
            for o in &self.observables {
                row.extend([num(o.value[i]), num(o.se[i])]);
                row.extend(o.exact.as_ref().map(|e| num(e[i])));
            }
            w.write_record(&row).map_err(io)?;
        }
        let bytes = w.into_inner().map_err(|e| Error::Io(e.to_string()))?;
        String::from_utf8(bytes).map_err(|e| Error::Io(e.to_string()))
    }
}
