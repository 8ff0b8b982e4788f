//! Saving and loading a flow (architecture + parameters) as JSON.
//!
//! File: `{"format": "thermoflow-flow", "version": 1, "meta": {...}, "flow": {...}}`. `meta`
//! is free-form (the sweep stores the system, its parameters and the temperature range).
//! Loading checks the format tag and version, then every layer's dimension and every
//! parameter's size and finiteness: a truncated or corrupt file is an error, never a panic.

use serde::{Deserialize, Serialize};

use super::flow::Flow;
use crate::error::{Error, Result};

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
    from_str(&text).map_err(|e| match e {
        Error::Io(m) => Error::Io(format!("{}: {m}", path.display())),
        other => other,
    })
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
    let file: FlowFile =
        serde_json::from_value(v).map_err(|e| Error::Io(format!("corrupt model file: {e}")))?;
    if file.version != VERSION {
        return Err(Error::Io(format!(
            "model file version {} is not supported",
            file.version
        )));
    }
    file.flow
        .validate()
        .map_err(|e| Error::Io(format!("corrupt model file: {e}")))?;
    Ok((file.flow, file.meta))
}
