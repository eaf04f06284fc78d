//! Record formats: how the fields of a [`Record`] become a training [`Example`].

use std::path::Path;
use std::sync::Arc;

use kiln_tokenizer::ChatMessage;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{DataError, PromptStyle, PromptTemplate, Record, Result};

pub(crate) fn prompt_field() -> String {
    "prompt".into()
}
fn completion_field() -> String {
    "completion".into()
}
fn instruction_field() -> String {
    "instruction".into()
}
fn input_field() -> String {
    "input".into()
}
fn output_field() -> String {
    "output".into()
}
fn text_field() -> String {
    "text".into()
}
pub(crate) fn chosen_field() -> String {
    "chosen".into()
}
pub(crate) fn rejected_field() -> String {
    "rejected".into()
}

/// The closed set of record formats, with configurable field names.
///
/// In a configuration file the format is a tagged object, e.g.
/// `{"format": "instruction", "output": "response"}`; unnamed fields keep their default names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum RecordFormat {
    /// A prompt and a completion; loss on the completion only.
    PromptCompletion {
        /// Field of the prompt (`prompt`).
        #[serde(default = "prompt_field")]
        prompt: String,
        /// Field of the completion (`completion`).
        #[serde(default = "completion_field")]
        completion: String,
    },
    /// Alpaca style: an instruction, an optional input and the output; loss on the output only.
    Instruction {
        /// Field of the instruction (`instruction`).
        #[serde(default = "instruction_field")]
        instruction: String,
        /// Field of the optional input (`input`); missing or empty means no input.
        #[serde(default = "input_field")]
        input: String,
        /// Field of the output (`output`).
        #[serde(default = "output_field")]
        output: String,
    },
    /// A conversation; loss on the assistant turns only.
    ///
    /// Without a field name, `messages` (OpenAI: `role`/`content`) is used, else
    /// `conversations` (ShareGPT: `from`/`value`, with `human` → `user`, `gpt` → `assistant`).
    Chat {
        /// Field of the message list.
        #[serde(default)]
        field: Option<String>,
    },
    /// Plain text; loss on every token.
    Text {
        /// Field of the text (`text`).
        #[serde(default = "text_field")]
        text: String,
    },
    /// Preference pairs (TRL's `prompt`/`chosen`/`rejected`, plain or conversational), read by
    /// preference training ([`Formatter::preference`]), not as single examples.
    Preference {
        /// Field of the prompt (`prompt`).
        #[serde(default = "prompt_field")]
        prompt: String,
        /// Field of the preferred completion (`chosen`).
        #[serde(default = "chosen_field")]
        chosen: String,
        /// Field of the other completion (`rejected`).
        #[serde(default = "rejected_field")]
        rejected: String,
    },
}

impl RecordFormat {
    /// Prompt/completion with the default field names.
    pub fn prompt_completion() -> Self {
        Self::PromptCompletion {
            prompt: prompt_field(),
            completion: completion_field(),
        }
    }

    /// Instruction/input/output with the default field names.
    pub fn instruction() -> Self {
        Self::Instruction {
            instruction: instruction_field(),
            input: input_field(),
            output: output_field(),
        }
    }

    /// Chat with the default field names.
    pub fn chat() -> Self {
        Self::Chat { field: None }
    }

    /// Plain text in the `text` field.
    pub fn text() -> Self {
        Self::Text { text: text_field() }
    }

    /// Preference pairs with TRL's field names.
    pub fn preference() -> Self {
        Self::Preference {
            prompt: prompt_field(),
            chosen: chosen_field(),
            rejected: rejected_field(),
        }
    }

    /// The field names of the preference format; `None` for the other formats.
    pub fn preference_fields(&self) -> Option<crate::PreferenceFields> {
        match self {
            Self::Preference {
                prompt,
                chosen,
                rejected,
            } => Some(crate::PreferenceFields {
                prompt: prompt.clone(),
                chosen: chosen.clone(),
                rejected: rejected.clone(),
            }),
            _ => None,
        }
    }
}

/// What an example holds, before tokenization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A rendered prompt and its completion.
    Completion {
        /// The full prompt text (template applied).
        prompt: String,
        /// The completion text.
        completion: String,
    },
    /// A conversation for the model's chat template.
    Chat {
        /// The turns.
        messages: Vec<ChatMessage>,
    },
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
}

