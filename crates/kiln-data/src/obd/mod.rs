//! The automotive dataset: OBD-II diagnostic trouble codes (DTCs) as question answering.
//!
//! [`parse_codes`] reads the `DTC = { "P0300": "...", ... }` dictionary of python-OBD's
//! `codes.py` (fetched into `assets/obd/` by `scripts/fetch-assets.sh`; it is GPL and never
//! committed). [`build`] turns the codes into questions and answers:
//!
//! - **forward** questions ask what a code means ("What does P0300 mean?", "My scanner shows
//!   P0171, what is it?"...), [`FORWARD_TEMPLATES`];
//! - **reverse** questions ask for the code of a description, [`REVERSE_TEMPLATES`]; only for
//!   descriptions that belong to a single code, so the answer is unambiguous;
//! - the answer is always `"<code>: <description>"`, short and deterministic.
//!
//! Each example carries the code's [`Family`] and [`Subsystem`]. Codes are split (seeded,
//! stratified by subsystem) into train, validation and test codes, and phrasing templates into
//! trained and held-out templates (seeded); the sets are:
//!
//! | set | codes | templates |
//! |---|---|---|
//! | `train` | train codes | trained templates |
//! | `validation` | validation codes | trained templates |
//! | `test` | test codes (never trained on) | held-out templates (never trained on) |
//! | `test_phrasing` | train codes | held-out templates |
//!
//! # Subsystems (SAE J2012), from the code's first three characters
//!
//! | codes | subsystem |
//! |---|---|
//! | P00, P01, P02, P20, P21, P22, P2A | fuel and air metering (P00/P20–P22 with auxiliary emission controls; P02 injector circuits) |
//! | P03, P23 | ignition system or misfire |
//! | P04, P24 | auxiliary emission controls |
//! | P05, P25 | vehicle speed, idle control and auxiliary inputs |
//! | P06, P26 | computer and output circuits |
//! | P07, P08, P09, P27, P28 | transmission |
//! | P0A, P0B, P0C | hybrid propulsion |
//! | P34 | cylinder deactivation |
//! | P1, P30–P33 | manufacturer specific |
//! | U00 | network electrical |
//! | U01, U02 | lost communication with a module |
//! | U03 | software incompatibility |
//! | U04 | invalid data received |
//! | anything else (C, B, other P and U ranges) | other |

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{DataError, Result, SplitSizes, Splitter, write_jsonl};

pub mod augment;
mod judge;

pub use judge::{Judge, Verdict};

/// One trouble code and its description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dtc {
    /// The code, e.g. `P0300`.
    pub code: String,
    /// What it means.
    pub description: String,
    /// 1-based line of the code in the source file.
    pub line: usize,
}

/// One retrieval document per code, written as one line of `codes.jsonl`:
/// `{"code", "description", "text"}` with `text` = `"CODE: description"`, the same string as
/// the answers of the question sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeDoc {
    /// The code, e.g. `P0300`.
    pub code: String,
    /// What it means.
    pub description: String,
    /// `"<code>: <description>"`.
    pub text: String,
}

impl From<&Dtc> for CodeDoc {
    fn from(d: &Dtc) -> Self {
        Self {
            code: d.code.clone(),
            description: d.description.clone(),
            text: format!("{}: {}", d.code, d.description),
        }
    }
}

/// Writes `codes` as [`CodeDoc`] lines to `path` (its folder created if needed), atomically;
/// returns the number written.
///
/// # Errors
/// [`DataError::Io`] naming the file or folder.
pub fn write_code_docs(codes: &[Dtc], path: impl AsRef<Path>) -> Result<usize> {
    let path = path.as_ref();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_dir(dir)?;
    }
    write_jsonl(path, codes.iter().map(CodeDoc::from))
}

/// `dir` and its parents, created if missing.
fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// The code family, from the first letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// `P`: engine and transmission.
    Powertrain,
    /// `C`: chassis.
    Chassis,
    /// `B`: body.
    Body,
    /// `U`: network and vehicle integration.
    Network,
}

impl Family {
    /// The family of a code, if it starts with P, C, B or U.
    pub fn of(code: &str) -> Option<Self> {
        match code.as_bytes().first()? {
            b'P' => Some(Self::Powertrain),
            b'C' => Some(Self::Chassis),
            b'B' => Some(Self::Body),
            b'U' => Some(Self::Network),
            _ => None,
        }
    }

    /// The snake-case label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Powertrain => "powertrain",
            Self::Chassis => "chassis",
            Self::Body => "body",
            Self::Network => "network",
        }
    }
}

