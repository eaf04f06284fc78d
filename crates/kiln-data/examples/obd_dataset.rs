//! Builds the OBD-II question-answering dataset, writes it as JSONL and, given a Hugging Face
//! tokenizer folder, prints token statistics of every set rendered with the model's chat
//! template (assistant-only loss).
//!
//! ```text
//! cargo run --release -p kiln-data --example obd_dataset -- \
//!     assets/obd/codes.py out/obd [seed] [tokenizer folder]
//! ```

use std::path::Path;
use std::process::ExitCode;

use kiln_data::obd::{ObdConfig, ObdDataset, build, read_codes};
use kiln_data::{DataError, PrepareOptions, PromptStyle, RecordFormat, prepare_path};
use kiln_tokenizer::Tokenizer;

fn stats(ds: &ObdDataset, out: &Path, tokenizer: &Path) -> Result<(), String> {
    let tk = Tokenizer::from_hf_dir(tokenizer).map_err(|e| e.to_string())?;
    let options = PrepareOptions {
        style: PromptStyle::ChatTemplate { system: None },
        ..PrepareOptions::new(RecordFormat::prompt_completion())
    };
    for (name, _) in ds.sets() {
        let prepared = prepare_path(out.join(format!("{name}.jsonl")), &tk, &options)
            .map_err(|e: DataError| e.to_string())?;
        println!("{name}: {}", prepared.stats());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(codes), Some(out)) = (args.first(), args.get(1)) else {
        eprintln!("usage: obd_dataset <codes.py> <output folder> [seed] [tokenizer folder]");
        return ExitCode::from(2);
    };
    let seed = match args.get(2).map(|s| s.parse::<u64>()) {
        None => 0,
        Some(Ok(seed)) => seed,
        Some(Err(e)) => {
            eprintln!("seed: {e}");
            return ExitCode::from(2);
        }
    };
    let config = ObdConfig {
        seed,
        ..ObdConfig::default()
    };
    let result = read_codes(codes)
        .and_then(|codes| build(&codes, &config))
        .and_then(|ds| ds.write_jsonl(out).map(|()| ds));
    let ds = match result {
        Ok(ds) => ds,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{ds}");
    println!("written to {out}/{{train,validation,test,test_phrasing}}.jsonl");
    if let Some(tokenizer) = args.get(3)
        && let Err(e) = stats(&ds, Path::new(out), Path::new(tokenizer))
    {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
