//! OpenAI's request and response shapes, and the checks a request passes before it is queued.

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

/// An error response: `{"error": {"message", "type", "param", "code"}}` with its status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
    /// A stable code (`model_not_found`, `context_length_exceeded`, ...).
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 about `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: Some(param.to_string()),
            code: None,
        }
    }

    /// An error with a status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            code: Some(code),
        }
    }

    /// The `type` field, as OpenAI names it for the status.
    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            429 => "rate_limit_error",
            500..=599 => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind(),
            "param": self.param,
            "code": self.code,
        }})
    }
}

/// A chat message's content: a string, or a list of text parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// `[{"type": "text", "text": "..."}]`
    Parts(Vec<Part>),
}

/// One part of a message's content.
#[derive(Debug, Clone, Deserialize)]
pub struct Part {
    /// Only `text` is served.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    #[serde(default)]
    pub text: Option<String>,
}

/// One chat message.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant` (`developer` is read as `system`).
    pub role: String,
    /// The content.
    pub content: Content,
}

/// A completion prompt: a string or a list of one string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    /// One prompt.
    One(String),
    /// A list (of exactly one prompt here).
    Many(Vec<String>),
}

/// `stop`: a string or a list of up to four.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopInput {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// The fields both endpoints share.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Sampling {
    /// Most tokens to generate.
    pub max_tokens: Option<u64>,
    /// The newer name of `max_tokens` (chat).
    pub max_completion_tokens: Option<u64>,
    /// Sampling temperature in `[0, 2]` (default 1; 0 decodes greedily).
    pub temperature: Option<f32>,
    /// Nucleus mass in `(0, 1]`.
    pub top_p: Option<f32>,
    /// Stop strings (not part of the answer).
    pub stop: Option<StopInput>,
    /// Sampler seed.
    pub seed: Option<u64>,
    /// Server-sent events.
    pub stream: Option<bool>,
    /// Choices per request (only 1).
    pub n: Option<u64>,
    /// Keep generating past EOS up to `max_tokens` (as vLLM's extension).
    pub ignore_eos: Option<bool>,
}

/// `POST /v1/chat/completions`
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// The base model's name or an adapter's.
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Sampling fields (read from the same object by [`parse_request`]).
    #[serde(skip)]
    pub sampling: Sampling,
}

/// `POST /v1/completions`
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// The base model's name or an adapter's.
    pub model: Option<String>,
    /// The prompt.
    pub prompt: PromptInput,
    /// Sampling fields (read from the same object by [`parse_request`]).
    #[serde(skip)]
    pub sampling: Sampling,
}

/// A request with sampling fields.
pub trait WithSampling {
    /// Where they go.
    fn sampling_mut(&mut self) -> &mut Sampling;
}

impl WithSampling for ChatRequest {
    fn sampling_mut(&mut self) -> &mut Sampling {
        &mut self.sampling
    }
}

impl WithSampling for CompletionRequest {
    fn sampling_mut(&mut self) -> &mut Sampling {
        &mut self.sampling
    }
}

/// Parses a generation request: its own fields, then the sampling fields of the same object
/// (each error names its field).
///
/// # Errors
/// As [`parse`].
pub fn parse_request<T: serde::de::DeserializeOwned + WithSampling>(
    body: &[u8],
) -> Result<T, ApiError> {
    let mut req: T = parse(body)?;
    *req.sampling_mut() = parse(body)?;
    Ok(req)
}

/// `POST /v1/feedback`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// The `id` of a response this server gave.
    pub id: String,
    /// `1` (good) or `-1` (bad).
    pub rating: Option<i64>,
    /// A better answer than the response's.
    pub preferred: Option<String>,
}

/// Parses a JSON body, naming the field at fault.
///
/// # Errors
/// A 400 with serde's message (line and column) and the field's path.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = if inner.is_syntax() || inner.is_eof() {
            "malformed JSON"
        } else {
            "invalid request"
        };
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("{what}: {inner}"),
            param: (path != ".").then_some(path),
            code: None,
        }
    })
}