/// The SAE subsystem of a code (see the [module documentation](self) for the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subsystem {
    /// Fuel and air metering (and auxiliary emission controls for P00/P20–P22).
    FuelAirMetering,
    /// Ignition system or misfire.
    IgnitionMisfire,
    /// Auxiliary emission controls.
    AuxiliaryEmissionControls,
    /// Vehicle speed, idle control and auxiliary inputs.
    SpeedIdleControl,
    /// Computer and output circuits.
    ComputerOutputCircuits,
    /// Transmission.
    Transmission,
    /// Hybrid propulsion.
    HybridPropulsion,
    /// Cylinder deactivation.
    CylinderDeactivation,
    /// Manufacturer-specific codes.
    ManufacturerSpecific,
    /// Network electrical.
    NetworkElectrical,
    /// Lost communication with a module.
    LostCommunication,
    /// Software incompatibility.
    SoftwareIncompatibility,
    /// Invalid data received.
    InvalidData,
    /// Anything else.
    Other,
}

impl Subsystem {
    /// The subsystem of a code.
    pub fn of(code: &str) -> Self {
        let b = code.as_bytes();
        let (Some(&f), Some(&d1), Some(&d2)) = (b.first(), b.get(1), b.get(2)) else {
            return Self::Other;
        };
        match (f, d1, d2) {
            (b'P', b'0', b'0' | b'1' | b'2') | (b'P', b'2', b'0' | b'1' | b'2' | b'A') => {
                Self::FuelAirMetering
            }
            (b'P', b'0' | b'2', b'3') => Self::IgnitionMisfire,
            (b'P', b'0' | b'2', b'4') => Self::AuxiliaryEmissionControls,
            (b'P', b'0' | b'2', b'5') => Self::SpeedIdleControl,
            (b'P', b'0' | b'2', b'6') => Self::ComputerOutputCircuits,
            (b'P', b'0', b'7' | b'8' | b'9') | (b'P', b'2', b'7' | b'8') => Self::Transmission,
            (b'P', b'0', b'A' | b'B' | b'C') => Self::HybridPropulsion,
            (b'P', b'3', b'4') => Self::CylinderDeactivation,
            (b'P', b'1', _) | (b'P', b'3', b'0'..=b'3') => Self::ManufacturerSpecific,
            (b'U', b'0', b'0') => Self::NetworkElectrical,
            (b'U', b'0', b'1' | b'2') => Self::LostCommunication,
            (b'U', b'0', b'3') => Self::SoftwareIncompatibility,
            (b'U', b'0', b'4') => Self::InvalidData,
            _ => Self::Other,
        }
    }

    /// The snake-case label.
    pub fn label(self) -> &'static str {
        match self {
            Self::FuelAirMetering => "fuel_air_metering",
            Self::IgnitionMisfire => "ignition_misfire",
            Self::AuxiliaryEmissionControls => "auxiliary_emission_controls",
            Self::SpeedIdleControl => "speed_idle_control",
            Self::ComputerOutputCircuits => "computer_output_circuits",
            Self::Transmission => "transmission",
            Self::HybridPropulsion => "hybrid_propulsion",
            Self::CylinderDeactivation => "cylinder_deactivation",
            Self::ManufacturerSpecific => "manufacturer_specific",
            Self::NetworkElectrical => "network_electrical",
            Self::LostCommunication => "lost_communication",
            Self::SoftwareIncompatibility => "software_incompatibility",
            Self::InvalidData => "invalid_data",
            Self::Other => "other",
        }
    }
}

/// Whether `code` looks like a DTC: a family letter and four hex digits, the first 0–3.
pub fn is_code(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 5
        && Family::of(code).is_some()
        && matches!(b[1], b'0'..=b'3')
        && b[2..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c))
}

/// Reads the `DTC` dictionary of a python-OBD `codes.py` file.
///
/// # Errors
/// [`DataError::Io`] when the file cannot be read; as [`parse_codes`].
pub fn read_codes(path: impl AsRef<Path>) -> Result<Vec<Dtc>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_codes(&text, path)
}

