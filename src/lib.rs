//! # thermoflow
//!
//! A virtual laboratory for statistical mechanics: temperature-conditioned normalizing flows
//! that sample Boltzmann distributions p(x|T) ∝ exp(−U(x)/kT), with estimators of U(T) and
//! C_V(T) checked against exact answers.
//!
//! **Direction convention** (stated once, used everywhere): a flow's `forward` maps a base
//! sample z ~ N(0, I) to a physical state x; `inverse` maps x back to z.
//!
//! Layout: [`engine`] (luminal graphs, our autograd and fused CPU compiler; the only code that
//! knows luminal; the crate `thermoflow-engine` in `engine/`, with the library's [`error`]
//! type), and f64 host-side physics that never touches luminal.

#![warn(missing_docs)]

pub mod backmap;
pub mod bench;
pub mod causal;
pub mod coordinates;
pub use thermoflow_engine as engine;
pub use thermoflow_engine::error;
pub mod estimators;
pub mod exact;
pub mod flows;
pub mod gauge;
pub mod lab;
pub mod lattice;
pub mod linalg;
pub mod mcmc;
pub mod memory;
pub mod observables;
pub mod observe;
pub mod plot;
pub mod prelude;
pub mod rare;
pub mod rng;
pub mod sweep;
pub mod systems;
pub mod train;

pub use error::{Error, Result};
