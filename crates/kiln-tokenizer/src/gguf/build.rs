//! [`Tokenizer::from_gguf_spec`]: checks a spec, builds the base tokenizer of its class and adds
//! the control, user-defined and named special tokens and the BOS/EOS post-processor.

use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::kind::{Kind, split_regex};
use super::models::{base_tokenizer, bytes_to_unicode};
use super::{GgufTokenizerSpec, SCORES, TOKEN_TYPE, TOKENS, spec_error, token_type};
use crate::special::{add_named_special_tokens, bos_eos_post_processor};
use crate::{ChatTemplate, Result, SpecialTokens, Tokenizer, TokenizerError};

fn check_id(field: &str, id: Option<u32>, len: usize) -> Result<Option<u32>> {
    match id {
        Some(id) if usize::try_from(id).map_or(true, |i| i >= len) => Err(spec_error(
            field,
            format!("token id {id} is out of range (the vocabulary has {len} tokens)"),
        )),
        _ => Ok(id),
    }
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF file describes, as `transformers` builds it from that file.
    ///
    /// ```
    /// use kiln_tokenizer::{GgufTokenizerSpec, Tokenizer};
    ///
    /// // A byte-level BPE vocabulary: "a", "b", "ab", "Ġ" (the space byte) and one control token.
    /// let tokens = ["<|endoftext|>", "a", "b", "ab", "Ġ"].map(String::from).to_vec();
    /// let spec = GgufTokenizerSpec {
    ///     token_types: Some(vec![3, 1, 1, 1, 1]),
    ///     merges: Some(vec!["a b".into()]),
    ///     eos_token_id: Some(0),
    ///     ..GgufTokenizerSpec::new("gpt2", tokens)
    /// };
    /// let tokenizer = Tokenizer::from_gguf_spec(&spec).unwrap();
    /// assert_eq!(tokenizer.encode("ab a<|endoftext|>", false).unwrap(), [3, 4, 1, 0]);
    /// assert_eq!(tokenizer.eos_token_id(), Some(0));
    /// ```
    ///
    /// # Errors
    /// [`TokenizerError::Spec`], naming the GGUF key, for a malformed spec: an unknown
    /// `tokenizer.ggml.model`, an empty vocabulary, per-token arrays of the wrong length, a special
    /// token id out of range, missing or malformed merges (or scores, for a SentencePiece
    /// vocabulary without merges), or a chat template that does not compile.
    pub fn from_gguf_spec(spec: &GgufTokenizerSpec) -> Result<Self> {
        let n = spec.tokens.len();
        if n == 0 {
            return Err(spec_error(TOKENS, "the vocabulary is empty"));
        }
        if let Some(types) = &spec.token_types
            && types.len() != n
        {
            return Err(spec_error(
                TOKEN_TYPE,
                format!("{} token types for {n} tokens", types.len()),
            ));
        }
        if let Some(scores) = &spec.scores
            && scores.len() != n
        {
            return Err(spec_error(
                SCORES,
                format!("{} scores for {n} tokens", scores.len()),
            ));
        }
        if let Some((id, _)) = spec
            .scores
            .iter()
            .flatten()
            .enumerate()
            .find(|(_, score)| score.is_nan())
        {
            return Err(spec_error(
                SCORES,
                format!("the score of token {id} ({:?}) is NaN", spec.tokens[id]),
            ));
        }
        let bos = check_id("tokenizer.ggml.bos_token_id", spec.bos_token_id, n)?;
        let eos = check_id("tokenizer.ggml.eos_token_id", spec.eos_token_id, n)?;
        let unk = check_id("tokenizer.ggml.unknown_token_id", spec.unknown_token_id, n)?;
        let pad = check_id("tokenizer.ggml.padding_token_id", spec.padding_token_id, n)?;
        let kind = Kind::of(spec)?;
        let token = |id: Option<u32>| id.map(|id| spec.tokens[id as usize].clone());
        let special = SpecialTokens {
            bos_token: token(bos),
            eos_token: token(eos),
            unk_token: token(unk),
            pad_token: token(pad),
        };
        let chat_template = spec
            .chat_template
            .as_deref()
            .map(ChatTemplate::new)
            .transpose()
            .map_err(|e| spec_error("tokenizer.chat_template", e.to_string()))?
            .or_else(|| {
                // Gemma base models ship without one; their instruction format is known.
                spec.architecture
                    .as_deref()
                    .is_some_and(|a| a.starts_with("gemma"))
                    .then(ChatTemplate::gemma)
            });

        let mut tk = base_tokenizer(spec, kind)?;
        add_named_special_tokens(&mut tk, kind.default_special_tokens().iter().copied());

        // Control tokens are special added tokens; in a byte-level vocabulary, one written with
        // characters outside the byte alphabet is a mislabel and is skipped.
        let types = spec.token_types.as_deref().unwrap_or_default();
        let alphabet: std::collections::HashSet<char> =
            bytes_to_unicode().iter().copied().collect();
        let control: Vec<AddedToken> = spec
            .tokens
            .iter()
            .zip(types)
            .filter(|&(t, &ty)| {
                ty == token_type::CONTROL
                    && (kind != Kind::ByteLevel || t.chars().all(|c| alphabet.contains(&c)))
            })
            .map(|(t, _)| AddedToken::from(t.as_str(), true))
            .collect();
        if !control.is_empty() {
            tk.add_special_tokens(&control);
        }
        let vocab = tk.get_vocab(true);
        let user_defined: Vec<AddedToken> = spec
            .tokens
            .iter()
            .zip(types)
            .filter(|&(t, &ty)| ty == token_type::USER_DEFINED && vocab.contains_key(t))
            .map(|(t, _)| AddedToken::from(t.as_str(), false).normalized(false))
            .collect();
        if !user_defined.is_empty() {
            tk.add_tokens(&user_defined);
        }

        if let Some(regex) = spec.pre.as_deref().and_then(split_regex) {
            let split = Split::new(
                SplitPattern::Regex(regex.to_owned()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| TokenizerError::Codec(e.to_string()))?;
            let pre: Vec<PreTokenizerWrapper> =
                vec![split.into(), ByteLevel::new(false, true, false).into()];
            tk.with_pre_tokenizer(Some(PreTokenizerSequence::new(pre)));
        }

        add_named_special_tokens(&mut tk, special.named());

        let add_bos = match kind {
            Kind::Gemma4 => false,
            Kind::ByteLevel => spec.add_bos_token.unwrap_or(false),
            _ => spec.add_bos_token.unwrap_or(true),
        };
        let add_eos = spec.add_eos_token.unwrap_or(false);
        for (field, token, added) in [
            ("tokenizer.ggml.bos_token_id", &special.bos_token, add_bos),
            ("tokenizer.ggml.eos_token_id", &special.eos_token, add_eos),
        ] {
            if let Some(token) = token.as_deref().filter(|_| added)
                && token.contains([' ', ':'])
            {
                return Err(spec_error(
                    field,
                    format!(
                        "{token:?} cannot be added around encodings (it contains a space or ':')"
                    ),
                ));
            }
        }
        let post = bos_eos_post_processor(
            &tk,
            special.bos_token.as_deref().filter(|_| add_bos),
            special.eos_token.as_deref().filter(|_| add_eos),
        )?;
        tk.with_post_processor(Some(post));

        Ok(Self {
            inner: tk,
            special,
            chat_template,
        })
    }
}
