//! The decoding loop behind the server. One thread owns the models and, where the model has a
//! decoder over host buffers, runs **continuous batching**: a request that arrives while others
//! decode is prefilled alone and joins the running batch at the next step; a finished one
//! leaves its slot (and its cache memory) to the next. Each sequence decodes with its own
//! adapter, the base projections shared by the whole batch
//! ([`CachedCausalLm::multi_adapter_decoder`]).
//!
//! A decode step runs at most [`QUANTIZED_MAX_ROWS`] rows at once, and a prefill runs alone, so
//! each sequence takes the kernels it takes when decoded by itself: a greedy answer does not
//! depend on what else is in the batch.
//!
//! Models without such a decoder (another device than the CPU's `flex`, GPT-2, adapters other
//! than LoRA) are served one request at a time through [`generate()`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use kiln_models::{
    AnyCausalLm, CachedCausalLm, FinishReason, GenerationConfig, HostDecoder, Sampler, generate,
};
use kiln_nn::quant::QUANTIZED_MAX_ROWS;
use kiln_tokenizer::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;

/// Positions each slot's cache holds at first (it grows on demand).
const INITIAL_CAPACITY: usize = 256;

/// One generation request.
#[derive(Debug)]
pub struct Job {
    /// Prompt token ids (not empty).
    pub prompt: Vec<u32>,
    /// Resident adapter index (`None`: the base model).
    pub adapter: Option<usize>,
    /// Sampling, `max_new_tokens`, EOS ids. Stop strings are the caller's to apply: it drops
    /// its receiver to end the sequence.
    pub config: GenerationConfig,
    /// Where the tokens go; the sequence ends early when the receiver is dropped.
    pub events: UnboundedSender<Event>,
}

/// What the engine reports of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A new token (EOS included).
    Token(u32),
    /// The sequence ended.
    Done(FinishReason),
    /// The job could not run.
    Failed(String),
}

/// The decoding thread has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// How many requests wait and run.
#[derive(Debug, Default)]
pub struct Load {
    /// Submitted, not yet started.
    pub queued: AtomicUsize,
    /// Decoding.
    pub running: AtomicUsize,
    /// Decode steps run (each prompt's prefill not counted).
    pub steps: AtomicUsize,
    /// Sequences advanced by those steps (`rows / steps`: the mean batch).
    pub rows: AtomicUsize,
}

/// The decoding thread and the queue into it.
#[derive(Debug)]
pub struct Engine {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    load: Arc<Load>,
    batched: bool,
    slots: usize,
}

impl Engine {
    /// Starts the thread with `base` and the `adapters` (each `base` with one adapter
    /// attached), decoding up to `slots` sequences together.
    pub fn start(
        base: AnyCausalLm,
        adapters: Vec<AnyCausalLm>,
        tokenizer: Arc<Tokenizer>,
        slots: usize,
    ) -> Self {
        let slots = slots.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<bool>();
        let load = Arc::new(Load::default());
        let thread_load = Arc::clone(&load);
        let thread = std::thread::Builder::new()
            .name("kiln-engine".into())
            .spawn(move || {
                let refs: Vec<&AnyCausalLm> = adapters.iter().collect();
                let decoder = base.multi_adapter_decoder(&refs, &vec![INITIAL_CAPACITY; slots]);
                let _ = ready_tx.send(decoder.is_some());
                match decoder {
                    Some(dec) => batched_loop(dec, &rx, &thread_load),
                    None => sequential_loop(&base, &adapters, &tokenizer, &rx, &thread_load),
                }
            })
            .expect("spawning the decoding thread");
        let batched = ready_rx.recv().unwrap_or(false);
        Self {
            tx: Some(tx),
            thread: Some(thread),
            load,
            batched,
            slots,
        }
    }

    /// Whether requests decode together (continuous batching) rather than one at a time.
    pub fn batched(&self) -> bool {
        self.batched
    }

    /// Sequences decoded together at most.
    pub fn slots(&self) -> usize {
        if self.batched { self.slots } else { 1 }
    }

    /// Queue and batch sizes, live.
    pub fn load(&self) -> &Load {
        &self.load
    }

    /// Queues a job.
    ///
    /// # Errors
    /// [`Stopped`] when the decoding thread is gone (the job is dropped).
    pub fn submit(&self, job: Job) -> Result<(), Stopped> {
        let Some(tx) = &self.tx else {
            return Err(Stopped);
        };
        self.load.queued.fetch_add(1, Ordering::SeqCst);
        tx.send(job).map_err(|_| {
            self.load.queued.fetch_sub(1, Ordering::SeqCst);
            Stopped
        })
    }