/// Parses the `DTC = { "CODE": "description", ... }` Python dictionary in `text` (one entry per
/// line, single or double quotes, escapes, comments and blank lines allowed); everything outside
/// the dictionary is ignored. `path` names the file in errors.
///
/// ```
/// use std::path::Path;
///
/// let text = "X = 1\nDTC = {\n    \"P0300\": \"Misfire\",  # note\n    'U0100': 'No \\'ECM\\'',\n}\n";
/// let codes = kiln_data::obd::parse_codes(text, Path::new("codes.py")).unwrap();
/// assert_eq!(codes[1].code, "U0100");
/// assert_eq!(codes[1].description, "No 'ECM'");
/// assert_eq!(codes[1].line, 4);
/// ```
///
/// # Errors
/// [`DataError::Field`] naming the file, line and the field `DTC` (no dictionary, an unclosed
/// one, no entry) or the code (a malformed entry, a malformed or repeated code, an empty
/// description).
pub fn parse_codes(text: &str, path: &Path) -> Result<Vec<Dtc>> {
    let err = |line: usize, field: &str, reason: String| DataError::Field {
        path: path.to_path_buf(),
        line,
        field: field.into(),
        reason,
    };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let start = lines.by_ref().find(|(_, l)| {
        let compact: String = l.chars().filter(|c| !c.is_whitespace()).collect();
        compact.starts_with("DTC={")
    });
    let Some((start, first)) = start else {
        return Err(err(0, "DTC", "no `DTC = {` dictionary in the file".into()));
    };
    let after_brace = &first[first.find('{').map_or(first.len(), |i| i + 1)..];
    let mut codes: Vec<Dtc> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut closed = false;
    let first_rest = std::iter::once((start, after_brace));
    for (line, raw) in first_rest.chain(lines) {
        let body = raw.trim();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        if body.starts_with('}') {
            closed = true;
            break;
        }
        let malformed = |why: &str| err(line, "DTC", format!("{why}: {body}"));
        let (code, rest) =
            python_string(body).ok_or_else(|| malformed("expected a quoted code"))?;
        let rest = rest.trim_start();
        let rest = rest
            .strip_prefix(':')
            .ok_or_else(|| malformed("expected `:` after the code"))?
            .trim_start();
        let (description, rest) =
            python_string(rest).ok_or_else(|| malformed("expected a quoted description"))?;
        let rest = rest.trim_start();
        let rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
        let closes = rest.starts_with('}');
        if !(rest.is_empty() || rest.starts_with('#') || closes) {
            return Err(malformed("unexpected text after the entry"));
        }
        if !is_code(&code) {
            return Err(err(
                line,
                &code,
                "not a trouble code (a letter P, C, B or U, then four hex digits)".into(),
            ));
        }
        if let Some(prev) = seen.insert(code.clone(), line) {
            return Err(err(line, &code, format!("repeated; first on line {prev}")));
        }
        let description = description.trim().to_string();
        if description.is_empty() {
            return Err(err(line, &code, "empty description".into()));
        }
        codes.push(Dtc {
            code,
            description,
            line,
        });
        if closes {
            closed = true;
            break;
        }
    }
    if !closed {
        return Err(err(
            text.lines().count(),
            "DTC",
            format!("the dictionary opened on line {start} is not closed"),
        ));
    }
    if codes.is_empty() {
        return Err(err(start, "DTC", "the dictionary has no entry".into()));
    }
    Ok(codes)
}

/// A Python string literal at the start of `s`, unescaped, and the rest of `s`.
fn python_string(s: &str) -> Option<(String, &str)> {
    let mut chars = s.char_indices();
    let (_, quote) = chars.next()?;
    if quote != '"' && quote != '\'' {
        return None;
    }
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '0' => out.push('\0'),
                    '\\' | '\'' | '"' => out.push(e),
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
            }
            c if c == quote => return Some((out, &s[i + c.len_utf8()..])),
            c => out.push(c),
        }
    }
    None
}

/// Questions asking what a code means; `{code}` is the code, at the start, middle or end.
pub const FORWARD_TEMPLATES: [&str; 24] = [
    "What does {code} mean?",
    "My scanner shows {code}, what is it?",
    "What is OBD-II code {code}?",
    "Explain the trouble code {code}.",
    "My check engine light is on and the code is {code}. What does that mean?",
    "Define DTC {code}.",
    "I got a {code} code on my car. What is it?",
    "What fault does {code} indicate?",
    "Decode {code} for me.",
    "The diagnostic tool reports {code}. What is the problem?",
    "{code}? What does it mean?",
    "Code {code} just came up on my OBD reader. Meaning?",
    "What's {code}?",
    "Can you tell me what trouble code {code} stands for?",
    "Got {code} after the engine light came on. Any idea what it is?",
    "What is the description of {code}?",
    "{code} - what is wrong with my car?",
    "Meaning of fault code {code}?",
    "Help me understand {code}.",
    "What does the error {code} refer to?",
    "My dashboard light came on and the reader says {code}. Explain please.",
    "Look up {code}.",
    "Which fault is {code}?",
    "{code}: what does this code describe?",
];

/// Questions asking what a code means that neither training nor testing uses: validation
/// questions of [`ObdDataset::sample_with`] ([`SampleConfig::validation_unseen`] and
/// [`SampleConfig::validation_trained`]), so that choosing a recipe by them rewards answering
/// phrasings never trained on, as the test sets ask.
pub const VALIDATION_TEMPLATES: [&str; 8] = [
    "Tell me what {code} means.",
    "My car threw {code}. What is that?",
    "What is trouble code {code} about?",
    "Could you explain {code}?",
    "{code} came up on the scan tool. What does it stand for?",
    "What problem does {code} point to?",
    "Please describe code {code}.",
    "The shop found {code} on my car, what does it mean?",
];

