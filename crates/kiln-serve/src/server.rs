//! The HTTP side: routes, authentication, admission limits, streaming and shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream;
use kiln_models::{AnyCausalLm, CachedCausalLm, FinishReason, GenerationConfig};
use kiln_tokenizer::{ChatMessage, Tokenizer};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::{
    ApiError, ChatRequest, CompletionRequest, FeedbackRequest, PromptInput, Sampling, TextState,
    parse, parse_request,
};
use crate::engine::{Engine, Event, Job};
use crate::feedback::{Asked, FeedbackLog, Outcome};
use crate::metrics::{Endpoint, Metrics};
use crate::{Result, ServeError, ServeOptions};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// What every handler reads.
struct AppState {
    engine: Engine,
    tokenizer: Arc<Tokenizer>,
    /// Index 0: the base model; `i + 1`: adapter `i`.
    names: Vec<String>,
    context: Option<usize>,
    eos: Vec<u32>,
    options: ServeOptions,
    metrics: Metrics,
    feedback: Option<FeedbackLog>,
    /// Requests admitted and not yet answered (queued or decoding).
    admitted: AtomicUsize,
    next_id: AtomicU64,
}

/// A server: the decoding engine and the routes in front of it.
pub struct Server {
    state: Arc<AppState>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("models", &self.state.names)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server of `base` (named `base_name`) and the named `adapters`, each `base` with one
    /// adapter attached. Starts the decoding thread.
    ///
    /// # Errors
    /// Duplicate names, or a feedback file that cannot be opened.
    pub fn new(
        base_name: &str,
        base: AnyCausalLm,
        adapters: Vec<(String, AnyCausalLm)>,
        tokenizer: Tokenizer,
        options: ServeOptions,
    ) -> Result<Self> {
        let mut names = vec![base_name.to_string()];
        for (name, _) in &adapters {
            if name.is_empty() || names.contains(name) {
                return Err(ServeError::Name(name.clone()));
            }
            names.push(name.clone());
        }
        let feedback = match &options.feedback {
            Some(path) => Some(FeedbackLog::open(path).map_err(|source| ServeError::Io {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        let context = base.max_context();
        let eos = tokenizer.eos_token_id().into_iter().collect();
        let tokenizer = Arc::new(tokenizer);
        let models = adapters.into_iter().map(|(_, m)| m).collect();
        let engine = Engine::start(base, models, Arc::clone(&tokenizer), options.max_concurrent);
        Ok(Self {
            state: Arc::new(AppState {
                engine,
                tokenizer,
                names,
                context,
                eos,
                options,
                metrics: Metrics::default(),
                feedback,
                admitted: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
            }),
        })
    }

    /// Whether requests decode together (continuous batching) or one at a time.
    pub fn batched(&self) -> bool {
        self.state.engine.batched()
    }

    /// Sequences decoded together at most.
    pub fn slots(&self) -> usize {
        self.state.engine.slots()
    }

    /// The routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/health", get(health))
            .route("/metrics", get(metrics))
            .route("/v1/models", get(models))
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completions))
            .route("/v1/feedback", post(feedback))
            .fallback(not_found)
            .with_state(Arc::clone(&self.state))
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting, lets every
    /// admitted request finish (streams included), and stops the decoding thread.
    ///
    /// # Errors
    /// An I/O error of the listener.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let app = self.router();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| ServeError::Io {
                path: "listener".into(),
                source,
            })?;
        // Connections are closed; the engine's queue is empty unless a client left early.
        let state = self.state;
        tokio::task::spawn_blocking(move || drop(state))
            .await
            .map_err(|e| ServeError::Io {
                path: "decoding thread".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
        Ok(())
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    axum::Json(json!({
        "status": "ok",
        "models": s.names,
        "batching": if s.engine.batched() { "continuous" } else { "sequential" },
    }))
    .into_response()
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let load = s.engine.load();
    let body = s.metrics.render(
        load.queued.load(Ordering::SeqCst),
        load.running.load(Ordering::SeqCst),
        load.steps.load(Ordering::Relaxed),
        load.rows.load(Ordering::Relaxed),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn not_found(State(s): State<Arc<AppState>>) -> Response {
    s.metrics.error(404);
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response()
}

impl AppState {
    /// Checks the bearer token when the server has an API key.
    fn authorize(&self, headers: &HeaderMap) -> std::result::Result<(), ApiError> {
        let Some(key) = &self.options.api_key else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given == Some(key.as_str()) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "a valid API key is needed: `Authorization: Bearer <key>`",
            ))
        }
    }

    /// The model index of a request's `model` field (the base when absent).
    fn model(&self, name: Option<&str>) -> std::result::Result<usize, ApiError> {
        let Some(name) = name else { return Ok(0) };
        self.names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| ApiError {
                status: StatusCode::NOT_FOUND,
                message: format!(
                    "the model `{name}` does not exist; served: {}",
                    self.names.join(", ")
                ),
                param: Some("model".into()),
                code: Some("model_not_found"),
            })
    }

