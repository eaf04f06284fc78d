//! Tests on a small in-test corpus with a deterministic fake embedder; the MiniLM test skips
//! when `assets/all-MiniLM-L6-v2` is absent.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::*;

/// Hashed bag of words: deterministic, no model needed.
struct FakeEmbedder {
    dim: usize,
}

impl Embed for FakeEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0.0; self.dim];
                for word in t
                    .to_lowercase()
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                {
                    let h = word.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                    });
                    v[(h % self.dim as u64) as usize] += 1.0;
                }
                v
            })
            .collect())
    }

    fn source(&self) -> String {
        "fake".into()
    }
}

fn fake() -> FakeEmbedder {
    FakeEmbedder { dim: 32 }
}

fn corpus() -> Vec<Value> {
    [
        (
            "P0128",
            "Coolant Thermostat (Coolant Temperature Below Thermostat Regulating Temperature)",
        ),
        ("P0130", "O2 Sensor Circuit Malfunction (Bank 1 Sensor 1)"),
        ("P0131", "O2 Sensor Circuit Low Voltage (Bank 1 Sensor 1)"),
        ("P0171", "System too Lean (Bank 1)"),
        ("P0300", "Random/Multiple Cylinder Misfire Detected"),
        (
            "P0420",
            "Catalyst System Efficiency Below Threshold (Bank 1)",
        ),
        (
            "P0442",
            "Evaporative Emission Control System Leak Detected (small leak)",
        ),
    ]
    .iter()
    .map(|(code, d)| json!({"code": code, "description": d, "text": format!("{code}: {d}")}))
    .collect()
}

fn build(dir: &Path) -> HybridIndex<FakeEmbedder> {
    HybridIndex::build(&corpus(), "text", fake(), dir).unwrap()
}

#[test]
fn bm25_ranks_the_exact_code_first() {
    let tmp = tempfile::tempdir().unwrap();
    let index = build(&tmp.path().join("idx"));
    for q in [
        "What does P0130 mean?",
        "p0130",
        "code P0130, bank 1 sensor 1",
    ] {
        let hits = index.query_mode(q, 3, Mode::Bm25).unwrap();
        assert_eq!(hits[0].id, "P0130", "{q}: {hits:?}");
        assert_eq!(hits[0].bm25.unwrap().rank, 1);
        assert!(hits[0].dense.is_none());
    }
    // P0131 shares every word but the code: the code token decides.
    let hits = index.bm25("P0131", 10).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].0, 2);
    assert!(index.bm25("?!", 5).unwrap().is_empty());
}

#[test]
fn hybrid_fuses_both_lists_by_reciprocal_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let index = build(&tmp.path().join("idx"));
    // No code in the question: the plain fusion (with a code see
    // `an_exact_id_in_the_query_comes_first_in_hybrid_mode`).
    let hits = index
        .query("catalyst efficiency below threshold?", 3)
        .unwrap();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0].id, "P0420");
    for h in &hits {
        let expected: f32 = [h.bm25, h.dense]
            .iter()
            .flatten()
            .map(|r| 1.0 / (RRF_K + r.rank as f32))
            .sum();
        assert!((h.score - expected).abs() < 1e-7, "{h:?}");
        assert_eq!(h.record["code"], json!(h.id));
    }
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    let dense = index
        .query_mode("misfire random cylinder", 2, Mode::Dense)
        .unwrap();
    assert_eq!(dense[0].id, "P0300");
    assert!(dense[0].bm25.is_none() && dense[0].dense.unwrap().rank == 1);
}

#[test]
fn persistence_round_trip_gives_the_same_results() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let queries = [
        "P0300 misfire",
        "lean bank",
        "small evap leak",
        "thermostat",
    ];
    let before: Vec<Vec<Hit>> = {
        let index = build(&dir);
        queries.iter().map(|q| index.query(q, 5).unwrap()).collect()
    };
    for f in ["meta.json", "docs.jsonl", "embeddings.safetensors", "bm25"] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let index = HybridIndex::open_with(&dir, fake()).unwrap();
    let meta = index.meta();
    assert_eq!(
        (
            meta.doc_count,
            meta.dim,
            meta.text_field.as_str(),
            meta.embedder.as_str()
        ),
        (7, 32, "text", "fake")
    );
    assert_eq!(index.records(), corpus().as_slice());
    let after: Vec<Vec<Hit>> = queries.iter().map(|q| index.query(q, 5).unwrap()).collect();
    assert_eq!(before, after);
}

#[test]
fn bad_inputs_are_errors_naming_the_fault() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("docs.jsonl");
    std::fs::write(
        &file,
        "{\"text\": \"a\"}\n\n{\"text\": \"b\"}\n{\"body\": \"c\"}\n",
    )
    .unwrap();
    let err = read_docs(&file, "text").unwrap_err().to_string();
    assert!(
        err.contains(&format!("{}:4:", file.display())) && err.contains("no field `text`"),
        "{err}"
    );
    std::fs::write(&file, "{\"text\": \"a\"}\nnot json\n").unwrap();
    let err = read_docs(&file, "text").unwrap_err().to_string();
    assert!(err.contains(":2: invalid JSON"), "{err}");

    let out = tmp.path().join("idx");
    let err = HybridIndex::build(&[], "text", fake(), &out).unwrap_err();
    assert!(matches!(err, RagError::NoDocuments), "{err}");
    let docs = [json!({"text": "a"}), json!({"text": 3})];
    let err = HybridIndex::build(&docs, "text", fake(), &out).unwrap_err();
    assert_eq!(
        err.to_string(),
        "document 2: field `text` is not a string: 3"
    );
    assert!(!out.exists(), "nothing written");

    let index = build(&out);
    let err = index.query("P0300", 0).unwrap_err().to_string();
    assert!(err.contains("top_k"), "{err}");
    assert!("fuzzy".parse::<Mode>().is_err());
}

