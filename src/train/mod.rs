//! Training temperature-conditioned flows (MATH.md §6).
//!
//! * **Reverse KL** (energy-based, no data): L(T) = E_{x~q(·|T)}[log q(x|T) + U(x)/T]
//!   = KL(q‖p_T) − log Z(T). The energy never enters the graph: the host evaluates U and ∇U
//!   at the sampled x, and ∇U enters the compiled graph as an input through the surrogate
//!   log q(x|T) + ⟨stop_grad(∇U(x)), x⟩/T, whose parameter gradient equals that of L. Any
//!   [`crate::systems::Energy`] trains, with or without an analytic gradient. Samples whose
//!   energy or gradient is not finite get zero weight and are counted.
//! * **Forward KL** (maximum likelihood) on samples x ~ p_T: L = −E[log q(x|T)].
//! * **Combined**: reverse + λ·forward on samples from parallel tempering, which keeps every
//!   mode populated (reverse KL alone is mode-seeking).
//!
//! Temperatures are drawn per sample, log-uniformly on [T_min, T_max].

pub mod losses;
pub mod trainer;

pub use crate::observe::{History, Observer, Progress, StepMetrics};
pub use losses::{fit_max_likelihood, max_likelihood_program};
pub use trainer::{
    hmc_data, tempering_data, train, train_new, train_with_data, TrainConfig, TrainReport,
    TrainingData,
};
