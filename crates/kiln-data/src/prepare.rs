//! The whole preparation: records → examples → cleaning → tokens with loss masks → limits.

use std::path::Path;
use std::sync::Arc;

use kiln_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::{
    CleanOptions, CleanReport, Cleaner, DataError, DatasetStats, DropReason, EncodeOptions,
    Encoder, Formatter, PromptStyle, Record, RecordFormat, Result, SourceKind, TokenizedExample,
    Truncation, read_records,
};

/// Settings of [`prepare`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareOptions {
    /// How records map to examples.
    pub format: RecordFormat,
    /// How prompts are written.
    #[serde(default)]
    pub style: PromptStyle,
    /// BOS/EOS handling.
    #[serde(skip, default)]
    pub encode: EncodeOptions,
    /// Duplicate and length filters.
    #[serde(default)]
    pub clean: CleanOptions,
    /// Token limit per example.
    #[serde(default)]
    pub max_len: Option<usize>,
    /// What to do above `max_len`.
    #[serde(default)]
    pub truncation: Truncation,
    /// Skip malformed records (bad JSON or CSV, missing fields, template placeholders without a
    /// field) and count them, instead of failing on the first.
    #[serde(default)]
    pub skip_malformed: bool,
}

impl PrepareOptions {
    /// Options for a format with every other setting at its default.
    pub fn new(format: RecordFormat) -> Self {
        Self {
            format,
            style: PromptStyle::default(),
            encode: EncodeOptions::default(),
            clean: CleanOptions::default(),
            max_len: None,
            truncation: Truncation::default(),
            skip_malformed: false,
        }
    }
}

/// A prepared dataset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prepared {
    /// The tokenized examples, in input order.
    pub examples: Vec<TokenizedExample>,
    /// File and line of every example's record.
    pub origins: Vec<(Arc<Path>, usize)>,
    /// What was dropped and why.
    pub report: CleanReport,
}

impl Prepared {
    /// Statistics of the examples.
    pub fn stats(&self) -> DatasetStats {
        DatasetStats::from_examples(&self.examples)
    }
}

fn skippable(e: &DataError) -> bool {
    matches!(
        e,
        DataError::Json { .. }
            | DataError::Csv { .. }
            | DataError::Field { .. }
            | DataError::Placeholder { .. }
            | DataError::Tokenizer { .. }
    )
}

/// Prepares records from any source. `name` names the dataset in the empty-dataset error.
///
/// # Errors
/// The first malformed record (unless skipped), [`DataError::TooLong`] with
/// [`Truncation::Error`], I/O errors, and [`DataError::Empty`] when no example is left.
pub fn prepare(
    records: impl IntoIterator<Item = Result<Record>>,
    name: &Path,
    tokenizer: &Tokenizer,
    options: &PrepareOptions,
) -> Result<Prepared> {
    let formatter = Formatter::new(options.format.clone(), options.style.clone())?;
    let encoder = Encoder::new(tokenizer, options.encode);
    let mut cleaner = Cleaner::new(options.clean.clone());
    let mut out = Prepared::default();
    for record in records {
        let example = record.and_then(|r| formatter.example(&r));
        let example = match example {
            Ok(e) => e,
            Err(e) if options.skip_malformed && skippable(&e) => {
                cleaner.skip_malformed();
                continue;
            }
            Err(e) => return Err(e),
        };
        if cleaner.check_text(&example).is_some() {
            continue;
        }
        let tokens = match encoder.encode(&example) {
            Ok(t) => t,
            Err(e) if options.skip_malformed && skippable(&e) => {
                cleaner.drop_kept(DropReason::Malformed);
                continue;
            }
            Err(e) => return Err(e),
        };
        if cleaner.check_tokens(tokens.len()).is_some() {
            continue;
        }
        let tokens = match options.max_len {
            Some(max) => {
                match tokens.limit(max, options.truncation, &example.path, example.line)? {
                    Some(t) => t,
                    None => {
                        cleaner.drop_kept(DropReason::TooManyTokens);
                        continue;
                    }
                }
            }
            None => tokens,
        };
        out.examples.push(tokens);
        out.origins.push((example.path, example.line));
    }
    out.report = cleaner.into_report();
    if out.examples.is_empty() {
        return Err(DataError::Empty(name.to_path_buf()));
    }
    Ok(out)
}

