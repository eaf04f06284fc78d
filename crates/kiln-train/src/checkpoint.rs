//! Atomic training checkpoints.
//!
//! A checkpoint is a directory `checkpoint-<step>` holding
//!
//! - `trainable.bpk`: the parameters that require gradients (burnpack, with their paths and
//!   parameter ids),
//! - `optimizer.bpk`: the AdamW state, keyed by those parameter ids,
//! - `best_trainable.bpk` (with keep-best): the trainable parameters of the best evaluation,
//! - `trainer_state.json`: step, schedule, optimizer settings, data order, early-stopping state,
//! - whatever an [`AdapterExporter`] writes (e.g. a Hugging Face PEFT adapter),
//! - `checksums.json`: the size and CRC-32 of every other file but the state, verified on
//!   restore (a file changed on disk is named, instead of training on garbage).
//!
//! Everything is written into a hidden `.tmp-checkpoint-<step>` directory, flushed to disk and
//! then renamed: a run killed mid-write leaves at most a temporary directory, which resume
//! ignores and the next [`CheckpointManager::new`] removes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param, ParamGroup};
use burn::store::ModuleRecord;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::trainer::trainable_params;
use crate::{OptimizerConfig, Result, Schedule, TrainError, Trainer};

/// File of the trainable parameters inside a checkpoint.
pub const PARAMS_FILE: &str = "trainable.bpk";
/// File of the parameters of the best evaluation so far (written with keep-best).
pub const BEST_PARAMS_FILE: &str = "best_trainable.bpk";
/// File of the optimizer state inside a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
/// File of the [`TrainerState`] inside a checkpoint; written last.
pub const STATE_FILE: &str = "trainer_state.json";
/// File of the checksums of a checkpoint's other files (all but [`STATE_FILE`]).
pub const CHECKSUMS_FILE: &str = "checksums.json";

const PREFIX: &str = "checkpoint-";
const TMP_PREFIX: &str = ".tmp-checkpoint-";
const OLD_PREFIX: &str = ".old-checkpoint-";

/// Writes the adapter part of a model in another format (e.g. Hugging Face PEFT's
/// `adapter_model.safetensors` + `adapter_config.json`) into a checkpoint directory before it is
/// made visible.
pub trait AdapterExporter<M> {
    /// Writes files into `dir` (the checkpoint's temporary directory).
    ///
    /// # Errors
    /// Any error; the checkpoint is then not published.
    fn export(
        &self,
        model: &M,
        dir: &Path,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// Writes the adapter in the Hugging Face PEFT layout (`adapter_config.json` +
/// `adapter_model.safetensors`) into every checkpoint, loadable with
/// `kiln_peft::load_adapter` or Python's `PeftModel.from_pretrained`.
#[derive(Debug, Clone)]
pub struct PeftExporter {
    /// The adapter's configuration (as returned by `kiln_peft::attach_adapter`).
    pub config: kiln_peft::AdapterConfig,
}

impl<M: kiln_nn::AdapterTarget> AdapterExporter<M> for PeftExporter {
    fn export(
        &self,
        model: &M,
        dir: &Path,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        kiln_peft::save_adapter(model, &self.config, dir)?;
        Ok(())
    }
}

/// The best evaluation so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BestMetric {
    /// Metric value.
    pub value: f64,
    /// Optimizer step it was measured at.
    pub step: usize,
}

/// How the data was batched: a resumed run must batch the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataLayout {
    /// Training examples.
    pub num_examples: usize,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum_steps: usize,
    /// Whether epochs are shuffled.
    pub shuffle: bool,
    /// Whether micro-batches group examples of similar length (absent in older checkpoints:
    /// `false`). Packing is not part of the layout: it changes neither the micro-batches nor
    /// the loss, so a run may resume with packing switched on or off.
    #[serde(default)]
    pub group_by_length: bool,
}

/// Everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken.
    pub step: usize,
    /// Epoch of the next step.
    pub epoch: usize,
    /// Seed of the data order and of the per-step device RNG.
    pub seed: u64,
    /// Optimizer settings of the run.
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule of the run (its position is `step`).
    pub schedule: Schedule,
    /// Batching of the run (the data position is a function of `step`).
    pub data: DataLayout,
    /// Best evaluation so far.
    pub best: Option<BestMetric>,
    /// Evaluations since the last improvement (early stopping).
    pub evals_without_improvement: usize,
    /// Labelled tokens trained on.
    pub loss_tokens_seen: u64,
    /// Input tokens processed.
    pub input_tokens_seen: u64,
    /// Padding tokens computed along (absent in older checkpoints: 0).
    #[serde(default)]
    pub padding_tokens_seen: u64,
    /// Training wall time so far, in seconds.
    pub elapsed_secs: f64,
    /// Loss of the last step.
    pub last_loss: Option<f32>,
}

impl TrainerState {
    /// Fails when a run batching its data as `layout` with `seed` cannot continue from this
    /// state, read from the checkpoint `path`: it would see the data in another order.
    ///
    /// # Errors
    /// [`TrainError::ResumeMismatch`] naming the checkpoint and both orders.
    pub fn check_resume(&self, path: &Path, layout: DataLayout, seed: u64) -> Result<()> {
        if self.data != layout || self.seed != seed {
            return Err(TrainError::ResumeMismatch {
                path: path.to_path_buf(),
                reason: format!(
                    "data order differs: checkpoint {:?} seed {}, run {:?} seed {}",
                    self.data, self.seed, layout, seed
                ),
            });
        }
        Ok(())
    }
}

/// Writes, lists, rotates and restores checkpoints in one directory.
#[derive(Debug, Clone)]
pub struct CheckpointManager {
    dir: PathBuf,
    save_total_limit: Option<usize>,
}

