//! The `wasi:scheduler` host trait.

use super::bindings::wasi::scheduler::cooperative::{Host, YieldStatus};
use super::{Budget, SchedulerCtx};

impl Host for &mut SchedulerCtx {
    async fn yield_(&mut self) -> wasmtime::Result<YieldStatus> {
        tokio::task::yield_now().await;
        Ok(match self.status() {
            Budget::Continue => YieldStatus::Continue,
            Budget::Near => YieldStatus::DeadlineNear,
            Budget::Elapsed => YieldStatus::DeadlineElapsed,
        })
    }

    fn remaining(&mut self) -> wasmtime::Result<Option<u64>> {
        Ok(SchedulerCtx::remaining(self).map(|d| d.as_nanos().min(u64::MAX as u128) as u64))
    }
}
