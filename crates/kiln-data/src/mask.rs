//! Tokenization with loss masking: completion-only, assistant-only and full-sequence labels.

use kiln_tokenizer::{ChatMessage, Tokenizer, TokenizerError};

use crate::{Content, DataError, Example, IGNORE_INDEX, Result, TokenizedExample};

/// Special tokens the encoder adds around completion and text examples.
///
/// Chat examples get neither: the chat template writes the model's own special tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Put the tokenizer's BOS token first (nothing when the tokenizer has none). Default: true.
    pub add_bos: bool,
    /// Append the EOS token, which carries loss, so the model learns to stop. Default: true.
    pub add_eos: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            add_bos: true,
            add_eos: true,
        }
    }
}

/// Tokenizes [`Example`]s into [`TokenizedExample`]s with the loss mask of their kind:
///
/// - [`Content::Completion`]: `[BOS] prompt completion [EOS]`, labels only on the completion
///   and EOS. Prompt and completion are tokenized separately, so the boundary is exact.
/// - [`Content::Chat`]: the conversation rendered with the tokenizer's chat template; labels
///   only on the tokens of the assistant turns (content and the template's end-of-turn text).
///   The spans are found by rendering prefixes of the conversation: turn `i` starts where the
///   rendering of turns `..i` with the generation prompt ends, and ends where the rendering of
///   turns `..=i` ends. A token belongs to a turn when it starts inside its span.
/// - [`Content::Text`]: `[BOS] text [EOS]`, labels on every token except BOS.
#[derive(Debug, Clone, Copy)]
pub struct Encoder<'a> {
    tokenizer: &'a Tokenizer,
    options: EncodeOptions,
}

impl<'a> Encoder<'a> {
    /// An encoder over `tokenizer`.
    pub fn new(tokenizer: &'a Tokenizer, options: EncodeOptions) -> Self {
        Self { tokenizer, options }
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &'a Tokenizer {
        self.tokenizer
    }

    /// Tokenizes one example.
    ///
    /// # Errors
    /// [`DataError::MissingSpecialToken`] when EOS is asked for and the tokenizer has none;
    /// [`DataError::Tokenizer`] (naming the record's file and line) for tokenizer and chat
    /// template failures; [`DataError::Field`] for a chat template whose prefixes are not
    /// prefixes of the whole conversation.
    pub fn encode(&self, example: &Example) -> Result<TokenizedExample> {
        let wrap = |source: TokenizerError| DataError::Tokenizer {
            path: example.path.to_path_buf(),
            line: example.line,
            source,
        };
        let eos = if self.options.add_eos {
            Some(
                self.tokenizer
                    .eos_token_id()
                    .ok_or(DataError::MissingSpecialToken("EOS"))?,
            )
        } else {
            None
        };
        let bos = self
            .options
            .add_bos
            .then(|| self.tokenizer.bos_token_id())
            .flatten();
        match &example.content {
            Content::Completion { prompt, completion } => {
                let mut p: Vec<u32> = bos.into_iter().collect();
                p.extend(self.tokenizer.encode(prompt, false).map_err(wrap)?);
                let mut c = self.tokenizer.encode(completion, false).map_err(wrap)?;
                c.extend(eos);
                Ok(TokenizedExample::prompt_completion(&p, &c))
            }
            Content::Text { text } => {
                let mut ids: Vec<u32> = bos.into_iter().collect();
                ids.extend(self.tokenizer.encode(text, false).map_err(wrap)?);
                ids.extend(eos);
                let mut ex = TokenizedExample::full(&ids);
                if bos.is_some() {
                    ex.labels[0] = IGNORE_INDEX;
                }
                Ok(ex)
            }
            Content::Chat { messages } => self.encode_chat(messages).map_err(|e| match e {
                ChatError::Tokenizer(source) => wrap(source),
                ChatError::NotPrefix(turn) => DataError::Field {
                    path: example.path.to_path_buf(),
                    line: example.line,
                    field: format!("messages[{turn}]"),
                    reason: "the chat template's rendering of the conversation up to this turn is not a prefix of the whole; cannot find the assistant tokens".into(),
                },
            }),
        }
    }

