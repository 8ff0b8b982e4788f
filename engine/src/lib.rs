//! thermoflow's engine: the only code that knows luminal's internals (the library re-exports
//! it as `thermoflow::engine`), and the library's one [`error`] type.
//!
//! Graphs are built with luminal 0.2.0's primitive operators through [`GraphBuilder`] and
//! [`Var`]; [`Program`] compiles them with our own passes instead of luminal's stock
//! compilers (which are slow and, for slices, permuted reductions, `gather` and matmul
//! offsets, wrong):
//!
//! 1. **lowering** ([`ir`]): every edge's `ShapeTracker` becomes a concrete strided [`View`]
//!    by our own index math, once per batch size;
//! 2. **matmul recognition**: `SumReduce(last) ∘ Mul` of two broadcast views becomes a gemm;
//! 3. **autograd** ([`autograd`]): reverse-mode gradients of a scalar loss, covering every
//!    primitive and every view (pulled back as the exact adjoint of the read);
//! 4. **fused CPU kernels** ([`fuse`], [`plan`]): elementwise DAGs fused into chunked
//!    loops, gemm with its bias-and-activation epilogue ([`gemm`], packed for long K), direct
//!    reductions and scatters, the rational-quadratic spline as one kernel with its
//!    adjoint ([`rqs`]); generic over f32 and f64;
//! 5. **row tiling** ([`tile`], [`exec`]): the steps whose batch rows are independent run tile
//!    by tile in one parallel region, the parameter gradients after them.
//!
//! 6. **code generation**: every kind of step printed as CUDA C ([`codegen`]; a host C
//!    compiler also compiles it, so it is tested without a GPU; run by `cuda` with the
//!    feature of that name) and as WGSL ([`wgsl`]; run by `webgpu` through wgpu with the
//!    feature `wgpu`, tested on Mesa's lavapipe where there is no GPU).

#![warn(missing_docs)]

pub mod access;
pub mod autograd;
pub mod backend;
pub mod blas;
pub mod builder;
pub mod codegen;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod error;
pub mod exec;
pub mod fastmath;
pub mod fuse;
pub mod gemm;
pub mod ir;
pub mod optim;
pub mod plan;
pub mod program;
pub mod rqs;
pub mod scalar;
pub mod simd;
pub mod stencil;
pub mod tile;
pub mod view;
#[cfg(feature = "wgpu")]
pub mod webgpu;
pub mod wgsl;

pub use builder::{Dim, GraphBuilder, InputKind, Shape, Var};
pub use optim::{Adam, Optimizer, Sgd};
pub use program::{OutputSpec, Outputs, Program, Snapshot};
pub use scalar::Scalar;
pub use view::View;