impl Content {
    /// Characters of text in the example (prompt and completion, or every turn's content).
    pub fn char_count(&self) -> usize {
        match self {
            Self::Completion { prompt, completion } => {
                prompt.chars().count() + completion.chars().count()
            }
            Self::Chat { messages } => messages.iter().map(|m| m.content.chars().count()).sum(),
            Self::Text { text } => text.chars().count(),
        }
    }

    /// All the text of the example, for length filters and duplicate detection.
    pub fn joined_text(&self) -> String {
        match self {
            Self::Completion { prompt, completion } => format!("{prompt}\u{1f}{completion}"),
            Self::Chat { messages } => messages
                .iter()
                .map(|m| format!("{}\u{1e}{}", m.role, m.content))
                .collect::<Vec<_>>()
                .join("\u{1f}"),
            Self::Text { text } => text.clone(),
        }
    }
}

/// One example with the file and line of the record it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The source file.
    pub path: Arc<Path>,
    /// 1-based line of the record.
    pub line: usize,
    /// The content.
    pub content: Content,
}

/// Turns records into examples: a [`RecordFormat`] and a [`PromptStyle`].
#[derive(Debug, Clone)]
pub struct Formatter {
    format: RecordFormat,
    style: PromptStyle,
    with_input: Option<PromptTemplate>,
    without_input: Option<PromptTemplate>,
}

impl Formatter {
    /// A formatter; the style applies to prompt/completion and instruction records.
    ///
    /// # Errors
    /// A custom template that does not parse.
    pub fn new(format: RecordFormat, style: PromptStyle) -> Result<Self> {
        Ok(Self {
            with_input: style.template(true)?,
            without_input: style.template(false)?,
            format,
            style,
        })
    }

    /// The prompt style.
    pub fn style(&self) -> &PromptStyle {
        &self.style
    }

    /// The record format.
    pub fn format(&self) -> &RecordFormat {
        &self.format
    }

    /// Formats one record.
    ///
    /// # Errors
    /// [`DataError::Field`] for a missing or mistyped field, [`DataError::Placeholder`] for a
    /// template placeholder the record has no field for.
    pub fn example(&self, record: &Record) -> Result<Example> {
        let content = match &self.format {
            RecordFormat::PromptCompletion { prompt, completion } => {
                let p = record.text(prompt)?;
                let c = record.text(completion)?;
                self.completion(record, &[("prompt", p)], c, false)?
            }
            RecordFormat::Instruction {
                instruction,
                input,
                output,
            } => {
                let i = record.text(instruction)?;
                let x = match record.get(input) {
                    None | Some(Value::Null) => String::new(),
                    Some(_) => record.text(input)?,
                };
                let o = record.text(output)?;
                let has_input = !x.trim().is_empty();
                let prompt = if has_input {
                    format!("{i}\n\n{x}")
                } else {
                    i.clone()
                };
                let canon = [("prompt", prompt), ("instruction", i), ("input", x)];
                self.completion(record, &canon, o, has_input)?
            }
            RecordFormat::Chat { field } => Content::Chat {
                messages: chat_messages(record, field.as_deref())?,
            },
            RecordFormat::Text { text } => Content::Text {
                text: record.text(text)?,
            },
            RecordFormat::Preference { .. } => {
                return Err(DataError::Config(format!(
                    "{}:{}: a preference record holds two completions; preference training \
                     reads it (`[task] kind = \"dpo\"`, \"ipo\", \"hinge\" or \"simpo\")",
                    record.path.display(),
                    record.line
                )));
            }
        };
        Ok(Example {
            path: record.path.clone(),
            line: record.line,
            content,
        })
    }

    pub(crate) fn completion(
        &self,
        record: &Record,
        canon: &[(&str, String)],
        completion: String,
        has_input: bool,
    ) -> Result<Content> {
        if let PromptStyle::ChatTemplate { system } = &self.style {
            let mut messages = Vec::with_capacity(3);
            if let Some(s) = system {
                messages.push(ChatMessage::system(s.clone()));
            }
            messages.push(ChatMessage::user(canon[0].1.clone()));
            messages.push(ChatMessage::assistant(completion));
            return Ok(Content::Chat { messages });
        }
        let template = if has_input {
            &self.with_input
        } else {
            &self.without_input
        };
        let template = template
            .as_ref()
            .ok_or_else(|| DataError::Config("prompt style without a template".into()))?;
        let prompt = template
            .render(|name| {
                canon
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.clone())
                    .or_else(|| record.text(name).ok())
            })
            .map_err(|placeholder| DataError::Placeholder {
                path: record.path.to_path_buf(),
                line: record.line,
                placeholder,
            })?;
        Ok(Content::Completion { prompt, completion })
    }
}

