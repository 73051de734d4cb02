//! Error type shared by the pure-Rust modules. The binding layer maps each variant onto a Python
//! exception class (`InvalidInputError`, `DegenerateWeightsError`, `GlassError`).

use thiserror::Error;

/// Every fallible function in the crate returns this. Messages always name the offending argument
/// (and `InvalidInput` carries its name).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum GlassError {
    /// Bad shape, dtype, value or range of the argument `arg` (Python: `InvalidInputError`, a
    /// `ValueError`, with `arg` as its attribute so callers can name their own flag for it).
    #[error("{msg}")]
    InvalidInput { arg: String, msg: String },
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

/// Shorthand for an `InvalidInput` error about the argument `arg`.
pub fn invalid(arg: impl Into<String>, msg: impl Into<String>) -> GlassError {
    GlassError::InvalidInput {
        arg: arg.into(),
        msg: msg.into(),
    }
}

/// Shorthand for a `DegenerateWeights` error.
pub fn degenerate(msg: impl Into<String>) -> GlassError {
    GlassError::DegenerateWeights(msg.into())
}
