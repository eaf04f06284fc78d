//! `kiln data`: build, split and inspect datasets.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use kiln::data::obd::{self, ObdConfig};
use kiln::data::{
    DatasetStats, PrepareOptions, PromptStyle, RecordFormat, SourceKind, SplitSizes, Splitter,
    prepare, read_records, write_jsonl,
};
use kiln::models::load_tokenizer;

/// `kiln data ...`
#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Build the OBD-II question-answering dataset from the `obd` package's code list.
    ///
    /// Writes train.jsonl, validation.jsonl, test.jsonl (unseen codes, unseen phrasings) and
    /// test_phrasing.jsonl (unseen phrasings of trained codes), split by code; codes.jsonl:
    /// every code as `{"code", "description", "text"}`, a corpus for `kiln index build`; and
    /// preference.jsonl: the training questions as `{"prompt", "chosen", "rejected"}` pairs (the
    /// true answer over the code with another code's description) for `[task] kind = "dpo"`.
    ///
    /// Example:
    ///   kiln data obd --out runs/dtc-assistant/data
    #[command(verbatim_doc_comment)]
    Obd {
        /// The `obd` package's `codes.py` (fetched by scripts/fetch-assets.sh).
        #[arg(long, default_value = "assets/obd/codes.py")]
        codes: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the code and phrasing splits.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Fraction of codes for validation.
        #[arg(long, default_value_t = 0.05)]
        validation_codes: f64,
        /// Fraction of codes for testing.
        #[arg(long, default_value_t = 0.1)]
        test_codes: f64,
    },
    /// Split a dataset file into train/validation/test JSONL files, seeded.
    ///
    /// Example:
    ///   kiln data split data.jsonl --out data/ --validation 0.1 --test 0.1 --seed 0
    #[command(verbatim_doc_comment)]
    Split {
        /// JSONL, JSON, CSV or text file.
        input: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Validation fraction.
        #[arg(long, default_value_t = 0.1)]
        validation: f64,
        /// Test fraction.
        #[arg(long, default_value_t = 0.1)]
        test: f64,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Tokenize a dataset with a model's tokenizer and print statistics: examples, token
    /// lengths, the fraction of tokens with loss, and what cleaning dropped.
    ///
    /// Example:
    ///   kiln data inspect runs/dtc-assistant/data/train.jsonl --model assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    #[command(verbatim_doc_comment)]
    Inspect {
        /// JSONL, JSON, CSV or text file.
        input: PathBuf,
        /// Model whose tokenizer (and chat template) is used.
        #[arg(long)]
        model: PathBuf,
        /// Record format: prompt_completion, instruction, chat or text.
        #[arg(long, default_value = "prompt_completion")]
        format: String,
        /// Prompt style: raw, qa, alpaca or chat.
        #[arg(long, default_value = "chat")]
        style: String,
    },
}

/// Runs `kiln data`.
pub fn run(command: &DataCommand) -> Result<()> {
    match command {
        DataCommand::Obd {
            codes,
            out,
            seed,
            validation_codes,
            test_codes,
        } => {
            let list = obd::read_codes(codes).with_context(|| {
                format!(
                    "{} (run ./scripts/fetch-assets.sh to fetch it)",
                    codes.display()
                )
            })?;
            let config = ObdConfig {
                seed: *seed,
                validation_codes: *validation_codes,
                test_codes: *test_codes,
                ..Default::default()
            };
            let ds = obd::build(&list, &config)?;
            ds.write_jsonl(out)?;
            // Every code (trained or not) as a retrieval corpus for `kiln index build`.
            obd::write_code_docs(&list, out.join("codes.jsonl"))?;
            // The training questions as preference pairs (true answer over a hallucination),
            // for `[task] kind = "dpo"` after supervised tuning.
            let prefs = obd::preference_pairs(&ds.train, &list, *seed);
            kiln::data::write_jsonl(out.join("preference.jsonl"), &prefs)?;
            println!("{ds}");
            println!("written to {}", out.display());
        }
        DataCommand::Split {
            input,
            out,
            validation,
            test,
            seed,
        } => {
            // Refuse before reading: an output file that is the input would be overwritten
            // with a part of itself.
            let outputs = ["train", "validation", "test"].map(|n| out.join(format!("{n}.jsonl")));
            if let Ok(input_real) = input.canonicalize() {
                for path in &outputs {
                    if path.canonicalize().is_ok_and(|p| p == input_real) {
                        bail!(
                            "the input {} is also an output of --out {}: it would be overwritten; \
                             choose another --out folder",
                            input.display(),
                            out.display()
                        );
                    }
                }
            }
            let records: Vec<_> =
                read_records(input, SourceKind::from_path(input)?)?.collect::<Result<_, _>>()?;
            let sizes = SplitSizes::Ratios {
                train: 1.0 - validation - test,
                validation: *validation,
                test: *test,
            };
            let split = Splitter::new(sizes, *seed).random(records.len())?;
            std::fs::create_dir_all(out)?;
            for (path, idx) in outputs
                .iter()
                .zip([&split.train, &split.validation, &split.test])
            {
                let n = write_jsonl(path, idx.iter().map(|&i| &records[i].fields))?;
                println!("{}: {n} records", path.display());
            }
        }
        DataCommand::Inspect {
            input,
            model,
            format,
            style,
        } => {
            let format = match format.as_str() {
                "prompt_completion" => RecordFormat::prompt_completion(),
                "instruction" => RecordFormat::instruction(),
                "chat" => RecordFormat::chat(),
                "text" => RecordFormat::text(),
                other => {
                    bail!("unknown --format `{other}` (prompt_completion, instruction, chat, text)")
                }
            };
            let tok = load_tokenizer(model)
                .with_context(|| format!("loading the tokenizer of {}", model.display()))?;
            let options = PrepareOptions {
                style: PromptStyle::builtin(style)?,
                ..PrepareOptions::new(format)
            };
            let records = read_records(input, SourceKind::from_path(input)?)?;
            let prepared = prepare(records, input, &tok, &options)?;
            println!("{}", DatasetStats::from_examples(&prepared.examples));
            println!("{}", prepared.report);
        }
    }
    Ok(())
}
