//! What a server starts serving: its start-up specs (a deployment file, a
//! component or world, or the default world) as the recorded revisions left
//! them — an API change survives a restart; an undeploy too.

use super::history::{Revision, Served};
use crate::assembly::spec::{self, DeploymentSpec, Limits};
use crate::serving::router::Router;
use std::collections::BTreeMap;

/// One deployment to assemble at start.
pub struct Planned {
    /// Its spec.
    pub spec: DeploymentSpec,
    /// The revision it is.
    pub revision: u64,
    /// Whether it comes from the history (not the start-up specs).
    pub recorded: bool,
}

/// What a server started with.
pub struct Started {
    /// The routing table over the deployments assembled.
    pub router: Router,
    /// The start-up specs, by name.
    pub seeds: BTreeMap<String, DeploymentSpec>,
    /// The recorded revisions.
    pub revisions: BTreeMap<String, Vec<Revision>>,
    /// Reads the start-up specs again (SIGHUP).
    pub reread: super::Reread,
    /// Start-up deployments not built yet: they wait for their models.
    pub waiting: Vec<super::Waiting>,
}

/// The deployments to serve: each start-up spec unless its last recorded
/// revision says otherwise, and every recorded deployment's last revision.
/// A recorded spec that no longer parses is left out with an error logged.
pub fn plan(
    seeds: &[DeploymentSpec],
    recorded: &BTreeMap<String, Vec<Revision>>,
    defaults: &Limits,
) -> Vec<Planned> {
    let mut out = Vec::new();
    for seed in seeds {
        if !recorded.contains_key(&seed.name) {
            out.push(Planned {
                spec: seed.clone(),
                revision: 0,
                recorded: false,
            });
        }
    }
    for (name, revisions) in recorded {
        let Some(last) = revisions.last() else {
            continue;
        };
        let spec = match &last.served {
            Served::Nothing => continue,
            Served::Seed => match seeds.iter().find(|s| &s.name == name) {
                Some(s) => s.clone(),
                None => {
                    tracing::warn!(
                        "deployment `{name}`: revision {} serves the start-up spec, which the server no longer has; not serving it",
                        last.revision
                    );
                    continue;
                }
            },
            Served::Spec { spec, base } => {
                match spec::from_json(name, spec.clone(), base, defaults) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(
                            "deployment `{name}`: revision {} no longer parses; not serving it: {e:#}",
                            last.revision
                        );
                        continue;
                    }
                }
            }
        };
        out.push(Planned {
            spec,
            revision: last.revision,
            recorded: true,
        });
    }
    out
}
