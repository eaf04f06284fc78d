//! Prompt templates with `{field}` placeholders, and the named built-in prompt styles.

use serde::{Deserialize, Serialize};

use crate::{DataError, Result};

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

/// A text template with `{field}` placeholders; `{{` and `}}` write literal braces.
///
/// ```
/// use kiln_data::PromptTemplate;
///
/// let t = PromptTemplate::parse("Q: {question}\nA:").unwrap();
/// let text = t.render(|f| (f == "question").then(|| "What is P0300?".to_string()));
/// assert_eq!(text.unwrap(), "Q: What is P0300?\nA:");
/// assert_eq!(t.render(|_| None).unwrap_err(), "question");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTemplate {
    source: String,
    parts: Vec<Part>,
}

impl PromptTemplate {
    /// Parses a template.
    ///
    /// # Errors
    /// [`DataError::Template`] for an unclosed `{`, a lone `}` or an empty or non-identifier
    /// placeholder name.
    pub fn parse(source: &str) -> Result<Self> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                    chars.next();
                    text.push('}');
                }
                '}' => {
                    return Err(DataError::Template(format!(
                        "lone `}}` at byte {at} of {source:?} (write `}}}}` for a literal brace)"
                    )));
                }
                '{' => {
                    let rest = &source[at + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(DataError::Template(format!(
                            "unclosed `{{` at byte {at} of {source:?}"
                        )));
                    };
                    let name = &rest[..end];
                    let valid = !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
                    if !valid {
                        return Err(DataError::Template(format!(
                            "invalid placeholder `{{{name}}}` at byte {at} of {source:?}"
                        )));
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Field(name.to_string()));
                    for _ in 0..=name.chars().count() {
                        chars.next();
                    }
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self {
            source: source.to_string(),
            parts,
        })
    }

    /// The template text as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The placeholder names, in order of appearance.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(name) => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    /// Fills the placeholders with `lookup`.
    ///
    /// # Errors
    /// The name of the first placeholder `lookup` has no value for.
    pub fn render(&self, mut lookup: impl FnMut(&str) -> Option<String>) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(name) => out.push_str(&lookup(name).ok_or_else(|| name.clone())?),
            }
        }
        Ok(out)
    }
}

/// The Alpaca prompt for records with a non-empty `input`.
pub const ALPACA_WITH_INPUT: &str = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n";

/// The Alpaca prompt for records without `input`.
pub const ALPACA_NO_INPUT: &str = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n";

/// The plain question/answer prompt.
pub const QUESTION_ANSWER: &str = "### Question:\n{prompt}\n\n### Answer:\n";

/// How retrieved passages are put before a question (retrieval-augmented generation); the
/// result is the user's message, which the chat template then wraps:
///
/// ```text
/// Reference information:
/// - <passage 1>
/// - <passage 2>
///
/// Question: <question>
/// ```
///
/// Passages are kept on one line each (line breaks become spaces). Without passages the
/// question is returned as it is.
pub fn rag_prompt(question: &str, passages: &[impl AsRef<str>]) -> String {
    if passages.is_empty() {
        return question.to_string();
    }
    let mut out = String::from("Reference information:\n");
    for p in passages {
        let one_line: Vec<&str> = p.as_ref().split_whitespace().collect();
        out.push_str("- ");
        out.push_str(&one_line.join(" "));
        out.push('\n');
    }
    out.push_str("\nQuestion: ");
    out.push_str(question);
    out
}

/// Worked examples put before a question (few-shot prompting); the result is the user's
/// message:
///
/// ```text
/// Examples:
/// Q: <question 1>
/// A: <answer 1>
/// Q: <question 2>
/// A: <answer 2>
///
/// Question: <question>
/// ```
///
/// Without examples the question is returned as it is.
pub fn few_shot_prompt(question: &str, examples: &[(impl AsRef<str>, impl AsRef<str>)]) -> String {
    if examples.is_empty() {
        return question.to_string();
    }
    let mut out = String::from("Examples:\n");
    for (q, a) in examples {
        out.push_str(&format!("Q: {}\nA: {}\n", q.as_ref(), a.as_ref()));
    }
    out.push_str("\nQuestion: ");
    out.push_str(question);
    out
}

