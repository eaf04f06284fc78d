//! The BPE model, normalizer, pre-tokenizer and decoder of each `transformers` tokenizer class:
//! byte-level BPE (GPT-2), SentencePiece BPE with metaspace (Llama, Phi-3) and Gemma's.

use tokenizers::DecoderWrapper;
use tokenizers::SplitDelimiterBehavior;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip as StripDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::split::Split;

use super::kind::Kind;
use super::merges::{derive_merges, ordered_scores, parse_merges, sentencepiece_merges, vocab_of};
use super::{GgufTokenizerSpec, MERGES, spec_error};
use crate::{Result, TokenizerError};

/// GPT-2's byte-to-character table: every byte gets a printable character.
pub(super) fn bytes_to_unicode() -> [char; 256] {
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

fn bpe_error(e: impl std::fmt::Display) -> TokenizerError {
    spec_error(MERGES, format!("cannot build the BPE model: {e}"))
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
pub(super) fn base_tokenizer(
    spec: &GgufTokenizerSpec,
    kind: Kind,
) -> Result<tokenizers::Tokenizer> {
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