    /// Lets the queued and running jobs finish, then stops the thread.
    pub fn shutdown(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A sequence being decoded.
struct Live {
    slot: usize,
    sampler: Sampler,
    seen: Vec<u32>,
    produced: usize,
    next: u32,
    events: UnboundedSender<Event>,
}

impl Live {
    /// Picks the next token from `logits` (one row) and reports it; `false` once the sequence
    /// has ended.
    fn accept(&mut self, logits: &mut [f32]) -> bool {
        let tok = self.sampler.pick(logits, &self.seen);
        self.seen.push(tok);
        self.produced += 1;
        if self.events.send(Event::Token(tok)).is_err() {
            return false;
        }
        let config = self.sampler.config();
        let finish = if config.eos_token_ids.contains(&tok) {
            Some(FinishReason::Eos)
        } else if self.produced >= config.max_new_tokens {
            Some(FinishReason::Length)
        } else {
            None
        };
        match finish {
            Some(f) => {
                let _ = self.events.send(Event::Done(f));
                false
            }
            None => {
                self.next = tok;
                true
            }
        }
    }
}

fn batched_loop(mut dec: Box<dyn HostDecoder + '_>, rx: &mpsc::Receiver<Job>, load: &Load) {
    let slots = dec.sequences();
    let mut free: Vec<usize> = (0..slots).rev().collect();
    let mut live: Vec<Live> = Vec::new();
    loop {
        // Admit new requests into free slots: blocking only when nothing decodes.
        let mut admitted = Vec::new();
        if live.is_empty() {
            match rx.recv() {
                Ok(job) => admitted.push(job),
                Err(_) => return,
            }
        }
        while admitted.len() < free.len() {
            match rx.try_recv() {
                Ok(job) => admitted.push(job),
                Err(_) => break,
            }
        }
        for job in admitted {
            load.queued.fetch_sub(1, Ordering::SeqCst);
            let sampler = match Sampler::new(job.config) {
                Ok(s) => s,
                Err(e) => {
                    let _ = job.events.send(Event::Failed(e.to_string()));
                    continue;
                }
            };
            if job.adapter.is_some_and(|a| a >= dec.adapters()) {
                let _ = job.events.send(Event::Failed("unknown adapter".into()));
                continue;
            }
            load.running.fetch_add(1, Ordering::SeqCst);
            let slot = free.pop().expect("admitted only into free slots");
            dec.restart(slot, job.adapter);
            // The prompt runs alone: the kernels it takes do not depend on the batch.
            let mut tokens: Vec<&[u32]> = vec![&[]; slots];
            tokens[slot] = &job.prompt;
            let mut logits = rayon::scope(|_| dec.step(&tokens));
            let mut seq = Live {
                slot,
                sampler,
                seen: job.prompt.clone(),
                produced: 0,
                next: 0,
                events: job.events,
            };
            if seq.accept(&mut logits) {
                live.push(seq);
            } else {
                free.push(slot);
                load.running.fetch_sub(1, Ordering::SeqCst);
            }
        }
        // One decode step of every live sequence, in chunks the quantized kernels take.
        live.sort_by_key(|s| s.slot);
        let mut ended = vec![false; live.len()];
        for (c, chunk) in live.chunks_mut(QUANTIZED_MAX_ROWS).enumerate() {
            let next: Vec<(usize, u32)> = chunk.iter().map(|s| (s.slot, s.next)).collect();
            let mut tokens: Vec<&[u32]> = vec![&[]; slots];
            for (slot, tok) in &next {
                tokens[*slot] = std::slice::from_ref(tok);
            }
            let logits = rayon::scope(|_| dec.step(&tokens));
            load.steps.fetch_add(1, Ordering::Relaxed);
            load.rows.fetch_add(chunk.len(), Ordering::Relaxed);
            let vocab = logits.len() / chunk.len();
            for (i, (seq, row)) in chunk.iter_mut().zip(logits.chunks_exact(vocab)).enumerate() {
                let mut row = row.to_vec();
                if !seq.accept(&mut row) {
                    ended[c * QUANTIZED_MAX_ROWS + i] = true;
                }
            }
        }
        let mut i = 0;
        live.retain(|s| {
            let keep = !ended[i];
            i += 1;
            if !keep {
                free.push(s.slot);
                load.running.fetch_sub(1, Ordering::SeqCst);
            }
            keep
        });
    }
}

fn sequential_loop(
    base: &AnyCausalLm,
    adapters: &[AnyCausalLm],
    tokenizer: &Tokenizer,
    rx: &mpsc::Receiver<Job>,
    load: &Load,
) {
    let pad = tokenizer.padding_id();
    let decode = |ids: &[u32]| tokenizer.decode(ids, true).unwrap_or_default();
    while let Ok(job) = rx.recv() {
        load.queued.fetch_sub(1, Ordering::SeqCst);
        let Some(model) = job.adapter.map_or(Some(base), |a| adapters.get(a)) else {
            let _ = job.events.send(Event::Failed("unknown adapter".into()));
            continue;
        };
        load.running.fetch_add(1, Ordering::SeqCst);
        let events = job.events.clone();
        let out = generate(
            model,
            std::slice::from_ref(&job.prompt),
            pad,
            &job.config,
            Some(&decode),
            &mut |_, tok| {
                let _ = events.send(Event::Token(tok));
            },
        );
        let _ = match out {
            Ok(g) => job.events.send(Event::Done(g[0].finish)),
            Err(e) => job.events.send(Event::Failed(e.to_string())),
        };
        load.running.fetch_sub(1, Ordering::SeqCst);
    }
}
