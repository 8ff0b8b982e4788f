//! The safe front of the engine: a compiled program with named inputs and outputs.
//!
//! A [`Program`] owns the boxed luminal graph it was built from, the declared inputs
//! (data, resident parameters, resident constants) and one compiled [`Plan`] per batch size
//! seen (compiled on first use, kept for reuse). Every run returns freshly copied outputs,
//! missing or mis-sized inputs are errors, and parameters stay resident between runs.

use luminal::prelude::{Graph, NodeIndex};

use super::autograd::differentiate;
use super::builder::{Dim, GraphBuilder, InputDecl, InputKind, Shape, Var};
use super::ir::Ir;
use super::ir::Op;
use super::optim::{append_update, Optimizer, Slot};
use super::plan::{Part, Plan};
use super::scalar::Scalar;
use super::tile::InputRows;
use crate::error::{Error, Result};
use std::any::Any;

impl OutputSpec {
    /// An output named by a raw luminal node (for graphs built with luminal's typed API).
    pub fn node(name: &str, node: NodeIndex, shape: &[Dim]) -> OutputSpec {
        OutputSpec {
            name: name.to_string(),
            node,
            shape: Shape::new(shape),
        }
    }
}

/// A named output of a program, detached from the builder's borrow.
#[derive(Clone, Debug)]
pub struct OutputSpec {
    name: String,
    node: NodeIndex,
    shape: Shape,
}

impl Var<'_> {
    /// Name this value as a program output (materialised in row-major order).
    pub fn output(&self, name: &str) -> OutputSpec {
        OutputSpec {
            name: name.to_string(),
            node: self.contiguous().id(),
            shape: self.shape(),
        }
    }
}

/// Outputs of one run (fresh copies).
#[derive(Clone, Debug)]
pub struct Outputs<T> {
    names: Vec<String>,
    data: Vec<Vec<T>>,
    shapes: Vec<Vec<usize>>,
}

impl<T> Outputs<T> {
    /// Values of the named output, row-major.
    pub fn get(&self, name: &str) -> Result<&[T]> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| self.data[i].as_slice())
            .ok_or_else(|| Error::Input(format!("no output named {name:?}")))
    }
    /// Shape of the named output.
    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| self.shapes[i].as_slice())
            .ok_or_else(|| Error::Input(format!("no output named {name:?}")))
    }
    /// Take the named output.
    pub fn take(&mut self, name: &str) -> Result<Vec<T>> {
        let i = self
            .names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| Error::Input(format!("no output named {name:?}")))?;
        Ok(std::mem::take(&mut self.data[i]))
    }
}

struct Compiled<T: Scalar> {
    batch: usize,
    train: bool,
    plan: Plan<T>,
    outputs: Vec<usize>,
    loss: Option<usize>,
    grads: Vec<Option<usize>>,
    /// The optimiser's update appended to a training plan on a device.
    update: Option<Update>,
}

/// The optimiser's update in a device training plan: the squared gradient norm's node, and
/// which nodes depend on the step's coefficients (the update's kernels, run after the host
/// has seen the loss and the norm).
struct Update {
    norm2: usize,
    dep: std::sync::Arc<[bool]>,
    /// The kernels before it: `!dep`.
    before: std::sync::Arc<[bool]>,
}

/// A training program's optimiser state on a device: the store holds, after the declared
/// inputs, each trained parameter's two moments and the step's coefficients
/// ([`super::optim::Coefficients`]). The update runs on the device, which then holds newer
/// parameters and moments than the store: `resident` names that plan, and any read of the
/// store, or a run of another plan, first pulls them back ([`Program::settle`]).
struct OnDevice {
    /// Store entries (m, v) by parameter (in `params` order).
    moments: Vec<(usize, usize)>,
    /// Store entry of the coefficients.
    coeffs: usize,
    /// Key (batch, train) of the plan whose device buffers are newer than the store.
    resident: Option<(usize, bool)>,
}

/// Parameters (and, for a program training on a device, its optimiser's moments there) by
/// name, as [`Program::snapshot`] took them and [`Program::restore`] puts them back; it moves
/// between programs with the same parameter names (a warm start's to the main training's).
#[derive(Clone, Debug)]
pub struct Snapshot {
    params: Vec<(String, Vec<f64>)>,
    moments: Option<Vec<(Vec<f64>, Vec<f64>)>>,
}

/// A compiled graph with resident parameters.
pub struct Program<T: Scalar = f32> {
    graph: Box<Graph>,
    decls: Vec<InputDecl>,
    outputs: Vec<OutputSpec>,
    loss: Option<NodeIndex>,
    params: Vec<usize>,
    store: Vec<Vec<T>>,
    compiled: Vec<Compiled<T>>,
    /// A training step begun by [`Program::step_begin`]: (plan, late inputs, dependence).
    pending: Option<(usize, Vec<usize>, Vec<bool>)>,
    /// Run row-independent steps tile by tile (the default).
    tiled: bool,
    /// Take the CPU's shortcuts around steps (the default; [`Plan::set_shortcuts`]).
    shortcuts: bool,
    /// The instruction-set level of its kernels.
    simd: super::simd::Level,
    /// Where [`Program::run`] runs its plans (None: the CPU backend).
    device: Option<Box<dyn super::device::Session>>,
    /// The optimiser's state there, for a training program.
    on_device: Option<OnDevice>,
}

