//! `thermoflow systems`: the registry, with each parameter's default and meaning and the
//! system's own observables.

use clap::Args;

use super::{out, Failure};

/// Arguments of `systems` (none).
#[derive(Args)]
pub struct SystemsArgs {}

impl SystemsArgs {
    /// List the systems.
    pub fn run(self) -> Result<(), Failure> {
        for s in thermoflow::systems::registry() {
            let mut text = format!("{:<15} {}\n", s.name, s.doc);
            for p in s.params {
                text += &format!("    {:<10} = {:<8} {}\n", p.name, p.default, p.doc);
            }
            let own = thermoflow::systems::build::<&str>(s.name, &[])?.observables();
            if !own.is_empty() {
                let names: Vec<&str> = own.iter().map(|o| o.name()).collect();
                text += &format!("    observables (--observe NAME): {}\n", names.join(", "));
            }
            out(&text);
        }
        Ok(())
    }
}
