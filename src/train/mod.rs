//! Training temperature-conditioned flows.
//!
//! * **forward KL** (maximum likelihood) on samples x ~ p: L = −E[log q(x | c)];
//! * **reverse KL** (energy-based): L = E_{x~q}[log q(x|T) + U(x)/T] (see [`trainer`]).

pub mod losses;

pub use losses::fit_max_likelihood;