/// Questions asking for the code of a description; `{description}` is the description.
pub const REVERSE_TEMPLATES: [&str; 8] = [
    "Which OBD-II code means \"{description}\"?",
    "What is the trouble code for: {description}?",
    "Give the DTC for \"{description}\".",
    "My mechanic says the fault is \"{description}\". Which code is that?",
    "Which diagnostic trouble code corresponds to {description}?",
    "What code is \"{description}\"?",
    "Find the OBD-II code for {description}.",
    "The fault is {description}. What is the DTC?",
];
/// Whether a question asks for the meaning of a code or the code of a meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Code → description.
    Forward,
    /// Description → code.
    Reverse,
}

/// One question/answer example, written as one JSONL line; load it back with
/// [`crate::RecordFormat::prompt_completion`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObdExample {
    /// The question.
    pub prompt: String,
    /// The answer, `"<code>: <description>"`.
    pub completion: String,
    /// The code asked about.
    pub code: String,
    /// Its family.
    pub family: Family,
    /// Its subsystem.
    pub subsystem: Subsystem,
    /// The kind of question.
    pub direction: Direction,
    /// Index of the template in [`FORWARD_TEMPLATES`] or [`REVERSE_TEMPLATES`]; from
    /// `FORWARD_TEMPLATES.len()` on, `VALIDATION_TEMPLATES[template - FORWARD_TEMPLATES.len()]`.
    pub template: usize,
}

/// Settings of the automotive dataset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ObdConfig {
    /// Seed of the code and template splits.
    pub seed: u64,
    /// Fraction of codes kept for validation.
    pub validation_codes: f64,
    /// Fraction of codes kept for testing.
    pub test_codes: f64,
    /// Forward templates held out of training.
    pub held_out_forward: usize,
    /// Reverse templates held out of training.
    pub held_out_reverse: usize,
}

impl Default for ObdConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            validation_codes: 0.05,
            test_codes: 0.1,
            held_out_forward: 6,
            held_out_reverse: 2,
        }
    }
}

/// The built dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObdDataset {
    /// Train codes × trained templates.
    pub train: Vec<ObdExample>,
    /// Validation codes × trained templates.
    pub validation: Vec<ObdExample>,
    /// Test codes × held-out templates: codes and phrasings never trained on.
    pub test: Vec<ObdExample>,
    /// Train codes × held-out templates: unseen phrasings of trained codes.
    pub test_phrasing: Vec<ObdExample>,
    /// Held-out forward template indices.
    pub held_out_forward: Vec<usize>,
    /// Held-out reverse template indices.
    pub held_out_reverse: Vec<usize>,
    /// Codes per family.
    pub codes_per_family: BTreeMap<Family, usize>,
    /// Codes per subsystem.
    pub codes_per_subsystem: BTreeMap<Subsystem, usize>,
    /// Codes whose description is shared with another code (no reverse question).
    pub ambiguous_codes: usize,
}

