//! Everything a notebook or a script usually needs, in one `use thermoflow::prelude::*;`.

pub use crate::engine::{Adam, GraphBuilder, Program};
pub use crate::error::{Error, Result};
pub use crate::estimators::{cv_from_derivative, thermo, Estimate, Thermo, Weights};
pub use crate::exact::{quadrature, quadrature_expectation, reference, Reference};
pub use crate::flows::{
    builders::{coupling_flow, default_flow, linear_flow, radial_flow},
    io as flow_io, ActNorm, Activation, Bijection, Conditioning, Coupling, CouplingConfig, Flow,
    Layer, LinearFlow, LuLinear, Permutation, Radial, SumRatio, Transformer,
};
pub use crate::lab::{apply, check, quick, size, Sweep, SweepRun};
pub use crate::mcmc::{parallel_tempering, rwm, PtConfig, RwmConfig};
pub use crate::observables::Observable;
pub use crate::plot::binned;
pub use crate::rng::{seeded, SeededRng};
pub use crate::systems::{self, Dual64, DualNum, Energy, Harmonic};
pub use crate::train::{fit_max_likelihood, train, TrainConfig};
pub use ndarray::{array, Array1, Array2, Axis};
pub use plotly::{self, HeatMap, Histogram, Plot, Scatter};
pub use rand::rngs::StdRng;
pub use rand::{Rng, SeedableRng};
pub use rand_distr::{self, Distribution};