impl Sampling {
    /// Checks the ranges; returns the stop strings.
    ///
    /// # Errors
    /// A 400 naming the field.
    pub fn check(&self) -> Result<Vec<String>, ApiError> {
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(ApiError::invalid(
                "temperature",
                format!("temperature {t} is not in [0, 2]"),
            ));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(ApiError::invalid(
                "top_p",
                format!("top_p {p} is not in (0, 1]"),
            ));
        }
        if self.max_tokens.or(self.max_completion_tokens) == Some(0) {
            return Err(ApiError::invalid(
                "max_tokens",
                "max_tokens must be at least 1",
            ));
        }
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid("n", "only n = 1 is served"));
        }
        let stops = match &self.stop {
            None => Vec::new(),
            Some(StopInput::One(s)) => vec![s.clone()],
            Some(StopInput::Many(v)) => v.clone(),
        };
        if stops.len() > 4 {
            return Err(ApiError::invalid("stop", "at most 4 stop strings"));
        }
        if stops.iter().any(String::is_empty) {
            return Err(ApiError::invalid("stop", "a stop string is empty"));
        }
        Ok(stops)
    }
}

impl Message {
    /// The content as text.
    ///
    /// # Errors
    /// A 400 for a part that is not text.
    pub fn text(&self, i: usize) -> Result<String, ApiError> {
        match &self.content {
            Content::Text(t) => Ok(t.clone()),
            Content::Parts(parts) => parts
                .iter()
                .map(|p| match (&*p.kind, &p.text) {
                    ("text", Some(t)) => Ok(t.as_str()),
                    _ => Err(ApiError::invalid(
                        &format!("messages[{i}].content"),
                        format!("content part of type `{}` is not served", p.kind),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| v.concat()),
        }
    }
}

/// Turns generated text into what a client sees: held back while it may still turn into a stop
/// string or end inside a character, cut where a stop string begins.
#[derive(Debug, Default)]
pub struct TextState {
    /// Generated tokens (EOS excluded).
    pub tokens: Vec<u32>,
    /// The answer so far (cut at a stop string).
    pub text: String,
    /// Bytes of `text` already handed out.
    emitted: usize,
    stops: Vec<String>,
    /// A stop string appeared.
    pub stopped: bool,
}

impl TextState {
    /// A state that cuts at `stops`.
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            ..Self::default()
        }
    }

    /// Takes `text`, the decoding of every token so far; returns what may be handed out now.
    pub fn update(&mut self, mut text: String) -> String {
        if let Some(cut) = self
            .stops
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            text.truncate(cut);
            self.stopped = true;
        }
        self.text = text;
        let mut safe = self.text.len();
        if !self.stopped {
            if self.text.ends_with('\u{FFFD}') {
                safe -= '\u{FFFD}'.len_utf8();
            }
            for s in &self.stops {
                for (k, _) in s.char_indices().skip(1) {
                    if self.text.ends_with(&s[..k]) {
                        safe = safe.min(self.text.len() - k);
                    }
                }
            }
        }
        self.take(safe)
    }

    /// Everything not yet handed out (at the end).
    pub fn rest(&mut self) -> String {
        self.take(self.text.len())
    }

    fn take(&mut self, upto: usize) -> String {
        if upto <= self.emitted || !self.text.is_char_boundary(upto) {
            return String::new();
        }
        match self.text.get(self.emitted..upto) {
            Some(new) => {
                let new = new.to_string();
                self.emitted = upto;
                new
            }
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_held_back_near_a_stop_string_and_cut_at_it() {
        let mut t = TextState::new(vec!["\nQ:".into()]);
        assert_eq!(t.update("Hello".into()), "Hello");
        assert_eq!(t.update("Hello world\n".into()), " world");
        assert_eq!(t.update("Hello world\nQ".into()), "");
        assert_eq!(t.update("Hello world\nQ: next".into()), "");
        assert!(t.stopped);
        assert_eq!(t.rest(), "");
        assert_eq!(t.text, "Hello world");
        let mut u = TextState::new(vec![]);
        assert_eq!(u.update("a\u{FFFD}".into()), "a");
        assert_eq!(u.update("aé".into()), "é");
        assert_eq!(u.rest(), "");
    }

    #[test]
    fn bad_fields_are_named() {
        let e =
            parse_request::<ChatRequest>(br#"{"messages": [], "temperature": "hot"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"), "{e:?}");
        let e = parse_request::<ChatRequest>(br#"{"messages": [{"role": "user"}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0]"), "{e:?}");
        let ok =
            parse_request::<CompletionRequest>(br#"{"prompt": "x", "max_tokens": 3, "user": "u"}"#)
                .unwrap();
        assert_eq!(ok.sampling.max_tokens, Some(3));
        let e = parse_request::<ChatRequest>(b"{\"messages\": [").unwrap_err();
        assert!(e.message.starts_with("malformed JSON"), "{e:?}");
        let s = Sampling {
            top_p: Some(1.5),
            ..Default::default()
        };
        assert_eq!(s.check().unwrap_err().param.as_deref(), Some("top_p"));
    }
}
