//! `kiln score`: text metrics of line-aligned hypotheses and references.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use kiln::metrics;
use serde_json::json;

/// Arguments of `kiln score`.
#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// Generated texts, one per line.
    #[arg(long)]
    pub hyp: PathBuf,
    /// Reference texts, one per line, aligned with `--hyp`.
    #[arg(long = "ref")]
    pub reference: PathBuf,
    /// Do not Porter-stem tokens for ROUGE (rouge-score's `use_stemmer=False`).
    #[arg(long)]
    pub no_stemmer: bool,
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().map(str::to_string).collect())
}

/// The scores as a JSON value.
pub fn scores(hyps: &[String], refs: &[String], stemmer: bool) -> Result<serde_json::Value> {
    let (em, f1) = metrics::mean_em_f1(hyps, refs)?;
    let ref_sets: Vec<Vec<String>> = refs.iter().map(|r| vec![r.clone()]).collect();
    let bleu = metrics::corpus_bleu(hyps, &ref_sets)?;
    let rouge = metrics::corpus_rouge(hyps, refs, stemmer)?;
    let richness = metrics::vocabulary_richness(hyps).ok().map(|r| {
        json!({
            "tokens": r.tokens,
            "types": r.types,
            "type_token_ratio": r.type_token_ratio,
            "distinct_1": r.distinct_1,
            "distinct_2": r.distinct_2,
            "mtld": r.mtld,
        })
    });
    Ok(json!({
        "lines": hyps.len(),
        "exact_match": em,
        "f1": f1,
        "bleu": {
            "score": bleu.score,
            "precisions": bleu.precisions,
            "bp": bleu.bp,
            "sys_len": bleu.sys_len,
            "ref_len": bleu.ref_len,
        },
        "rouge1": rouge.rouge1,
        "rouge2": rouge.rouge2,
        "rougeL": rouge.rouge_l,
        "rougeLsum": rouge.rouge_lsum,
        "vocabulary": richness,
    }))
}

/// Runs `kiln score`: prints the JSON on stdout.
pub fn run(args: &ScoreArgs) -> Result<()> {
    let hyps = read_lines(&args.hyp)?;
    let refs = read_lines(&args.reference)?;
    if hyps.len() != refs.len() {
        bail!(
            "{} has {} lines but {} has {}: the files must be line-aligned",
            args.hyp.display(),
            hyps.len(),
            args.reference.display(),
            refs.len()
        );
    }
    if hyps.is_empty() {
        bail!("{} is empty", args.hyp.display());
    }
    let value = scores(&hyps, &refs, !args.no_stemmer)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}