    fn encode_chat(&self, messages: &[ChatMessage]) -> Result<TokenizedExample, ChatError> {
        let tk = self.tokenizer;
        let full = tk.apply_chat_template(messages, false)?;
        let mut spans = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let start = tk.apply_chat_template(&messages[..i], true)?;
            let end = tk.apply_chat_template(&messages[..=i], false)?;
            if !full.starts_with(&start) || !full.starts_with(&end) || start.len() > end.len() {
                return Err(ChatError::NotPrefix(i));
            }
            spans.push(start.len()..end.len());
        }
        let encoding = tk
            .inner()
            .encode(full.as_str(), false)
            .map_err(|e| ChatError::Tokenizer(TokenizerError::Codec(e.to_string())))?;
        let input_ids = encoding.get_ids().to_vec();
        let labels = input_ids
            .iter()
            .zip(encoding.get_offsets())
            .map(|(&id, &(start, _))| {
                if spans.iter().any(|s| s.contains(&start)) {
                    i64::from(id)
                } else {
                    IGNORE_INDEX
                }
            })
            .collect();
        Ok(TokenizedExample { input_ids, labels })
    }
}

enum ChatError {
    Tokenizer(TokenizerError),
    NotPrefix(usize),
}

impl From<TokenizerError> for ChatError {
    fn from(e: TokenizerError) -> Self {
        Self::Tokenizer(e)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kiln_tokenizer::{ChatTemplate, SpecialTokens};
    use std::path::Path;

    /// A small SentencePiece-style tokenizer with byte fallback, ChatML tokens and a ChatML
    /// template.
    pub(crate) fn tiny_tokenizer() -> Tokenizer {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../kiln-tokenizer/tests/fixtures/tiny_spm_hf/tokenizer.json");
        Tokenizer::from_file(path)
            .unwrap()
            .with_special_tokens(SpecialTokens {
                bos_token: Some("<s>".into()),
                eos_token: Some("</s>".into()),
                unk_token: Some("<unk>".into()),
                pad_token: None,
            })
            .with_chat_template(ChatTemplate::chatml())
    }

    fn example(content: Content) -> Example {
        Example {
            path: Path::new("d.jsonl").into(),
            line: 3,
            content,
        }
    }

    /// Decodes the tokens that carry loss, as maximal runs.
    fn loss_text(tk: &Tokenizer, ex: &TokenizedExample) -> Vec<String> {
        let mut runs = Vec::new();
        let mut run = Vec::new();
        for (&id, &l) in ex.input_ids.iter().zip(&ex.labels) {
            if l == IGNORE_INDEX {
                if !run.is_empty() {
                    runs.push(tk.decode(&std::mem::take(&mut run), false).unwrap());
                }
            } else {
                assert_eq!(l, i64::from(id));
                run.push(id);
            }
        }
        if !run.is_empty() {
            runs.push(tk.decode(&run, false).unwrap());
        }
        runs
    }

    #[test]
    fn completion_only_mask_with_bos_and_eos() {
        let tk = tiny_tokenizer();
        let enc = Encoder::new(&tk, EncodeOptions::default());
        let ex = enc
            .encode(&example(Content::Completion {
                prompt: "What does P0300 mean?".into(),
                completion: "Misfire".into(),
            }))
            .unwrap();
        let bos = tk.bos_token_id().unwrap();
        let eos = tk.eos_token_id().unwrap();
        assert_eq!(ex.input_ids[0], bos);
        assert_eq!(*ex.input_ids.last().unwrap(), eos);
        let prompt_len = 1 + tk.encode("What does P0300 mean?", false).unwrap().len();
        assert!(ex.labels[..prompt_len].iter().all(|&l| l == IGNORE_INDEX));
        assert!(ex.labels[prompt_len..].iter().all(|&l| l != IGNORE_INDEX));
        assert_eq!(loss_text(&tk, &ex), ["Misfire</s>"]);
        let bare = Encoder::new(
            &tk,
            EncodeOptions {
                add_bos: false,
                add_eos: false,
            },
        );
        let ex2 = bare
            .encode(&example(Content::Completion {
                prompt: "What does P0300 mean?".into(),
                completion: "Misfire".into(),
            }))
            .unwrap();
        assert_eq!(ex2.input_ids, ex.input_ids[1..ex.input_ids.len() - 1]);
    }

    #[test]
    fn text_takes_loss_everywhere_but_bos() {
        let tk = tiny_tokenizer();
        let ex = Encoder::new(&tk, EncodeOptions::default())
            .encode(&example(Content::Text {
                text: "engine misfire".into(),
            }))
            .unwrap();
        assert_eq!(ex.labels[0], IGNORE_INDEX);
        assert!(ex.labels[1..].iter().all(|&l| l != IGNORE_INDEX));
        assert_eq!(loss_text(&tk, &ex), ["engine misfire</s>"]);
    }

    #[test]
    fn assistant_only_mask_for_chats() {
        let tk = tiny_tokenizer();
        let messages = vec![
            ChatMessage::system("Be brief."),
            ChatMessage::user("What is P0300?"),
            ChatMessage::assistant("A misfire."),
            ChatMessage::user("And P0171?"),
            ChatMessage::assistant("Lean bank 1."),
        ];
        let ex = Encoder::new(&tk, EncodeOptions::default())
            .encode(&example(Content::Chat {
                messages: messages.clone(),
            }))
            .unwrap();
        assert_eq!(
            ex.input_ids,
            tk.encode(&tk.apply_chat_template(&messages, false).unwrap(), false)
                .unwrap()
        );
        assert_eq!(
            loss_text(&tk, &ex),
            ["A misfire.<|im_end|>\n", "Lean bank 1.<|im_end|>\n"]
        );
    }

    #[test]
    fn assistant_only_mask_with_other_templates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../kiln-tokenizer/tests/fixtures/chat_templates_ref.json");
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let messages = vec![
            ChatMessage::user("What is P0300?"),
            ChatMessage::assistant("A misfire."),
            ChatMessage::user("And P0171?"),
            ChatMessage::assistant("Lean bank 1."),
        ];
        for name in ["chatml", "llama2", "zephyr"] {
            let source = fixture["templates"][name].as_str().unwrap();
            let tk = tiny_tokenizer().with_chat_template(ChatTemplate::new(source).unwrap());
            let ex = Encoder::new(&tk, EncodeOptions::default())
                .encode(&example(Content::Chat {
                    messages: messages.clone(),
                }))
                .unwrap();
            let runs = loss_text(&tk, &ex);
            assert_eq!(runs.len(), 2, "{name}: {runs:?}");
            assert!(
                runs[0].contains("A misfire.") && runs[1].contains("Lean bank 1."),
                "{name}: {runs:?}"
            );
            assert!(
                runs.iter().all(|r| !r.contains('?')),
                "{name}: user text in {runs:?}"
            );
        }
    }

