//! Preference pairs: a prompt with a chosen and a rejected completion (DPO, IPO, SimPO, reward
//! models), read from TRL's preference format, tokenized and batched.
//!
//! A record is `{"prompt", "chosen", "rejected"}` (field names configurable), in either of TRL's
//! forms:
//! - **plain**: three strings. The prompt goes through the recipe's prompt style (a chat
//!   template with its system message, a template, or raw) like a prompt/completion record;
//!   each completion ends with EOS.
//! - **conversational**: `prompt` a list of messages, `chosen` and `rejected` lists of assistant
//!   messages (or strings). The conversation is rendered with the tokenizer's chat template; the
//!   recipe's system message is put first when the prompt has none.
//!
//! Other fields are ignored, so the feedback file `kiln serve` writes is read as it is. Each
//! side is tokenized whole (prompt + completion); the completion is the final labelled span,
//! and the tokens before it must be the same for both sides.

use std::path::Path;

use kiln_tokenizer::ChatMessage;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::format::{chosen_field, parse_messages, prompt_field, rejected_field};
use crate::{
    Content, DataError, Encoder, Example, Formatter, IGNORE_INDEX, PromptStyle, Record, Result,
    SourceKind, TokenBatch, TokenizedExample, Truncation, read_records,
};

/// The field names of preference records (TRL's by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferenceFields {
    /// Field of the prompt (`prompt`).
    #[serde(default = "prompt_field")]
    pub prompt: String,
    /// Field of the preferred completion (`chosen`).
    #[serde(default = "chosen_field")]
    pub chosen: String,
    /// Field of the other completion (`rejected`).
    #[serde(default = "rejected_field")]
    pub rejected: String,
}

impl Default for PreferenceFields {
    fn default() -> Self {
        Self {
            prompt: prompt_field(),
            chosen: chosen_field(),
            rejected: rejected_field(),
        }
    }
}

impl PreferenceFields {
    /// Whether `record` has the chosen and rejected fields (how preference data is recognized).
    pub fn matches(&self, record: &Record) -> bool {
        record.get(&self.chosen).is_some() && record.get(&self.rejected).is_some()
    }
}

/// A preference record formatted: the prompt with each completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferenceExample {
    /// The prompt and the chosen completion.
    pub chosen: Example,
    /// The prompt and the rejected completion.
    pub rejected: Example,
}

impl Formatter {
    /// Formats a preference record: plain (three strings; the formatter's prompt style renders
    /// the prompt, like a prompt/completion record) or conversational (`prompt` a list of
    /// messages, rendered with the chat template; the style's system message goes first when
    /// the prompt has none).
    ///
    /// # Errors
    /// [`DataError::Field`] naming the file, line and field of a missing or mistyped field.
    pub fn preference(
        &self,
        record: &Record,
        fields: &PreferenceFields,
    ) -> Result<PreferenceExample> {
        let side = |field: &str| -> Result<Example> {
            let content = match record.get(&fields.prompt) {
                Some(Value::Array(_)) => {
                    let mut messages = parse_messages(record, &fields.prompt)?;
                    if let PromptStyle::ChatTemplate { system: Some(s) } = self.style()
                        && !messages.iter().any(|m| m.role == "system")
                    {
                        messages.insert(0, ChatMessage::system(s.clone()));
                    }
                    let answer = match record.get(field) {
                        Some(Value::Array(_)) => parse_messages(record, field)?,
                        _ => vec![ChatMessage::assistant(record.text(field)?)],
                    };
                    if !answer.iter().any(|m| m.role == "assistant") {
                        return Err(record.field_error(field, "no assistant message"));
                    }
                    messages.extend(answer);
                    Content::Chat { messages }
                }
                Some(_) => {
                    if let Some(Value::Array(_)) = record.get(field) {
                        return Err(record.field_error(
                            field,
                            format!(
                                "a list of messages needs a conversational prompt, but `{}` is text",
                                fields.prompt
                            ),
                        ));
                    }
                    let prompt = record.text(&fields.prompt)?;
                    self.completion(record, &[("prompt", prompt)], record.text(field)?, false)?
                }
                None => return Err(record.field_error(&fields.prompt, "missing")),
            };
            Ok(Example {
                path: record.path.clone(),
                line: record.line,
                content,
            })
        };
        Ok(PreferenceExample {
            chosen: side(&fields.chosen)?,
            rejected: side(&fields.rejected)?,
        })
    }
}

