//! Normalizing flows as luminal graph builders.
//!
//! **Direction**: `forward` maps base z → state x, `inverse` maps x → z (see the crate doc).
//! Every transform implements [`Bijection`] (its own file); [`Layer`] (its own file) holds any
//! of them, serialisable.
//!
//! Transforms, one file each: [`Coupling`] over a [`Transformer`] (affine: RealNVP; rational-
//! quadratic splines: Neural Spline Flows), [`Radial`], [`LinearFlow`] (lower-triangular),
//! [`LuLinear`], [`Permutation`] (incl. reverse), [`ActNorm`], [`LatticeCoupling`] (checkerboard
//! coupling with a periodic convolutional conditioner), [`GaugeCoupling`] (gauge-equivariant
//! coupling of U(1) links with a circular spline), [`SpinCoupling`] (checkerboard coupling of
//! planar spins with circular splines, and [`SpinFrame`], the turn from spin 0's frame) and
//! [`SumRatio`] (the seed's
//! worked example). [`Flow`] is a base (standard normal, or uniform angles) plus a chain, optionally read in a
//! system's [`Coordinates`] (internal coordinates of a chain, centre-of-mass-free modes of a
//! cluster: a fixed f64 map on the host); [`builders`] has the
//! factory functions and [`default_flow`], the one recipe every command trains.

pub mod actnorm;
pub mod bijection;
pub mod builders;
pub mod coupling;
pub mod flow;
pub mod gauge_coupling;
pub mod io;
pub mod lattice_coupling;
pub mod layer;
pub mod linear;
pub mod lu_linear;
pub mod mlp;
pub mod params;
pub mod permutation;
pub mod radial;
pub mod spin_coupling;
pub mod spline;
pub mod sum_ratio;
pub mod transformer;

pub use crate::coordinates::Coordinates;
pub use actnorm::ActNorm;
pub use bijection::Bijection;
pub use builders::{
    coupling_flow, default_flow, linear_flow, radial_flow, system_coupling_flow, CouplingConfig,
};
pub use coupling::Coupling;
pub use flow::{Base, Conditioning, Flow, Samples};
pub use gauge_coupling::GaugeCoupling;
pub use lattice_coupling::LatticeCoupling;
pub use layer::Layer;
pub use linear::LinearFlow;
pub use lu_linear::LuLinear;
pub use mlp::{Activation, Mlp};
pub use params::{ParamSet, Scope};
pub use permutation::Permutation;
pub use radial::Radial;
pub use spin_coupling::{SpinCoupling, SpinFrame};
pub use sum_ratio::SumRatio;
pub use transformer::Transformer;
