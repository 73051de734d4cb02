//! Error type shared by the pure-Rust modules. The binding layer maps each variant onto a Python
//! exception class (`InvalidInputError`, `DegenerateWeightsError`, `GlassError`).

use thiserror::Error;

/// Every fallible function in the crate returns this. Messages always name the offending argument.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum GlassError {
    /// Bad shape, dtype, value or range of an argument (Python: `InvalidInputError`, a `ValueError`).
    #[error("{0}")]
    InvalidInput(String),
    /// Log-weights that cannot define a distribution: a NaN, or a row that is entirely -inf
    /// (Python: `DegenerateWeightsError`, a `ValueError`).
    #[error("{0}")]
    DegenerateWeights(String),
    /// Any other failure (Python: `GlassError`).
    #[error("{0}")]
    Other(String),
    /// The call was interrupted between two chunks of work (Python: the pending exception of the
    /// signal handler, normally `KeyboardInterrupt`); no state was changed.
    #[error("interrupted")]
    Interrupted,
}

pub type Result<T> = std::result::Result<T, GlassError>;

/// Shorthand for an `InvalidInput` error.
pub fn invalid(msg: impl Into<String>) -> GlassError {
    GlassError::InvalidInput(msg.into())
}

/// Shorthand for a `DegenerateWeights` error.
pub fn degenerate(msg: impl Into<String>) -> GlassError {
    GlassError::DegenerateWeights(msg.into())
}
