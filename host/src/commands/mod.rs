//! The `tensor-wasm` CLI verbs: each parses its flags ([`args`]) and calls
//! the layers below; none wires the host by hand.

pub mod admin_http;
pub mod args;
pub mod artifact;
pub mod audit;
pub mod deploy;
pub mod job;
pub mod kernel;
pub mod manual;
pub mod observe;
pub mod registry;
pub mod serve;
pub mod token;

use args::{AuditCommand, Cli, Command, DeploymentsCommand, TokenCommand};
use std::path::PathBuf;

/// Runs one command; a job's exit status is its own, any other success 0.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let collect = |deps: Vec<_>| deps.into_iter().collect();
    match cli.command {
        Command::Serve(args) => serve::run(*args)?,
        Command::Completions { shell } => manual::completions(shell),
        Command::Man { dir } => manual::man(&dir)?,
        Command::Run(args) => return job::run(args),
        Command::Compose {
            world,
            output,
            deps,
        } => artifact::compose(&world, &output, &collect(deps))?,
        Command::Compile {
            input,
            output,
            deps,
            engine,
        } => artifact::compile(&input, &output, &collect(deps), &engine)?,
        command @ (Command::Inspect { .. }
        | Command::Key(_)
        | Command::Kernel(_)
        | Command::Push { .. }
        | Command::Pull { .. }
        | Command::List { .. }
        | Command::Verify { .. }
        | Command::Sign { .. }
        | Command::Gc { .. }) => registry_command(command)?,
        Command::Audit(AuditCommand::Tail {
            lines,
            tenant,
            data_dir,
            redis,
        }) => audit::tail(&audit::Source::of(redis, data_dir)?, tenant, lines)?,
        Command::Audit(AuditCommand::Verify {
            tenant,
            data_dir,
            redis,
        }) => {
            let dir = data_dir_of(data_dir)?;
            return match redis {
                Some(url) => audit::verify_redis(&url, &dir, tenant.as_deref()),
                None => audit::verify(&dir, tenant.as_deref()),
            };
        }
        Command::Audit(AuditCommand::Query {
            tenant,
            since,
            request_id,
            data_dir,
            redis,
        }) => {
            let filter = audit::Filter {
                tenant,
                since_ns: since.as_deref().map(audit::parse_since).transpose()?,
                request_id,
            };
            audit::query(&audit::Source::of(redis, data_dir)?, &filter)?
        }
        Command::Token(TokenCommand::New { id, scopes }) => token::new_command(&id, &scopes)?,
        Command::Token(TokenCommand::Hash) => token::hash_command()?,
        Command::Observe {
            admin,
            once,
            interval,
        } => observe::run(&admin, interval, once)?,
        command @ (Command::Deploy(_) | Command::Undeploy { .. } | Command::Deployments(_)) => {
            admin_command(command)?
        }
    }
    Ok(0)
}

/// The admin API's client verbs (docs/OPERATIONS.md).
fn admin_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Deploy(args) => deploy::deploy(&args),
        Command::Undeploy {
            name,
            if_match,
            admin,
        } => deploy::undeploy(&name, if_match, &admin),
        Command::Deployments(DeploymentsCommand::List { admin }) => deploy::list(&admin),
        Command::Deployments(DeploymentsCommand::Get { name, admin }) => deploy::get(&name, &admin),
        Command::Deployments(DeploymentsCommand::History { name, admin }) => {
            deploy::history(&name, &admin)
        }
        Command::Deployments(DeploymentsCommand::Rollback { name, to, admin }) => {
            deploy::rollback(&name, to, &admin)
        }
        other => anyhow::bail!("{other:?} is not an admin API command"),
    }
}

/// The registry verbs (docs/REGISTRY.md).
fn registry_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Inspect {
            path,
            deps,
            data_dir,
        } => {
            let path = match path.to_str().and_then(|p| p.strip_prefix("registry:")) {
                Some(reference) => {
                    registry::checkout_for_inspect(reference, &data_dir_of(data_dir)?)?
                }
                None => path,
            };
            artifact::inspect(&path, &deps.into_iter().collect())?
        }
        Command::Key(command) => registry::key(command, data_dir_of)?,
        Command::Kernel(command) => kernel::run(command, data_dir_of)?,
        Command::Push {
            file,
            name,
            kind,
            sign,
            to,
            data_dir,
        } => {
            let push = registry::Push {
                file: file.as_deref(),
                name: &name,
                kind: kind.as_deref(),
                sign: sign.as_deref(),
                to: to.as_deref(),
            };
            registry::push(&push, &data_dir_of(data_dir)?)?
        }
        Command::Pull {
            reference,
            output,
            data_dir,
        } => registry::pull(&reference, output.as_deref(), &data_dir_of(data_dir)?)?,
        Command::List { data_dir } => registry::list(&data_dir_of(data_dir)?)?,
        Command::Verify {
            reference,
            trust_key,
            data_dir,
        } => registry::verify(&reference, &trust_key, &data_dir_of(data_dir)?)?,
        Command::Sign {
            name,
            key,
            data_dir,
        } => registry::sign(&name, &key, &data_dir_of(data_dir)?)?,
        Command::Gc { data_dir } => registry::gc(&data_dir_of(data_dir)?)?,
        other => anyhow::bail!("{other:?} is not a registry command"),
    }
    Ok(())
}

fn data_dir_of(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    crate::platform::dirs::data_dir(flag.as_ref())
}
