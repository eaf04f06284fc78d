//! Evaluation metrics for generated text, classifiers and language models.
//!
//! * [`squad`]: SQuAD exact match and token F1 ([`exact_match`], [`token_f1`],
//!   [`mean_em_f1`]).
//! * [`bleu`]: corpus and sentence BLEU with the `13a` tokenizer and the defaults of
//!   `sacrebleu` ([`corpus_bleu`], [`sentence_bleu`]).
//! * [`rouge`]: ROUGE-1/2/L/Lsum as computed by Google's `rouge-score`, with optional Porter
//!   stemming ([`RougeScorer`], [`corpus_rouge`]).
//! * [`richness`]: type-token ratio, distinct-n and MTLD ([`vocabulary_richness`]).
//! * [`classification`]: accuracy and macro F1 with the conventions of scikit-learn
//!   ([`accuracy`], [`macro_f1`]).
//! * [`lm`]: perplexity and token accuracy.
//!
//! All fallible functions return [`Result`] with the crate-wide [`MetricsError`].
//!
//! ```
//! use kiln_metrics::{RougeScorer, corpus_bleu, exact_match, macro_f1};
//!
//! let hyps = ["P0300 Random/Multiple Cylinder Misfire Detected"];
//! let refs = [["P0300 Random/Multiple Cylinder Misfire Detected"]];
//! assert!((corpus_bleu(&hyps, &refs)?.score - 100.0).abs() < 1e-9);
//!
//! let rouge = RougeScorer::new(true).score("misfire in cylinder 2", "cylinder 2 misfiring");
//! assert!(rouge.rouge1.fmeasure > 0.8);
//!
//! assert_eq!(exact_match("The P0300 code", "p0300 code"), 1.0);
//! assert_eq!(macro_f1(&[0usize, 1, 1], &[0, 1, 1])?, 1.0);
//! # Ok::<(), kiln_metrics::MetricsError>(())
//! ```
#![warn(missing_docs)]

pub mod bleu;
pub mod classification;
mod error;
pub mod lm;
mod porter;
pub mod richness;
pub mod rouge;
pub mod squad;
mod text;

pub use bleu::{
    BleuOptions, BleuScore, MAX_NGRAM_ORDER, Smoothing, corpus_bleu, corpus_bleu_with,
    sentence_bleu, sentence_bleu_with, tokenize_13a,
};
pub use classification::{ClassScores, accuracy, macro_f1, per_class_scores};
pub use error::{MetricsError, Result};
pub use lm::{IGNORE_INDEX, perplexity, token_accuracy};
pub use porter::porter_stem;
pub use richness::{
    MTLD_THRESHOLD, VocabularyRichness, distinct_n, mtld, richness_tokenize, type_token_ratio,
    vocabulary_richness,
};
pub use rouge::{CorpusRouge, RougeScore, RougeScorer, RougeScores, corpus_rouge, rouge_tokenize};
pub use squad::{exact_match, mean_em_f1, normalize_answer, token_f1};