/// How the prompt of a prompt/completion or instruction record is written.
///
/// Templates see the record's canonical fields (`prompt`, and for instruction records
/// `instruction` and `input`; `prompt` is then the instruction followed by a blank line and the
/// input when there is one) and, after them, every raw field of the record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case")]
pub enum PromptStyle {
    /// The prompt as it is.
    #[default]
    Raw,
    /// [`QUESTION_ANSWER`].
    QuestionAnswer,
    /// [`ALPACA_WITH_INPUT`], or [`ALPACA_NO_INPUT`] when `input` is empty.
    Alpaca,
    /// A user template with `{field}` placeholders.
    Custom {
        /// The template text.
        template: String,
    },
    /// The model's own chat template: the prompt becomes a user turn and the completion an
    /// assistant turn, after an optional system message.
    ChatTemplate {
        /// A system message to put first.
        #[serde(default)]
        system: Option<String>,
    },
}

impl PromptStyle {
    /// A style by name: `raw`, `question_answer` (or `qa`), `alpaca`, `chat_template` (or
    /// `chat`).
    ///
    /// # Errors
    /// [`DataError::Config`] for an unknown name.
    pub fn builtin(name: &str) -> Result<Self> {
        Ok(match name {
            "raw" => Self::Raw,
            "question_answer" | "qa" => Self::QuestionAnswer,
            "alpaca" => Self::Alpaca,
            "chat_template" | "chat" => Self::ChatTemplate { system: None },
            other => {
                return Err(DataError::Config(format!(
                    "unknown prompt style `{other}` (known: raw, question_answer, alpaca, chat_template)"
                )));
            }
        })
    }

    /// The template used for a record whose `input` is empty or not, `None` for
    /// [`PromptStyle::ChatTemplate`].
    ///
    /// # Errors
    /// A custom template that does not parse.
    pub fn template(&self, has_input: bool) -> Result<Option<PromptTemplate>> {
        let source = match self {
            Self::Raw => "{prompt}",
            Self::QuestionAnswer => QUESTION_ANSWER,
            Self::Alpaca if has_input => ALPACA_WITH_INPUT,
            Self::Alpaca => ALPACA_NO_INPUT,
            Self::Custom { template } => template,
            Self::ChatTemplate { .. } => return Ok(None),
        };
        PromptTemplate::parse(source).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_placeholders() {
        let t = PromptTemplate::parse("{{x}} {a}-{b_c}!").unwrap();
        assert_eq!(t.placeholders().collect::<Vec<_>>(), ["a", "b_c"]);
        let out = t.render(|f| Some(f.to_uppercase())).unwrap();
        assert_eq!(out, "{x} A-B_C!");
        let t = PromptTemplate::parse("é{ü}ß").unwrap();
        assert_eq!(t.render(|_| Some("1".into())).unwrap(), "é1ß");
    }

    #[test]
    fn malformed_templates_are_errors() {
        for bad in ["{open", "close}", "{}", "{a b}"] {
            let err = PromptTemplate::parse(bad).unwrap_err();
            assert!(matches!(err, DataError::Template(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn builtins_parse_and_use_the_canonical_fields() {
        for name in ["raw", "qa", "alpaca"] {
            let style = PromptStyle::builtin(name).unwrap();
            for has_input in [false, true] {
                let t = style.template(has_input).unwrap().unwrap();
                for p in t.placeholders() {
                    assert!(["prompt", "instruction", "input"].contains(&p), "{p}");
                }
            }
        }
        let t = PromptStyle::Alpaca.template(false).unwrap().unwrap();
        assert!(!t.placeholders().any(|p| p == "input"));
        assert!(PromptStyle::builtin("nope").is_err());
        let chat = PromptStyle::builtin("chat").unwrap();
        assert_eq!(chat.template(true).unwrap(), None);
    }

    #[test]
    fn rag_and_few_shot_prompts() {
        let none: [&str; 0] = [];
        assert_eq!(rag_prompt("Q?", &none), "Q?");
        assert_eq!(
            rag_prompt(
                "What does P0130 mean?",
                &["P0130: O2\nSensor", "P0420: Cat"]
            ),
            "Reference information:\n- P0130: O2 Sensor\n- P0420: Cat\n\nQuestion: What does P0130 mean?"
        );
        let no: [(&str, &str); 0] = [];
        assert_eq!(few_shot_prompt("Q?", &no), "Q?");
        assert_eq!(
            few_shot_prompt("Q?", &[("a?", "A1"), ("b?", "B1")]),
            "Examples:\nQ: a?\nA: A1\nQ: b?\nA: B1\n\nQuestion: Q?"
        );
    }
}
