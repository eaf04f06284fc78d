//! Tokenizers built from the tokenizer metadata of GGUF files (`tokenizer.ggml.*`).
//!
//! A GGUF file carries no `tokenizer.json`: it stores the vocabulary, the merges or scores, the
//! token types and the special token ids under llama.cpp's key names. [`GgufTokenizerSpec`] holds
//! those values (read by any GGUF reader), and [`Tokenizer::from_gguf_spec`] builds the same
//! tokenizer Hugging Face `transformers` builds from the file
//! (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`):
//!
//! * `gpt2` vocabularies: byte-level BPE with the file's merges, the GPT-2 `ByteLevel`
//!   pre-tokenizer (no prefix space) and decoder, or, for the `tokenizer.ggml.pre` kinds that need
//!   one (`llama-bpe`, `qwen2`, `gpt-4o`...), that vocabulary's split regex before a regex-less
//!   `ByteLevel`;
//! * `llama` (SentencePiece) vocabularies: BPE with byte fallback and merges from the file or, when
//!   it has none, derived from the token scores; `▁` metaspace pre-tokenization (prepended to the
//!   first word only) and the matching decoder; the Gemma and Phi-3 variants are picked by
//!   [`GgufTokenizerSpec::architecture`];
//! * `gemma4` vocabularies: Gemma's SentencePiece BPE, without a BOS.
//!
//! Tokens of type control (3) become special added tokens and tokens of type user-defined (4)
//! plain added tokens, so neither is ever split. The named special tokens (BOS, EOS, unknown,
//! padding) are registered as special, and a BOS and/or EOS is added around encodings as
//! `tokenizer.ggml.add_bos_token` / `add_eos_token` say (SentencePiece vocabularies add a BOS when
//! the file does not say).

use std::collections::HashMap;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip as StripDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::{ChatTemplate, Result, SpecialTokens, Tokenizer, TokenizerError};

/// Token types of `tokenizer.ggml.token_type`, as llama.cpp numbers them.
pub mod token_type {
    /// A regular token.
    pub const NORMAL: i32 = 1;
    /// The unknown token.
    pub const UNKNOWN: i32 = 2;
    /// A control token such as `<s>` or `<|im_end|>`: added as a special token.
    pub const CONTROL: i32 = 3;
    /// A user-defined token such as `<think>`: added as a (non-special) added token.
    pub const USER_DEFINED: i32 = 4;
    /// An unused slot.
    pub const UNUSED: i32 = 5;
    /// A byte-fallback token such as `<0x0A>`.
    pub const BYTE: i32 = 6;
}

/// The tokenizer metadata of a GGUF file, as plain values.
///
/// Fill it from a GGUF reader; every field names the key it comes from. Keys a file lacks stay
/// `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufTokenizerSpec {
    /// `tokenizer.ggml.model`: `"gpt2"` (byte-level BPE), `"llama"` (SentencePiece) or `"gemma4"`.
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer kind (`"llama-bpe"`, `"qwen2"`, `"smollm"`...).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: the vocabulary, indexed by token id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`: one [`token_type`] per token.
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges`: BPE merges, `"left right"` each, best first.
    pub merges: Option<Vec<String>>,
    /// `tokenizer.ggml.scores`: one score per token (SentencePiece vocabularies).
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_token_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unknown_token_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub padding_token_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos_token: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos_token: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// `general.architecture` (`"llama"`, `"gemma3"`, `"phi3"`...): Gemma and Phi-3 files use
    /// variants of the SentencePiece tokenizer.
    pub architecture: Option<String>,
}

impl GgufTokenizerSpec {
    /// A spec with the given model kind and vocabulary, every other field unset.
    pub fn new(model: impl Into<String>, tokens: Vec<String>) -> Self {
        Self {
            model: model.into(),
            tokens,
            ..Self::default()
        }
    }
}

const TOKENS: &str = "tokenizer.ggml.tokens";
const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const MERGES: &str = "tokenizer.ggml.merges";
const SCORES: &str = "tokenizer.ggml.scores";
const MODEL: &str = "tokenizer.ggml.model";

