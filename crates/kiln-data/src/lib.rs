//! Data preparation for fine-tuning: records, JSONL sources, loss masking and batching.
//!
//! Everything here is host-side (`Vec<u32>` token ids); the training crate uploads batches to a
//! device. Labels follow the Hugging Face convention: aligned with `input_ids`, [`IGNORE_INDEX`]
//! (`-100`) where no loss is taken.
#![warn(missing_docs)]

mod batch;
mod error;
mod jsonl;
mod record;

pub use batch::{IGNORE_INDEX, TokenBatch, TokenizedExample};
pub use error::{DataError, Result};
pub use jsonl::JsonlReader;
pub use record::PromptCompletion;
