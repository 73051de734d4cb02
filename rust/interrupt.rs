//! Cooperative interruption of long native calls.
//!
//! Every loop over particles runs in chunks of `CHUNK` entries and asks an [`Interrupt`] between
//! chunks whether to stop. The binding layer answers by checking Python's signal handlers (so
//! Ctrl-C raises `KeyboardInterrupt` within milliseconds); pure-Rust callers pass [`Never`].
//! An interrupted call returns `GlassError::Interrupted` before it has changed any state.

use crate::error::Result;

/// Entries processed between two interruption checks: a few milliseconds of work even on a
/// loaded machine, and a multiple of 4 so that chunked four-lane sums equal unchunked ones.
pub const CHUNK: usize = 1 << 16;

/// Asked between chunks; an `Err` (normally `GlassError::Interrupted`) stops the call.
pub trait Interrupt: Sync {
    fn check(&self) -> Result<()>;
}

/// Buffers at least this large (64 MiB) are freed on a helper thread.
const RELEASE_IN_BACKGROUND: usize = 64 << 20;

/// Free `v`; a large buffer on a short-lived helper thread, so that returning (in particular
/// after an interruption) does not wait while the kernel unmaps hundreds of megabytes.
pub fn release<T: Send + 'static>(v: Vec<T>) {
    if v.capacity() * std::mem::size_of::<T>() >= RELEASE_IN_BACKGROUND {
        // if no thread can be spawned, the buffer is freed here when the closure is dropped
        let _ = std::thread::Builder::new().spawn(move || drop(v));
    }
}

/// Never interrupts.
pub struct Never;

impl Interrupt for Never {
    #[inline]
    fn check(&self) -> Result<()> {
        Ok(())
    }
}

/// Interrupts at the (n + 1)-th check (tests of every call's interruption path).
#[cfg(test)]
pub(crate) struct After(pub std::sync::atomic::AtomicIsize);

#[cfg(test)]
impl After {
    pub(crate) fn new(n: isize) -> Self {
        Self(std::sync::atomic::AtomicIsize::new(n))
    }
}

#[cfg(test)]
impl Interrupt for After {
    fn check(&self) -> Result<()> {
        if self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) <= 0 {
            return Err(crate::error::GlassError::Interrupted);
        }
        Ok(())
    }
}
