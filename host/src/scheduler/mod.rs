//! `wasi:scheduler@0.1.0`: cooperative deadlines. A guest's `yield` lets the
//! serving thread run other work, then reports how the instance's budget
//! stands.
//!
//! Lifecycle (`crate::assembly::capabilities`): a [`SchedulerCtx`] per
//! instance, in the `Store`, holding the request's deadline; nothing per
//! server or deployment.

mod bindings;
mod types_impl;

use crate::assembly::capabilities::{
    Capability, DeploymentEnv, InstanceEnv, InstanceState, ServerEnv,
};
use std::time::{Duration, Instant};
use wasmtime::component::{HasData, Linker};

/// The share of the budget below which `yield` answers `deadline-near`.
const NEAR_FRACTION: f64 = 0.1;
/// Budget left below which `yield` always answers `deadline-near`.
const NEAR_FLOOR: Duration = Duration::from_millis(50);

/// The scheduler capability (no server-wide state).
pub struct Scheduler;

impl Capability for Scheduler {
    type Deployment = ();
    type Instance = SchedulerCtx;

    fn new(_: &ServerEnv) -> anyhow::Result<Self> {
        Ok(Scheduler)
    }

    fn add_to_linker(linker: &mut Linker<InstanceState>) -> anyhow::Result<()> {
        add_to_linker(linker)
    }

    fn deployment(&self, _: &DeploymentEnv) -> anyhow::Result<()> {
        Ok(())
    }

    fn instance(_: &(), env: &InstanceEnv) -> anyhow::Result<SchedulerCtx> {
        Ok(match env.budget {
            Some(b) => SchedulerCtx::new(env.started, b),
            None => SchedulerCtx::unbounded(),
        })
    }

    /// The budget is the request's: a reused instance starts it anew.
    fn renew(ctx: &mut SchedulerCtx, env: &InstanceEnv) {
        if let Ok(fresh) = Self::instance(&(), env) {
            *ctx = fresh;
        }
    }
}

impl SchedulerStateView for InstanceState {
    fn scheduler(&mut self) -> &mut SchedulerCtx {
        &mut self.caps.scheduler
    }
}

/// Per-instance scheduling state.
#[derive(Debug, Clone)]
pub struct SchedulerCtx {
    deadline: Option<Instant>,
    budget: Duration,
}

/// How an instance's budget stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Plenty left.
    Continue,
    /// Little left.
    Near,
    /// None left.
    Elapsed,
}

impl SchedulerCtx {
    /// An instance that started now with `budget` to run.
    pub fn new(started: Instant, budget: Duration) -> Self {
        Self {
            deadline: Some(started + budget),
            budget,
        }
    }

    /// An instance with no deadline.
    pub fn unbounded() -> Self {
        Self {
            deadline: None,
            budget: Duration::MAX,
        }
    }

    /// Time left, `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The budget's state now.
    pub fn status(&self) -> Budget {
        match self.remaining() {
            None => Budget::Continue,
            Some(left) if left.is_zero() => Budget::Elapsed,
            Some(left)
                if left < NEAR_FLOOR
                    || left.as_secs_f64() < self.budget.as_secs_f64() * NEAR_FRACTION =>
            {
                Budget::Near
            }
            Some(_) => Budget::Continue,
        }
    }
}

/// Types with scheduling state in their store data.
pub trait SchedulerStateView: Send {
    /// The instance's scheduling state.
    fn scheduler(&mut self) -> &mut SchedulerCtx;
}

struct HasScheduler;

impl HasData for HasScheduler {
    type Data<'a> = &'a mut SchedulerCtx;
}

/// Adds `wasi:scheduler` to `linker`.
pub fn add_to_linker<T: SchedulerStateView + 'static>(
    linker: &mut Linker<T>,
) -> anyhow::Result<()> {
    bindings::Imports::add_to_linker::<T, HasScheduler>(linker, |s| s.scheduler())
        .map_err(anyhow::Error::from)
}