impl ObdDataset {
    /// The sets with their file names: `train`, `validation`, `test`, `test_phrasing`.
    pub fn sets(&self) -> [(&'static str, &[ObdExample]); 4] {
        [
            ("train", &self.train),
            ("validation", &self.validation),
            ("test", &self.test),
            ("test_phrasing", &self.test_phrasing),
        ]
    }

    /// Writes `<set>.jsonl` for every set into `dir` (created if needed), each atomically.
    ///
    /// # Errors
    /// [`DataError::Io`] naming the file.
    pub fn write_jsonl(&self, dir: impl AsRef<Path>) -> Result<()> {
        write_sets(dir.as_ref(), &self.sets())
    }

    /// A smaller task drawn from the dataset, for quick runs: `codes` training codes sampled with
    /// `seed` (all of them when `None`) with every trained phrasing; the first 32 validation
    /// examples (all when `codes` is `None`); and two test sets of forward questions, at most
    /// `test_cases` each (default: all when `codes` is `None`, else two per sampled code):
    /// unseen phrasings of the sampled codes, and codes never trained on (shuffled with `seed`).
    /// The same as [`ObdDataset::sample_with`] with nothing added to the training questions.
    pub fn sample(&self, codes: Option<usize>, test_cases: Option<usize>, seed: u64) -> ObdSample {
        self.sample_with(
            &[],
            &SampleConfig {
                codes,
                test_cases,
                seed,
                ..SampleConfig::default()
            },
        )
    }

    /// [`ObdDataset::sample`], with the training questions widened as `config` says (see
    /// [`SampleConfig`]). `all` is the code list the dataset was built from (for the unknown
    /// and grounded questions and their passages); the test sets are the same as
    /// [`ObdDataset::sample`]'s.
    pub fn sample_with(&self, all: &[Dtc], config: &SampleConfig) -> ObdSample {
        let (codes, test_cases, seed) = (config.codes, config.test_cases, config.seed);
        let trained: std::collections::BTreeSet<&str> =
            self.train.iter().map(|e| e.code.as_str()).collect();
        let mut order: Vec<&str> = trained.iter().copied().collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let keep: std::collections::BTreeSet<&str> = match codes {
            None => trained.clone(),
            Some(n) => order.iter().copied().take(n).collect(),
        };
        // Codes of the training split outside the sample, in the sampled order: the first ones
        // are asked about as unknown, the next ones only with passages.
        let rest: Vec<&str> = order
            .iter()
            .copied()
            .filter(|c| !keep.contains(c))
            .collect();
        let pick = |set: &[ObdExample], forward_only: bool| -> Vec<ObdExample> {
            set.iter()
                .filter(|e| !forward_only || e.direction == Direction::Forward)
                .cloned()
                .collect()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5a3b_1e00);
        let mut train: Vec<ObdExample> = self
            .train
            .iter()
            .filter(|e| keep.contains(e.code.as_str()))
            .cloned()
            .collect();
        let mut added = SampleCounts::default();
        let originals = train.clone();
        for e in originals {
            for _ in 0..config.variants {
                let code = (e.direction == Direction::Forward).then_some(e.code.as_str());
                let prompt = augment::surface_variant(&e.prompt, code, &mut rng);
                train.push(ObdExample {
                    prompt,
                    ..e.clone()
                });
                added.variants += 1;
            }
        }
        let index: HashMap<&str, usize> = all
            .iter()
            .enumerate()
            .map(|(i, d)| (d.code.as_str(), i))
            .collect();
        let forward_of = |code: &str| -> Vec<&ObdExample> {
            self.train
                .iter()
                .filter(|e| e.code == code && e.direction == Direction::Forward)
                .collect()
        };
        let unknown: Vec<&str> = rest.iter().copied().take(config.unknown_codes).collect();
        for &code in &unknown {
            for &e in forward_of(code).choose_multiple(&mut rng, config.questions_per_code) {
                train.push(ObdExample {
                    completion: augment::unknown_answer(code),
                    ..e.clone()
                });
                added.unknown += 1;
            }
        }
        // Grounded questions: the sampled codes, the unknown codes (their passage overrides
        // "unknown") and further codes, each with passages from the neighbourhood of the code
        // in the list and one from anywhere.
        let grounded_codes: Vec<&str> = keep
            .iter()
            .copied()
            .chain(
                rest.iter()
                    .copied()
                    .take(config.unknown_codes + config.grounded_codes),
            )
            .collect();
        if config.passages > 0 && !all.is_empty() {
            for &code in &grounded_codes {
                let Some(&i) = index.get(code) else { continue };
                let own = &all[i];
                for &e in forward_of(code).choose_multiple(&mut rng, config.questions_per_code) {
                    let distractors = neighbours(all, i, config.passages - 1, &mut rng);
                    let with_answer = !rng.random_bool(config.passage_missing.clamp(0.0, 1.0));
                    let d = if with_answer {
                        distractors
                    } else {
                        neighbours(all, i, config.passages, &mut rng)
                    };
                    train.push(augment::grounded(e, own, &d, with_answer, &mut rng));
                    added.grounded += 1;
                }
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0dd_ba11);
        let mut validation: Vec<ObdExample> = match (config.validation_unseen, codes) {
            (Some(n), _) => {
                let mut firsts = first_forward_per_code(&self.validation);
                firsts.shuffle(&mut rng);
                asked_anew(&firsts, n, &mut rng)
            }
            (None, None) => self.validation.clone(),
            (None, Some(_)) => self.validation.iter().take(32).cloned().collect(),
        };
        // With `validation_own_passage`, validation questions (codes never trained on) come
        // with their own passage among neighbours': the validation loss then measures reading
        // passages, what answers about untrained codes rest on.
        if config.validation_own_passage && config.passages > 0 && !all.is_empty() {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7a11_da7e);
            for e in &mut validation {
                let Some(&i) = index.get(e.code.as_str()) else {
                    continue;
                };
                let distractors = neighbours(all, i, config.passages - 1, &mut rng);
                *e = augment::grounded(e, &all[i], &distractors, true, &mut rng);
            }
        }
        // Trained codes asked in phrasings no training question uses, without passages: what
        // the tuned model alone must answer.
        if config.validation_trained > 0 {
            let sampled: Vec<&ObdExample> = first_forward_per_code(&self.train)
                .into_iter()
                .filter(|e| keep.contains(e.code.as_str()))
                .collect();
            validation.extend(asked_anew(&sampled, config.validation_trained, &mut rng));
        }
        let mut test_phrasing: Vec<ObdExample> = pick(&self.test_phrasing, true)
            .into_iter()
            .filter(|e| keep.contains(e.code.as_str()))
            .collect();
        let mut test_unseen = pick(&self.test, true);
        let n_test = test_cases.unwrap_or(match codes {
            None => usize::MAX,
            Some(_) => 2 * keep.len(),
        });
        test_phrasing.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        test_phrasing.truncate(n_test);
        test_unseen.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        test_unseen.truncate(n_test);
        ObdSample {
            codes: keep.len(),
            train,
            validation,
            test_phrasing,
            test_unseen,
            added,
        }
    }
}

/// `n` codes other than `all[i]`: its neighbours in the list (similar codes) and, for the last
/// one, a code from anywhere.
fn neighbours<'a>(all: &'a [Dtc], i: usize, n: usize, rng: &mut impl Rng) -> Vec<&'a Dtc> {
    let mut out: Vec<&Dtc> = Vec::with_capacity(n);
    let mut step = 1usize;
    while out.len() + 1 < n && step < all.len() {
        for j in [i.checked_sub(step), i.checked_add(step)]
            .into_iter()
            .flatten()
        {
            if out.len() + 1 < n && j < all.len() && all[j].description != all[i].description {
                out.push(&all[j]);
            }
        }
        step += 1;
    }
    while out.len() < n && all.len() > 1 {
        let j = rng.random_range(0..all.len());
        if j != i
            && all[j].description != all[i].description
            && !out.iter().any(|d| d.code == all[j].code)
        {
            out.push(&all[j]);
        }
    }
    out.shuffle(rng);
    out
}

