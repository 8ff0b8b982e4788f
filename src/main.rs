//! The `thermoflow` command line; each command lives in `src/cli/`.

mod cli;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use cli::{Cli, Failure};

fn main() -> ExitCode {
    let result = match Cli::try_parse() {
        Ok(cli) => {
            thermoflow::observe::stop_on_interrupt();
            cli.run()
        }
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            cli::out(&e.to_string());
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
        Err(e) => Err(Failure::Usage(e.to_string())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("{}", cli::usage_error(&m));
            ExitCode::from(2)
        }
        Err(Failure::Run(m)) => {
            eprintln!("thermoflow: {m}");
            ExitCode::from(1)
        }
        // As a shell reports a process ended by SIGINT.
        Err(Failure::Interrupted(m)) => {
            eprintln!("thermoflow: {m}");
            ExitCode::from(130)
        }
    }
}
