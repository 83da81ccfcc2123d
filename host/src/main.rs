//! `tensor-wasm`: the TensorWasm host. Serves `wasi:http` components and
//! composed worlds, a fresh isolated instance per request.
#![deny(missing_docs)]

mod body;
mod cache;
mod cli;
mod compose;
mod deploy;
mod deployment;
mod engine;
mod load;
mod metrics;
mod router;
mod serve;
mod server;
mod state;
mod units;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error (a bug in tensor-wasm): {info}");
    }));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TENSOR_WASM_LOG")
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = cli::Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", load::first_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::Serve(args) => serve::run(args),
        cli::Command::Compose {
            world,
            output,
            deps,
        } => {
            let bytes = compose::compose_file(&world, &deps.into_iter().collect())?;
            load::check_component_bytes(&world.display().to_string(), &bytes)?;
            std::fs::write(&output, &bytes)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", output.display()))?;
            eprintln!(
                "composed {} into {} ({} bytes)",
                world.display(),
                output.display(),
                bytes.len()
            );
            Ok(())
        }
        cli::Command::Compile {
            input,
            output,
            deps,
            engine,
        } => serve::compile(&input, &output, &deps.into_iter().collect(), &engine),
        cli::Command::Inspect { path, deps } => serve::inspect(&path, &deps.into_iter().collect()),
    }
}