/// The first forward question of every code of `set`, in order.
fn first_forward_per_code(set: &[ObdExample]) -> Vec<&ObdExample> {
    let mut seen = std::collections::HashSet::new();
    set.iter()
        .filter(|e| e.direction == Direction::Forward && seen.insert(e.code.as_str()))
        .collect()
}

/// `n` questions about the codes of `codes` (one forward question each), in rounds over the
/// codes, each asked with a [`VALIDATION_TEMPLATES`] phrasing it was not asked with before
/// (until all are used).
fn asked_anew(codes: &[&ObdExample], n: usize, rng: &mut impl Rng) -> Vec<ObdExample> {
    if codes.is_empty() {
        return Vec::new();
    }
    let orders: Vec<Vec<usize>> = codes
        .iter()
        .map(|_| {
            let mut order: Vec<usize> = (0..VALIDATION_TEMPLATES.len()).collect();
            order.shuffle(rng);
            order
        })
        .collect();
    (0..n)
        .map(|k| {
            let (e, round) = (codes[k % codes.len()], k / codes.len());
            let t = orders[k % codes.len()][round % VALIDATION_TEMPLATES.len()];
            ObdExample {
                prompt: VALIDATION_TEMPLATES[t].replace("{code}", &e.code),
                template: FORWARD_TEMPLATES.len() + t,
                ..e.clone()
            }
        })
        .collect()
}

/// How [`ObdDataset::sample_with`] widens the training questions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SampleConfig {
    /// Training codes sampled (all when `None`).
    pub codes: Option<usize>,
    /// Questions per test set (default: all when `codes` is `None`, else two per code).
    pub test_cases: Option<usize>,
    /// Seed of the sample and the additions.
    pub seed: u64,
    /// Surface variants added per trained question ([`augment::surface_variant`]): casing,
    /// punctuation, greetings, the vehicle, typos. The templates stay the trained ones.
    pub variants: usize,
    /// Training-split codes outside the sample asked about without passages and answered
    /// [`augment::unknown_answer`], so that the model says it does not know instead of
    /// inventing.
    pub unknown_codes: usize,
    /// Further codes asked about with passages only (beside the sampled and unknown codes).
    pub grounded_codes: usize,
    /// Passages per grounded question (0: no grounded questions).
    pub passages: usize,
    /// Share of grounded questions whose own passage is left out (answer: unknown).
    pub passage_missing: f64,
    /// Questions per unknown or grounded code, drawn from its trained forward questions.
    pub questions_per_code: usize,
    /// Validation questions about codes never trained on: this many, one per validation code
    /// (codes shuffled with `seed`; in rounds when there are fewer codes), each in a
    /// [`VALIDATION_TEMPLATES`] phrasing. `None`: the first 32 validation examples (all when
    /// `codes` is `None`), in trained phrasings.
    pub validation_unseen: Option<usize>,
    /// Validation questions asked with `passages` passages, their own among them (when
    /// `passages` is not 0). Otherwise they are plain questions, for a caller that retrieves.
    pub validation_own_passage: bool,
    /// Validation questions about the sampled codes, appended after the others, in rounds over
    /// the codes, in [`VALIDATION_TEMPLATES`] phrasings and without passages.
    pub validation_trained: usize,
}

