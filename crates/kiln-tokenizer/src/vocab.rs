//! Vocabulary work: adding domain tokens to a tokenizer and training a BPE tokenizer.

use std::collections::HashSet;

use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, DecoderWrapper};

use crate::{Result, SpecialTokens, Tokenizer, TokenizerError};

/// What [`Tokenizer::add_tokens`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedTokens {
    /// The new tokens and their ids, in the order given.
    pub added: Vec<(String, u32)>,
    /// Tokens that were already in the vocabulary, with their ids.
    pub existing: Vec<(String, u32)>,
    /// Vocabulary size (with added tokens) before.
    pub old_vocab_size: usize,
    /// Vocabulary size (with added tokens) after.
    pub new_vocab_size: usize,
}

impl AddedTokens {
    /// Rows an embedding (and a tied or untied output head) of `embedding_rows` rows must grow
    /// by so that every token id has a row: `max(0, largest id + 1 - embedding_rows)`. Models
    /// often pad their embeddings beyond the vocabulary, in which case this can be 0.
    pub fn rows_to_grow(&self, embedding_rows: usize) -> usize {
        let needed = self
            .added
            .iter()
            .chain(&self.existing)
            .map(|(_, id)| *id as usize + 1)
            .max()
            .unwrap_or(0);
        needed.saturating_sub(embedding_rows)
    }
}

impl Tokenizer {
    /// Adds domain tokens (e.g. `P0300`) that are then never split; `special` makes them
    /// special tokens (skipped by `decode(.., true)`). Tokens already present keep their id.
    ///
    /// ```
    /// use kiln_tokenizer::{GgufTokenizerSpec, Tokenizer};
    ///
    /// let spec = GgufTokenizerSpec {
    ///     merges: Some(vec![]),
    ///     ..GgufTokenizerSpec::new("gpt2", ["P", "0", "3"].map(String::from).to_vec())
    /// };
    /// let mut tk = Tokenizer::from_gguf_spec(&spec).unwrap();
    /// assert_eq!(tk.encode("P0300", false).unwrap().len(), 5);
    /// let report = tk.add_tokens(&["P0300", "P"], false).unwrap();
    /// let id = report.old_vocab_size as u32; // the next free id
    /// assert_eq!(report.added, [("P0300".to_string(), id)]);
    /// assert_eq!(report.existing, [("P".to_string(), 0)]);
    /// assert_eq!(report.rows_to_grow(report.old_vocab_size), 1);
    /// assert_eq!(tk.encode("P0300", false).unwrap(), [id]);
    /// ```
    ///
    /// # Errors
    /// [`TokenizerError::Spec`] for an empty token.
    pub fn add_tokens(&mut self, tokens: &[&str], special: bool) -> Result<AddedTokens> {
        let old_vocab_size = self.vocab_size();
        let mut report = AddedTokens {
            added: Vec::new(),
            existing: Vec::new(),
            old_vocab_size,
            new_vocab_size: old_vocab_size,
        };
        let mut seen = HashSet::new();
        for &token in tokens {
            if token.is_empty() {
                return Err(TokenizerError::Spec {
                    field: "tokens".into(),
                    message: "cannot add an empty token".into(),
                });
            }
            if !seen.insert(token) {
                continue;
            }
            if let Some(id) = self.token_to_id(token) {
                report.existing.push((token.to_string(), id));
                continue;
            }
            let added = AddedToken::from(token.to_string(), special);
            let inner = &mut self.inner;
            if special {
                inner.add_special_tokens(&[added]);
            } else {
                inner.add_tokens(&[added]);
            }
            let id = self
                .token_to_id(token)
                .ok_or_else(|| TokenizerError::Spec {
                    field: "tokens".into(),
                    message: format!("`{token}` was not added"),
                })?;
            report.added.push((token.to_string(), id));
        }
        report.new_vocab_size = self.vocab_size();
        Ok(report)
    }
}

/// Settings of [`train_bpe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpeOptions {
    /// Target vocabulary size, including the 256 byte tokens and the special tokens.
    pub vocab_size: usize,
    /// Merges of pairs seen fewer times are not learnt.
    pub min_frequency: u64,
    /// Special tokens, given the first ids in order (e.g. `<|endoftext|>`).
    pub special_tokens: Vec<String>,
}

impl Default for BpeOptions {
    fn default() -> Self {
        Self {
            vocab_size: 8000,
            min_frequency: 2,
            special_tokens: vec!["<|endoftext|>".into()],
        }
    }
}

