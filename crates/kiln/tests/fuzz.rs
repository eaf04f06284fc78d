//! Fuzzing of every reader that takes a user's file: the GGUF parser (with the model, config and
//! tokenizer built from it), the safetensors reader, `adapter_config.json` (loaded onto a model),
//! recipe TOML, the JSONL and CSV data readers, and preference pairs (formatted and tokenized).
//!
//! Each target starts from its committed corpus (`fuzz/corpus/<target>/`, valid files that must
//! read) and feeds the reader mutations of it: bit flips, random and "interesting" bytes and
//! integers (lengths such as `u64::MAX` or `2^32` written over header fields), format tokens for
//! the text formats, deletions, duplications, truncations and splices of two corpus files. The
//! property is the one a user relies on: a file reads, or the reader returns an error that names
//! the file; it never panics, aborts or allocates without bound. (The mutations are blind, not
//! coverage-guided.)
//!
//! Every target runs for `KILN_FUZZ_SECONDS` seconds (default 1; CI sets more) from the seed
//! `KILN_FUZZ_SEED` (default 0). An input that fails is written to
//! `target/tmp/fuzz-failures/` and the failure names that file; one that aborts the process
//! (an allocation failure) is left in `target/tmp/fuzz-work/<target>/`. Once fixed, it belongs in
//! the corpus as `regression-*` (a file that may be refused but must not fail), where every later
//! run reads it first.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kiln::data::{SourceKind, read_records};
use kiln::models::gguf::GgufFile;
use kiln::models::{LlamaConfig, load_tokenizer, tokenizer_spec};
use kiln::nn::safetensors::read_safetensors;
use kiln::peft::io::read_adapter_config;
use kiln::prelude::*;
use kiln::recipe::Recipe;

/// xorshift64*: small, seedable and good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Tokens of the text formats (JSON, TOML, CSV) and values that stress number parsing.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"=",
    b"null",
    b"true",
    b"-1",
    b"0",
    b"1e999",
    b"-0.0",
    b"nan",
    b"inf",
    b"\n",
    b"\r\n",
    b"\"\"\"",
    b"'",
    b"#",
    b"\\u0000",
    b"\\ud800",
    b"18446744073709551615",
    b"4294967296",
    b"99999999999",
    b"[[",
    b"]]",
    b"\xff\xfe",
    b"\0",
    b"\"r\": 1000000000",
    b"\"peft_type\": \"LORA\"",
    b"\"num_virtual_tokens\": 100000000",
];

/// Integers written over binary headers: counts, lengths, offsets and types at their limits.
const INTEGERS: &[u64] = &[
    0,
    1,
    2,
    3,
    12,
    31,
    0x7f,
    0x80,
    0xff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    1 << 40,
    u64::MAX / 2,
    u64::MAX - 7,
    u64::MAX,
];

/// Where a mutation lands: half of them in the first 256 bytes, where the headers are.
fn position(rng: &mut Rng, len: usize) -> usize {
    if len == 0 {
        0
    } else if rng.below(2) == 0 {
        rng.below(len.min(256))
    } else {
        rng.below(len)
    }
}

/// One to four stacked mutations of `input`; `others` is the corpus, for splices.
fn mutate(rng: &mut Rng, input: &[u8], others: &[Vec<u8>], text: bool) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = b.len();
        let at = position(rng, len);
        match rng.below(9) {
            0 if len > 0 => b[at.min(len - 1)] ^= 1 << rng.below(8),
            1 if len > 0 => b[at.min(len - 1)] = rng.next() as u8,
            2 if text => {
                let token = TOKENS[rng.below(TOKENS.len())];
                b.splice(at..at, token.iter().copied());
            }
            2 => {
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                b.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let end = (at + 1 + rng.below(16)).min(len);
                b.drain(at..end);
            }
            4 if len > 0 => {
                let end = (at + 1 + rng.below(64)).min(len);
                let chunk = b[at..end].to_vec();
                let to = position(rng, len);
                b.splice(to..to, chunk);
            }
            5 => b.truncate(at),
            6 if !others.is_empty() => {
                let other = &others[rng.below(others.len())];
                let from = position(rng, other.len());
                b.truncate(at);
                b.extend_from_slice(&other[from..]);
            }
            7 if text => {
                let token = TOKENS[rng.below(TOKENS.len())];
                let end = (at + token.len()).min(len);
                b.splice(at..end, token.iter().copied());
            }
            _ => {
                let value = INTEGERS[rng.below(INTEGERS.len())];
                let width = if rng.below(2) == 0 { 4 } else { 8 };
                let bytes = &value.to_le_bytes()[..width];
                let end = (at + width).min(len);
                b.splice(at..end, bytes.iter().copied());
            }
        }
    }
    b
}

