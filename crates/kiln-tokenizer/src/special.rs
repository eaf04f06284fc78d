//! Special tokens and the BOS/EOS post-processor, as `transformers` sets them up; shared by
//! loading a `tokenizer.json` directory and building a tokenizer from GGUF metadata.

use tokenizers::AddedToken;
use tokenizers::processors::template::TemplateProcessing;

use crate::{Result, TokenizerError};

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