    fn fail(&self, e: ApiError) -> Response {
        self.metrics.error(e.status.as_u16());
        e.into_response()
    }
}

async fn models(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    s.metrics.request(Endpoint::Models);
    if let Err(e) = s.authorize(&headers) {
        return s.fail(e);
    }
    let data: Vec<Value> = s
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            json!({
                "id": n,
                "object": "model",
                "created": 0,
                "owned_by": "kiln",
                "parent": if i == 0 { Value::Null } else { json!(s.names[0]) },
            })
        })
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// Which endpoint a generation answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

/// A request ready to queue.
struct Prepared {
    kind: Kind,
    model: usize,
    prompt: Vec<u32>,
    config: GenerationConfig,
    stops: Vec<String>,
    stream: bool,
    asked: Asked,
}

async fn chat(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    generation(s, Endpoint::Chat, prepare_chat, &headers, &body).await
}

async fn completions(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    generation(
        s,
        Endpoint::Completions,
        prepare_completion,
        &headers,
        &body,
    )
    .await
}

/// Counts the request, prepares it with `prepare` and answers it (or the error).
async fn generation(
    s: Arc<AppState>,
    endpoint: Endpoint,
    prepare: fn(&AppState, &HeaderMap, &[u8]) -> std::result::Result<Prepared, ApiError>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    s.metrics.request(endpoint);
    let arrived = Instant::now();
    match prepare(&s, headers, body) {
        Ok(p) => respond(s, p, arrived).await,
        Err(e) => s.fail(e),
    }
}

fn prepare_chat(
    s: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> std::result::Result<Prepared, ApiError> {
    s.authorize(headers)?;
    let req: ChatRequest = parse_request(body)?;
    let model = s.model(req.model.as_deref())?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid("messages", "messages is empty"));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    let mut shown = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "developer" => "system",
            r @ ("system" | "user" | "assistant") => r,
            other => {
                return Err(ApiError::invalid(
                    &format!("messages[{i}].role"),
                    format!("role `{other}` is not one of system, user, assistant"),
                ));
            }
        };
        let text = m.text(i)?;
        shown.push(json!({"role": role, "content": text}));
        messages.push(ChatMessage::new(role, text));
    }
    let text = s
        .tokenizer
        .apply_chat_template(&messages, true)
        .map_err(|e| ApiError::invalid("messages", format!("chat template: {e}")))?;
    let prompt = s
        .tokenizer
        .encode(&text, false)
        .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    finish_prepare(
        s,
        Kind::Chat,
        model,
        prompt,
        &req.sampling,
        Asked::Chat(json!(shown)),
    )
}

fn prepare_completion(
    s: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> std::result::Result<Prepared, ApiError> {
    s.authorize(headers)?;
    let req: CompletionRequest = parse_request(body)?;
    let model = s.model(req.model.as_deref())?;
    let text = match req.prompt {
        PromptInput::One(p) => p,
        PromptInput::Many(mut v) if v.len() == 1 => v.remove(0),
        PromptInput::Many(v) => {
            return Err(ApiError::invalid(
                "prompt",
                format!("{} prompts in one request; send one", v.len()),
            ));
        }
    };
    let prompt = s
        .tokenizer
        .encode(&text, true)
        .map_err(|e| ApiError::invalid("prompt", e.to_string()))?;
    finish_prepare(
        s,
        Kind::Completion,
        model,
        prompt,
        &req.sampling,
        Asked::Text(text),
    )
}

fn finish_prepare(
    s: &AppState,
    kind: Kind,
    model: usize,
    prompt: Vec<u32>,
    sampling: &Sampling,
    asked: Asked,
) -> std::result::Result<Prepared, ApiError> {
    let stops = sampling.check()?;
    if prompt.is_empty() {
        return Err(ApiError::invalid(
            "prompt",
            "the prompt encodes to no token",
        ));
    }
    let asked_max = sampling.max_tokens.or(sampling.max_completion_tokens);
    let max_new = match (asked_max, s.context) {
        (Some(m), Some(ctx)) if prompt.len() as u64 + m > ctx as u64 => {
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                message: format!(
                    "this model's context is {ctx} tokens; the request asks for {} ({} in the prompt, {m} to generate)",
                    prompt.len() as u64 + m,
                    prompt.len()
                ),
                param: Some("max_tokens".into()),
                code: Some("context_length_exceeded"),
            });
        }
        (Some(m), _) => m as usize,
        (None, Some(ctx)) if prompt.len() >= ctx => {
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                message: format!(
                    "this model's context is {ctx} tokens; the prompt has {}",
                    prompt.len()
                ),
                param: Some(
                    match kind {
                        Kind::Chat => "messages",
                        Kind::Completion => "prompt",
                    }
                    .into(),
                ),
                code: Some("context_length_exceeded"),
            });
        }
        (None, Some(ctx)) => s.options.default_max_tokens.min(ctx - prompt.len()),
        (None, None) => s.options.default_max_tokens,
    };
    let config = GenerationConfig {
        max_new_tokens: max_new,
        temperature: sampling.temperature.unwrap_or(1.0),
        top_k: None,
        top_p: sampling.top_p,
        repetition_penalty: 1.0,
        seed: sampling.seed.unwrap_or_else(rand::random),
        eos_token_ids: if sampling.ignore_eos == Some(true) {
            Vec::new()
        } else {
            s.eos.clone()
        },
        stop_strings: stops.clone(),
    };
    config
        .validate()
        .map_err(|e| ApiError::invalid("temperature", e.to_string()))?;
    Ok(Prepared {
        kind,
        model,
        prompt,
        config,
        stops,
        stream: sampling.stream == Some(true),
        asked,
    })
}