/// What a reader made of one input.
enum Outcome {
    /// It read the file.
    Read,
    /// It refused the file with this message.
    Refused(String),
}

fn refused(e: impl std::fmt::Display) -> Outcome {
    Outcome::Refused(e.to_string())
}

/// A reader under test: it reads `path` (holding the input) and says what it made of it.
struct Target {
    name: &'static str,
    /// The input's file name.
    file: &'static str,
    text: bool,
    read: fn(&Path) -> Outcome,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = root().join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn budget() -> Duration {
    let seconds = std::env::var("KILN_FUZZ_SECONDS").ok().map_or(1.0, |s| {
        s.parse::<f64>().expect("KILN_FUZZ_SECONDS is a number")
    });
    Duration::from_secs_f64(seconds)
}

fn seed() -> u64 {
    std::env::var("KILN_FUZZ_SEED")
        .ok()
        .map_or(0, |s| s.parse().expect("KILN_FUZZ_SEED is an integer"))
}

/// Runs one target: the corpus files must read; then mutations for the time budget.
fn fuzz(target: &Target) {
    let seeds = corpus(target.name);
    // Every file of an input lives in this folder; an error must name one of them. An input
    // that aborts the process (an allocation failure) is left here.
    let work = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz-work")
        .join(target.name);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let path = work.join(target.file);
    let folder = work.display().to_string();
    let failures = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    let check = |bytes: &[u8], what: &str, must_read: bool| -> Option<bool> {
        std::fs::write(&path, bytes).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| (target.read)(&path)));
        let failure = match &outcome {
            Err(_) => Some("the reader panicked".to_string()),
            Ok(Outcome::Refused(m)) if must_read => Some(format!("a corpus file was refused: {m}")),
            Ok(Outcome::Refused(m)) if !m.contains(&folder) => {
                Some(format!("the error does not name the file: {m}"))
            }
            _ => None,
        };
        if let Some(failure) = failure {
            std::fs::create_dir_all(&failures).unwrap();
            let saved = failures.join(format!("{}-{what}-{}", target.name, target.file));
            std::fs::write(&saved, bytes).unwrap();
            panic!(
                "fuzz target {}: {failure} (input saved as {})",
                target.name,
                saved.display()
            );
        }
        outcome.ok().map(|o| matches!(o, Outcome::Read))
    };
    for (file, bytes) in &seeds {
        // Corpus files are valid inputs, except the ones kept because they once failed.
        let must_read = !file
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("regression-"));
        check(bytes, "corpus", must_read);
    }
    let others: Vec<Vec<u8>> = seeds.iter().map(|(_, b)| b.clone()).collect();
    let mut rng = Rng(seed().wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03);
    let (start, budget) = (Instant::now(), budget());
    let (mut inputs, mut read) = (0usize, 0usize);
    while inputs == 0 || start.elapsed() < budget {
        let base = &others[rng.below(others.len())];
        let input = mutate(&mut rng, base, &others, target.text);
        if check(&input, &format!("seed{}-{inputs}", seed()), false) == Some(true) {
            read += 1;
        }
        inputs += 1;
    }
    eprintln!(
        "fuzz {}: {inputs} inputs in {:.1} s, {read} read, {} refused with the file named",
        target.name,
        start.elapsed().as_secs_f64(),
        inputs - read
    );
}

fn device() -> &'static Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(Device::default)
}