const MAX_PLANS: usize = 6;

/// Node buffers read back from a run, in the order asked.
type Buffers<T> = Vec<Vec<T>>;

// Release builds do not share generic instances between crates, so every crate that ran a
// program (each test binary) compiled the kernels again (≈ 100 s of CPU a crate). Compiling a
// plan and running it on the CPU therefore go through one non-generic instance per element
// type, compiled in this crate: `Program::plan_index` and `Program::run_on_cpu` dispatch here.
// Whatever runs steps must come through them: a generic method that called a `Plan<f32>`
// method itself (the elided steps' run did) had the test crate compile every kernel at every
// instruction-set level again (200 s of the engine tests' build).
fn plan_index_f32(p: &mut Program<f32>, batch: usize, train: bool) -> Result<usize> {
    p.plan_index_of(batch, train)
}

fn plan_index_f64(p: &mut Program<f64>, batch: usize, train: bool) -> Result<usize> {
    p.plan_index_of(batch, train)
}

fn run_on_cpu_f32(p: &mut Program<f32>, ci: usize, run: CpuRun<'_>) -> Result<Option<Profile>> {
    run.on(&mut p.compiled[ci].plan, &p.store)
}

fn run_on_cpu_f64(p: &mut Program<f64>, ci: usize, run: CpuRun<'_>) -> Result<Option<Profile>> {
    run.on(&mut p.compiled[ci].plan, &p.store)
}

/// Per-kernel-kind timing of a run: (kind, kernels, output elements, microseconds).
type Profile = Vec<(String, usize, usize, f64)>;

/// What [`Program::run_on_cpu`] runs of a plan.
#[derive(Clone, Copy)]
enum CpuRun<'a> {
    /// A part of the plan's steps.
    Part(Part<'a>),
    /// The steps the CPU skips, after a run ([`Plan::fill_elided`]).
    Elided,
    /// The whole plan, timed by kernel kind.
    Profiled,
}

impl CpuRun<'_> {
    fn on<T: Scalar>(self, plan: &mut Plan<T>, store: &[Vec<T>]) -> Result<Option<Profile>> {
        match self {
            CpuRun::Part(part) => plan.run_part(store, part).map(|()| None),
            CpuRun::Elided => plan.fill_elided(store).map(|()| None),
            CpuRun::Profiled => plan.run_profiled(store).map(Some),
        }
    }
}

impl<T: Scalar> Program<T> {
    /// Compile the builder's graph. `loss`, if given, must be a scalar: parameters then get
    /// gradients and [`Program::step`] trains them.
    pub fn compile(
        builder: GraphBuilder,
        outputs: &[OutputSpec],
        loss: Option<OutputSpec>,
    ) -> Result<Program<T>> {
        let (graph, decls) = builder.into_parts();
        let mut names = std::collections::HashSet::new();
        for d in &decls {
            if !names.insert(d.name.clone()) {
                return Err(Error::Engine(format!(
                    "input name {:?} declared twice",
                    d.name
                )));
            }
        }
        let store = decls
            .iter()
            .map(|d| d.init.iter().map(|&v| T::from_f64(v)).collect())
            .collect();
        let params = (0..decls.len())
            .filter(|&i| decls[i].kind == InputKind::Param)
            .collect();
        let mut p = Program {
            graph,
            decls,
            outputs: outputs.to_vec(),
            loss: loss.map(|l| l.node),
            params,
            store,
            compiled: Vec::new(),
            pending: None,
            tiled: true,
            shortcuts: true,
            simd: super::simd::default_level(),
            device: None,
            on_device: None,
        };
        // Compile once now so that structural errors surface at compile time.
        p.plan_index(1, p.loss.is_some())?;
        Ok(p)
    }

    /// The luminal graph this program was built from.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Names of the trainable parameters, in order.
    pub fn param_names(&self) -> Vec<String> {
        self.params
            .iter()
            .map(|&i| self.decls[i].name.clone())
            .collect()
    }

    /// Number of trainable scalars.
    pub fn n_params(&self) -> usize {
        self.params.iter().map(|&i| self.store[i].len()).sum()
    }

    /// Current values of a parameter (or constant tensor); from the device where it trains
    /// there.
    pub fn param(&mut self, name: &str) -> Result<Vec<f64>> {
        self.settle(None)?;
        let i = self.decl(name)?;
        if self.decls[i].kind == InputKind::Data {
            return Err(Error::Input(format!(
                "{name:?} is a data input, not a parameter"
            )));
        }
        Ok(self.store[i].iter().map(|v| v.to_f64()).collect())
    }

