//! Evaluation helpers shared by `kiln eval`, the benchmarks and the examples: test cases from a
//! prompt/completion file, greedy answering settings and general text for the forgetting check.

use std::path::Path;

use kiln_data::{
    IGNORE_INDEX, PrepareOptions, RecordFormat, SourceKind, TokenizedExample, prepare_path,
    read_records,
};
use kiln_models::GenerationConfig;
use kiln_tokenizer::Tokenizer;
use kiln_train::harness::{EvalCase, HarnessConfig};

use crate::Result;

/// Test cases from a prompt/completion file, rendered exactly as in training: the prompt is the
/// example's unlabelled prefix (template applied), the reference its completion text without
/// end-of-sequence tokens. The report text of a case is the question as written in the file.
///
/// # Errors
/// Data errors naming the file and line; a record whose completion is empty.
pub fn eval_cases(
    path: &Path,
    tokenizer: &Tokenizer,
    options: &PrepareOptions,
    limit: Option<usize>,
) -> Result<Vec<EvalCase>> {
    let mut options = options.clone();
    let RecordFormat::PromptCompletion {
        prompt: prompt_field,
        ..
    } = &options.format
    else {
        return Err(kiln_data::DataError::Config(format!(
            "{}: test cases need the prompt_completion format",
            path.display()
        ))
        .into());
    };
    // The question as written in the file, for reports.
    let mut questions = std::collections::HashMap::new();
    for record in read_records(path, SourceKind::from_path(path)?)? {
        let record = record?;
        if let Ok(q) = record.text(prompt_field) {
            questions.insert(record.line, q);
        }
    }
    // Every record is a case: no dedup, no length filter.
    options.clean = Default::default();
    options.max_len = None;
    let prepared = prepare_path(path, tokenizer, &options)?;
    let mut cases = Vec::new();
    for (ex, (file, line)) in prepared.examples.iter().zip(&prepared.origins) {
        let Some(split) = ex.labels.iter().position(|&l| l != IGNORE_INDEX) else {
            return Err(kiln_data::DataError::Config(format!(
                "{}:{line}: the completion is empty",
                file.display()
            ))
            .into());
        };
        let prompt = ex.input_ids[..split].to_vec();
        let reference = tokenizer.decode(&ex.input_ids[split..], true)?;
        cases.push(EvalCase {
            prompt_text: match questions.remove(line) {
                Some(q) => q,
                None => tokenizer.decode(&prompt, false)?,
            },
            prompt,
            reference: reference.trim().to_string(),
        });
        if limit.is_some_and(|n| cases.len() >= n) {
            break;
        }
    }
    Ok(cases)
}

/// Greedy answering settings for [`eval_cases`]: stop at the tokenizer's end-of-sequence token
/// or at the end of the first line, `batch_size` prompts at a time.
pub fn answer_config(
    tokenizer: &Tokenizer,
    max_new_tokens: usize,
    batch_size: usize,
) -> HarnessConfig {
    HarnessConfig {
        generation: GenerationConfig {
            max_new_tokens,
            eos_token_ids: tokenizer.eos_token_id().into_iter().collect(),
            stop_strings: vec!["\n".into()],
            ..Default::default()
        },
        pad_id: tokenizer.padding_id(),
        batch_size: batch_size.max(1),
        ..Default::default()
    }
}

/// General text for the forgetting check: every non-empty line of `text` is one example with
/// loss on every token.
///
/// # Errors
/// A tokenizer error.
pub fn general_text(tokenizer: &Tokenizer, text: &str) -> Result<Vec<TokenizedExample>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(TokenizedExample::full(&tokenizer.encode(l, true)?)))
        .collect()
}
