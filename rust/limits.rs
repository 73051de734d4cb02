//! Size contract: every size a caller controls (particles, groups, samples, grid points, inner
//! steps) is checked against the memory its call needs before anything is allocated, so an
//! absurd size is an `InvalidInput` error naming the argument instead of an aborted process.
//!
//! The limit is the memory available when the call is made (Linux: `MemAvailable` in
//! /proc/meminfo, lowered by a cgroup v2 limit); where that is unknown, `MAX_BYTES`.

use crate::error::{invalid, Result};

/// The limit where the available memory cannot be read: 1 TiB.
pub const MAX_BYTES: u128 = 1 << 40;

/// Requests below this size skip reading the available memory (it costs a file read).
const CHEAP_BYTES: u128 = 64 << 20;

fn read_kib(path: &str, key: &str) -> Option<u128> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

fn read_number(path: &str) -> Option<u128> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Bytes this process can still allocate (best estimate), or `MAX_BYTES` if unknown.
pub fn available_bytes() -> u128 {
    let mut avail = read_kib("/proc/meminfo", "MemAvailable:").map(|k| k * 1024);
    if let (Some(max), Some(cur)) = (
        read_number("/sys/fs/cgroup/memory.max"),
        read_number("/sys/fs/cgroup/memory.current"),
    ) {
        let left = max.saturating_sub(cur);
        avail = Some(avail.map_or(left, |a| a.min(left)));
    }
    avail.unwrap_or(MAX_BYTES).min(MAX_BYTES)
}

fn human(bytes: u128) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut x = bytes as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < units.len() {
        x /= 1024.0;
        u += 1;
    }
    if u + 1 == units.len() && x >= 1024.0 {
        return format!("{x:.3e} {}", units[u]);
    }
    format!("{x:.1} {}", units[u])
}

/// Check that a call needing `bytes` (computed by the caller in u128, so no product can wrap)
/// fits; `what` names the size argument(s) and their values, e.g. "num_samples = 1099511627776",
/// and `arg` is the argument to blame (the error's `arg`).
pub fn ensure_fits(arg: &str, what: &str, bytes: u128) -> Result<()> {
    #[cfg(test)]
    if let Some(avail) = PRETEND_AVAILABLE.with(|c| c.get()) {
        return fits(arg, what, bytes, avail);
    }
    if bytes < CHEAP_BYTES {
        return Ok(());
    }
    fits(arg, what, bytes, available_bytes())
}

fn fits(arg: &str, what: &str, bytes: u128, avail: u128) -> Result<()> {
    if bytes > avail {
        return Err(invalid(
            arg,
            format!(
                "{what} is too large: it needs {} of memory, more than the {} available",
                human(bytes),
                human(avail)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
thread_local! {
    static PRETEND_AVAILABLE: std::cell::Cell<Option<u128>> = const { std::cell::Cell::new(None) };
}

/// Run `f` as if only `bytes` were available on this thread, with every request checked however
/// small: tests of each call's size accounting that allocate nothing.
#[cfg(test)]
pub(crate) fn with_available<R>(bytes: u128, f: impl FnOnce() -> R) -> R {
    let before = PRETEND_AVAILABLE.with(|c| c.replace(Some(bytes)));
    let r = f();
    PRETEND_AVAILABLE.with(|c| c.set(before));
    r
}

/// Bytes of `count` values of `size` bytes each, for several arrays: sum of count * size.
pub fn bytes_of(arrays: &[(u128, u128)]) -> u128 {
    arrays.iter().fold(0u128, |acc, &(count, size)| {
        acc.saturating_add(count.saturating_mul(size))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::GlassError;

    #[test]
    fn small_requests_pass_and_absurd_ones_name_the_argument() {
        assert!(ensure_fits("n", "n = 10", 80).is_ok());
        match ensure_fits(
            "num_samples",
            "num_samples = 2**61",
            bytes_of(&[(1 << 61, 8)]),
        ) {
            Err(GlassError::InvalidInput { arg, msg }) => {
                assert_eq!(arg, "num_samples");
                assert!(msg.starts_with("num_samples = 2**61 is too large"), "{msg}")
            }
            e => panic!("{e:?}"),
        }
        // products that would wrap in 64 bits
        assert!(ensure_fits("x", "x", bytes_of(&[(u64::MAX as u128, u64::MAX as u128)])).is_err());
        assert!(available_bytes() > 0 && available_bytes() <= MAX_BYTES);
    }

    #[test]
    fn reads_meminfo_style_and_plain_numbers() {
        let dir = std::env::temp_dir().join(format!("glass_limits_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let info = dir.join("meminfo");
        std::fs::write(&info, "MemTotal:  4096 kB\nMemAvailable:   2048 kB\n").unwrap();
        let num = dir.join("number");
        std::fs::write(&num, "123456789\n").unwrap();
        let (info, num) = (info.to_str().unwrap(), num.to_str().unwrap());
        assert_eq!(read_kib(info, "MemAvailable:"), Some(2048));
        assert_eq!(read_kib(info, "MemTotal:"), Some(4096));
        assert_eq!(read_kib(info, "SwapFree:"), None);
        assert_eq!(read_number(num), Some(123_456_789));
        assert_eq!(read_number(info), None);
        assert_eq!(read_kib("/nonexistent/meminfo", "MemAvailable:"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The machine running the suite has far more than 128 MiB free; a 128 MiB request (above
    /// the cheap cut-off, so checked against it) passes.
    #[test]
    fn available_memory_is_read_in_bytes() {
        let avail = available_bytes();
        assert!(avail > 256 << 20, "{avail}");
        if let Some(kib) = read_kib("/proc/meminfo", "MemAvailable:") {
            assert!(avail <= kib * 1024);
            // two reads a moment apart: the same order of magnitude (not KiB, not KiB^2)
            assert!(avail * 4 > kib * 1024, "{avail} {kib}");
        }
        assert!(ensure_fits("x", "x", 128 << 20).is_ok());
    }

    #[test]
    fn a_request_of_exactly_the_available_memory_fits() {
        with_available(1000, || {
            assert!(ensure_fits("x", "x", 1000).is_ok());
            match ensure_fits("x", "x = 3", 1001) {
                Err(GlassError::InvalidInput { arg, msg }) => {
                    assert_eq!(arg, "x");
                    assert_eq!(msg, "x = 3 is too large: it needs 1001.0 B of memory, more than the 1000.0 B available");
                }
                e => panic!("{e:?}"),
            }
        });
        assert!(ensure_fits("x", "x", 1001).is_ok());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0.0 B");
        assert_eq!(human(1023), "1023.0 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
        assert_eq!(human(1 << 60), "1.0 EiB");
        assert_eq!(human(u128::MAX), "2.951e20 EiB");
    }
}