fn sharegpt_role(from: &str) -> Option<&'static str> {
    Some(match from {
        "human" | "user" => "user",
        "gpt" | "assistant" | "model" | "chatgpt" | "bard" | "bing" => "assistant",
        "system" => "system",
        "tool" | "function" | "observation" | "function_response" => "tool",
        _ => return None,
    })
}

fn chat_messages(record: &Record, field: Option<&str>) -> Result<Vec<ChatMessage>> {
    let field = match field {
        Some(f) => f,
        None if record.get("messages").is_some() => "messages",
        None if record.get("conversations").is_some() => "conversations",
        None => return Err(record.field_error("messages", "missing (nor `conversations`)")),
    };
    let messages = parse_messages(record, field)?;
    if !messages.iter().any(|m| m.role == "assistant") {
        return Err(record.field_error(field, "no assistant turn to learn from"));
    }
    Ok(messages)
}

/// The message list in `field` (OpenAI `role`/`content` or ShareGPT `from`/`value`).
pub(crate) fn parse_messages(record: &Record, field: &str) -> Result<Vec<ChatMessage>> {
    let Some(Value::Array(items)) = record.get(field) else {
        return Err(match record.get(field) {
            None => record.field_error(field, "missing"),
            Some(other) => record.field_error(field, format!("expected an array, found {other}")),
        });
    };
    if items.is_empty() {
        return Err(record.field_error(field, "no messages"));
    }
    let mut messages = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = |key: &str| format!("{field}[{i}].{key}");
        let Value::Object(m) = item else {
            return Err(record.field_error(&format!("{field}[{i}]"), "expected an object"));
        };
        let text = |keys: [&str; 2]| -> Result<String> {
            for key in keys {
                match m.get(key) {
                    Some(Value::String(s)) => return Ok(s.clone()),
                    Some(Value::Null) | None => {}
                    Some(other) => {
                        return Err(
                            record.field_error(&at(key), format!("expected text, found {other}"))
                        );
                    }
                }
            }
            Err(record.field_error(&at(keys[0]), "missing"))
        };
        let message = if m.contains_key("from") && !m.contains_key("role") {
            let from = text(["from", "from"])?;
            let role = sharegpt_role(&from).ok_or_else(|| {
                record.field_error(&at("from"), format!("unknown ShareGPT speaker `{from}`"))
            })?;
            ChatMessage::new(role, text(["value", "content"])?)
        } else {
            ChatMessage::new(text(["role", "from"])?, text(["content", "value"])?)
        };
        messages.push(message);
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: Value) -> Record {
        let Value::Object(m) = v else { panic!() };
        Record::new("data.jsonl", 7, m)
    }

    fn completion(c: &Content) -> (&str, &str) {
        match c {
            Content::Completion { prompt, completion } => (prompt, completion),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prompt_completion_with_mapped_fields_and_styles() {
        let fmt = RecordFormat::PromptCompletion {
            prompt: "q".into(),
            completion: "a".into(),
        };
        let r = rec(json!({"q": "What is P0300?", "a": "Misfire", "car": "Golf"}));
        let raw = Formatter::new(fmt.clone(), PromptStyle::Raw).unwrap();
        let ex = raw.example(&r).unwrap();
        assert_eq!(completion(&ex.content), ("What is P0300?", "Misfire"));
        assert_eq!(ex.line, 7);
        let qa = Formatter::new(fmt.clone(), PromptStyle::QuestionAnswer).unwrap();
        let ex = qa.example(&r).unwrap();
        assert_eq!(
            completion(&ex.content).0,
            "### Question:\nWhat is P0300?\n\n### Answer:\n"
        );
        let custom = PromptStyle::Custom {
            template: "[{car}] {prompt} ->".into(),
        };
        let ex = Formatter::new(fmt.clone(), custom)
            .unwrap()
            .example(&r)
            .unwrap();
        assert_eq!(completion(&ex.content).0, "[Golf] What is P0300? ->");
        let missing = PromptStyle::Custom {
            template: "{make}: {prompt}".into(),
        };
        let err = Formatter::new(fmt.clone(), missing)
            .unwrap()
            .example(&r)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data.jsonl:7") && err.contains("`{make}`"),
            "{err}"
        );
        let err = raw
            .example(&rec(json!({"q": "x"})))
            .unwrap_err()
            .to_string();
        assert!(err.contains("data.jsonl:7: field `a`: missing"), "{err}");
    }

    #[test]
    fn instruction_records_pick_the_alpaca_variant() {
        let fmt = Formatter::new(RecordFormat::instruction(), PromptStyle::Alpaca).unwrap();
        let with = rec(json!({"instruction": "Explain", "input": "P0171", "output": "Lean"}));
        let ex = fmt.example(&with).unwrap();
        let (p, c) = completion(&ex.content);
        assert!(p.contains("### Input:\nP0171\n\n### Response:\n"), "{p}");
        assert_eq!(c, "Lean");
        let without = rec(json!({"instruction": "Explain", "output": "Lean"}));
        let ex = fmt.example(&without).unwrap();
        let p = completion(&ex.content).0;
        assert!(!p.contains("### Input"), "{p}");
        assert!(
            p.ends_with("### Instruction:\nExplain\n\n### Response:\n"),
            "{p}"
        );
        let raw = Formatter::new(RecordFormat::instruction(), PromptStyle::Raw).unwrap();
        let ex = raw.example(&with).unwrap();
        assert_eq!(completion(&ex.content).0, "Explain\n\nP0171");
    }

    #[test]
    fn chat_template_style_makes_a_conversation() {
        let style = PromptStyle::ChatTemplate {
            system: Some("Be brief.".into()),
        };
        let fmt = Formatter::new(RecordFormat::prompt_completion(), style).unwrap();
        let ex = fmt
            .example(&rec(json!({"prompt": "Hi", "completion": "Hello"})))
            .unwrap();
        assert_eq!(
            ex.content,
            Content::Chat {
                messages: vec![
                    ChatMessage::system("Be brief."),
                    ChatMessage::user("Hi"),
                    ChatMessage::assistant("Hello")
                ]
            }
        );
    }

    #[test]
    fn openai_and_sharegpt_chats() {
        let fmt = Formatter::new(RecordFormat::chat(), PromptStyle::Raw).unwrap();
        let openai = rec(json!({"messages": [
            {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}));
        let sharegpt = rec(json!({"conversations": [
            {"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}));
        let a = fmt.example(&openai).unwrap().content;
        assert_eq!(a, fmt.example(&sharegpt).unwrap().content);
        let Content::Chat { messages } = a else {
            panic!()
        };
        assert_eq!(messages[1], ChatMessage::assistant("b"));

        let bad = rec(json!({"messages": [{"role": "user"}]}));
        let err = fmt.example(&bad).unwrap_err().to_string();
        assert!(
            err.contains("field `messages[0].content`: missing"),
            "{err}"
        );
        let bad = rec(json!({"conversations": [{"from": "alien", "value": "x"}]}));
        let err = fmt.example(&bad).unwrap_err().to_string();
        assert!(
            err.contains("conversations[0].from") && err.contains("alien"),
            "{err}"
        );
        let bad = rec(json!({"messages": [{"role": "user", "content": "x"}]}));
        let err = fmt.example(&bad).unwrap_err().to_string();
        assert!(err.contains("no assistant turn"), "{err}");
        let err = fmt.example(&rec(json!({"x": 1}))).unwrap_err().to_string();
        assert!(err.contains("field `messages`"), "{err}");
    }

    #[test]
    fn text_records_and_serde_configuration() {
        let fmt: RecordFormat =
            serde_json::from_value(json!({"format": "text", "text": "body"})).unwrap();
        let f = Formatter::new(fmt, PromptStyle::Raw).unwrap();
        let ex = f.example(&rec(json!({"body": "once upon"}))).unwrap();
        assert_eq!(
            ex.content,
            Content::Text {
                text: "once upon".into()
            }
        );
        let fmt: RecordFormat =
            serde_json::from_value(json!({"format": "instruction", "output": "response"})).unwrap();
        assert_eq!(
            fmt,
            RecordFormat::Instruction {
                instruction: "instruction".into(),
                input: "input".into(),
                output: "response".into()
            }
        );
        let style: PromptStyle =
            serde_json::from_value(json!({"style": "custom", "template": "{prompt}"})).unwrap();
        assert!(matches!(style, PromptStyle::Custom { .. }));
    }
}
