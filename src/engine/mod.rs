//! The engine: the only module that knows luminal's internals.
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
//! 6. **code generation** ([`codegen`]): the fused and reduction kernels printed as CUDA C
//!    (which a host C compiler also compiles, so they are tested without a GPU), the first
//!    part of the GPU backends; gemm, scatters, table gathers and the spline are next.

pub mod access;
pub mod autograd;
pub mod builder;
pub mod codegen;
#[cfg(feature = "cuda")]
pub mod cuda;
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
pub mod tile;
pub mod view;

pub use builder::{Dim, GraphBuilder, InputKind, Shape, Var};
pub use optim::{Adam, Optimizer, Sgd};
pub use program::{OutputSpec, Outputs, Program};
pub use scalar::Scalar;
pub use view::View;