impl CheckpointManager {
    /// Opens (creating) `dir`, removes temporary directories left by an interrupted write and
    /// restores a checkpoint left half-replaced.
    ///
    /// `save_total_limit` keeps only that many newest checkpoints (the best one is kept too).
    ///
    /// # Errors
    /// A limit of 0, or an I/O error.
    pub fn new(dir: impl Into<PathBuf>, save_total_limit: Option<usize>) -> Result<Self> {
        let dir = dir.into();
        if save_total_limit == Some(0) {
            return Err(TrainError::InvalidConfig {
                field: "save_total_limit".into(),
                reason: "must be at least 1".into(),
            });
        }
        fs::create_dir_all(&dir).map_err(TrainError::io(&dir))?;
        for entry in fs::read_dir(&dir).map_err(TrainError::io(&dir))? {
            let entry = entry.map_err(TrainError::io(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with(TMP_PREFIX) {
                fs::remove_dir_all(&path).map_err(TrainError::io(&path))?;
            } else if let Some(step) = name.strip_prefix(OLD_PREFIX) {
                let published = dir.join(format!("{PREFIX}{step}"));
                if published.exists() {
                    fs::remove_dir_all(&path).map_err(TrainError::io(&path))?;
                } else {
                    fs::rename(&path, &published).map_err(TrainError::io(&path))?;
                }
            }
        }
        Ok(Self {
            dir,
            save_total_limit,
        })
    }

    /// The directory holding the checkpoints.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Published checkpoints, oldest first, as `(step, directory)`.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn checkpoints(&self) -> Result<Vec<(usize, PathBuf)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(TrainError::io(&self.dir))? {
            let entry = entry.map_err(TrainError::io(&self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(step) = name.strip_prefix(PREFIX).and_then(|s| s.parse().ok()) {
                let path = entry.path();
                if path.join(STATE_FILE).is_file() {
                    out.push((step, path));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Published checkpoints in `dir` (a checkpoints directory), oldest first, without
    /// creating or cleaning anything; none when `dir` does not exist.
    ///
    /// # Errors
    /// The directory exists but cannot be read.
    pub fn published(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        Self {
            dir: dir.to_path_buf(),
            save_total_limit: None,
        }
        .checkpoints()
    }

    /// The newest published checkpoint.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        Ok(self.checkpoints()?.pop().map(|(_, p)| p))
    }

    /// Writes a checkpoint of `model`'s trainable parameters, `trainer`'s optimizer, `state` and
    /// (when given) the best parameters so far, then applies `save_total_limit` (never deleting
    /// the checkpoint of the best step). Returns the published directory.
    ///
    /// # Errors
    /// An I/O or record error, or a failing exporter; what was published before is untouched.
    pub fn save<M: Module + Clone>(
        &self,
        model: &M,
        trainer: &Trainer,
        state: &TrainerState,
        exporter: Option<&dyn AdapterExporter<M>>,
        best_params: Option<&ModuleRecord>,
    ) -> Result<PathBuf> {
        let step = state.step;
        let tmp = self.dir.join(format!("{TMP_PREFIX}{step}"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(TrainError::io(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(TrainError::io(&tmp))?;

        let ids = trainable_params(model)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let params = tmp.join(PARAMS_FILE);
        model
            .clone()
            .into_record_group(ParamGroup::from_ids(ids))
            .save(&params)
            .map_err(TrainError::record(&params))?;
        sync_file(&params)?;
        let optim = tmp.join(OPTIMIZER_FILE);
        trainer.save_optimizer(&optim)?;
        sync_file(&optim)?;
        if let Some(best) = best_params {
            let path = tmp.join(BEST_PARAMS_FILE);
            best.clone()
                .save(&path)
                .map_err(TrainError::record(&path))?;
            sync_file(&path)?;
        }
        if let Some(exporter) = exporter {
            exporter
                .export(model, &tmp)
                .map_err(|e| TrainError::Export {
                    path: tmp.clone(),
                    message: e.to_string(),
                })?;
        }
        write_json(&tmp.join(CHECKSUMS_FILE), &checksums(&tmp)?)?;
        write_json(&tmp.join(STATE_FILE), state)?;
        sync_dir(&tmp)?;

        let published = self.dir.join(format!("{PREFIX}{step}"));
        if published.exists() {
            let old = self.dir.join(format!("{OLD_PREFIX}{step}"));
            fs::rename(&published, &old).map_err(TrainError::io(&published))?;
            fs::rename(&tmp, &published).map_err(TrainError::io(&tmp))?;
            fs::remove_dir_all(&old).map_err(TrainError::io(&old))?;
        } else {
            fs::rename(&tmp, &published).map_err(TrainError::io(&tmp))?;
        }
        sync_dir(&self.dir)?;
        self.rotate(state.best.map(|b| b.step))?;
        Ok(published)
    }

    fn rotate(&self, keep: Option<usize>) -> Result<()> {
        let Some(limit) = self.save_total_limit else {
            return Ok(());
        };
        let all = self.checkpoints()?;
        let mut excess = all.len().saturating_sub(limit);
        for (step, path) in all {
            if excess == 0 {
                break;
            }
            if Some(step) == keep {
                continue;
            }
            fs::remove_dir_all(&path).map_err(TrainError::io(&path))?;
            excess -= 1;
        }
        Ok(())
    }

    /// Reads a checkpoint's [`TrainerState`].
    ///
    /// # Errors
    /// The file is missing or not a trainer state.
    pub fn read_state(checkpoint: &Path) -> Result<TrainerState> {
        let path = checkpoint.join(STATE_FILE);
        let text = fs::read_to_string(&path).map_err(TrainError::io(&path))?;
        serde_json::from_str(&text).map_err(TrainError::json(&path))
    }

    /// Restores a checkpoint: loads the trainable parameters into `model` (restoring their ids)
    /// and the optimizer state and step into `trainer`.
    ///
    /// # Errors
    /// Missing or unreadable files, a file that does not match its checksum, parameters that do
    /// not fit the model or are not finite, or a trainer whose optimizer settings or schedule
    /// differ from the checkpoint's.
    pub fn restore<M: Module>(
        checkpoint: &Path,
        model: M,
        trainer: &mut Trainer,
    ) -> Result<(M, TrainerState)> {
        Self::verify(checkpoint)?;
        let state = Self::read_state(checkpoint)?;
        // Exact: the state file holds the shortest decimal of each float, and serde_json's
        // `float_roundtrip` parses it back to the same bits.
        if &state.optimizer != trainer.config() {
            return Err(TrainError::ResumeMismatch {
                path: checkpoint.into(),
                reason: format!(
                    "optimizer settings differ: checkpoint {:?}, run {:?}",
                    state.optimizer,
                    trainer.config()
                ),
            });
        }
        if &state.schedule != trainer.schedule() {
            return Err(TrainError::ResumeMismatch {
                path: checkpoint.into(),
                reason: format!(
                    "schedule differs: checkpoint {:?}, run {:?}",
                    state.schedule,
                    trainer.schedule()
                ),
            });
        }
        let params = checkpoint.join(PARAMS_FILE);
        let record = ModuleRecord::load(&params)
            .map_err(TrainError::record(&params))?
            .allow_partial(true);
        let model = model
            .try_load_record(record)
            .map_err(TrainError::record(&params))?;
        if let Some(param) = first_non_finite(&model) {
            return Err(TrainError::NonFiniteParam {
                path: params,
                param,
            });
        }
        trainer.load_optimizer(&checkpoint.join(OPTIMIZER_FILE), state.step)?;
        Ok((model, state))
    }
}

impl CheckpointManager {
    /// Checks every file listed in the checkpoint's `checksums.json` against its size and
    /// CRC-32. A checkpoint written before checksums existed (no such file) passes.
    ///
    /// # Errors
    /// [`TrainError::Corrupt`] naming the first file that is missing or differs.
    pub fn verify(checkpoint: &Path) -> Result<()> {
        let manifest = checkpoint.join(CHECKSUMS_FILE);
        if !manifest.is_file() {
            return Ok(());
        }
        let text = fs::read_to_string(&manifest).map_err(TrainError::io(&manifest))?;
        let expected: std::collections::BTreeMap<String, FileSum> =
            serde_json::from_str(&text).map_err(TrainError::json(&manifest))?;
        for (name, want) in expected {
            let path = checkpoint.join(&name);
            let bytes = fs::read(&path).map_err(TrainError::io(&path))?;
            let got = FileSum::of(&bytes);
            if got != want {
                return Err(TrainError::Corrupt {
                    path,
                    reason: format!(
                        "{} bytes with CRC-32 {}, but {CHECKSUMS_FILE} records {} bytes with \
                         CRC-32 {}",
                        got.bytes, got.crc32, want.bytes, want.crc32
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Size and CRC-32 of one checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileSum {
    bytes: u64,
    crc32: String,
}

impl FileSum {
    fn of(bytes: &[u8]) -> Self {
        Self {
            bytes: bytes.len() as u64,
            crc32: format!("{:08x}", crc32fast::hash(bytes)),
        }
    }
}

/// Checksums of the plain files directly inside `dir`.
fn checksums(dir: &Path) -> Result<std::collections::BTreeMap<String, FileSum>> {
    let mut out = std::collections::BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(TrainError::io(dir))? {
        let entry = entry.map_err(TrainError::io(dir))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !path.is_file() || name == STATE_FILE || name == CHECKSUMS_FILE {
            continue;
        }
        let bytes = fs::read(&path).map_err(TrainError::io(&path))?;
        out.insert(name, FileSum::of(&bytes));
    }
    Ok(out)
}

/// The module path of the first trainable parameter holding NaN or an infinity.
fn first_non_finite<M: Module>(model: &M) -> Option<String> {
    #[derive(Default)]
    struct Find {
        path: Vec<String>,
        found: Option<String>,
    }
    impl ModuleVisitor for Find {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.found.is_none() && param.is_require_grad() {
                let data = param.val().into_data().convert::<f32>();
                if data.iter::<f32>().any(|v| !v.is_finite()) {
                    self.found = Some(self.path.join("."));
                }
            }
        }
    }
    let mut find = Find::default();
    model.visit(&mut find);
    find.found
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(TrainError::json(path))?;
    let mut f = fs::File::create(path).map_err(TrainError::io(path))?;
    f.write_all(text.as_bytes()).map_err(TrainError::io(path))?;
    f.sync_all().map_err(TrainError::io(path))
}

fn sync_file(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(TrainError::io(path))
}

fn sync_dir(path: &Path) -> Result<()> {
    // Directories can be opened and synced on Unix; elsewhere the rename is what matters.
    if cfg!(unix) {
        fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(TrainError::io(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_trainable_parameters_are_found() {
        #[derive(Module, Debug)]
        struct Two {
            frozen: burn::module::Param<Tensor<1>>,
            weight: burn::module::Param<Tensor<1>>,
        }
        let device = burn::tensor::Device::flex().autodiff();
        let param = |v: [f32; 2], grad: bool| {
            burn::module::Param::from_tensor(Tensor::<1>::from_floats(v, &device))
                .set_require_grad(grad)
        };
        let m = Two {
            frozen: param([f32::NAN, 0.0], false),
            weight: param([1.0, 2.0], true),
        };
        assert_eq!(
            first_non_finite(&m),
            None,
            "frozen parameters are not checked"
        );
        let m = Two {
            frozen: param([0.0, 0.0], false),
            weight: param([1.0, f32::INFINITY], true),
        };
        assert_eq!(first_non_finite(&m).as_deref(), Some("weight"));
    }

    #[test]
    fn verify_names_a_changed_or_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join(OPTIMIZER_FILE), [7u8; 64]).unwrap();
        fs::write(d.join(PARAMS_FILE), [1u8; 32]).unwrap();
        write_json(&d.join(CHECKSUMS_FILE), &checksums(d).unwrap()).unwrap();
        CheckpointManager::verify(d).unwrap();

        // Same length, other bytes.
        fs::write(d.join(OPTIMIZER_FILE), [8u8; 64]).unwrap();
        let err = CheckpointManager::verify(d).unwrap_err().to_string();
        assert!(
            err.contains(OPTIMIZER_FILE) && err.contains("corrupt"),
            "{err}"
        );
        fs::write(d.join(OPTIMIZER_FILE), [7u8; 64]).unwrap();
        CheckpointManager::verify(d).unwrap();

        fs::remove_file(d.join(PARAMS_FILE)).unwrap();
        let err = CheckpointManager::verify(d).unwrap_err().to_string();
        assert!(err.contains(PARAMS_FILE), "{err}");
    }

    /// A resumed run continues bit for bit only if every float of the state reads back as
    /// written. serde_json's default parser is one unit in the last place off for about one in
    /// twelve f64 values (3.1196087731255426 reads back as 3.119608773125542); the workspace
    /// enables its `float_roundtrip` feature.
    #[test]
    fn trainer_state_round_trips_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng = rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            // Positive, normal f64 values in [2, 4): losses and lrs live in such ranges.
            f64::from_bits((rng >> 12) | 0x4000_0000_0000_0000)
        };
        for _ in 0..200 {
            let state = TrainerState {
                step: 4,
                epoch: 1,
                seed: 9,
                optimizer: OptimizerConfig {
                    lr: next() * 1e-4,
                    max_grad_norm: Some(next()),
                    ..OptimizerConfig::default().with_loraplus(next())
                },
                schedule: Schedule::Cosine {
                    warmup_steps: 2,
                    total_steps: 12,
                },
                data: DataLayout {
                    num_examples: 14,
                    batch_size: 3,
                    grad_accum_steps: 2,
                    shuffle: true,
                    group_by_length: false,
                },
                best: Some(BestMetric {
                    value: next(),
                    step: 4,
                }),
                evals_without_improvement: 1,
                loss_tokens_seen: 96,
                input_tokens_seen: 180,
                padding_tokens_seen: 12,
                elapsed_secs: next(),
                last_loss: Some(next() as f32),
            };
            let path = dir.path().join(STATE_FILE);
            write_json(&path, &state).unwrap();
            let back = CheckpointManager::read_state(dir.path()).unwrap();
            assert_eq!(back, state);
            assert_eq!(
                back.best.unwrap().value.to_bits(),
                state.best.unwrap().value.to_bits()
            );
        }
    }
}
