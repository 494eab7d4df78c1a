//! `strata`: the Strata node and its admin commands.

mod api;
mod cluster;
mod ops;
mod server;
mod transport;

#[cfg(test)]
mod fuzz_corpus;

use std::process::ExitCode;

use clap::Parser;

// Every request allocates a few dozen small buffers on whichever worker thread runs it: glibc's
// allocator spent ~15% of a loaded node's CPU there (arena locks, consolidation); mimalloc's
// thread-local free lists do not.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if let Err(e) = ops::config_file::apply(&argv) {
        eprintln!("strata: error: {e:#}");
        return ExitCode::FAILURE;
    }
    let cli = ops::config::Cli::parse();
    // openraft logs every election and membership step at INFO: a user wants Strata's own
    // events and openraft's warnings; RUST_LOG asks for more.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let mut builder = match &cli.command {
        ops::config::Command::Serve(args) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if args.worker_threads > 0 {
                b.worker_threads(args.worker_threads);
            }
            b
        }
        ops::config::Command::Admin(_) => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("strata: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        ops::config::Command::Serve(args) => runtime.block_on(server::serve(*args)),
        ops::config::Command::Admin(args) => runtime.block_on(ops::admin_cli::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