/// Holds a place among the admitted requests; gives it back when dropped.
struct Admission(Arc<AppState>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running generation: the engine's events, turned into text.
struct Run {
    state: Arc<AppState>,
    events: Option<UnboundedReceiver<Event>>,
    text: TextState,
    finish: Option<&'static str>,
    arrived: Instant,
    first_token: bool,
    id: String,
    model: usize,
    kind: Kind,
    prompt_tokens: usize,
    asked: Asked,
    created: u64,
    /// The request's end-of-sequence ids (none with `ignore_eos`).
    eos: Vec<u32>,
    /// Tokens generated (EOS included).
    generated: usize,
    _admission: Admission,
}

/// What a run produced next.
enum Step {
    /// New text (possibly empty).
    Text(String),
    /// The end.
    Done,
    /// The engine failed.
    Failed(String),
}

impl Run {
    async fn next(&mut self) -> Step {
        let Some(rx) = self.events.as_mut() else {
            return Step::Done;
        };
        match rx.recv().await {
            Some(Event::Token(tok)) => {
                let s = &self.state;
                s.metrics.generated_tokens.fetch_add(1, Ordering::Relaxed);
                if !self.first_token {
                    self.first_token = true;
                    s.metrics
                        .time_to_first_token
                        .observe(self.arrived.elapsed().as_secs_f64());
                }
                self.generated += 1;
                if self.eos.contains(&tok) {
                    return Step::Text(String::new());
                }
                self.text.tokens.push(tok);
                let decoded = s
                    .tokenizer
                    .decode(&self.text.tokens, true)
                    .unwrap_or_default();
                let new = self.text.update(decoded);
                if self.text.stopped {
                    // Dropping the receiver ends the sequence in the engine.
                    self.events = None;
                    self.end(Some(FinishReason::StopString));
                }
                Step::Text(new)
            }
            Some(Event::Done(f)) => {
                self.events = None;
                self.end(Some(f));
                Step::Done
            }
            Some(Event::Failed(e)) => {
                self.events = None;
                Step::Failed(e)
            }
            None => {
                self.events = None;
                Step::Failed("the decoding thread stopped".into())
            }
        }
    }

    fn end(&mut self, f: Option<FinishReason>) {
        self.finish = Some(match f {
            Some(FinishReason::Length) => "length",
            _ => "stop",
        });
        let s = &self.state;
        s.metrics
            .latency
            .observe(self.arrived.elapsed().as_secs_f64());
        if let Some(log) = &s.feedback {
            log.remember(
                &self.id,
                &s.names[self.model],
                self.asked.clone(),
                &self.text.text,
            );
        }
    }

    fn completion_tokens(&self) -> usize {
        self.generated
    }

    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens(),
            "total_tokens": self.prompt_tokens + self.completion_tokens(),
        })
    }

    fn chunk(&self, text: &str, finish: Option<&str>, first: bool) -> Value {
        let name = &self.state.names[self.model];
        match self.kind {
            Kind::Chat => {
                let mut delta = json!({});
                if first {
                    delta["role"] = json!("assistant");
                }
                if !text.is_empty() || (first && finish.is_none()) {
                    delta["content"] = json!(text);
                }
                json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": name,
                    "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
                })
            }
            Kind::Completion => json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": name,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
            }),
        }
    }

    fn whole(&self) -> Value {
        let name = &self.state.names[self.model];
        let text = &self.text.text;
        match self.kind {
            Kind::Chat => json!({
                "id": self.id, "object": "chat.completion", "created": self.created,
                "model": name,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": null,
                    "finish_reason": self.finish,
                }],
                "usage": self.usage(),
            }),
            Kind::Completion => json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": name,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": self.finish}],
                "usage": self.usage(),
            }),
        }
    }
}

