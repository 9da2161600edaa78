//! The `jet-relay` command: turns arguments into calls on the library (see
//! [`cli`]).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main(std::env::args_os().skip(1).collect())
}