/// Where the last labelled span of `t` starts.
fn final_span(t: &TokenizedExample) -> Option<usize> {
    let last = t.labels.iter().rposition(|&l| l != IGNORE_INDEX)?;
    let mut start = last;
    while start > 0 && t.labels[start - 1] != IGNORE_INDEX {
        start -= 1;
    }
    Some(start)
}

impl Encoder<'_> {
    /// Tokenizes both sides of a preference example into a [`PreferencePair`]: the prompt is
    /// everything before the final labelled span (the last completion), and must be the same
    /// tokens on both sides.
    ///
    /// # Errors
    /// As [`Encoder::encode`]; [`DataError::Field`] when a side has nothing to learn from or the
    /// two sides' prompts tokenize differently.
    pub fn encode_preference(&self, example: &PreferenceExample) -> Result<PreferencePair> {
        let chosen = self.encode(&example.chosen)?;
        let rejected = self.encode(&example.rejected)?;
        let error = |field: &str, reason: &str| DataError::Field {
            path: example.chosen.path.to_path_buf(),
            line: example.chosen.line,
            field: field.into(),
            reason: reason.into(),
        };
        let c = final_span(&chosen).ok_or_else(|| error("chosen", "no token to learn from"))?;
        let r = final_span(&rejected).ok_or_else(|| error("rejected", "no token to learn from"))?;
        if c != r || chosen.input_ids[..c] != rejected.input_ids[..r] {
            return Err(error(
                "prompt",
                "the prompt tokenizes differently before the chosen and the rejected completion",
            ));
        }
        Ok(PreferencePair {
            prompt: chosen.input_ids[..c].to_vec(),
            chosen: chosen.input_ids[c..].to_vec(),
            rejected: rejected.input_ids[c..].to_vec(),
            margin: None,
        })
    }
}

/// The optional field of a preference record that says by how much the chosen completion should
/// win (TRL's `margin`, used by reward-model training).
pub const MARGIN_FIELD: &str = "margin";

/// Reads the preference pairs of a data file (JSONL, JSON or CSV): each record formatted by
/// `formatter` with `fields` and tokenized by `encoder`, with its [`MARGIN_FIELD`] when present. A pair longer than `max_len` (prompt +
/// longer completion) follows `truncation`: an error naming the record, skipped, or cut
/// (`right` drops the completions' ends, `left` the prompt's start).
///
/// # Errors
/// The first malformed record (file, line and field), I/O errors, and [`DataError::Empty`]
/// when no pair is left.
pub fn read_preference_pairs(
    path: impl AsRef<Path>,
    formatter: &Formatter,
    encoder: &Encoder<'_>,
    fields: &PreferenceFields,
    max_len: Option<usize>,
    truncation: Truncation,
) -> Result<Vec<PreferencePair>> {
    let path = path.as_ref();
    let mut pairs = Vec::new();
    for record in read_records(path, SourceKind::from_path(path)?)? {
        let record = record?;
        let mut pair = encoder.encode_preference(&formatter.preference(&record, fields)?)?;
        pair.margin = match record.get(MARGIN_FIELD) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_f64().is_some_and(f64::is_finite) => {
                n.as_f64().map(|m| m as f32)
            }
            Some(other) => {
                return Err(record.field_error(
                    MARGIN_FIELD,
                    format!("must be a finite number, found {other}"),
                ));
            }
        };
        if let Some(max) = max_len
            && pair.len() > max
        {
            match truncation {
                Truncation::Error => {
                    return Err(DataError::TooLong {
                        path: path.to_path_buf(),
                        line: record.line,
                        len: pair.len(),
                        max,
                    });
                }
                Truncation::Skip => continue,
                Truncation::Right => {
                    let room = max.saturating_sub(pair.prompt.len());
                    if room == 0 {
                        return Err(record.field_error(
                            &fields.prompt,
                            format!(
                                "the prompt alone has {} tokens (max_len {max})",
                                pair.prompt.len()
                            ),
                        ));
                    }
                    pair.chosen.truncate(room);
                    pair.rejected.truncate(room);
                }
                Truncation::Left => {
                    let longest = pair.chosen.len().max(pair.rejected.len());
                    if longest >= max {
                        return Err(record.field_error(
                            &fields.chosen,
                            format!("a completion alone has {longest} tokens (max_len {max})"),
                        ));
                    }
                    let cut = pair.prompt.len() - (max - longest);
                    pair.prompt.drain(..cut);
                }
            }
        }
        pairs.push(pair);
    }
    if pairs.is_empty() {
        return Err(DataError::Empty(path.to_path_buf()));
    }
    Ok(pairs)
}