impl Default for SampleConfig {
    fn default() -> Self {
        Self {
            codes: None,
            test_cases: None,
            seed: 0,
            variants: 0,
            unknown_codes: 0,
            grounded_codes: 0,
            passages: 0,
            passage_missing: 0.0,
            questions_per_code: 2,
            validation_unseen: None,
            validation_own_passage: false,
            validation_trained: 0,
        }
    }
}

/// Training questions [`ObdDataset::sample_with`] added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleCounts {
    /// Surface variants.
    pub variants: usize,
    /// Questions about unknown codes.
    pub unknown: usize,
    /// Questions with passages.
    pub grounded: usize,
}

/// A task drawn from an [`ObdDataset`] by [`ObdDataset::sample`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObdSample {
    /// Training codes sampled.
    pub codes: usize,
    /// Their trained phrasings.
    pub train: Vec<ObdExample>,
    /// Validation examples: codes never trained on (asked with their own passage with
    /// [`SampleConfig::validation_own_passage`]), then [`SampleConfig::validation_trained`]
    /// questions about the sampled codes.
    pub validation: Vec<ObdExample>,
    /// Unseen phrasings of the sampled codes (forward questions).
    pub test_phrasing: Vec<ObdExample>,
    /// Forward questions about codes never trained on.
    pub test_unseen: Vec<ObdExample>,
    /// What was added to the trained questions.
    pub added: SampleCounts,
}

impl ObdSample {
    /// Writes `train`, `validation`, `test_phrasing` and `test_unseen_codes` `.jsonl` files into
    /// `dir` (created if needed), each atomically.
    ///
    /// # Errors
    /// [`DataError::Io`] naming the file.
    pub fn write_jsonl(&self, dir: impl AsRef<Path>) -> Result<()> {
        write_sets(
            dir.as_ref(),
            &[
                ("train", &self.train),
                ("validation", &self.validation),
                ("test_phrasing", &self.test_phrasing),
                ("test_unseen_codes", &self.test_unseen),
            ],
        )
    }
}

/// Writes `<name>.jsonl` for every set into `dir` (created if needed), each atomically.
/// One preference pair of the diagnostics task, a line of `preference.jsonl` in TRL's plain
/// preference format: the question, the true answer, and a hallucination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObdPreference {
    /// The question.
    pub prompt: String,
    /// The true answer, `"CODE: description"`.
    pub chosen: String,
    /// The same code with another code's description (from the same subsystem when there is
    /// one): the plausible invention a tuned model makes.
    pub rejected: String,
    /// The code asked about.
    pub code: String,
}

/// Preference pairs from the forward questions of `examples` (reverse questions are skipped):
/// chosen is the example's answer, rejected the code with the description of another code of
/// `codes`, drawn with `seed`, from the same subsystem when it has another code.
pub fn preference_pairs(examples: &[ObdExample], codes: &[Dtc], seed: u64) -> Vec<ObdPreference> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0dd5_1ec7);
    let mut by_subsystem: BTreeMap<Subsystem, Vec<&Dtc>> = BTreeMap::new();
    for c in codes {
        by_subsystem
            .entry(Subsystem::of(&c.code))
            .or_default()
            .push(c);
    }
    examples
        .iter()
        .filter(|e| e.direction == Direction::Forward)
        .filter_map(|e| {
            let own = e.completion.split_once(": ").map_or("", |(_, d)| d);
            let others = |pool: &[&Dtc]| -> Vec<String> {
                pool.iter()
                    .filter(|c| c.code != e.code && c.description != own)
                    .map(|c| c.description.clone())
                    .collect()
            };
            let mut pool = others(
                by_subsystem
                    .get(&e.subsystem)
                    .map_or(&[][..], Vec::as_slice),
            );
            if pool.is_empty() {
                pool = others(&codes.iter().collect::<Vec<_>>());
            }
            let other = pool.choose(&mut rng)?;
            Some(ObdPreference {
                prompt: e.prompt.clone(),
                chosen: e.completion.clone(),
                rejected: format!("{}: {other}", e.code),
                code: e.code.clone(),
            })
        })
        .collect()
}

fn write_sets(dir: &Path, sets: &[(&str, &[ObdExample])]) -> Result<()> {
    create_dir(dir)?;
    for (name, set) in sets {
        write_jsonl(dir.join(format!("{name}.jsonl")), *set)?;
    }
    Ok(())
}

