//! `strata-bench`: benchmarks for the layers of Strata, one subcommand per layer.

mod cli;
mod engines;
mod http;
mod measure;
mod phases;
mod raft;
mod report;
mod rundir;
mod runner;
mod tiered;
mod workload;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match &cli.command {
        cli::Command::Lsm(args) => runner::run(args),
        cli::Command::Tiered(args) => tiered::run(args),
        cli::Command::Raft(args) => raft::run(args),
        cli::Command::Http(args) => http::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line: what failed, then why.
            eprintln!("strata-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
