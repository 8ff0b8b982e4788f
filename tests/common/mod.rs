//! What the integration tests share: the binary, running it to success, reading its JSON.
#![allow(dead_code)] // each test file uses what it needs

use std::path::Path;
use std::process::{Command, Output};

/// The thermoflow binary of this build.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_thermoflow"))
}

/// Run `cmd` and require success, showing its stderr otherwise.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A JSON file the binary wrote.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}
