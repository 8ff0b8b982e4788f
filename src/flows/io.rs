//! Saving and loading a flow (architecture + parameters) as JSON.
//!
//! File: `{"format": "thermoflow-flow", "version": 1, "meta": {...}, "flow": {...}}`. `meta`
//! is free-form (the sweep stores the system, its parameters and the temperature range).
//! Loading checks the format tag and version, then every layer's dimension and every
//! parameter's name, shape and finiteness against the architecture each layer declares: a
//! truncated, edited or corrupt file is an error naming the first mismatch, never a panic.
//!
//! Every command saves the same metadata ([`system_meta`]) and loads through [`load_for`], so a
//! model saved by one command loads in any other.

use serde::{Deserialize, Serialize};

use super::flow::{Conditioning, Flow};
use crate::error::{Error, Result};
use crate::systems::Energy;

const FORMAT: &str = "thermoflow-flow";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct FlowFile {
    format: String,
    version: u32,
    meta: serde_json::Value,
    flow: Flow,
}

/// Write `flow` with free-form metadata to `path`.
pub fn save(flow: &Flow, meta: serde_json::Value, path: &std::path::Path) -> Result<()> {
    let file = FlowFile {
        format: FORMAT.into(),
        version: VERSION,
        meta,
        flow: flow.clone(),
    };
    let text = serde_json::to_string(&file).map_err(|e| Error::Io(e.to_string()))?;
    std::fs::write(path, text)
        .map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))
}

/// Read a flow and its metadata from `path`.
pub fn load(path: &std::path::Path) -> Result<(Flow, serde_json::Value)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))?;
    from_str(&text).map_err(|e| e.context(path.display()))
}

/// Parse a saved flow from JSON text.
pub fn from_str(text: &str) -> Result<(Flow, serde_json::Value)> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::Io(format!("not a thermoflow model file ({e})")))?;
    if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(Error::Io(
            "not a thermoflow model file (format tag missing)".into(),
        ));
    }
    let file: FlowFile = serde_json::from_value(v).map_err(|e| {
        // serde lists every layer type after an unknown one: the name is what the user needs.
        let e = e.to_string();
        let e = e.split(", expected one of").next().unwrap_or(&e);
        Error::Io(format!("corrupt model file: {e}"))
    })?;
    if file.version != VERSION {
        return Err(Error::Io(format!(
            "model file version {} is not supported",
            file.version
        )));
    }
    file.flow
        .validate()
        .map_err(|e| e.context("corrupt model file"))?;
    Ok((file.flow, file.meta))
}

/// The metadata every command saves with a model: the system's name and parameters, the
/// flow's temperature range and the version that wrote it.
pub fn system_meta(system: &str, energy: &dyn Energy, flow: &Flow) -> serde_json::Value {
    let params: serde_json::Map<String, serde_json::Value> = energy
        .params()
        .into_iter()
        .map(|(k, v)| (k, serde_json::json!(v)))
        .collect();
    let (t_min, t_max) = match flow.conditioning() {
        Conditioning::Temperature { t_min, t_max } => (Some(t_min), Some(t_max)),
        _ => (None, None),
    };
    serde_json::json!({
        "system": system,
        "params": params,
        "t_min": t_min,
        "t_max": t_max,
        "thermoflow_version": env!("CARGO_PKG_VERSION"),
    })
}

/// Load a temperature-conditioned model saved for `system` with `energy`'s parameters; an
/// error says what the file was trained for when it does not match.
pub fn load_for(path: &std::path::Path, system: &str, energy: &dyn Energy) -> Result<Flow> {
    let (flow, meta) = load(path)?;
    let want = system_meta(system, energy, &flow);
    let same = |k: &str| meta.get(k) == want.get(k);
    if !same("system") || !same("params") || flow.dim() != energy.dim() {
        let show = |v: &serde_json::Value| {
            format!(
                "{} {}",
                v.get("system").and_then(|s| s.as_str()).unwrap_or("?"),
                v.get("params").map(|p| p.to_string()).unwrap_or_default()
            )
        };
        return Err(Error::Input(format!(
            "model {} was trained for {}, not {}",
            path.display(),
            show(&meta),
            show(&want)
        )));
    }
    if !matches!(flow.conditioning(), Conditioning::Temperature { .. }) {
        return Err(Error::Input(format!(
            "model {} is not conditioned on temperature",
            path.display()
        )));
    }
    Ok(flow)
}