fn spec_error(field: &str, message: impl Into<String>) -> TokenizerError {
    TokenizerError::Spec {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Which `transformers` tokenizer class a GGUF vocabulary is handed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `GPT2Tokenizer`: byte-level BPE.
    ByteLevel,
    /// `LlamaTokenizer`: SentencePiece BPE with metaspace.
    Llama,
    /// `LlamaTokenizer` with Phi-3's normalizer instead of the metaspace pre-tokenizer.
    Phi3,
    /// `GemmaTokenizer` on respelled tokens, merges ordered by position.
    Gemma,
    /// `GemmaTokenizer` as it is (`tokenizer.ggml.model = "gemma4"`).
    Gemma4,
}

impl Kind {
    fn of(spec: &GgufTokenizerSpec) -> Result<Self> {
        let architecture = spec.architecture.as_deref().unwrap_or_default();
        match spec.model.as_str() {
            "gpt2" => Ok(Self::ByteLevel),
            "llama" => Ok(match architecture {
                "gemma" | "gemma2" | "gemma3" => Self::Gemma,
                "phi3" => Self::Phi3,
                _ => Self::Llama,
            }),
            "gemma4" => Ok(Self::Gemma4),
            other => Err(spec_error(
                MODEL,
                format!("unsupported tokenizer model {other:?} (supported: gpt2, llama, gemma4)"),
            )),
        }
    }

    /// The special tokens the `transformers` class defaults to, in the order it registers them.
    fn default_special_tokens(self) -> &'static [&'static str] {
        match self {
            Self::ByteLevel => &["<|endoftext|>"],
            Self::Llama | Self::Phi3 => &["<s>", "</s>", "<unk>"],
            Self::Gemma | Self::Gemma4 => &["<bos>", "<eos>", "<unk>", "<pad>", "<mask>"],
        }
    }
}

/// Split regexes of the `tokenizer.ggml.pre` kinds whose merges were learned on them.
fn split_regex(pre: &str) -> Option<&'static str> {
    const LLAMA3: &str = concat!(
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}",
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    );
    const TEKKEN: &str = concat!(
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+",
        r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*",
        r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    );
    const GPT4O: &str = concat!(
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    );
    const QWEN2: &str = concat!(
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}",
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    );
    const QWEN35: &str = concat!(
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}",
        r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    );
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3,
        "tekken" => TEKKEN,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2,
        "qwen35" => QWEN35,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O,
        _ => return None,
    })
}

/// GPT-2's byte-to-character table: every byte gets a printable character.
pub(crate) fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[usize::from(byte)] = if printable {
            char::from(byte)
        } else {
            let c = char::from_u32(256 + extra).unwrap_or('\u{FFFD}');
            extra += 1;
            c
        };
    }
    table
}

/// `{token: id}` with the last id of a repeated token, as a Python dict comprehension builds it.
fn vocab_of<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Result<Vocab> {
    let mut vocab = Vocab::default();
    for (id, token) in tokens.into_iter().enumerate() {
        let id = u32::try_from(id).map_err(|_| spec_error(TOKENS, "more than 2^32 tokens"))?;
        vocab.insert(token.to_owned(), id);
    }
    Ok(vocab)
}

fn parse_merges(merges: &[String]) -> Result<Vec<(String, String)>> {
    merges
        .iter()
        .enumerate()
        .map(|(i, merge)| {
            let mut parts = merge.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(left), Some(right), None) => Ok((left.to_owned(), right.to_owned())),
                _ => Err(spec_error(
                    MERGES,
                    format!("merge {i} ({merge:?}) is not two tokens separated by one space"),
                )),
            }
        })
        .collect()
}

/// BPE merges implied by a vocabulary: every split of a token into two vocabulary tokens, ranked
/// by `scores` (best first), then by the lengths of the two halves; ties keep vocabulary order.
/// This is `transformers`' `generate_merges(vocab, vocab_scores)`.
fn derive_merges(vocab: &Vocab, scores: &[(&str, f64)]) -> Vec<(String, String)> {
    let mut merges: Vec<(&str, &str, f64)> = Vec::new();
    for &(token, score) in scores {
        let mut local: Vec<(&str, &str, u32, u32)> = Vec::new();
        for (split, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(split);
            if let (Some(&l), Some(&r)) = (vocab.get(left), vocab.get(right)) {
                local.push((left, right, l, r));
            }
        }
        local.sort_by_key(|&(_, _, l, r)| (l, r));
        merges.extend(local.into_iter().map(|(l, r, _, _)| (l, r, score)));
    }
    merges.sort_by(|a, b| {
        b.2.partial_cmp(&a.2)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| b.0.chars().count().cmp(&a.0.chars().count()))
            .then_with(|| b.1.chars().count().cmp(&a.1.chars().count()))
    });
    merges
        .into_iter()
        .map(|(l, r, _)| (l.to_owned(), r.to_owned()))
        .collect()
}

