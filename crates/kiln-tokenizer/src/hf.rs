//! Loading a tokenizer from a Hugging Face model directory.

use std::path::Path;

use serde_json::Value as Json;

use crate::special::{add_named_special_tokens, bos_eos_post_processor};
use crate::{ChatTemplate, Result, SpecialTokens, Tokenizer, TokenizerError};

fn load_error(path: &Path, message: impl Into<String>) -> TokenizerError {
    TokenizerError::Load {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// A JSON file of the directory, or `None` when it does not exist.
fn read_json(path: &Path) -> Result<Option<Json>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| load_error(path, e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(load_error(path, e.to_string())),
    }
}

/// A special token as `tokenizer_config.json` writes it: a string or an `AddedToken` object.
fn token_text(value: &Json) -> Option<&str> {
    match value {
        Json::String(s) => Some(s),
        Json::Object(map) => map.get("content").and_then(Json::as_str),
        _ => None,
    }
}

/// The chat template of `tokenizer_config.json`: a string, or a list of named templates of which
/// the one named `default` is used.
fn config_template(value: &Json) -> Option<&str> {
    match value {
        Json::String(s) => Some(s),
        Json::Array(templates) => templates.iter().find_map(|t| {
            (t.get("name").and_then(Json::as_str) == Some("default"))
                .then(|| t.get("template").and_then(Json::as_str))
                .flatten()
        }),
        _ => None,
    }
}

impl Tokenizer {
    /// Loads the tokenizer of a Hugging Face model directory: `tokenizer.json`, the named special
    /// tokens of `tokenizer_config.json` (or `special_tokens_map.json`), and the chat template of
    /// `chat_template.jinja`, `tokenizer_config.json` or `chat_template.json`.
    ///
    /// As `transformers` does, encodings are neither padded nor truncated whatever
    /// `tokenizer.json` says, named special tokens missing from the added tokens are added as
    /// special, and when `tokenizer_config.json` sets `add_bos_token` or `add_eos_token` (or
    /// `tokenizer.json` has no post-processor) the post-processor adds exactly those tokens.
    /// The pipeline is otherwise `tokenizer.json`'s as serialized.
    ///
    /// # Errors
    /// [`TokenizerError::Load`] for a missing `tokenizer.json` or an unreadable file;
    /// [`TokenizerError::Template`] for a chat template that does not compile.
    pub fn from_hf_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mut tokenizer = Self::from_file(dir.join("tokenizer.json"))?;
        let config_path = dir.join("tokenizer_config.json");
        let config = read_json(&config_path)?.unwrap_or(Json::Null);
        let map = read_json(&dir.join("special_tokens_map.json"))?.unwrap_or(Json::Null);
        let named = |name: &str| {
            config
                .get(name)
                .and_then(token_text)
                .or_else(|| map.get(name).and_then(token_text))
                .map(str::to_owned)
        };
        let special = SpecialTokens {
            bos_token: named("bos_token"),
            eos_token: named("eos_token"),
            unk_token: named("unk_token"),
            pad_token: named("pad_token"),
        };
        let others: Vec<String> = ["sep_token", "cls_token", "mask_token"]
            .into_iter()
            .filter_map(named)
            .collect();
        let extra: Vec<String> = ["additional_special_tokens", "extra_special_tokens"]
            .into_iter()
            .filter_map(|key| config.get(key).or_else(|| map.get(key)))
            .filter_map(Json::as_array)
            .flatten()
            .filter_map(token_text)
            .map(str::to_owned)
            .collect();

        let inner = &mut tokenizer.inner;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| TokenizerError::Codec(e.to_string()))?;
        add_named_special_tokens(
            inner,
            special
                .named()
                .chain(others.iter().chain(&extra).map(String::as_str)),
        );

        let flag = |name: &str| config.get(name).and_then(Json::as_bool);
        let (add_bos, add_eos) = (flag("add_bos_token"), flag("add_eos_token"));
        if add_bos.is_some() || add_eos.is_some() || inner.get_post_processor().is_none() {
            let post = bos_eos_post_processor(
                inner,
                special
                    .bos_token
                    .as_deref()
                    .filter(|_| add_bos.unwrap_or(false)),
                special
                    .eos_token
                    .as_deref()
                    .filter(|_| add_eos.unwrap_or(false)),
            )?;
            inner.with_post_processor(Some(post));
        }

        let jinja = dir.join("chat_template.jinja");
        let template = match std::fs::read_to_string(&jinja) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match config.get("chat_template").and_then(config_template) {
                    Some(t) => Some(t.to_owned()),
                    None => read_json(&dir.join("chat_template.json"))?
                        .as_ref()
                        .and_then(|j| j.get("chat_template"))
                        .and_then(config_template)
                        .map(str::to_owned),
                }
            }
            Err(e) => return Err(load_error(&jinja, e.to_string())),
        };
        tokenizer.special = special;
        tokenizer.chat_template = template.map(ChatTemplate::new).transpose()?;
        Ok(tokenizer)
    }
}
