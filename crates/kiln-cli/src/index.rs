//! `kiln index`: build and query a retrieval index (BM25 + dense embeddings, fused by
//! reciprocal rank).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use kiln::prelude::Device;
use kiln::rag::{Embedder, Hit, HybridIndex, Mode, check_out_dir, read_docs};

use crate::util::DeviceArg;

/// The embedder `kiln index build` uses unless told otherwise.
pub const DEFAULT_EMBEDDER: &str = "assets/all-MiniLM-L6-v2";

/// `kiln index ...`
#[derive(Debug, clap::Subcommand)]
pub enum IndexCommand {
    /// Index a JSONL file of records for retrieval: BM25 over a text field and MiniLM
    /// embeddings, stored in a folder.
    ///
    /// An existing index in --out is replaced once the new one is complete; any other
    /// non-empty --out is refused.
    ///
    /// Example:
    ///   kiln data obd --out runs/obd && kiln index build --docs runs/obd/codes.jsonl --out runs/obd-index
    #[command(verbatim_doc_comment)]
    Build {
        /// JSONL file, one JSON object a line.
        #[arg(long)]
        docs: PathBuf,
        /// The field of each record to index.
        #[arg(long, default_value = "text")]
        text_field: String,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Sentence-embedding model folder (BERT family, e.g. all-MiniLM-L6-v2).
        #[arg(long, default_value = DEFAULT_EMBEDDER)]
        embedder: PathBuf,
        /// Texts per embedding batch.
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
    },
    /// Retrieve the best records of an index for a text.
    ///
    /// Prints one line per hit: rank, score (the fused score in hybrid mode), BM25 score
    /// (rank), dense cosine similarity (rank), id and text; `-` where the document is not
    /// among a retriever's candidates.
    ///
    /// Examples:
    ///   kiln index query runs/obd-index "What does P0130 mean?" --top-k 5
    ///   kiln index query runs/obd-index "engine shakes at idle" --mode dense
    #[command(verbatim_doc_comment)]
    Query {
        /// Index folder (from `kiln index build`).
        dir: PathBuf,
        /// The query.
        text: String,
        /// Hits to print.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// Retrievers: both fused by reciprocal rank, BM25 alone or dense alone.
        #[arg(long, value_enum, default_value_t = ModeArg::Hybrid)]
        mode: ModeArg,
        /// Embedder folder, instead of the one recorded in the index's meta.json.
        #[arg(long)]
        embedder: Option<PathBuf>,
    },
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// BM25 and dense fused by reciprocal rank.
    Hybrid,
    /// BM25 only.
    Bm25,
    /// Dense embeddings only.
    Dense,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Hybrid => Mode::Hybrid,
            ModeArg::Bm25 => Mode::Bm25,
            ModeArg::Dense => Mode::Dense,
        }
    }
}

/// Opens the index in `dir`, with `embedder` or the one recorded in its meta.json.
pub fn open_index(dir: &Path, embedder: Option<&Path>, device: &Device) -> Result<HybridIndex> {
    let index = match embedder {
        Some(e) => HybridIndex::open_with(
            dir,
            Embedder::load(e, device)
                .with_context(|| format!("loading the embedder {}", e.display()))?,
        ),
        None => HybridIndex::open(dir, device),
    };
    index.with_context(|| format!("opening the index {}", dir.display()))
}

fn ranked(r: Option<kiln::rag::Ranked>, precision: usize) -> String {
    r.map_or_else(
        || "-".to_string(),
        |r| format!("{:.*} ({})", precision, r.score, r.rank),
    )
}

/// One printed line per hit.
pub fn format_hits(hits: &[Hit]) -> String {
    let mut out = format!(
        "{:>4}  {:>8}  {:>14}  {:>12}  text\n",
        "rank", "score", "bm25 (rank)", "dense (rank)"
    );
    for (i, h) in hits.iter().enumerate() {
        out.push_str(&format!(
            "{:>4}  {:>8.4}  {:>14}  {:>12}  {}\n",
            i + 1,
            h.score,
            ranked(h.bm25, 2),
            ranked(h.dense, 3),
            h.text.split_whitespace().collect::<Vec<_>>().join(" ")
        ));
    }
    out
}

/// Runs `kiln index ...`.
pub fn run(device: &DeviceArg, command: &IndexCommand) -> Result<()> {
    match command {
        IndexCommand::Build {
            docs,
            text_field,
            out,
            embedder,
            batch_size,
        } => {
            if *batch_size == 0 {
                bail!("--batch-size must be at least 1");
            }
            let records = read_docs(docs, text_field)?;
            if records.is_empty() {
                bail!("{}: no records to index", docs.display());
            }
            check_out_dir(out).context("--out")?;
            let device = device.open()?;
            let start = std::time::Instant::now();
            let embedder = Embedder::load(embedder, &device)
                .with_context(|| format!("loading the embedder {}", embedder.display()))?
                .with_batch_size(*batch_size);
            let index = HybridIndex::build(&records, text_field, embedder, out)
                .with_context(|| format!("building the index {}", out.display()))?;
            println!(
                "indexed {} records of {} ({} dimensions) into {} in {:.1} s",
                index.len(),
                docs.display(),
                index.meta().dim,
                out.display(),
                start.elapsed().as_secs_f64()
            );
        }
        IndexCommand::Query {
            dir,
            text,
            top_k,
            mode,
            embedder,
        } => {
            if *top_k == 0 {
                bail!("--top-k must be at least 1");
            }
            let device = device.open()?;
            let index = open_index(dir, embedder.as_deref(), &device)?;
            let hits = index.query_mode(text, *top_k, (*mode).into())?;
            print!("{}", format_hits(&hits));
        }
    }
    Ok(())
}
