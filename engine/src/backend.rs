//! What a device backend gives the plan executor beside the CPU: a plan compiled for the
//! device (a buffer per node, every step a generated kernel), run on the declared inputs'
//! buffers, any node read back. Implemented by `cuda::Cuda` (feature `cuda`) and
//! `webgpu::WebGpu` (feature `wgpu`); [`super::device`] runs programs through it
//! (`--device`), and the benchmark that compares a device with the CPU is written once
//! against that.

use super::plan::{Part, Plan};
use crate::error::Result;

/// A device that runs whole f32 plans.
pub trait Backend {
    /// A plan compiled for the device, with its buffers.
    type Plan;
    /// The device's name.
    fn name(&self) -> String;
    /// Compile every step of `plan` and allocate its buffers.
    fn compile_plan(&self, plan: &Plan<f32>) -> Result<Self::Plan>;
    /// Run the kernels of `part` of a compiled plan on the declared inputs' buffers `store`
    /// (as [`Plan::run`] takes them), uploading declared input i only where `fresh[i]` (the
    /// device keeps the others from the run before: parameters stay resident); returns the
    /// seconds from the upload to the last kernel's end.
    fn run_plan(
        &self,
        plan: &mut Self::Plan,
        store: &[Vec<f32>],
        fresh: &[bool],
        part: Part,
    ) -> Result<f64>;
    /// Node `node`'s buffer after a run.
    fn read(&self, plan: &Self::Plan, node: usize) -> Result<Vec<f32>>;
}