/// Trains a byte-level BPE tokenizer (GPT-2 style: every byte has a token, so any text
/// encodes) on `texts`. The first special token becomes the EOS, BOS and padding token.
///
/// ```
/// use kiln_tokenizer::vocab::{BpeOptions, train_bpe};
///
/// let corpus = ["engine misfire detected", "misfire on cylinder 1", "engine lean"];
/// let options = BpeOptions { vocab_size: 300, min_frequency: 1, ..BpeOptions::default() };
/// let tk = train_bpe(corpus.iter().cycle().take(30), &options).unwrap();
/// let ids = tk.encode("engine misfire", false).unwrap();
/// assert!(ids.len() < "engine misfire".len());
/// assert_eq!(tk.decode(&ids, false).unwrap(), "engine misfire");
/// ```
///
/// # Errors
/// [`TokenizerError::Spec`] for a vocabulary smaller than the byte alphabet plus the special
/// tokens; [`TokenizerError::Codec`] when training fails.
pub fn train_bpe<I, S>(texts: I, options: &BpeOptions) -> Result<Tokenizer>
where
    I: Iterator<Item = S> + Send,
    S: AsRef<str> + Send,
{
    let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
    let minimum = alphabet.len() + options.special_tokens.len();
    if options.vocab_size < minimum {
        return Err(TokenizerError::Spec {
            field: "vocab_size".into(),
            message: format!(
                "{} is smaller than the {minimum} byte and special tokens",
                options.vocab_size
            ),
        });
    }
    let specials: Vec<AddedToken> = options
        .special_tokens
        .iter()
        .map(|t| AddedToken::from(t.clone(), true))
        .collect();
    let mut trainer = TrainerWrapper::BpeTrainer(
        BpeTrainerBuilder::new()
            .vocab_size(options.vocab_size)
            .min_frequency(options.min_frequency)
            .special_tokens(specials.clone())
            .initial_alphabet(alphabet)
            .show_progress(false)
            .build(),
    );
    let mut inner = tokenizers::Tokenizer::new(BPE::default());
    inner
        .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
        .with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())))
        .with_post_processor(Some(ByteLevel::default().trim_offsets(false)));
    inner
        .train(&mut trainer, texts)
        .map_err(|e| TokenizerError::Codec(format!("BPE training: {e}")))?;
    inner.add_special_tokens(&specials);
    let first = options.special_tokens.first().cloned();
    Ok(
        Tokenizer::from_inner(inner).with_special_tokens(SpecialTokens {
            bos_token: first.clone(),
            eos_token: first.clone(),
            unk_token: None,
            pad_token: first,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        let mut lines = Vec::new();
        for i in 0..200 {
            lines.push(format!(
                "P03{:02}: Cylinder {} Misfire Detected. Check the ignition coil.",
                i % 13,
                i % 13
            ));
            lines.push(format!(
                "U01{:02}: Lost Communication With Module {}",
                i % 7,
                i % 7
            ));
        }
        lines
    }

    #[test]
    fn trained_bpe_round_trips_and_compresses() {
        let options = BpeOptions {
            vocab_size: 400,
            min_frequency: 2,
            special_tokens: vec!["<|endoftext|>".into(), "<pad>".into()],
        };
        let tk = train_bpe(corpus().iter(), &options).unwrap();
        assert_eq!(tk.token_to_id("<|endoftext|>"), Some(0));
        assert_eq!(tk.token_to_id("<pad>"), Some(1));
        assert_eq!(tk.eos_token_id(), Some(0));
        assert!(
            tk.vocab_size() <= 400 && tk.vocab_size() > 258,
            "{}",
            tk.vocab_size()
        );
        let text = "P0305: Cylinder 5 Misfire Detected. Ünïcode 🚗 too.";
        let ids = tk.encode(text, false).unwrap();
        assert_eq!(tk.decode(&ids, false).unwrap(), text);
        let misfire = tk.encode(" Misfire", false).unwrap();
        assert_eq!(
            misfire.len(),
            1,
            "a frequent word is one token: {misfire:?}"
        );
        let with_eos = tk.encode("a<|endoftext|>", false).unwrap();
        assert_eq!(with_eos.last(), Some(&0));
        let small = BpeOptions {
            vocab_size: 100,
            ..BpeOptions::default()
        };
        assert!(matches!(
            train_bpe(corpus().iter(), &small),
            Err(TokenizerError::Spec { .. })
        ));
    }

    #[test]
    fn adding_domain_tokens_reports_ids_and_rows() {
        let options = BpeOptions {
            vocab_size: 300,
            ..BpeOptions::default()
        };
        let mut tk = train_bpe(corpus().iter(), &options).unwrap();
        let before = tk.vocab_size();
        let split = tk.encode("P0300", false).unwrap();
        assert!(split.len() > 1);
        let report = tk
            .add_tokens(&["P0300", "<|obd|>", "P0300", "<|endoftext|>"], false)
            .unwrap();
        assert_eq!(report.old_vocab_size, before);
        assert_eq!(report.new_vocab_size, before + 2);
        let ids: Vec<u32> = report.added.iter().map(|(_, id)| *id).collect();
        assert_eq!(ids, [before as u32, before as u32 + 1]);
        assert_eq!(report.existing, [("<|endoftext|>".to_string(), 0)]);
        assert_eq!(report.rows_to_grow(before), 2);
        assert_eq!(report.rows_to_grow(before + 64), 0);
        assert_eq!(
            tk.encode("see P0300 now", false)
                .unwrap()
                .iter()
                .filter(|&&i| i == ids[0])
                .count(),
            1
        );
        let special = tk.add_tokens(&["<|code|>"], true).unwrap();
        let id = special.added[0].1;
        let enc = tk.encode("x<|code|>", false).unwrap();
        assert_eq!(enc.last(), Some(&id));
        assert_eq!(tk.decode(&enc, true).unwrap(), "x");
        assert!(tk.add_tokens(&[""], false).is_err());
    }
}
