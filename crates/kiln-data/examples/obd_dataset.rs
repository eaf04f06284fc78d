//! Builds the OBD-II question-answering dataset and writes it as JSONL.
//!
//! ```text
//! cargo run --release -p kiln-data --example obd_dataset -- assets/obd/codes.py out/obd [seed]
//! ```

use std::process::ExitCode;

use kiln_data::obd::{ObdConfig, build, read_codes};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(codes), Some(out)) = (args.first(), args.get(1)) else {
        eprintln!("usage: obd_dataset <codes.py> <output folder> [seed]");
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
    match result {
        Ok(ds) => {
            println!("{ds}");
            println!("written to {out}/{{train,validation,test,test_phrasing}}.jsonl");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