#[test]
fn a_user_folder_is_never_overwritten_and_an_index_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let mine = tmp.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
    let err = HybridIndex::build(&corpus(), "text", fake(), &mine).unwrap_err();
    assert!(matches!(err, RagError::NotAnIndex { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "keep me"
    );
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    assert!(HybridIndex::build(&corpus(), "text", fake(), &file).is_err());

    let out = tmp.path().join("idx");
    build(&out);
    let smaller = HybridIndex::build(&corpus()[..2], "text", fake(), &out).unwrap();
    assert_eq!(smaller.len(), 2);
    assert_eq!(HybridIndex::open_with(&out, fake()).unwrap().len(), 2);
    let leftovers: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_damaged_index_or_a_wrong_embedder_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    build(&dir);
    let err = HybridIndex::open_with(&dir, FakeEmbedder { dim: 8 })
        .unwrap_err()
        .to_string();
    assert!(err.contains("32") && err.contains('8'), "{err}");

    let emb = dir.join("embeddings.safetensors");
    std::fs::rename(&emb, dir.join("moved")).unwrap();
    let err = HybridIndex::open_with(&dir, fake())
        .unwrap_err()
        .to_string();
    assert!(err.contains("embeddings.safetensors"), "{err}");
    std::fs::rename(dir.join("moved"), &emb).unwrap();

    let docs = dir.join("docs.jsonl");
    let text = std::fs::read_to_string(&docs).unwrap();
    std::fs::write(&docs, text.lines().take(3).collect::<Vec<_>>().join("\n")).unwrap();
    let err = HybridIndex::open_with(&dir, fake())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("docs.jsonl") && err.contains("3 records"),
        "{err}"
    );
    std::fs::write(&docs, text).unwrap();

    std::fs::write(dir.join("meta.json"), "{").unwrap();
    let err = HybridIndex::open_with(&dir, fake())
        .unwrap_err()
        .to_string();
    assert!(err.contains("meta.json"), "{err}");
    let err = HybridIndex::open_with(tmp.path().join("nope"), fake())
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
}

fn minilm() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/all-MiniLM-L6-v2");
    if dir.join("model.safetensors").exists() {
        Some(dir)
    } else {
        println!(
            "skipped: {} is missing (run scripts/fetch-assets.sh)",
            dir.display()
        );
        None
    }
}

#[test]
fn minilm_embeds_unit_vectors_and_retrieves_by_meaning() {
    let Some(dir) = minilm() else { return };
    let device = burn::tensor::Device::default();
    let embedder = Embedder::load(&dir, &device).unwrap().with_batch_size(3);
    assert_eq!(embedder.dim(), 384);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("idx");
    let index = HybridIndex::build(&corpus(), "text", embedder, &out).unwrap();
    let v = index
        .embedder()
        .embed(&["engine shakes".into(), "x".into()])
        .unwrap();
    for row in &v {
        let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
    let hits = index
        .query_mode(
            "the catalytic converter is not working well",
            1,
            Mode::Dense,
        )
        .unwrap();
    assert_eq!(hits[0].id, "P0420", "{hits:?}");
    // Open loads the embedder recorded in meta.json.
    assert_eq!(index.meta().embedder, dir.display().to_string());
    let reopened = HybridIndex::open(&out, &device).unwrap();
    assert_eq!(
        reopened.query("P0171 lean", 3).unwrap(),
        index.query("P0171 lean", 3).unwrap()
    );
}

#[test]
fn an_exact_id_in_the_query_comes_first_in_hybrid_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let index = build(&tmp.path().join("idx"));
    // The question's other words match P0442's and P0420's text better than the code matches
    // P0300's.
    let q = "Emission control system leak detected, small leak below threshold: what is p0300?";
    let bm25 = index.query_mode(q, 3, Mode::Bm25).unwrap();
    assert_ne!(bm25[0].id, "P0300", "{bm25:?}");
    let hybrid = index.query(q, 3).unwrap();
    assert_eq!(hybrid[0].id, "P0300", "{hybrid:?}");
    assert!(hybrid[0].score > hybrid[1].score);
    assert_eq!(hybrid.len(), 3);
    assert_eq!(
        hybrid.iter().filter(|h| h.id == "P0300").count(),
        1,
        "no duplicate"
    );
    // Two codes: both first, in the question's order.
    let two = index.query("P0171 or P0130?", 4).unwrap();
    assert_eq!((two[0].id.as_str(), two[1].id.as_str()), ("P0171", "P0130"));
    // Without an id the order is the plain fusion.
    let plain = index.query("leak detected", 2).unwrap();
    assert!(plain[0].score <= 2.0 / (RRF_K + 1.0) + 1e-6);
}