    /// Overwrite a parameter's values.
    pub fn set_param(&mut self, name: &str, values: &[f64]) -> Result<()> {
        self.pending = None;
        self.settle(None)?;
        let i = self.decl(name)?;
        if self.decls[i].kind == InputKind::Data {
            return Err(Error::Input(format!(
                "{name:?} is a data input, not a parameter"
            )));
        }
        if values.len() != self.store[i].len() {
            return Err(Error::Input(format!(
                "parameter {name:?} has {} values, got {}",
                self.store[i].len(),
                values.len()
            )));
        }
        self.store[i] = values.iter().map(|&v| T::from_f64(v)).collect();
        Ok(())
    }

    fn decl(&self, name: &str) -> Result<usize> {
        self.decls
            .iter()
            .position(|d| d.name == name)
            .ok_or_else(|| Error::Input(format!("no input or parameter named {name:?}")))
    }

    /// The index of the plan for (batch, train), compiled now if it is not yet.
    fn plan_index(&mut self, batch: usize, train: bool) -> Result<usize> {
        let any: &mut dyn Any = self;
        if let Some(p) = any.downcast_mut::<Program<f32>>() {
            return plan_index_f32(p, batch, train);
        }
        if let Some(p) = any.downcast_mut::<Program<f64>>() {
            return plan_index_f64(p, batch, train);
        }
        Err(Error::Engine("programs run in f32 or f64".into()))
    }

    fn plan_index_of(&mut self, batch: usize, train: bool) -> Result<usize> {
        if let Some(i) = self
            .compiled
            .iter()
            .position(|c| c.batch == batch && c.train == train)
        {
            return Ok(i);
        }
        let (mut ir, map) = Ir::lower(&self.graph, &self.decls, batch)?;
        ir.recognise_matmuls();
        let find = |n: NodeIndex| -> Result<usize> {
            map.get(&n)
                .copied()
                .ok_or_else(|| Error::Engine(format!("output node {n:?} is not in the graph")))
        };
        let outputs = self
            .outputs
            .iter()
            .map(|o| find(o.node))
            .collect::<Result<Vec<_>>>()?;
        let mut required = outputs.clone();
        let (loss, grads) = match (train, self.loss) {
            (true, Some(l)) => {
                let l = find(l)?;
                let wrt: Vec<usize> = self
                    .params
                    .iter()
                    .map(|&p| find(self.decls[p].node))
                    .collect::<Result<_>>()?;
                let grads = differentiate(&mut ir, l, &wrt)?;
                required.push(l);
                required.extend(grads.iter().flatten());
                (Some(l), (grads, wrt))
            }
            (true, None) => return Err(Error::Engine("this program has no loss to train".into())),
            (false, _) => (None, (Vec::new(), Vec::new())),
        };
        let (grads, wrt) = grads;
        // On a device, a training plan ends with the optimiser's update.
        let mut write_back = Vec::new();
        let norm2 = match (&self.on_device, train) {
            (Some(od), true) => {
                let coeffs = ir.push(Op::Input(od.coeffs), 8);
                let mut slots = Vec::new();
                for ((&param, grad), &(m, v)) in wrt.iter().zip(&grads).zip(&od.moments) {
                    if let Some(grad) = *grad {
                        let n = ir.nodes[param].len;
                        let (m, v) = (ir.push(Op::Input(m), n), ir.push(Op::Input(v), n));
                        slots.push(Slot { param, grad, m, v });
                    }
                }
                let (norm2, new) = append_update(&mut ir, coeffs, &slots, &mut required);
                for (s, [theta, m, v]) in slots.iter().zip(new) {
                    write_back.extend([(theta, s.param), (m, s.m), (v, s.v)]);
                }
                Some((norm2, od.coeffs))
            }
            _ => None,
        };
        // Declared inputs, then the optimiser's moments and coefficients (not batched).
        let rows: Vec<InputRows> = self
            .decls
            .iter()
            .map(|d| {
                let dims = d.shape.dims();
                let batch_axes = dims.iter().filter(|&&x| x == Dim::Batch).count();
                match (batch_axes, dims.first()) {
                    (0, _) => InputRows::Invariant,
                    (1, Some(Dim::Batch)) => InputRows::BatchMajor,
                    _ => InputRows::Batch,
                }
            })
            .chain(std::iter::repeat(InputRows::Invariant))
            .take(self.store.len())
            .collect();
        let mut plan = Plan::new(ir, &required, batch, &rows)?;
        plan.set_tiled(self.tiled);
        plan.set_shortcuts(self.shortcuts);
        plan.set_simd(self.simd)?;
        plan.write_back = write_back;
        let update = norm2.map(|(norm2, coeffs)| {
            let dep = plan.depends_on(&[coeffs]);
            Update {
                norm2,
                before: dep.iter().map(|d| !d).collect(),
                dep: dep.into(),
            }
        });
        if self.compiled.len() >= MAX_PLANS {
            self.pending = None;
            self.settle(None)?;
            let old = self.compiled.remove(0);
            if let Some(session) = self.device.as_mut() {
                session.forget((old.batch, old.train));
            }
        }
        self.compiled.push(Compiled {
            batch,
            train,
            plan,
            outputs,
            loss,
            grads,
            update,
        });
        Ok(self.compiled.len() - 1)
    }

