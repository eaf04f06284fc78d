//! Retrieval for kiln: a persistent hybrid index and retrieval-augmented prompts.
//!
//! - [`Embed`]: texts to vectors; [`Embedder`] is all-MiniLM-L6-v2 (or any BERT-family
//!   sentence encoder) run through `kiln-models`, mean-pooled and normalized as
//!   sentence-transformers does.
//! - [`HybridIndex`]: JSON records indexed twice, by BM25 over a text field (tantivy, codes such
//!   as `P0130` kept as exact lowercased tokens) and by dense embeddings; a query fuses both
//!   ranked lists by reciprocal rank ([`reciprocal_rank_fusion`]), after the documents whose
//!   id (`id` or `code` field) the query names exactly. Stored in a folder, opened
//!   again with [`HybridIndex::open`].
//! - [`rag_prompt`]: the retrieved passages before the question, for a chat model's user
//!   message.
//!
//! ```no_run
//! # fn main() -> kiln_rag::Result<()> {
//! use kiln_rag::{Embedder, HybridIndex, rag_prompt, read_docs};
//! let device = burn::tensor::Device::default();
//! let docs = read_docs("codes.jsonl", "text")?;
//! let embedder = Embedder::load("assets/all-MiniLM-L6-v2", &device)?;
//! let index = HybridIndex::build(&docs, "text", embedder, "runs/obd-index")?;
//! let hits = index.query("What does P0130 mean?", 3)?;
//! let user_message = rag_prompt("What does P0130 mean?", &hits);
//! # let _ = user_message;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod embed;
mod error;
mod fusion;
mod index;
mod prompt;

pub use embed::{DEFAULT_BATCH_SIZE, DEFAULT_MAX_TOKENS, Embed, Embedder};
pub use error::{RagError, Result};
pub use fusion::{RRF_K, reciprocal_rank_fusion};
pub use index::{
    FUSION_CANDIDATES, Hit, HybridIndex, INDEX_FORMAT, INDEX_VERSION, IndexMeta, Mode, Ranked,
    check_out_dir, read_docs,
};
pub use prompt::rag_prompt;

#[cfg(test)]
mod tests;