/// An error of a reader that went past the first one: it must name the input too (a failing
/// check, with the input saved, otherwise).
fn named(e: impl std::fmt::Display, path: &Path) {
    let message = e.to_string();
    let folder = path.parent().unwrap().display().to_string();
    assert!(
        message.contains(&folder),
        "the error does not name the file: {message}"
    );
}

/// GGUF: the parser, then every tensor dequantized, the config and tokenizer read from the
/// metadata, and the model loaded and run on two tokens (a file the parser accepts is "read";
/// the later steps may refuse it, naming it).
fn read_gguf(path: &Path) -> Outcome {
    let file = match GgufFile::open(path) {
        Ok(f) => f,
        Err(e) => return refused(e),
    };
    for info in file.tensors() {
        if let Err(e) = file.tensor_f32(info.name()) {
            named(e, path);
        }
    }
    if let Err(e) = LlamaConfig::from_gguf(&file) {
        named(e, path);
    }
    let _ = tokenizer_spec(&file);
    drop(file);
    if let Ok(tok) = load_tokenizer(path)
        && let Ok(ids) = tok.encode("P0300 misfire, Ünïcode", true)
    {
        let _ = tok.decode(&ids, false);
    }
    match load_model(path, device()) {
        Ok((_, model)) => {
            let vocab = model.vocab_size().max(1) as i64;
            let ids = TensorData::new(vec![0, 1 % vocab], [1, 2]);
            let _ = model.forward(&LmInput::new(Tensor::<2, Int>::from_data(ids, device())));
        }
        Err(e) => named(e, path),
    }
    Outcome::Read
}

/// The base model adapters are loaded onto.
fn tiny_llama() -> AnyCausalLm {
    static MODEL: OnceLock<AnyCausalLm> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = root().join("crates/kiln-models/tests/fixtures/tiny-llama");
            load_model(dir, device()).unwrap().1
        })
        .clone()
}

/// safetensors: the reader, then the file loaded as a LoRA adapter's weights (a prefix-tuning
/// config when it holds a prefix table).
fn read_safetensors_file(path: &Path) -> Outcome {
    let tensors = match read_safetensors(path) {
        Ok(t) => t,
        Err(e) => return refused(e),
    };
    let case = if tensors.keys().any(|k| k.contains("prompt_embeddings")) {
        "llama-prefix"
    } else {
        "llama-lora"
    };
    let dir = path.parent().unwrap().join("adapter");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        root().join(format!("fuzz/corpus/adapter_config/{case}.json")),
        dir.join("adapter_config.json"),
    )
    .unwrap();
    std::fs::copy(path, dir.join("adapter_model.safetensors")).unwrap();
    match load_adapter(tiny_llama(), &dir, device()) {
        Ok(_) => Outcome::Read,
        Err(e) => refused(e),
    }
}

/// `adapter_config.json`: read, then loaded onto the tiny Llama with the weights saved beside
/// the matching corpus case by PEFT.
fn read_adapter(path: &Path) -> Outcome {
    let dir = path.parent().unwrap();
    let config = match read_adapter_config(dir) {
        Ok(c) => c,
        Err(e) => return refused(e),
    };
    let case = match &config {
        AdapterConfig::Lora(c) if c.use_dora => "llama-dora",
        AdapterConfig::Lora(_) => "llama-lora",
        AdapterConfig::Ia3(_) => "llama-ia3",
        AdapterConfig::PrefixTuning(_) => "llama-prefix",
        AdapterConfig::PromptTuning(_) => "llama-prompt",
        _ => return Outcome::Read,
    };
    std::fs::copy(
        root().join(format!(
            "crates/kiln-models/tests/fixtures/peft/{case}/adapter_model.safetensors"
        )),
        dir.join("adapter_model.safetensors"),
    )
    .unwrap();
    match load_adapter(tiny_llama(), dir, device()) {
        Ok(_) => Outcome::Read,
        Err(e) => refused(e),
    }
}