async fn respond(s: Arc<AppState>, p: Prepared, arrived: Instant) -> Response {
    // Admission: decoding slots plus queue places.
    let limit = s.engine.slots() + s.options.max_queue;
    let admitted = s
        .admitted
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < limit).then_some(n + 1)
        });
    if admitted.is_err() {
        return s.fail(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "server_busy",
            format!(
                "{limit} requests are decoding or queued (--max-concurrent {} plus --max-queue {}); retry later",
                s.engine.slots(),
                s.options.max_queue
            ),
        ));
    }
    let admission = Admission(Arc::clone(&s));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let n = s.next_id.fetch_add(1, Ordering::Relaxed);
    let id = match p.kind {
        Kind::Chat => format!("chatcmpl-{n}"),
        Kind::Completion => format!("cmpl-{n}"),
    };
    let eos = p.config.eos_token_ids.clone();
    let job = Job {
        prompt: p.prompt.clone(),
        adapter: p.model.checked_sub(1),
        config: p.config,
        events: tx,
    };
    if s.engine.submit(job).is_err() {
        return s.fail(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        ));
    }
    s.metrics
        .prompt_tokens
        .fetch_add(p.prompt.len() as u64, Ordering::Relaxed);
    let mut run = Run {
        state: Arc::clone(&s),
        events: Some(rx),
        text: TextState::new(p.stops),
        finish: None,
        arrived,
        first_token: false,
        id,
        model: p.model,
        kind: p.kind,
        prompt_tokens: p.prompt.len(),
        asked: p.asked,
        created: unix_now(),
        eos,
        generated: 0,
        _admission: admission,
    };
    if !p.stream {
        loop {
            match run.next().await {
                Step::Text(_) => {}
                Step::Done => break,
                Step::Failed(e) => {
                    return s.fail(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "generation_failed",
                        e,
                    ));
                }
            }
        }
        run.text.rest();
        return axum::Json(run.whole()).into_response();
    }
    // Server-sent events: a first chunk (the role), text chunks, the finish, `[DONE]`.
    enum Phase {
        Start,
        Body,
        Finished,
        Over,
    }
    let events = stream::unfold((run, Phase::Start), |(mut run, phase)| async move {
        let event = |v: Value| Ok::<_, Infallible>(SseEvent::default().data(v.to_string()));
        match phase {
            Phase::Start => {
                let first = run.chunk("", None, true);
                Some((event(first), (run, Phase::Body)))
            }
            Phase::Body => loop {
                match run.next().await {
                    Step::Text(t) if t.is_empty() => continue,
                    Step::Text(t) => {
                        let c = run.chunk(&t, None, false);
                        return Some((event(c), (run, Phase::Body)));
                    }
                    Step::Done => {
                        let rest = run.text.rest();
                        let mut c = run.chunk(&rest, run.finish, false);
                        c["usage"] = run.usage();
                        return Some((event(c), (run, Phase::Finished)));
                    }
                    Step::Failed(e) => {
                        run.state.metrics.error(500);
                        let err = ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "generation_failed",
                            e,
                        );
                        return Some((event(err.body()), (run, Phase::Finished)));
                    }
                }
            },
            Phase::Finished => Some((Ok(SseEvent::default().data("[DONE]")), (run, Phase::Over))),
            Phase::Over => None,
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn feedback(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    s.metrics.request(Endpoint::Feedback);
    let result = (|| {
        s.authorize(&headers)?;
        let Some(log) = &s.feedback else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "feedback_off",
                "feedback is not collected: start the server with --feedback FILE",
            ));
        };
        let req: FeedbackRequest = parse(&body)?;
        if req.rating.is_none() && req.preferred.is_none() {
            return Err(ApiError::invalid(
                "rating",
                "give `rating` (1 or -1) or `preferred`",
            ));
        }
        if let Some(r) = req.rating
            && r != 1
            && r != -1
        {
            return Err(ApiError::invalid(
                "rating",
                format!("rating {r} is not 1 or -1"),
            ));
        }
        match log.record(&req.id, req.rating, req.preferred.as_deref()) {
            Ok(Outcome::Pairs(n)) => Ok(axum::Json(json!({"id": req.id, "pairs_written": n}))),
            Ok(Outcome::UnknownId) => Err(ApiError {
                status: StatusCode::NOT_FOUND,
                message: format!("no response `{}` is known", req.id),
                param: Some("id".into()),
                code: Some("response_not_found"),
            }),
            Err(e) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "feedback_write_failed",
                format!("writing {}: {e}", log.path().display()),
            )),
        }
    })();
    match result {
        Ok(r) => r.into_response(),
        Err(e) => s.fail(e),
    }
}