/// `(token, score)` in first-seen order with the last score of a repeated token, as
/// `dict(zip(tokens, scores))` builds it.
fn ordered_scores<'a>(pairs: impl IntoIterator<Item = (&'a str, f64)>) -> Vec<(&'a str, f64)> {
    let mut position: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<(&str, f64)> = Vec::new();
    for (token, score) in pairs {
        match position.get(token) {
            Some(&i) => out[i].1 = score,
            None => {
                position.insert(token, out.len());
                out.push((token, score));
            }
        }
    }
    out
}

fn bpe_error(e: impl std::fmt::Display) -> TokenizerError {
    spec_error(MERGES, format!("cannot build the BPE model: {e}"))
}

fn sentencepiece_merges(spec: &GgufTokenizerSpec, vocab: &Vocab) -> Result<Vec<(String, String)>> {
    if let Some(merges) = &spec.merges {
        return parse_merges(merges);
    }
    let scores = spec.scores.as_ref().ok_or_else(|| {
        spec_error(
            SCORES,
            "missing; a SentencePiece vocabulary without tokenizer.ggml.merges needs scores",
        )
    })?;
    let pairs = spec
        .tokens
        .iter()
        .map(String::as_str)
        .zip(scores.iter().map(|&s| f64::from(s)));
    Ok(derive_merges(vocab, &ordered_scores(pairs)))
}

fn metaspace_decoder(strip_prefix: bool) -> DecoderWrapper {
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("\u{2581}", " ")
            .expect("a literal replace pattern is valid")
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if strip_prefix {
        decoders.push(StripDecoder::new(' ', 1, 0).into());
    }
    DecoderSequence::new(decoders).into()
}

/// The model, normalizer, pre-tokenizer and decoder of the `transformers` class for `kind`.
fn base_tokenizer(spec: &GgufTokenizerSpec, kind: Kind) -> Result<tokenizers::Tokenizer> {
    match kind {
        Kind::ByteLevel => {
            let table = bytes_to_unicode();
            let alphabet: std::collections::HashSet<char> = table.iter().copied().collect();
            let spelled: Vec<String> = spec
                .tokens
                .iter()
                .map(|token| {
                    if token.chars().all(|c| alphabet.contains(&c)) {
                        token.clone()
                    } else {
                        token.bytes().map(|b| table[usize::from(b)]).collect()
                    }
                })
                .collect();
            let vocab = vocab_of(spelled.iter().map(String::as_str))?;
            let merges = spec
                .merges
                .as_ref()
                .ok_or_else(|| spec_error(MERGES, "missing; a gpt2 tokenizer needs its merges"))?;
            let bpe = BPE::builder()
                .vocab_and_merges(vocab, parse_merges(merges)?)
                .continuing_subword_prefix(String::new())
                .end_of_word_suffix(String::new())
                .fuse_unk(false)
                .build()
                .map_err(bpe_error)?;
            let mut tk = tokenizers::Tokenizer::new(bpe);
            tk.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
            tk.with_decoder(Some(ByteLevel::default()));
            Ok(tk)
        }
        Kind::Llama | Kind::Phi3 => {
            let vocab = vocab_of(spec.tokens.iter().map(String::as_str))?;
            let merges = sentencepiece_merges(spec, &vocab)?;
            let bpe = BPE::builder()
                .vocab_and_merges(vocab, merges)
                .fuse_unk(true)
                .byte_fallback(true)
                .build()
                .map_err(bpe_error)?;
            let mut tk = tokenizers::Tokenizer::new(bpe);
            tk.with_decoder(Some(metaspace_decoder(true)));
            if kind == Kind::Phi3 {
                let prepend = Prepend::new("\u{2581}".to_owned());
                let replace = Replace::new(" ", "\u{2581}").expect("a literal pattern is valid");
                tk.with_normalizer(Some(NormalizerSequence::new(vec![
                    prepend.into(),
                    replace.into(),
                ])));
            } else {
                tk.with_pre_tokenizer(Some(Metaspace::new(
                    '\u{2581}',
                    PrependScheme::First,
                    false,
                )));
            }
            Ok(tk)
        }
        Kind::Gemma | Kind::Gemma4 => {
            let tokens: Vec<String> = if kind == Kind::Gemma {
                // Tokens of two or more spaces are stored as spaces but looked up as `▁`s.
                spec.tokens
                    .iter()
                    .map(|t| {
                        if t.contains(' ') && t.trim().is_empty() {
                            "\u{2581}".repeat(t.chars().count())
                        } else {
                            t.clone()
                        }
                    })
                    .collect()
            } else {
                spec.tokens.clone()
            };
            let vocab = vocab_of(tokens.iter().map(String::as_str))?;
            let merges = match (&spec.merges, kind) {
                (Some(merges), _) => parse_merges(merges)?,
                (None, Kind::Gemma) => {
                    // Gemma's merge order is the token order, not its scores.
                    let positions = ordered_scores(
                        tokens
                            .iter()
                            .enumerate()
                            .map(|(i, t)| (t.as_str(), -(i as f64))),
                    );
                    derive_merges(&vocab, &positions)
                }
                (None, _) => sentencepiece_merges(spec, &vocab)?,
            };
            let bpe = BPE::builder()
                .vocab_and_merges(vocab, merges)
                .fuse_unk(true)
                .unk_token("<unk>".to_owned())
                .byte_fallback(true)
                .build()
                .map_err(bpe_error)?;
            let mut tk = tokenizers::Tokenizer::new(bpe);
            let split = Split::new(" ", SplitDelimiterBehavior::MergedWithPrevious, false)
                .expect("a literal split pattern is valid");
            tk.with_pre_tokenizer(Some(split));
            tk.with_decoder(Some(metaspace_decoder(false)));
            tk.with_normalizer(Some(
                Replace::new(" ", "\u{2581}").expect("a literal pattern is valid"),
            ));
            Ok(tk)
        }
    }
}