    /// Copy the inputs into the store and return the batch size they imply.
    fn load_inputs(&mut self, inputs: &[(&str, &[T])]) -> Result<usize> {
        self.pending = None;
        let mut batch: Option<usize> = None;
        for (name, data) in inputs {
            let i = self.decl(name)?;
            let d = &self.decls[i];
            if d.kind != InputKind::Data {
                return Err(Error::Input(format!(
                    "{name:?} is a parameter; use set_param to change it"
                )));
            }
            let fixed: usize = d
                .shape
                .dims()
                .iter()
                .map(|x| match x {
                    Dim::Fixed(n) => *n,
                    Dim::Batch => 1,
                })
                .product();
            let has_batch = d.shape.dims().contains(&Dim::Batch);
            if has_batch {
                if fixed == 0 || data.len() % fixed != 0 {
                    return Err(Error::Input(format!(
                        "input {name:?}: {} values is not a whole number of rows of {fixed}",
                        data.len()
                    )));
                }
                let b = data.len() / fixed;
                if let Some(prev) = batch {
                    if prev != b {
                        return Err(Error::Input(format!(
                            "input {name:?} has batch {b}, another input has {prev}"
                        )));
                    }
                }
                batch = Some(b);
            } else if data.len() != fixed {
                return Err(Error::Input(format!(
                    "input {name:?} needs {fixed} values, got {}",
                    data.len()
                )));
            }
            self.store[i].clear();
            self.store[i].extend_from_slice(data);
        }
        for d in &self.decls {
            if d.kind == InputKind::Data && !inputs.iter().any(|(n, _)| *n == d.name) {
                return Err(Error::Input(format!("input {:?} was not given", d.name)));
            }
        }
        let batch = batch.unwrap_or(1);
        if batch == 0 {
            return Err(Error::Input("empty batch".into()));
        }
        Ok(batch)
    }

    /// The declared outputs of plan `ci` with their values `data` (in declared order).
    fn outputs_of(&self, ci: usize, data: Vec<Vec<T>>) -> Outputs<T> {
        Outputs {
            names: self.outputs.iter().map(|o| o.name.clone()).collect(),
            data,
            shapes: self
                .outputs
                .iter()
                .map(|o| o.shape.resolve(self.compiled[ci].batch))
                .collect(),
        }
    }

    /// Run `run` of plan `ci` on the CPU backend.
    fn run_on_cpu(&mut self, ci: usize, run: CpuRun<'_>) -> Result<Option<Profile>> {
        let any: &mut dyn Any = self;
        if let Some(p) = any.downcast_mut::<Program<f32>>() {
            return run_on_cpu_f32(p, ci, run);
        }
        if let Some(p) = any.downcast_mut::<Program<f64>>() {
            return run_on_cpu_f64(p, ci, run);
        }
        Err(Error::Engine("programs run in f32 or f64".into()))
    }

    /// Run `part` of plan `ci` where this program runs (the CPU backend, or its device) on the
    /// store, and return the buffers of the nodes `read`.
    fn exec(&mut self, ci: usize, part: Part, read: &[usize]) -> Result<Vec<Vec<T>>> {
        if self.device.is_none() {
            self.run_on_cpu(ci, CpuRun::Part(part))?;
            let plan = &self.compiled[ci].plan;
            return Ok(read
                .iter()
                .map(|&n| plan.buffer(&self.store, n).to_vec())
                .collect());
        }
        let key = (self.compiled[ci].batch, self.compiled[ci].train);
        self.settle(Some(key))?;
        let c = &self.compiled[ci];
        let any_plan: &dyn std::any::Any = &c.plan;
        let any_store: &dyn std::any::Any = &self.store;
        let (Some(plan), Some(store), Some(session)) = (
            any_plan.downcast_ref::<super::plan::Plan<f32>>(),
            any_store.downcast_ref::<Vec<Vec<f32>>>(),
            self.device.as_mut(),
        ) else {
            return Err(Error::Engine("devices run f32 programs".into()));
        };
        let got = session.run(key, plan, store, read, part)?;
        // The update ran: the device now holds newer parameters and moments than the store.
        if let Some(od) = self.on_device.as_mut() {
            if c.plan.write_back.iter().any(|&(from, _)| part.runs(from)) {
                od.resident = Some(key);
            }
        }
        Ok(got
            .into_iter()
            .zip(read)
            .map(|(v, &n)| {
                let len = c.plan.ir.nodes[n].len;
                v[..len].iter().map(|&x| T::from_f64(x as f64)).collect()
            })
            .collect())
    }

