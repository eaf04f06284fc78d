//! Data preparation for fine-tuning: sources, record formats, prompt templates, loss masking,
//! splits, cleaning, batching and packing, statistics, and the automotive (OBD-II) dataset.
//!
//! Everything here is host-side (`Vec<u32>` token ids); the training crate uploads batches to a
//! device. Labels follow the Hugging Face convention: aligned with `input_ids`, [`IGNORE_INDEX`]
//! (`-100`) where no loss is taken; the model shifts them.
//!
//! The flow is: [`read_records`] (a [`Record`] stream with file and line) → [`Formatter`]
//! ([`RecordFormat`] + [`PromptStyle`], giving [`Example`]s) → [`Encoder`] (token ids and the loss
//! mask) → batching ([`TokenBatch::pad_right`]).
#![warn(missing_docs)]

mod batch;
mod clean;
mod error;
mod format;
mod jsonl;
mod mask;
pub mod obd;
mod pack;
mod preference;
mod prepare;
mod record;
mod source;
mod split;
mod stats;
mod template;
mod write;

pub use batch::{IGNORE_INDEX, TokenBatch, TokenizedExample, Truncation, length_grouped_batches};
pub use clean::{CleanOptions, CleanReport, Cleaner, Dedup, DropReason, normalize};
pub use error::{DataError, Result};
pub use format::{Content, Example, Formatter, RecordFormat};
pub use jsonl::JsonlReader;
pub use mask::{EncodeOptions, Encoder};
pub use pack::{PackedRow, pack, packed_token_batch};
pub use preference::{
    MARGIN_FIELD, PreferenceExample, PreferenceFields, PreferencePair, preference_batch,
    read_preference_pairs,
};
pub use prepare::{PrepareOptions, Prepared, prepare, prepare_path};
pub use record::PromptCompletion;
pub use source::{Record, Records, SourceKind, TextMode, read_records};
pub use split::{Split, SplitBy, SplitSizes, Splitter};
pub use stats::{DatasetStats, LengthBucket};
pub use template::{
    ALPACA_NO_INPUT, ALPACA_WITH_INPUT, PromptStyle, PromptTemplate, QUESTION_ANSWER,
    few_shot_prompt, rag_prompt,
};
pub use write::write_jsonl;