/// Registers `tokens` as special added tokens unless already added, as `transformers` does for
/// its named special tokens.
pub(crate) fn add_named_special_tokens<'a>(
    tk: &mut tokenizers::Tokenizer,
    tokens: impl IntoIterator<Item = &'a str>,
) {
    for token in tokens {
        if !tk.get_added_vocabulary().get_vocab().contains_key(token) {
            tk.add_tokens(&[AddedToken::from(token, true)]);
        }
    }
}

/// The `TemplateProcessing` post-processor `transformers` sets for `add_bos` / `add_eos`.
pub(crate) fn bos_eos_post_processor(
    tk: &tokenizers::Tokenizer,
    bos: Option<&str>,
    eos: Option<&str>,
) -> Result<TemplateProcessing> {
    let mut special: Vec<(String, u32)> = Vec::new();
    for token in [bos, eos].into_iter().flatten() {
        if token.contains([' ', ':']) {
            return Err(TokenizerError::Codec(format!(
                "special token {token:?} cannot be added by the post-processor (contains a space or ':')"
            )));
        }
        let id = tk.token_to_id(token).ok_or_else(|| {
            TokenizerError::Codec(format!("special token {token:?} is not in the vocabulary"))
        })?;
        special.push((token.to_owned(), id));
    }
    let pieces = |seq: &str, type_id: u32| {
        let mut out = Vec::new();
        if let Some(bos) = bos {
            out.push(format!("{bos}:{type_id}"));
        }
        out.push(format!("{seq}:{type_id}"));
        if let Some(eos) = eos {
            out.push(format!("{eos}:{type_id}"));
        }
        out
    };
    let single = pieces("$A", 0);
    let mut pair = pieces("$A", 0);
    pair.extend(pieces("$B", 1));
    TemplateProcessing::builder()
        .try_single(single)
        .and_then(|b| b.try_pair(pair))
        .map_err(TokenizerError::Codec)?
        .special_tokens(special)
        .build()
        .map_err(|e| TokenizerError::Codec(e.to_string()))
}

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
            .map_err(|e| spec_error("tokenizer.chat_template", e.to_string()))?;

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

        add_named_special_tokens(
            &mut tk,
            [
                &special.bos_token,
                &special.eos_token,
                &special.unk_token,
                &special.pad_token,
            ]
            .into_iter()
            .flatten()
            .map(String::as_str),
        );

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

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn byte_table_matches_gpt2() {
        let table = bytes_to_unicode();
        assert_eq!(table[usize::from(b' ')], '\u{120}');
        assert_eq!(table[usize::from(b'\n')], '\u{10a}');
        assert_eq!(table[usize::from(b'a')], 'a');
        assert_eq!(table[0xAD], '\u{143}');
        let distinct: std::collections::HashSet<char> = table.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn merges_are_derived_from_scores() {
        let tokens = ["a", "b", "c", "ab", "abc", "bc"];
        let vocab = vocab_of(tokens).unwrap();
        let scores = ordered_scores(
            tokens
                .iter()
                .copied()
                .zip([0.0, 0.0, 0.0, -1.0, -3.0, -2.0]),
        );
        let merges = derive_merges(&vocab, &scores);
        let want = [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(l, r)| ((*l).to_owned(), (*r).to_owned()))
            .collect();
        assert_eq!(merges, want);
    }

    #[test]
    fn malformed_specs_name_the_field() {
        let gpt2 = GgufTokenizerSpec::new("gpt2", strings(&["a", "b"]));
        let err = Tokenizer::from_gguf_spec(&gpt2).unwrap_err().to_string();
        assert!(err.contains("tokenizer.ggml.merges"), "{err}");

        let bad_merge = GgufTokenizerSpec {
            merges: Some(strings(&["a b c"])),
            ..gpt2.clone()
        };
        let err = Tokenizer::from_gguf_spec(&bad_merge)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tokenizer.ggml.merges"), "{err}");

        let unknown_merge = GgufTokenizerSpec {
            merges: Some(strings(&["a z"])),
            ..gpt2.clone()
        };
        let err = Tokenizer::from_gguf_spec(&unknown_merge)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tokenizer.ggml.merges"), "{err}");

        let out_of_range = GgufTokenizerSpec {
            merges: Some(vec![]),
            eos_token_id: Some(2),
            ..gpt2.clone()
        };
        let err = Tokenizer::from_gguf_spec(&out_of_range)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tokenizer.ggml.eos_token_id"), "{err}");

        let types = GgufTokenizerSpec {
            merges: Some(vec![]),
            token_types: Some(vec![1]),
            ..gpt2.clone()
        };
        let err = Tokenizer::from_gguf_spec(&types).unwrap_err().to_string();
        assert!(err.contains("tokenizer.ggml.token_type"), "{err}");

        let unknown = GgufTokenizerSpec::new("wordpiece", strings(&["a"]));
        let err = Tokenizer::from_gguf_spec(&unknown).unwrap_err().to_string();
        assert!(err.contains("tokenizer.ggml.model"), "{err}");

        let empty = GgufTokenizerSpec::new("llama", vec![]);
        let err = Tokenizer::from_gguf_spec(&empty).unwrap_err().to_string();
        assert!(err.contains("tokenizer.ggml.tokens"), "{err}");

        let no_scores = GgufTokenizerSpec::new("llama", strings(&["<unk>", "a"]));
        let err = Tokenizer::from_gguf_spec(&no_scores)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tokenizer.ggml.scores"), "{err}");

        let colon_bos = GgufTokenizerSpec {
            scores: Some(vec![0.0, 0.0]),
            bos_token_id: Some(1),
            ..GgufTokenizerSpec::new("llama", strings(&["<unk>", "<s:>"]))
        };
        let err = Tokenizer::from_gguf_spec(&colon_bos)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tokenizer.ggml.bos_token_id"), "{err}");

        let template = GgufTokenizerSpec {
            merges: Some(vec![]),
            chat_template: Some("{% for %}".into()),
            ..gpt2
        };
        let err = Tokenizer::from_gguf_spec(&template)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tokenizer.chat_template"), "{err}");
    }

    #[test]
    fn sentencepiece_vocab_adds_bos_and_metaspace() {
        let tokens = strings(&[
            "<unk>",
            "<s>",
            "</s>",
            "\u{2581}",
            "h",
            "i",
            "\u{2581}h",
            "\u{2581}hi",
            "<0x21>",
        ]);
        let mut types = vec![token_type::NORMAL; tokens.len()];
        types[0] = token_type::UNKNOWN;
        types[1] = token_type::CONTROL;
        types[2] = token_type::CONTROL;
        types[8] = token_type::BYTE;
        let spec = GgufTokenizerSpec {
            token_types: Some(types),
            scores: Some(vec![0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0, 0.0]),
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            unknown_token_id: Some(0),
            ..GgufTokenizerSpec::new("llama", tokens)
        };
        let tk = Tokenizer::from_gguf_spec(&spec).unwrap();
        assert_eq!(tk.encode("hi!", true).unwrap(), [1, 7, 8]);
        assert_eq!(tk.decode(&[1, 7, 8], true).unwrap(), "hi!");
        assert_eq!(tk.bos_token_id(), Some(1));
        assert_eq!(tk.unk_token_id(), Some(0));
        assert_eq!(tk.pad_token_id(), None);
    }
}