/// [`prepare`] on a file or folder, its kind taken from the path ([`SourceKind::from_path`]).
///
/// # Errors
/// As [`SourceKind::from_path`], [`read_records`] and [`prepare`].
pub fn prepare_path(
    path: impl AsRef<Path>,
    tokenizer: &Tokenizer,
    options: &PrepareOptions,
) -> Result<Prepared> {
    let path = path.as_ref();
    let records = read_records(path, SourceKind::from_path(path)?)?;
    prepare(records, path, tokenizer, options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::tests::tiny_tokenizer;
    use crate::{Dedup, IGNORE_INDEX};
    use std::io::Write;

    fn file(ext: &str, text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(ext).tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    const JSONL: &str = r#"{"prompt": "What does P0300 mean?", "completion": "Misfire"}
{"prompt": "What does P0300 mean?", "completion": "Misfire"}
{"prompt": "what  does p0300 MEAN?", "completion": "misfire"}
{"prompt": "oops"}
{"prompt": "A much longer question about the engine and its many parts?", "completion": "Yes"}
not json
"#;

    #[test]
    fn skips_are_counted_by_reason() {
        let tk = tiny_tokenizer();
        let f = file(".jsonl", JSONL);
        let options = PrepareOptions {
            clean: CleanOptions {
                dedup: Dedup::Normalized,
                ..CleanOptions::default()
            },
            max_len: Some(30),
            truncation: Truncation::Skip,
            skip_malformed: true,
            ..PrepareOptions::new(RecordFormat::prompt_completion())
        };
        let p = prepare_path(f.path(), &tk, &options).unwrap();
        assert_eq!(p.examples.len(), 1);
        assert_eq!(p.origins[0].1, 1);
        let r = &p.report;
        assert_eq!((r.seen, r.kept), (6, 1));
        assert_eq!(r.dropped[&DropReason::ExactDuplicate], 1);
        assert_eq!(r.dropped[&DropReason::NormalizedDuplicate], 1);
        assert_eq!(r.dropped[&DropReason::Malformed], 2);
        assert_eq!(r.dropped[&DropReason::TooManyTokens], 1);
        let stats = p.stats();
        assert_eq!(stats.examples, 1);
        assert!(stats.loss_fraction() > 0.0 && stats.loss_fraction() < 1.0);
        assert!(p.examples[0].labels[0] == IGNORE_INDEX);
    }

    #[test]
    fn errors_without_skipping() {
        let tk = tiny_tokenizer();
        let f = file(".jsonl", JSONL);
        let options = PrepareOptions::new(RecordFormat::prompt_completion());
        let err = prepare_path(f.path(), &tk, &options)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(".jsonl:4: field `completion`: missing"),
            "{err}"
        );
        let limited = PrepareOptions {
            max_len: Some(4),
            ..options.clone()
        };
        let err = prepare_path(f.path(), &tk, &limited)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(".jsonl:1: example has") && err.contains("limit of 4"),
            "{err}"
        );
        let empty = file(".jsonl", "\n");
        let err = prepare_path(empty.path(), &tk, &options).unwrap_err();
        assert!(matches!(err, DataError::Empty(_)), "{err}");
        let template = PrepareOptions {
            style: PromptStyle::Custom {
                template: "{car}: {prompt}".into(),
            },
            ..options
        };
        let err = prepare_path(f.path(), &tk, &template)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(".jsonl:1: template placeholder `{car}`"),
            "{err}"
        );
    }

    fn loss_text(tk: &Tokenizer, ex: &TokenizedExample) -> String {
        let ids: Vec<u32> = ex
            .input_ids
            .iter()
            .zip(&ex.labels)
            .filter(|(_, l)| **l != IGNORE_INDEX)
            .map(|(t, _)| *t)
            .collect();
        tk.decode(&ids, false).unwrap()
    }

    #[test]
    fn prompt_completion_through_the_chat_template() {
        let tk = tiny_tokenizer();
        let f = file(
            ".json",
            r#"[{"q": "What does P0300 mean?", "a": "Misfire"}]"#,
        );
        let options = PrepareOptions {
            style: PromptStyle::ChatTemplate { system: None },
            ..PrepareOptions::new(RecordFormat::PromptCompletion {
                prompt: "q".into(),
                completion: "a".into(),
            })
        };
        let p = prepare_path(f.path(), &tk, &options).unwrap();
        let ex = &p.examples[0];
        let text = tk.decode(&ex.input_ids, false).unwrap();
        assert!(
            text.starts_with("<|im_start|>user\nWhat does P0300 mean?<|im_end|>"),
            "{text:?}"
        );
        assert_eq!(loss_text(&tk, ex), "Misfire<|im_end|>\n");
    }

    #[test]
    fn text_folders_for_continued_pretraining() {
        let tk = tiny_tokenizer();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "The engine misfires.").unwrap();
        std::fs::write(dir.path().join("b.md"), "Check the coil.").unwrap();
        let p = prepare_path(dir.path(), &tk, &PrepareOptions::new(RecordFormat::text())).unwrap();
        assert_eq!(p.examples.len(), 2);
        assert_eq!(loss_text(&tk, &p.examples[1]), "Check the coil.</s>");
        let stats = p.stats();
        assert_eq!(
            stats.loss_tokens,
            stats.tokens - 2,
            "all but the two BOS tokens"
        );
    }

    #[test]
    fn csv_instruction_data_with_alpaca_prompts() {
        let tk = tiny_tokenizer();
        let f = file(
            ".csv",
            "instruction,input,output\nExplain the code,P0300,Misfire\n\"Say hi\",,hi\n",
        );
        let options = PrepareOptions {
            style: PromptStyle::Alpaca,
            ..PrepareOptions::new(RecordFormat::instruction())
        };
        let p = prepare_path(f.path(), &tk, &options).unwrap();
        assert_eq!(p.examples.len(), 2);
        let loss: Vec<u32> = p.examples[1]
            .input_ids
            .iter()
            .zip(&p.examples[1].labels)
            .filter(|(_, l)| **l != IGNORE_INDEX)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(tk.decode(&loss, false).unwrap(), "hi</s>");
        assert_eq!(p.origins[1].1, 3);
    }
}
