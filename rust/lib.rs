//! glass_core native core: noise schedules, GLASS coefficients, log-weights, resampling and SMC
//! genealogy. The math lives in pure-Rust modules; `python` (feature `python`) is the only PyO3
//! code and wraps them as the extension module `glass_core._core`.

pub mod error;
pub mod genealogy;
pub mod glass;
pub mod interrupt;
pub mod limits;
pub mod resample;
pub mod schedule;
pub mod ssp_killing;
pub mod weights;

#[cfg(test)]
mod fuzz;

#[cfg(feature = "python")]
mod python;

pub use error::{GlassError, Result};
pub use genealogy::{ResampleMode, SmcState, StepOutput};
pub use glass::{glass_coefficients, GlassCoefficients};
pub use resample::{resample_log_weights, Scheme, Seeds};
pub use schedule::{Schedule, VpTable};
