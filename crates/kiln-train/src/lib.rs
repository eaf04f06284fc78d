//! Training for kiln models.
//!
//! - [`masked_lm_loss`]: next-token cross-entropy computed only at labelled positions: hidden
//!   states are gathered *before* the vocabulary projection, so prompt tokens cost no logits.
//! - [`Trainer`]: AdamW with PyTorch's defaults set explicitly, learning-rate schedules, generic over any [`kiln_models::CausalLm`] on any backend.
#![warn(missing_docs)]

mod error;
mod loss;
mod schedule;
mod trainer;

pub use error::{Result, TrainError};
pub use loss::{LossInput, masked_lm_loss};
pub use schedule::Schedule;
pub use trainer::{OptimizerConfig, Trainer};