impl fmt::Display for ObdDataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let codes: usize = self.codes_per_family.values().sum();
        write!(f, "{codes} codes (")?;
        let fams: Vec<String> = self
            .codes_per_family
            .iter()
            .map(|(k, v)| format!("{v} {}", k.label()))
            .collect();
        write!(
            f,
            "{}), {} without reverse questions",
            fams.join(", "),
            self.ambiguous_codes
        )?;
        for (name, set) in self.sets() {
            let mut codes: Vec<&str> = set.iter().map(|e| e.code.as_str()).collect();
            codes.sort_unstable();
            codes.dedup();
            write!(
                f,
                "; {name}: {} examples over {} codes",
                set.len(),
                codes.len()
            )?;
        }
        Ok(())
    }
}

/// Builds the dataset from parsed codes.
///
/// # Errors
/// [`DataError::Config`] for fractions outside `0..=1` (or summing over 1), or more held-out
/// templates than there are; [`DataError::Empty`]-style [`DataError::Config`] without codes.
pub fn build(codes: &[Dtc], config: &ObdConfig) -> Result<ObdDataset> {
    if codes.is_empty() {
        return Err(DataError::Config("no trouble codes to build from".into()));
    }
    let (v, t) = (config.validation_codes, config.test_codes);
    if !(0.0..=1.0).contains(&v) || !(0.0..=1.0).contains(&t) || v + t > 1.0 {
        return Err(DataError::Config(format!(
            "validation ({v}) and test ({t}) code fractions must lie in 0..=1 and sum to at most 1"
        )));
    }
    if config.held_out_forward >= FORWARD_TEMPLATES.len()
        || config.held_out_reverse >= REVERSE_TEMPLATES.len()
    {
        return Err(DataError::Config(format!(
            "at most {} forward and {} reverse templates can be held out",
            FORWARD_TEMPLATES.len() - 1,
            REVERSE_TEMPLATES.len() - 1
        )));
    }
    let subsystems: Vec<Subsystem> = codes.iter().map(|c| Subsystem::of(&c.code)).collect();
    let split = Splitter::new(
        SplitSizes::Ratios {
            train: 1.0 - v - t,
            validation: v,
            test: t,
        },
        config.seed,
    )
    .stratified(&subsystems)?;

    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x0b0d_7e57);
    let mut fwd: Vec<usize> = (0..FORWARD_TEMPLATES.len()).collect();
    fwd.shuffle(&mut rng);
    let mut rev: Vec<usize> = (0..REVERSE_TEMPLATES.len()).collect();
    rev.shuffle(&mut rng);
    let mut held_out_forward = fwd[..config.held_out_forward].to_vec();
    let mut held_out_reverse = rev[..config.held_out_reverse].to_vec();
    held_out_forward.sort_unstable();
    held_out_reverse.sort_unstable();

    let mut owners: HashMap<&str, usize> = HashMap::new();
    for c in codes {
        *owners.entry(c.description.as_str()).or_default() += 1;
    }
    let examples = |index: usize, held_out: bool| -> Vec<ObdExample> {
        let dtc = &codes[index];
        let answer = format!("{}: {}", dtc.code, dtc.description);
        let make = |direction, template: usize, prompt: String| ObdExample {
            prompt,
            completion: answer.clone(),
            code: dtc.code.clone(),
            family: Family::of(&dtc.code).unwrap_or(Family::Powertrain),
            subsystem: subsystems[index],
            direction,
            template,
        };
        let mut out = Vec::new();
        for (i, t) in FORWARD_TEMPLATES.iter().enumerate() {
            if held_out_forward.contains(&i) == held_out {
                out.push(make(Direction::Forward, i, t.replace("{code}", &dtc.code)));
            }
        }
        if owners[dtc.description.as_str()] == 1 {
            for (i, t) in REVERSE_TEMPLATES.iter().enumerate() {
                if held_out_reverse.contains(&i) == held_out {
                    let q = t.replace("{description}", &dtc.description);
                    out.push(make(Direction::Reverse, i, q));
                }
            }
        }
        out
    };
    let mut ds = ObdDataset {
        train: split
            .train
            .iter()
            .flat_map(|&i| examples(i, false))
            .collect(),
        validation: split
            .validation
            .iter()
            .flat_map(|&i| examples(i, false))
            .collect(),
        test: split.test.iter().flat_map(|&i| examples(i, true)).collect(),
        test_phrasing: split
            .train
            .iter()
            .flat_map(|&i| examples(i, true))
            .collect(),
        ambiguous_codes: codes
            .iter()
            .filter(|c| owners[c.description.as_str()] > 1)
            .count(),
        ..ObdDataset::default()
    };
    for (c, s) in codes.iter().zip(&subsystems) {
        if let Some(f) = Family::of(&c.code) {
            *ds.codes_per_family.entry(f).or_default() += 1;
        }
        *ds.codes_per_subsystem.entry(*s).or_default() += 1;
    }
    ds.held_out_forward = held_out_forward;
    ds.held_out_reverse = held_out_reverse;
    Ok(ds)
}

#[cfg(test)]
#[path = "../tests/obd.rs"]
mod tests;
