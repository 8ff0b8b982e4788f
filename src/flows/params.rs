//! Named parameter tensors of a transform, and the scope that declares them in a graph.
//!
//! A transform owns its parameter values (f64, row-major) under short names (`w0`, `b0`,
//! `shift`, …). When a graph is built, [`Scope`] declares each one once under its full,
//! dotted path (`layers.3.conditioner.w0`), so saved files and programs follow the hierarchy
//! and forward and inverse of the same layer in one graph share parameters.

use std::cell::RefCell;
use std::collections::HashMap;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::engine::{GraphBuilder, Var};

/// One named tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    /// Name within its owner.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f64>,
}

/// The parameters of one transform, in declaration order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ParamSet {
    /// Tensors.
    pub tensors: Vec<Tensor>,
}

impl ParamSet {
    /// Add a tensor.
    pub fn push(&mut self, name: &str, shape: &[usize], values: Vec<f64>) {
        assert_eq!(values.len(), shape.iter().product::<usize>(), "{name}");
        self.tensors.push(Tensor {
            name: name.into(),
            shape: shape.to_vec(),
            values,
        });
    }
    /// A tensor by name.
    pub fn get(&self, name: &str) -> &Tensor {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no parameter {name}"))
    }
    /// Number of scalars.
    pub fn count(&self) -> usize {
        self.tensors.iter().map(|t| t.values.len()).sum()
    }
    /// Set every value to zero (the identity for every transform here).
    pub fn zero(&mut self) {
        for t in &mut self.tensors {
            t.values.iter_mut().for_each(|v| *v = 0.0);
        }
    }
}

/// Glorot-uniform values for a `[fan_in, fan_out]` weight.
pub fn glorot(rng: &mut crate::rng::SeededRng, fan_in: usize, fan_out: usize) -> Vec<f64> {
    let a = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
    (0..fan_in * fan_out)
        .map(|_| rng.random_range(-a..a))
        .collect()
}

/// A seeded generator for initialisation.
pub fn init_rng(seed: u64) -> crate::rng::SeededRng {
    crate::rng::seeded(seed)
}

/// Declares parameters in a graph under a dotted prefix, each full name once.
pub struct Scope<'g> {
    g: &'g GraphBuilder,
    prefix: String,
    declared: &'g RefCell<HashMap<String, Var<'g>>>,
    trainable: bool,
}

/// Storage for the declared parameters of one graph (lives as long as the builder's borrow).
#[derive(Default)]
pub struct Declared<'g>(RefCell<HashMap<String, Var<'g>>>);

impl<'g> Scope<'g> {
    /// The root scope of a graph.
    pub fn root(g: &'g GraphBuilder, declared: &'g Declared<'g>, trainable: bool) -> Scope<'g> {
        Scope {
            g,
            prefix: String::new(),
            declared: &declared.0,
            trainable,
        }
    }
    /// A child scope `prefix.name`.
    pub fn child(&self, name: &str) -> Scope<'g> {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Scope {
            g: self.g,
            prefix,
            declared: self.declared,
            trainable: self.trainable,
        }
    }
    /// The graph builder.
    pub fn graph(&self) -> &'g GraphBuilder {
        self.g
    }
    /// The full name of a parameter in this scope.
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }
    /// The graph variable of `set`'s tensor `name`, declared on first use.
    pub fn param(&self, set: &ParamSet, name: &str) -> Var<'g> {
        let path = self.path(name);
        if let Some(v) = self.declared.borrow().get(&path) {
            return *v;
        }
        let t = set.get(name);
        let v = if self.trainable {
            self.g.param(&path, &t.shape, t.values.clone())
        } else {
            self.g.fixed(&path, &t.shape, t.values.clone())
        };
        self.declared.borrow_mut().insert(path, v);
        v
    }
}

/// A layer whose hyperparameters declare `declared` parameters (`None`: more than a `usize`)
/// while `stored` holds another number is corrupt: checked before a template of that size is
/// allocated.
pub(crate) fn check_count(declared: Option<usize>, stored: &[&ParamSet]) -> crate::Result<()> {
    let stored: usize = stored.iter().map(|s| s.count()).sum();
    match declared {
        Some(n) if n == stored => Ok(()),
        Some(n) => crate::error::input_err(format!(
            "its architecture declares {n} parameters, the file stores {stored}"
        )),
        None => crate::error::input_err("its architecture declares more parameters than exist"),
    }
}

impl ParamSet {
    /// The first difference in names or shapes between `self` (as loaded) and `want` (as the
    /// architecture declares it).
    pub(crate) fn check_layout(&self, want: &ParamSet) -> crate::Result<()> {
        for (i, w) in want.tensors.iter().enumerate() {
            let Some(g) = self.tensors.get(i) else {
                return crate::error::input_err(format!("tensor {:?} is missing", w.name));
            };
            if g.name != w.name {
                return crate::error::input_err(format!(
                    "tensor {:?} found where {:?} belongs",
                    g.name, w.name
                ));
            }
            if g.shape != w.shape || g.values.len() != w.values.len() {
                return crate::error::input_err(format!(
                    "tensor {:?} has shape {:?} ({} values), the architecture needs {:?}",
                    g.name,
                    g.shape,
                    g.values.len(),
                    w.shape
                ));
            }
        }
        if let Some(extra) = self.tensors.get(want.tensors.len()) {
            return crate::error::input_err(format!("unexpected tensor {:?}", extra.name));
        }
        Ok(())
    }
}