/// One tokenized preference pair.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferencePair {
    /// The prompt's tokens (no loss).
    pub prompt: Vec<u32>,
    /// The preferred completion's tokens (its end-of-sequence token included).
    pub chosen: Vec<u32>,
    /// The other completion's tokens.
    pub rejected: Vec<u32>,
    /// How much the chosen completion's reward should exceed the rejected one's (reward-model
    /// training; TRL's `margin`), when the record says.
    pub margin: Option<f32>,
}

impl PreferencePair {
    /// Tokens of the longer of the two sequences (prompt + completion).
    pub fn len(&self) -> usize {
        self.prompt.len() + self.chosen.len().max(self.rejected.len())
    }

    /// Whether both completions are empty.
    pub fn is_empty(&self) -> bool {
        self.chosen.is_empty() && self.rejected.is_empty()
    }
}

/// The batch of `pairs`: `2 · pairs.len()` rows, every prompt + chosen completion first, then
/// every prompt + rejected completion in the same order, right-padded with `pad_id`. Labels mark
/// the completion tokens only, so a row's labelled log-probabilities are its completion's.
///
/// # Shapes
/// `[2 · pairs, longest]`: row `i` is pair `i` chosen, row `pairs + i` pair `i` rejected.
///
/// # Errors
/// Never for well-formed pairs; shares [`TokenBatch::pad_right`]'s checks.
pub fn preference_batch(pairs: &[PreferencePair], pad_id: u32) -> Result<TokenBatch> {
    let rows: Vec<TokenizedExample> = pairs
        .iter()
        .map(|p| TokenizedExample::prompt_completion(&p.prompt, &p.chosen))
        .chain(
            pairs
                .iter()
                .map(|p| TokenizedExample::prompt_completion(&p.prompt, &p.rejected)),
        )
        .collect();
    TokenBatch::pad_right(&rows, pad_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::tests::tiny_tokenizer;
    use crate::{EncodeOptions, RecordFormat};
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix(".jsonl")
            .tempfile()
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    /// Plain and conversational records (the latter as `kiln serve` writes feedback, with extra
    /// fields) become pairs whose prompt is shared and whose completions end the sequences.
    #[test]
    fn reads_plain_and_conversational_records() {
        let tok = tiny_tokenizer();
        let encoder = Encoder::new(&tok, EncodeOptions::default());
        let raw = Formatter::new(RecordFormat::prompt_completion(), PromptStyle::Raw).unwrap();
        let f = file(concat!(
            r#"{"prompt": "ab", "chosen": "c", "rejected": "dd"}"#,
            "\n",
            r#"{"prompt": [{"role": "user", "content": "ab"}], "chosen": [{"role": "assistant", "content": "c"}], "rejected": [{"role": "assistant", "content": "d"}], "model": "base", "ids": ["x", "y"]}"#,
            "\n"
        ));
        let fields = PreferenceFields::default();
        let pairs =
            read_preference_pairs(f.path(), &raw, &encoder, &fields, None, Truncation::Error)
                .unwrap();
        assert_eq!(pairs.len(), 2);
        let eos = tok.eos_token_id().unwrap();
        for p in &pairs {
            assert!(!p.prompt.is_empty() && !p.chosen.is_empty() && !p.rejected.is_empty());
            assert_ne!(p.chosen, p.rejected);
        }
        // Plain: the completion tokens then EOS, after the prompt's tokens.
        assert_eq!(pairs[0].chosen.last(), Some(&eos));
        assert_eq!(pairs[0].rejected.last(), Some(&eos));
        let whole = encoder
            .encode(
                &raw.example(&Record::new(
                    "x",
                    1,
                    serde_json::from_str(r#"{"prompt": "ab", "completion": "c"}"#).unwrap(),
                ))
                .unwrap(),
            )
            .unwrap();
        let mut joined = pairs[0].prompt.clone();
        joined.extend(&pairs[0].chosen);
        assert_eq!(joined, whole.input_ids);
        // Conversational: the prompt is the template up to the assistant's turn, and each
        // completion is the assistant's content with the end of its turn.
        let text = |ids: &[u32]| tok.decode(ids, false).unwrap();
        assert!(
            text(&pairs[1].prompt).ends_with("<|im_start|>assistant\n"),
            "{:?}",
            text(&pairs[1].prompt)
        );
        assert!(
            text(&pairs[1].chosen).starts_with('c'),
            "{:?}",
            text(&pairs[1].chosen)
        );
        assert!(
            text(&pairs[1].rejected).starts_with('d'),
            "{:?}",
            text(&pairs[1].rejected)
        );
        assert!(text(&pairs[1].chosen).contains("<|im_end|>"));
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let tok = tiny_tokenizer();
        let encoder = Encoder::new(&tok, EncodeOptions::default());
        let raw = Formatter::new(RecordFormat::prompt_completion(), PromptStyle::Raw).unwrap();
        let fields = PreferenceFields::default();
        let read = |text: &str| {
            let f = file(text);
            let err = read_preference_pairs(
                f.path(),
                &raw,
                &encoder,
                &fields,
                Some(6),
                Truncation::Error,
            )
            .unwrap_err()
            .to_string();
            (err, f)
        };
        let (err, f) = read(
            "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n{\"prompt\": \"a\", \"chosen\": \"b\"}\n",
        );
        assert!(
            err.contains(&format!("{}:2", f.path().display())) && err.contains("rejected"),
            "{err}"
        );
        let (err, _) = read(
            "{\"prompt\": \"a\", \"chosen\": [{\"role\": \"assistant\", \"content\": \"b\"}], \"rejected\": \"c\"}\n",
        );
        assert!(
            err.contains(":1") && err.contains("conversational"),
            "{err}"
        );
        let (err, _) = read("{\"prompt\": \"aaaa\", \"chosen\": \"bbbb\", \"rejected\": \"c\"}\n");
        assert!(err.contains(":1") && err.contains("6"), "{err}");
    }

    #[test]
    fn chosen_rows_first_then_rejected() {
        let pairs = [
            PreferencePair {
                prompt: vec![1, 2],
                chosen: vec![3],
                rejected: vec![4, 5],
                margin: None,
            },
            PreferencePair {
                prompt: vec![6],
                chosen: vec![7, 8, 9],
                rejected: vec![10],
                margin: None,
            },
        ];
        let b = preference_batch(&pairs, 0).unwrap();
        assert_eq!(
            b.input_ids,
            vec![
                vec![1, 2, 3, 0],
                vec![6, 7, 8, 9],
                vec![1, 2, 4, 5],
                vec![6, 10, 0, 0]
            ]
        );
        let m = IGNORE_INDEX;
        assert_eq!(b.labels[0], vec![m, m, 3, m]);
        assert_eq!(b.labels[3], vec![m, 10, m, m]);
        assert_eq!(b.attention_mask[3], vec![1, 1, 0, 0]);
        assert_eq!(pairs[1].len(), 4);
    }
}