/// Recipe TOML, parsed with an override, printed and parsed back.
fn read_recipe(path: &Path) -> Outcome {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return refused(format!("{}: {e}", path.display())),
    };
    let origin = path.display().to_string();
    match Recipe::parse(&text, &origin, &["optimizer.lr=1e-3".to_string()]) {
        Ok(recipe) => match Recipe::from_toml(&recipe.to_toml(), &origin) {
            Ok(again) if again == recipe => Outcome::Read,
            Ok(again) => panic!("printed recipe reads back differently: {again:?} vs {recipe:?}"),
            Err(e) => panic!("printed recipe does not read back: {e}"),
        },
        Err(e) => refused(e),
    }
}

fn read_source(path: &Path) -> Outcome {
    let kind = SourceKind::from_path(path).unwrap();
    let records = match read_records(path, kind) {
        Ok(r) => r,
        Err(e) => return refused(e),
    };
    for record in records {
        match record {
            Ok(r) => {
                for field in ["prompt", "completion", "text", "messages"] {
                    let _ = r.text(field);
                }
            }
            Err(e) => return refused(e),
        }
    }
    Outcome::Read
}

/// Preference pairs, formatted with a chat template and a system message, then tokenized.
fn read_preference(path: &Path) -> Outcome {
    use kiln::data::{
        EncodeOptions, Encoder, Formatter, PreferenceFields, PromptStyle, RecordFormat, Truncation,
        read_preference_pairs,
    };
    use kiln::tokenizer::{ChatTemplate, SpecialTokens, Tokenizer};
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    let tokenizer = TOKENIZER.get_or_init(|| {
        Tokenizer::from_file(
            root().join("crates/kiln-tokenizer/tests/fixtures/tiny_spm_hf/tokenizer.json"),
        )
        .unwrap()
        .with_special_tokens(SpecialTokens {
            bos_token: Some("<s>".into()),
            eos_token: Some("</s>".into()),
            unk_token: Some("<unk>".into()),
            pad_token: None,
        })
        .with_chat_template(ChatTemplate::chatml())
    });
    let style = PromptStyle::ChatTemplate {
        system: Some("You are a car diagnostics assistant.".into()),
    };
    let formatter = Formatter::new(RecordFormat::prompt_completion(), style).unwrap();
    let encoder = Encoder::new(tokenizer, EncodeOptions::default());
    let fields = PreferenceFields::default();
    match read_preference_pairs(
        path,
        &formatter,
        &encoder,
        &fields,
        Some(96),
        Truncation::Left,
    ) {
        Ok(pairs) => {
            assert!(pairs.iter().all(|p| p.len() <= 96 && !p.chosen.is_empty()));
            Outcome::Read
        }
        Err(e) => refused(e),
    }
}

const TARGETS: [Target; 7] = [
    Target {
        name: "gguf",
        file: "input.gguf",
        text: false,
        read: read_gguf,
    },
    Target {
        name: "safetensors",
        file: "input.safetensors",
        text: false,
        read: read_safetensors_file,
    },
    Target {
        name: "adapter_config",
        file: "adapter_config.json",
        text: true,
        read: read_adapter,
    },
    Target {
        name: "recipe",
        file: "recipe.toml",
        text: true,
        read: read_recipe,
    },
    Target {
        name: "jsonl",
        file: "input.jsonl",
        text: true,
        read: read_source,
    },
    Target {
        name: "csv",
        file: "input.csv",
        text: true,
        read: read_source,
    },
    Target {
        name: "preference",
        file: "input.jsonl",
        text: true,
        read: read_preference,
    },
];

fn run(name: &str) {
    fuzz(TARGETS.iter().find(|t| t.name == name).unwrap());
}

#[test]
fn fuzz_gguf() {
    run("gguf");
}

#[test]
fn fuzz_safetensors() {
    run("safetensors");
}

#[test]
fn fuzz_adapter_config() {
    run("adapter_config");
}

#[test]
fn fuzz_recipe() {
    run("recipe");
}

#[test]
fn fuzz_jsonl() {
    run("jsonl");
}

#[test]
fn fuzz_csv() {
    run("csv");
}

#[test]
fn fuzz_preference() {
    run("preference");
}