    #[test]
    fn chat_errors_name_the_record() {
        let tk = tiny_tokenizer();
        let mut no_template = tk.clone();
        no_template.set_chat_template(None);
        let err = Encoder::new(&no_template, EncodeOptions::default())
            .encode(&example(Content::Chat {
                messages: vec![ChatMessage::assistant("x")],
            }))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("d.jsonl:3:") && err.contains("chat template"),
            "{err}"
        );
        // A template that prints the last message first: its prefixes are not prefixes.
        let odd = tk.clone().with_chat_template(
            ChatTemplate::new(
                "{{ messages[-1]['content'] }}{% for m in messages %}{{ m['content'] }}{% endfor %}",
            )
            .unwrap(),
        );
        let err = Encoder::new(&odd, EncodeOptions::default())
            .encode(&example(Content::Chat {
                messages: vec![ChatMessage::user("a"), ChatMessage::assistant("b")],
            }))
            .unwrap_err()
            .to_string();
        assert!(err.contains("d.jsonl:3: field `messages[1]`"), "{err}");
        let mut no_eos = tk.clone();
        no_eos = no_eos.with_special_tokens(SpecialTokens::default());
        let err = Encoder::new(&no_eos, EncodeOptions::default())
            .encode(&example(Content::Text { text: "a".into() }))
            .unwrap_err();
        assert!(
            matches!(err, DataError::MissingSpecialToken("EOS")),
            "{err}"
        );
    }
}
