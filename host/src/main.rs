//! The `tensor-wasm` command.

use clap::Parser;
use std::process::ExitCode;
use tensor_wasm::{audit, cli, compose, job, load, serve, token};

/// Large blocks (tensor buffers) are kept for reuse rather than unmapped.
#[global_allocator]
static ALLOCATOR: tensor_wasm::alloc::CachingAllocator = tensor_wasm::alloc::CachingAllocator;

fn main() -> ExitCode {
    // wasmtime creates error values on hot paths (e.g. when a store drops);
    // with RUST_BACKTRACE set each would walk the stack. Keep panic
    // backtraces as asked, but not library ones.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error (a bug in tensor-wasm): {info}");
    }));
    let cli = cli::Cli::parse();
    // A job's terminal belongs to the job: only warnings from the host.
    let default_log = match cli.command {
        cli::Command::Run(_) | cli::Command::Audit(_) | cli::Command::Token(_) => "warn",
        _ => "info,wasmtime=warn,cranelift=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TENSOR_WASM_LOG")
                .unwrap_or_else(|_| default_log.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let cli::Command::Run(args) = cli.command {
        return match job::run(args) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("error: {}", load::first_line(&e));
                ExitCode::FAILURE
            }
        };
    }
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
            let bytes =
                compose::compose_file(&world, &deps.into_iter().collect(), &compose::unchanged)?;
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
        cli::Command::Audit(cli::AuditCommand::Tail {
            lines,
            tenant,
            data_dir,
        }) => audit::tail(&cli::data_dir(data_dir.as_ref())?, tenant, lines),
        cli::Command::Audit(cli::AuditCommand::Query {
            tenant,
            since,
            request_id,
            data_dir,
        }) => {
            let filter = audit::Filter {
                tenant,
                since_ns: since.as_deref().map(audit::parse_since).transpose()?,
                request_id,
            };
            audit::query(&cli::data_dir(data_dir.as_ref())?, &filter)
        }
        cli::Command::Token(cli::TokenCommand::New { id, scopes }) => {
            token::new_command(&id, &scopes)
        }
        cli::Command::Token(cli::TokenCommand::Hash) => token::hash_command(),
        cli::Command::Run(_) => unreachable!("handled in main"),
    }
}
