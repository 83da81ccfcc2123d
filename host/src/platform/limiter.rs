//! The per-instance memory cap: the sum of an instance's linear memories
//! (every core module of a composed world together), and whether the cap
//! was hit, so that the trap which follows is reported as a memory-cap kill.

use wasmtime::ResourceLimiter;

/// Caps the sum of all linear memories of one instance and remembers
/// whether the cap was hit, so a trap that follows is counted as a
/// memory-cap kill.
pub struct MemoryLimiter {
    cap: u64,
    used: u64,
    /// Set when a growth was refused because of the cap.
    pub hit: bool,
}

impl MemoryLimiter {
    /// A limiter allowing `cap` bytes in all.
    pub fn new(cap: u64) -> Self {
        Self {
            cap,
            used: 0,
            hit: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current) as u64;
        if self.used.saturating_add(grow) > self.cap {
            self.hit = true;
            return Ok(false);
        }
        self.used += grow;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}
