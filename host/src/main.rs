//! The `tensor-wasm` command: logging, the allocator, and the verbs in
//! `tensor_wasm::commands`.

use clap::Parser;
use std::process::ExitCode;
use tensor_wasm::commands::{self, args};
use tensor_wasm::platform::telemetry::{self, TraceOptions};

/// Large blocks (tensor buffers) are kept for reuse rather than unmapped.
#[global_allocator]
static ALLOCATOR: tensor_wasm::platform::alloc::CachingAllocator =
    tensor_wasm::platform::alloc::CachingAllocator;

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
    let cli = args::Cli::parse();
    // A job's terminal belongs to the job: only warnings from the host.
    let default_log = match cli.command {
        args::Command::Run(_) | args::Command::Audit(_) | args::Command::Token(_) => "warn",
        _ => "info,wasmtime=warn,cranelift=warn",
    };
    let access = matches!(&cli.command, args::Command::Serve(a) if a.access_log);
    let traces = match &cli.command {
        args::Command::Serve(a) => a.trace_options(),
        _ => Default::default(),
    };
    let tracing = match init_log(default_log, cli.log_format, access, &traces) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}", tensor_wasm::platform::load::first_line(&e));
            return ExitCode::FAILURE;
        }
    };
    let result = commands::run(cli);
    // Flushes the spans still queued.
    drop(tracing);
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", tensor_wasm::platform::load::first_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The log on stderr: `TENSOR_WASM_LOG` (else `default`) filters it, the
/// `access` target (one line per request) only with `--access-log`. Traces
/// are started here too when configured (`platform::telemetry`).
fn init_log(
    default: &str,
    format: args::LogFormat,
    access: bool,
    traces: &TraceOptions,
) -> anyhow::Result<Option<telemetry::Tracing>> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("TENSOR_WASM_LOG")
        .unwrap_or_else(|_| default.into());
    let access = if access { "access=info" } else { "access=off" };
    filter = filter.add_directive(access.parse().expect("a valid directive"));
    let tracing = telemetry::start(traces)?;
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log = match format {
        args::LogFormat::Json => log.json().flatten_event(true).with_filter(filter).boxed(),
        args::LogFormat::Text => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry().with(log).init();
    Ok(tracing)
}