    /// Pull back into the store the parameters and moments that the optimiser's update left
    /// newer on the device, unless the plan `keep` is about to run (it holds them already).
    fn settle(&mut self, keep: Option<(usize, bool)>) -> Result<()> {
        let Some(od) = self.on_device.as_mut() else {
            return Ok(());
        };
        let Some(key) = od.resident.filter(|&k| Some(k) != keep) else {
            return Ok(());
        };
        let c = self
            .compiled
            .iter()
            .find(|c| (c.batch, c.train) == key)
            .ok_or_else(|| {
                Error::Engine("the plan holding the trained parameters is gone".into())
            })?;
        let pulls = c
            .plan
            .write_back
            .iter()
            .map(|&(_, node)| match c.plan.ir.nodes[node].op {
                Op::Input(i) => Ok((i, node)),
                _ => Err(Error::Engine(
                    "an update writes back into a non-input".into(),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let any_store: &mut dyn Any = &mut self.store;
        let (Some(store), Some(session)) = (
            any_store.downcast_mut::<Vec<Vec<f32>>>(),
            self.device.as_mut(),
        ) else {
            return Err(Error::Engine("devices run f32 programs".into()));
        };
        session.pull(key, &pulls, store)?;
        od.resident = None;
        Ok(())
    }

    /// The kernels of plan `ci` a half of a training step runs, by output node: those before
    /// the optimiser's update (on the CPU, where there is none, all of them) whose dependence
    /// on the late inputs is the one asked.
    fn phase(&self, ci: usize, (late, want): (&[bool], bool)) -> Vec<bool> {
        let c = &self.compiled[ci];
        (0..c.plan.ir.nodes.len())
            .map(|n| !c.update.as_ref().is_some_and(|u| u.dep[n]) && late[n] == want)
            .collect()
    }

    /// The nodes a training step reads after its backward pass: the loss, then each
    /// parameter's gradient (where it has one) for the host's optimiser, or Σ g² where the
    /// update runs on the device.
    fn loss_and_grads(&self, ci: usize, for_update: bool) -> Vec<usize> {
        let c = &self.compiled[ci];
        let loss = c.loss.expect("a training plan");
        match (&c.update, for_update) {
            (Some(u), true) => vec![loss, u.norm2],
            _ => std::iter::once(loss)
                .chain(c.grads.iter().flatten().copied())
                .collect(),
        }
    }

    /// The loss and every parameter's gradient (zeros where it has none) from the buffers
    /// read as [`Program::loss_and_grads`] lists them (not for the update).
    fn split_loss_and_grads(&self, ci: usize, read: Vec<Vec<T>>) -> (f64, Vec<Vec<T>>) {
        let mut read = read.into_iter();
        let loss = read.next().expect("the loss")[0].to_f64();
        let grads = self
            .params
            .iter()
            .zip(&self.compiled[ci].grads)
            .map(|(&p, g)| match g {
                Some(_) => read.next().expect("one buffer per gradient"),
                None => vec![T::default(); self.store[p].len()],
            })
            .collect();
        (loss, grads)
    }

    /// Evaluate the outputs (no gradients), on the device where one is set
    /// ([`Program::set_device`]).
    pub fn run(&mut self, inputs: &[(&str, &[T])]) -> Result<Outputs<T>> {
        let batch = self.load_inputs(inputs)?;
        let ci = self.plan_index(batch, false)?;
        let read = self.compiled[ci].outputs.clone();
        let data = self.exec(ci, Part::All, &read)?;
        Ok(self.outputs_of(ci, data))
    }

    /// Run this program's plans, and its training steps (the forward and backward passes, and
    /// the optimiser's update: parameters, gradients and moments stay there), on `device` from
    /// now on (None: the CPU backend). Devices run f32 programs only. Moving a training
    /// program between the CPU and a device restarts the optimiser's moments where it goes.
    pub fn set_device(&mut self, device: Option<&super::device::Device>) -> Result<()> {
        if device.is_some() && std::any::TypeId::of::<T>() != std::any::TypeId::of::<f32>() {
            return Err(Error::Input(
                "devices run f32 programs; this one is f64".into(),
            ));
        }
        self.settle(None)?;
        self.pending = None;
        // Training plans differ between the CPU (no update) and a device (the update appended).
        self.compiled.retain(|c| !c.train);
        self.store.truncate(self.decls.len());
        self.on_device = None;
        self.device = device.map(|d| d.session());
        if self.device.is_some() && self.loss.is_some() {
            let mut moments = Vec::with_capacity(self.params.len());
            for &p in &self.params {
                let zeros = vec![T::default(); self.store[p].len()];
                self.store.extend([zeros.clone(), zeros]);
                moments.push((self.store.len() - 2, self.store.len() - 1));
            }
            self.store.push(vec![T::default(); 8]);
            self.on_device = Some(OnDevice {
                moments,
                coeffs: self.store.len() - 1,
                resident: None,
            });
        }
        Ok(())
    }

    /// This program, to run on the device selected for the process
    /// ([`super::device::select`], `--device`), if any; f32 programs only.
    pub fn on_selected_device(mut self) -> Result<Self> {
        self.set_device(super::device::selected().as_ref())?;
        Ok(self)
    }

    /// Floats uploaded to and read back from the device since the program was put there (None
    /// on the CPU): what crosses the bus.
    pub fn device_traffic(&self) -> Option<(usize, usize)> {
        self.device.as_ref().map(|s| s.traffic())
    }

    /// Plans compiled on the device (None on the CPU): at most as many as the program keeps,
    /// one per batch size and kind, the oldest released first.
    pub fn device_plans(&self) -> Option<usize> {
        self.device.as_ref().map(|s| s.plans())
    }

    /// Evaluate outputs, loss and parameter gradients; returns (loss, outputs, gradients by
    /// parameter in [`Program::param_names`] order). Parameters are not changed.
    pub fn run_with_grads(
        &mut self,
        inputs: &[(&str, &[T])],
    ) -> Result<(f64, Outputs<T>, Vec<Vec<f64>>)> {
        let (ci, data, rest) = self.forward_backward(inputs, false)?;
        let (loss, grads) = self.split_loss_and_grads(ci, rest);
        let grads = grads
            .into_iter()
            .map(|g| g.iter().map(|v| v.to_f64()).collect())
            .collect();
        Ok((loss, self.outputs_of(ci, data), grads))
    }

    /// One optimisation step: forward, backward, optimiser update. Returns the loss and the
    /// outputs of the forward pass (before the update). A non-finite loss or gradient leaves
    /// the parameters untouched and is reported as an error.
    pub fn step<O: Optimizer>(
        &mut self,
        inputs: &[(&str, &[T])],
        opt: &mut O,
    ) -> Result<(f64, Outputs<T>)> {
        let (ci, data, rest) = self.forward_backward(inputs, true)?;
        let loss = self.update(ci, rest, opt)?;
        Ok((loss, self.outputs_of(ci, data)))
    }

    /// The forward and backward passes of the training plan for `inputs` (not the update):
    /// (plan, the outputs' buffers, the loss and what [`Program::loss_and_grads`] lists after
    /// it).
    fn forward_backward(
        &mut self,
        inputs: &[(&str, &[T])],
        for_update: bool,
    ) -> Result<(usize, Buffers<T>, Buffers<T>)> {
        let batch = self.load_inputs(inputs)?;
        let ci = self.plan_index(batch, true)?;
        let n_out = self.compiled[ci].outputs.len();
        let read: Vec<usize> = self.compiled[ci]
            .outputs
            .iter()
            .copied()
            .chain(self.loss_and_grads(ci, for_update))
            .collect();
        // Everything but the update (on the CPU, which has none: everything).
        let before = self.compiled[ci].update.as_ref().map(|u| u.before.clone());
        let part = before.as_deref().map_or(Part::All, Part::Only);
        let mut data = self.exec(ci, part, &read)?;
        let rest = data.split_off(n_out);
        Ok((ci, data, rest))
    }

    /// First half of a training step whose `late` inputs are known only after the host has
    /// seen the outputs (e.g. ∇U at the sampled x): every kernel that does not depend on them
    /// runs now and the outputs are returned; [`Program::step_finish`] supplies the late
    /// inputs and completes the step. `inputs` must still give every input (the late ones with
    /// their final sizes; their values are ignored). Outputs must not depend on late inputs.
    pub fn step_begin(&mut self, inputs: &[(&str, &[T])], late: &[&str]) -> Result<Outputs<T>> {
        let late: Vec<usize> = late.iter().map(|n| self.decl(n)).collect::<Result<_>>()?;
        // The late inputs keep their values from before (no kernel of this half reads them),
        // so that a device does not upload placeholders now and the values again in the
        // second half.
        let kept: Vec<Vec<T>> = late
            .iter()
            .map(|&i| std::mem::take(&mut self.store[i]))
            .collect();
        let batch = self.load_inputs(inputs)?;
        for (&i, old) in late.iter().zip(kept) {
            if old.len() == self.store[i].len() {
                self.store[i] = old;
            }
        }
        let ci = self.plan_index(batch, true)?;
        let dep = self.compiled[ci].plan.depends_on(&late);
        if let Some(o) = self.compiled[ci].outputs.iter().position(|&n| dep[n]) {
            return Err(Error::Input(format!(
                "output {:?} depends on a late input",
                self.outputs[o].name
            )));
        }
        let read = self.compiled[ci].outputs.clone();
        let early = self.phase(ci, (&dep, false));
        let data = self.exec(ci, Part::Only(&early), &read)?;
        self.pending = Some((ci, late, dep));
        Ok(self.outputs_of(ci, data))
    }

    /// Second half of [`Program::step_begin`]: set the late inputs (same sizes as before), run
    /// the kernels that depend on them, and update the parameters; returns the loss.
    pub fn step_finish<O: Optimizer>(
        &mut self,
        late_inputs: &[(&str, &[T])],
        opt: &mut O,
    ) -> Result<f64> {
        let Some((ci, late, dep)) = self.pending.take() else {
            return Err(Error::Input("step_finish without step_begin".into()));
        };
        for (name, data) in late_inputs {
            let i = self.decl(name)?;
            if !late.contains(&i) {
                return Err(Error::Input(format!("{name:?} was not declared late")));
            }
            if data.len() != self.store[i].len() {
                return Err(Error::Input(format!(
                    "late input {name:?}: {} values, the step began with {}",
                    data.len(),
                    self.store[i].len()
                )));
            }
            self.store[i].copy_from_slice(data);
        }
        let read = self.loss_and_grads(ci, true);
        let backward = self.phase(ci, (&dep, true));
        let got = self.exec(ci, Part::Only(&backward), &read)?;
        self.update(ci, got, opt)
    }

    /// Apply the optimiser to the gradients of a finite loss: on the host from `read` (the
    /// loss, then the gradients), or, where the update runs on the device (`read`: the loss,
    /// then Σ g²), there with this step's coefficients. A non-finite loss or gradient changes
    /// nothing (on the device, a Σ g² that overflows f32 counts as non-finite).
    fn update<O: Optimizer>(&mut self, ci: usize, read: Vec<Vec<T>>, opt: &mut O) -> Result<f64> {
        let loss = read[0][0].to_f64();
        if !loss.is_finite() {
            return Err(Error::Engine(format!("non-finite loss {loss}")));
        }
        if let (Some(u), Some(od)) = (&self.compiled[ci].update, &self.on_device) {
            let norm2 = read[1][0].to_f64();
            if !norm2.is_finite() {
                return Err(Error::Engine("non-finite gradient".into()));
            }
            let dep = u.dep.clone();
            let coeffs = opt.coefficients(norm2);
            self.store[od.coeffs] = coeffs.iter().map(|&c| T::from_f64(c)).collect();
            self.exec(ci, Part::Only(&dep), &[])?;
            return Ok(loss);
        }
        let (_, grads) = self.split_loss_and_grads(ci, read);
        if grads.iter().flatten().any(|g| !g.to_f64().is_finite()) {
            return Err(Error::Engine("non-finite gradient".into()));
        }
        let mut params: Vec<&mut Vec<T>> = Vec::with_capacity(self.params.len());
        for (s, d) in self.store.iter_mut().zip(&self.decls) {
            if d.kind == InputKind::Param {
                params.push(s);
            }
        }
        opt.update(&mut params, &grads);
        Ok(loss)
    }

    /// The parameters (and, training on a device, the optimiser's moments there), to be put
    /// back by [`Program::restore`] (after a diverging step) or handed to another program
    /// with the same parameters.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        self.settle(None)?;
        let f64s = |v: &[T]| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
        Ok(Snapshot {
            params: self
                .params
                .iter()
                .map(|&i| (self.decls[i].name.clone(), f64s(&self.store[i])))
                .collect(),
            moments: self.on_device.as_ref().map(|od| {
                od.moments
                    .iter()
                    .map(|&(m, v)| (f64s(&self.store[m]), f64s(&self.store[v])))
                    .collect()
            }),
        })
    }

    /// Put back what [`Program::snapshot`] took, here or from a program with the same
    /// parameters on the same kind of backend (the moments of an update on a device have no
    /// place on the CPU, whose optimiser keeps its own).
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<()> {
        if snapshot.moments.is_some() != self.on_device.is_some() {
            return Err(Error::Input(
                "a snapshot of a program training on a device restores one training on a device, and one from the CPU one on the CPU".into(),
            ));
        }
        for (k, (name, values)) in snapshot.params.iter().enumerate() {
            self.set_param(name, values)?;
            if let (Some(moments), Some(od)) = (&snapshot.moments, &self.on_device) {
                let j = self
                    .params
                    .iter()
                    .position(|&p| self.decls[p].name == *name)
                    .ok_or_else(|| Error::Input(format!("{name:?} is not a parameter")))?;
                let (m, v) = od.moments[j];
                self.store[m] = moments[k].0.iter().map(|&x| T::from_f64(x)).collect();
                self.store[v] = moments[k].1.iter().map(|&x| T::from_f64(x)).collect();
            }
        }
        Ok(())
    }

    /// Run once with per-kernel-kind timing: (kind, kernels, output elements, microseconds).
    pub fn profile(
        &mut self,
        inputs: &[(&str, &[T])],
        train: bool,
    ) -> Result<Vec<(String, usize, usize, f64)>> {
        self.settle(None)?;
        let batch = self.load_inputs(inputs)?;
        let ci = self.plan_index(batch, train)?;
        Ok(self.run_on_cpu(ci, CpuRun::Profiled)?.unwrap_or_default())
    }

    /// Run the plan once on `inputs` (with gradients where `train`) and hand it, with the
    /// declared inputs' buffers and the nodes a run's caller reads back (the outputs in
    /// declared order; when training then the loss and every parameter's gradient), to `f`:
    /// every node's buffer is then readable through [`Plan::buffer`] (for backends that run
    /// the same plan and check their results against this one).
    pub fn inspect<R>(
        &mut self,
        inputs: &[(&str, &[T])],
        train: bool,
        f: impl FnOnce(&Plan<T>, &[Vec<T>], &[usize]) -> R,
    ) -> Result<R> {
        self.settle(None)?;
        let batch = self.load_inputs(inputs)?;
        let ci = self.plan_index(batch, train)?;
        self.run_on_cpu(ci, CpuRun::Part(Part::All))?;
        // Every step's output readable: the steps the CPU skipped run too.
        self.run_on_cpu(ci, CpuRun::Elided)?;
        let c = &self.compiled[ci];
        let mut read = c.outputs.clone();
        if train {
            read.extend(c.loss);
            read.extend(c.grads.iter().flatten());
        }
        Ok(f(&c.plan, &self.store, &read))
    }

    /// Run the kernels compiled for instruction-set `level` ([`super::simd`]; the default is
    /// the best the CPU has, or `THERMOFLOW_SIMD`'s): an error where the CPU lacks it. The
    /// results agree to rounding (the baseline does not fuse multiply and add).
    pub fn set_simd(&mut self, level: super::simd::Level) -> Result<()> {
        self.simd = super::simd::check(level)?;
        for c in &mut self.compiled {
            c.plan.set_simd(level)?;
        }
        Ok(())
    }

    /// The instruction-set level its kernels run with.
    pub fn simd(&self) -> super::simd::Level {
        self.simd
    }

    /// Run row-independent steps tile by tile over batch rows (`true`, the default) or every
    /// step whole, one after another (`false`): the results agree to rounding; the switch is
    /// for comparisons and tests.
    pub fn set_tiled(&mut self, tiled: bool) {
        self.tiled = tiled;
        for c in &mut self.compiled {
            c.plan.set_tiled(tiled);
        }
    }

    /// Take the CPU's shortcuts around steps (`true`, the default: the im2col read in place
    /// and its adjoint's product never stored, [`super::stencil`]) or run every step: the
    /// outputs are the same bits; the switch is for comparisons and tests.
    pub fn set_shortcuts(&mut self, on: bool) {
        self.shortcuts = on;
        for c in &mut self.compiled {
            c.plan.set_shortcuts(on);
        }
    }

    /// For `batch`: (steps, steps that run tiled, tiled segments) in a full run.
    pub fn tiling(&mut self, batch: usize, train: bool) -> Result<(usize, usize, usize)> {
        let ci = self.plan_index(batch, train)?;
        let p = &mut self.compiled[ci].plan;
        let (tiled, segments) = p.tiling();
        Ok((p.n_kernels(), tiled, segments))
    }

    /// One line per step of the plan for `batch` (kind, output length, whether it runs
    /// tiled, and for fused kernels their instructions and leaf views): for inspection.
    pub fn describe(&mut self, batch: usize, train: bool) -> Result<Vec<String>> {
        let ci = self.plan_index(batch, train)?;
        let p = &self.compiled[ci].plan;
        Ok(p.steps
            .iter()
            .zip(&p.rows)
            .map(|(s, r)| {
                let len = p.ir.nodes[s.out()].len;
                let tiled = if r.is_some() { "tiled" } else { "whole" };
                let head = format!("{} len {len} {tiled}", s.kind());
                match s {
                    super::plan::Step::Fused { kernel, .. }
                    | super::plan::Step::Reduce { kernel, .. } => {
                        format!("{head}: {:?} leaves {:?}", kernel.code, kernel.leaves)
                    }
                    super::plan::Step::MatMul {
                        epilogue: Some(e), ..
                    } => format!("{head}, epilogue {e:?}"),
                    super::plan::Step::Scatter { g, target, .. } => {
                        format!("{head}: from {g:?} into {target:?}")
                    }
                    _ => head,
                }
            })
            .collect())
    }

    /// Floating-point operations of one run at `batch`, counted from the plan.
    pub fn flops(&mut self, batch: usize, train: bool) -> Result<f64> {
        let ci = self.plan_index(batch, train)?;
        Ok(self.compiled[ci].plan.flops())
    }

    /// Plan statistics for `batch`: (kernels, instruction-elements, elements materialised).
    pub fn stats(&mut self, batch: usize, train: bool) -> Result<(usize, usize, usize)> {
        let ci = self.plan_index(batch, train)?;
        Ok(self.compiled[ci].plan.stats())
    }

    /// Number of kernels in the plan for `batch` (inspection and tests).
    pub fn n_kernels(&mut self, batch: usize, train: bool) -> Result<usize> {
        let ci = self.plan_index(batch, train)?;
        Ok(self.compiled[ci].plan.n_kernels())
    }
}
