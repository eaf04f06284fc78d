//! Training recipes: one TOML file describes the model, the data, the method and the training
//! run, as the YAML recipes of axolotl or torchtune do. `kiln train RECIPE.toml` runs one.
//!
//! ```toml
//! [model]
//! path = "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
//!
//! [data]
//! train = "data/obd/train.jsonl"
//! validation = "data/obd/validation.jsonl"
//! max_len = 128
//! format = { format = "prompt_completion" }
//! style = { style = "chat_template", system = "You are a car diagnostics assistant." }
//! packing = true       # the default for prompt_completion, instruction and chat data
//! group_by_length = false
//!
//! [adapter]            # Hugging Face PEFT's adapter_config.json fields; omit for full fine-tuning
//! peft_type = "LORA"
//! r = 16
//! lora_alpha = 32
//! target_modules = "all-linear"
//!
//! [optimizer]
//! lr = 2e-3
//!
//! [schedule]
//! kind = "cosine"
//! warmup_ratio = 0.05
//!
//! [fit]
//! batch_size = 8
//! epochs = 1
//! output_dir = "runs/dtc"
//! ```
//!
//! Unknown keys anywhere are errors that name the key ([`Recipe::from_toml`]); `--set
//! key=value` overrides ([`Recipe::parse`]) use the same dotted paths.
//! Fragments such as the method presets in the repository's `recipes/` folder combine in
//! layers with [`RecipeBuilder`].
//!
//! The crate also turns a user's device string into a Burn device ([`device::parse_device`]);
//! which backends exist is decided by its cargo features (`flex`, `ndarray`, `wgpu`, `cuda`).
//!
//! | module | holds |
//! |---|---|
//! | `schema` | the recipe's sections ([`Recipe`], [`DataSection`], [`ScheduleSection`], ...) |
//! | `load` | TOML parsing, files, layers ([`RecipeBuilder`]) and `--set` overrides |
//! | `run` | [`Recipe::run`], [`RecipeOutput`], [`RunReport`] |
//! | `eval` | [`eval_cases`], [`answer_config`], [`general_text`] |
//! | [`device`] | [`device::parse_device`], [`device::compiled_backends`] |
#![warn(missing_docs)]

pub mod device;
mod error;
mod eval;
mod load;
mod ppo;
mod run;
mod schema;

pub use error::{RecipeError, Result};
pub use eval::{answer_config, eval_cases, general_text};
pub use load::RecipeBuilder;
pub use run::{RecipeOutput, RunReport};
pub use schema::{
    DataSection, ModelSection, Recipe, ReferenceKind, ReplaySection, ScheduleKind, ScheduleSection,
    TaskKind, TaskSection,
};
