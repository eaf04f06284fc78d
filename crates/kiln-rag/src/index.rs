//! The persistent hybrid index: BM25 (tantivy) and dense embeddings, fused by reciprocal rank.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use kiln_nn::safetensors::{HostTensor, read_safetensors, write_safetensors};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions, Value as _,
};
use tantivy::tokenizer::{LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer};
use tantivy::{Index, IndexReader, ReloadPolicy, TantivyDocument, Term};

use crate::fusion::reciprocal_rank_fusion;
use crate::{Embed, Embedder, RagError, Result};

/// The `format` of an index's `meta.json`.
pub const INDEX_FORMAT: &str = "kiln-rag-index";
/// The `version` of the index layout this crate writes and reads.
pub const INDEX_VERSION: u32 = 1;
/// Candidates each retriever contributes to the fusion, at least: a query for `top_k` hits
/// fuses the best `max(top_k, FUSION_CANDIDATES)` of each list.
pub const FUSION_CANDIDATES: usize = 50;

const META: &str = "meta.json";
const DOCS: &str = "docs.jsonl";
const EMBEDDINGS: &str = "embeddings.safetensors";
const EMBEDDINGS_TENSOR: &str = "embeddings";
const BM25_DIR: &str = "bm25";
const TOKENIZER: &str = "kiln_exact";
const TEXT: &str = "text";
const ORD: &str = "ord";

/// The contents of an index's `meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexMeta {
    /// Always [`INDEX_FORMAT`].
    pub format: String,
    /// The layout version, [`INDEX_VERSION`].
    pub version: u32,
    /// Number of documents.
    pub doc_count: usize,
    /// The field of each document that was indexed.
    pub text_field: String,
    /// Where the embedder came from ([`Embed::source`]), used by [`HybridIndex::open`].
    pub embedder: String,
    /// The embeddings' dimension.
    pub dim: usize,
}

/// Which retrievers a query uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// BM25 and dense lists fused by reciprocal rank.
    #[default]
    Hybrid,
    /// BM25 alone.
    Bm25,
    /// Dense embeddings alone (cosine similarity).
    Dense,
}

impl std::str::FromStr for Mode {
    type Err = RagError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "hybrid" => Ok(Self::Hybrid),
            "bm25" => Ok(Self::Bm25),
            "dense" => Ok(Self::Dense),
            _ => Err(RagError::Argument {
                name: "mode",
                reason: format!("unknown mode {s:?}; expected hybrid, bm25 or dense"),
            }),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Hybrid => "hybrid",
            Self::Bm25 => "bm25",
            Self::Dense => "dense",
        })
    }
}

/// A document's place in one retriever's list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// Rank in the list, counted from 1.
    pub rank: usize,
    /// The retriever's score: BM25, or cosine similarity for the dense list.
    pub score: f32,
}

/// One retrieved document.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The document's number: its position in the indexed documents, counted from 0.
    pub doc: usize,
    /// The record's `id` field (string or number), else its `code` field, else `#N` with `N`
    /// the document's line in `docs.jsonl` (counted from 1).
    pub id: String,
    /// The indexed text.
    pub text: String,
    /// The full original record.
    pub record: Value,
    /// The score the hits are ordered by: the reciprocal rank fusion score in
    /// [`Mode::Hybrid`], else the one retriever's score.
    pub score: f32,
    /// The document's place in the BM25 candidates, if it is among them.
    pub bm25: Option<Ranked>,
    /// The document's place in the dense candidates, if it is among them.
    pub dense: Option<Ranked>,
}

/// A retrieval index over JSON records, stored in a folder:
///
/// - `meta.json`: [`IndexMeta`];
/// - `docs.jsonl`: the records, one a line, as given;
/// - `embeddings.safetensors`: one `f32` tensor `embeddings` of shape `[doc_count, dim]`, each
///   row of unit length;
/// - `bm25/`: a tantivy index of the text field, tokenized into runs of letters and digits,
///   lowercased (so a code such as `P0130` is one token, `p0130`), scored with BM25.
///
/// A query ([`HybridIndex::query`]) retrieves from both and fuses the lists by reciprocal rank
/// (see [`crate::reciprocal_rank_fusion`]).
pub struct HybridIndex<E = Embedder> {
    dir: PathBuf,
    meta: IndexMeta,
    records: Vec<Value>,
    texts: Vec<String>,
    vectors: Vec<f32>,
    embedder: E,
    reader: IndexReader,
    text_field: Field,
    ord_field: Field,
    /// Documents by lowercased id ([`Hit::id`]), for exact-identifier queries.
    by_id: std::collections::HashMap<String, Vec<usize>>,
}

impl<E> std::fmt::Debug for HybridIndex<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HybridIndex")
            .field("dir", &self.dir)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// Reads a JSONL file of records (blank lines skipped), each a JSON object whose `text_field`
/// is a string.
///
/// # Errors
/// [`RagError::Io`] naming the file; [`RagError::Record`] naming the file and line of a record
/// that is not valid JSON, not an object, or lacks the text field.
pub fn read_docs(path: impl AsRef<Path>, text_field: &str) -> Result<Vec<Value>> {
    let path = path.as_ref();
    let content = fs::read_to_string(path).map_err(|e| RagError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in content.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| RagError::Record {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let record: Value =
            serde_json::from_str(line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        text_of(&record, text_field).map_err(bad)?;
        out.push(record);
    }
    Ok(out)
}

fn text_of<'a>(record: &'a Value, field: &str) -> std::result::Result<&'a str, String> {
    let Some(object) = record.as_object() else {
        return Err("not a JSON object".into());
    };
    match object.get(field) {
        None => Err(format!("no field `{field}`")),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!("field `{field}` is not a string: {other}")),
    }
}

fn id_of(record: &Value, doc: usize) -> String {
    for key in ["id", "code"] {
        match record.get(key) {
            Some(Value::String(s)) => return s.clone(),
            Some(Value::Number(n)) => return n.to_string(),
            _ => {}
        }
    }
    format!("#{}", doc + 1)
}

fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .build()
}

fn schema() -> (Schema, Field, Field) {
    let mut builder = Schema::builder();
    let options = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let text = builder.add_text_field(TEXT, options);
    let ord = builder.add_u64_field(ORD, STORED);
    (builder.build(), text, ord)
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

/// Whether `dir` holds a `meta.json` of this format.
fn is_index(dir: &Path) -> bool {
    fs::read_to_string(dir.join(META))
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .is_some_and(|m| m.get("format").and_then(Value::as_str) == Some(INDEX_FORMAT))
}

/// Checks that [`HybridIndex::build`] may write to `out`: it does not exist, or is an empty
/// folder, or holds an index (which a build replaces). Lets a caller refuse before any costly
/// work such as loading the embedder.
///
/// # Errors
/// [`RagError::NotAnIndex`] for anything else (a file, a folder of other things).
pub fn check_out_dir(out: impl AsRef<Path>) -> Result<()> {
    let out = out.as_ref();
    if !out.exists() {
        return Ok(());
    }
    let refuse = || RagError::NotAnIndex {
        path: out.to_path_buf(),
        format: INDEX_FORMAT,
    };
    if !out.is_dir() {
        return Err(refuse());
    }
    let empty = fs::read_dir(out)
        .map_err(|e| RagError::io(out, e))?
        .next()
        .is_none();
    if empty || is_index(out) {
        Ok(())
    } else {
        Err(refuse())
    }
}

/// A sibling of `out` named `.{name}.{what}-{pid}`.
fn sibling(out: &Path, what: &str) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "index".into());
    out.with_file_name(format!(".{name}.{what}-{}", std::process::id()))
}

impl HybridIndex<Embedder> {
    /// Opens the index in `dir`, loading the embedder recorded in its `meta.json` onto `device`
    /// (a relative path is taken from the working directory). Use [`HybridIndex::open_with`]
    /// to supply the embedder.
    ///
    /// # Errors
    /// As [`HybridIndex::open_with`]; [`RagError::Corrupt`] naming `meta.json` when the recorded
    /// embedder folder does not exist; errors of [`Embedder::load`].
    pub fn open(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let meta = read_meta(dir)?;
        let embedder_dir = Path::new(&meta.embedder);
        if meta.embedder.is_empty() || !embedder_dir.is_dir() {
            return Err(RagError::corrupt(
                dir.join(META),
                format!(
                    "the embedder folder {:?} recorded here does not exist (from {}); give the \
                     embedder explicitly",
                    meta.embedder,
                    std::env::current_dir()
                        .map(|d| d.display().to_string())
                        .unwrap_or_default()
                ),
            ));
        }
        let embedder = Embedder::load(embedder_dir, device)?;
        Self::open_with(dir, embedder)
    }
}

fn read_meta(dir: &Path) -> Result<IndexMeta> {
    let path = dir.join(META);
    if !dir.is_dir() {
        return Err(RagError::corrupt(dir, "no such index folder"));
    }
    let text = fs::read_to_string(&path).map_err(|e| RagError::io(&path, e))?;
    let meta: IndexMeta = serde_json::from_str(&text)
        .map_err(|e| RagError::corrupt(&path, format!("invalid index metadata: {e}")))?;
    if meta.format != INDEX_FORMAT {
        return Err(RagError::corrupt(
            &path,
            format!("format {:?}, expected {INDEX_FORMAT:?}", meta.format),
        ));
    }
    if meta.version != INDEX_VERSION {
        return Err(RagError::corrupt(
            &path,
            format!(
                "index layout version {}, this build reads version {INDEX_VERSION}; rebuild the index",
                meta.version
            ),
        ));
    }
    Ok(meta)
}

impl<E: Embed> HybridIndex<E> {
    /// Indexes `docs` (JSON objects whose `text_field` is a string) into the folder `out_dir`
    /// and opens the result.
    ///
    /// The index is written into a temporary sibling folder first; `out_dir` is replaced only
    /// once it is complete. An existing `out_dir` must be an empty folder or an index (which is
    /// then replaced): anything else is refused, so no user folder is overwritten.
    ///
    /// # Errors
    /// [`RagError::NoDocuments`]; [`RagError::Document`] naming a document without the text
    /// field; [`RagError::NotAnIndex`]; [`RagError::Embedding`] when the embedder returns the
    /// wrong number or size of vectors; I/O and index errors naming the file.
    pub fn build(
        docs: &[Value],
        text_field: &str,
        embedder: E,
        out_dir: impl AsRef<Path>,
    ) -> Result<Self> {
        let out = out_dir.as_ref();
        if docs.is_empty() {
            return Err(RagError::NoDocuments);
        }
        let texts: Vec<String> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                text_of(d, text_field)
                    .map(str::to_string)
                    .map_err(|reason| RagError::Document {
                        number: i + 1,
                        reason,
                    })
            })
            .collect::<Result<_>>()?;
        check_out_dir(out)?;
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| RagError::io(parent, e))?;
        }
        let tmp = sibling(out, "building");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| RagError::io(&tmp, e))?;
        }
        fs::create_dir(&tmp).map_err(|e| RagError::io(&tmp, e))?;
        let written = write_index(&tmp, docs, &texts, text_field, &embedder);
        if let Err(e) = written {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if out.exists() {
            let old = sibling(out, "old");
            fs::rename(out, &old).map_err(|e| RagError::io(out, e))?;
            if let Err(e) = fs::rename(&tmp, out) {
                let _ = fs::rename(&old, out);
                return Err(RagError::io(out, e));
            }
            fs::remove_dir_all(&old).map_err(|e| RagError::io(&old, e))?;
        } else {
            fs::rename(&tmp, out).map_err(|e| RagError::io(out, e))?;
        }
        Self::open_with(out, embedder)
    }

    /// Opens the index in `dir` with `embedder` for the queries' dense part.
    ///
    /// # Errors
    /// [`RagError::Io`] or [`RagError::Corrupt`] naming the file of the folder that is missing,
    /// unreadable or inconsistent with `meta.json`; [`RagError::Dimension`] when the embedder's
    /// dimension is not the index's, naming both.
    pub fn open_with(dir: impl AsRef<Path>, embedder: E) -> Result<Self> {
        let dir = dir.as_ref();
        let meta = read_meta(dir)?;
        if embedder.dim() != meta.dim {
            return Err(RagError::Dimension {
                path: dir.to_path_buf(),
                index: meta.dim,
                embedder: embedder.dim(),
            });
        }
        let docs_path = dir.join(DOCS);
        let records = read_docs(&docs_path, &meta.text_field)?;
        if records.len() != meta.doc_count {
            return Err(RagError::corrupt(
                &docs_path,
                format!(
                    "{} records, but meta.json says {}",
                    records.len(),
                    meta.doc_count
                ),
            ));
        }
        let texts = records
            .iter()
            .map(|r| text_of(r, &meta.text_field).map(str::to_string))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|reason| RagError::corrupt(&docs_path, reason))?;

        let emb_path = dir.join(EMBEDDINGS);
        if !emb_path.is_file() {
            return Err(RagError::corrupt(&emb_path, "missing"));
        }
        let mut tensors = read_safetensors(&emb_path)?;
        let Some(emb) = tensors.remove(EMBEDDINGS_TENSOR) else {
            return Err(RagError::corrupt(
                &emb_path,
                format!("no tensor `{EMBEDDINGS_TENSOR}`"),
            ));
        };
        if emb.shape != [meta.doc_count, meta.dim] {
            return Err(RagError::corrupt(
                &emb_path,
                format!(
                    "shape {:?}, expected [{}, {}] from meta.json",
                    emb.shape, meta.doc_count, meta.dim
                ),
            ));
        }

        let bm25_dir = dir.join(BM25_DIR);
        if !bm25_dir.is_dir() {
            return Err(RagError::corrupt(&bm25_dir, "missing"));
        }
        let index = Index::open_in_dir(&bm25_dir).map_err(|e| RagError::tantivy(&bm25_dir, e))?;
        index.tokenizers().register(TOKENIZER, analyzer());
        let schema = index.schema();
        let field = |name: &str| {
            schema
                .get_field(name)
                .map_err(|_| RagError::corrupt(&bm25_dir, format!("no field `{name}`")))
        };
        let text_field = field(TEXT)?;
        let ord_field = field(ORD)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| RagError::tantivy(&bm25_dir, e))?;
        let indexed = reader.searcher().num_docs();
        if indexed != meta.doc_count as u64 {
            return Err(RagError::corrupt(
                &bm25_dir,
                format!("{indexed} documents, but meta.json says {}", meta.doc_count),
            ));
        }
        let mut by_id: std::collections::HashMap<String, Vec<usize>> =
            std::collections::HashMap::new();
        for (doc, record) in records.iter().enumerate() {
            by_id
                .entry(id_of(record, doc).to_lowercase())
                .or_default()
                .push(doc);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            meta,
            by_id,
            records,
            texts,
            vectors: emb.data,
            embedder,
            reader,
            text_field,
            ord_field,
        })
    }

    /// The index's `meta.json`.
    pub fn meta(&self) -> &IndexMeta {
        &self.meta
    }

    /// The index folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the index holds no document (never true for a built index).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The documents, in indexing order.
    pub fn records(&self) -> &[Value] {
        &self.records
    }

    /// The embedder used for queries.
    pub fn embedder(&self) -> &E {
        &self.embedder
    }

    /// The `top_k` best documents for `text` by reciprocal rank fusion of the BM25 and dense
    /// lists (each of `max(top_k, FUSION_CANDIDATES)` candidates), best first; documents whose
    /// id is a token of `text` (a trouble code asked about) come before all others.
    ///
    /// # Errors
    /// [`RagError::Argument`] when `top_k` is 0; errors of the embedder or the BM25 index.
    pub fn query(&self, text: &str, top_k: usize) -> Result<Vec<Hit>> {
        self.query_mode(text, top_k, Mode::Hybrid)
    }

    /// As [`HybridIndex::query`] with the retrievers chosen by `mode`. In [`Mode::Bm25`] and
    /// [`Mode::Dense`] the hits are that retriever's best `top_k` and [`Hit::score`] is its
    /// score.
    ///
    /// # Errors
    /// As [`HybridIndex::query`].
    pub fn query_mode(&self, text: &str, top_k: usize, mode: Mode) -> Result<Vec<Hit>> {
        let vector = match mode {
            Mode::Bm25 => None,
            Mode::Hybrid | Mode::Dense => Some(self.embed_query(text)?),
        };
        self.query_embedded(text, vector.as_deref(), top_k, mode)
    }

    /// As [`HybridIndex::query_mode`] with the query's embedding computed by the caller (e.g.
    /// many queries embedded in one batch with [`HybridIndex::embedder`]); `vector` may be
    /// `None` in [`Mode::Bm25`].
    ///
    /// # Errors
    /// As [`HybridIndex::query`]; [`RagError::Argument`] when the mode needs a vector and none
    /// or one of the wrong size is given.
    pub fn query_embedded(
        &self,
        text: &str,
        vector: Option<&[f32]>,
        top_k: usize,
        mode: Mode,
    ) -> Result<Vec<Hit>> {
        if top_k == 0 {
            return Err(RagError::Argument {
                name: "top_k",
                reason: "must be at least 1".into(),
            });
        }
        let candidates = top_k.max(FUSION_CANDIDATES);
        let bm25 = match mode {
            Mode::Hybrid => self.bm25(text, candidates)?,
            Mode::Bm25 => self.bm25(text, top_k)?,
            Mode::Dense => Vec::new(),
        };
        let dense_k = match mode {
            Mode::Hybrid => candidates,
            Mode::Dense => top_k,
            Mode::Bm25 => 0,
        };
        let dense = if dense_k == 0 {
            Vec::new()
        } else {
            let Some(vector) = vector else {
                return Err(RagError::Argument {
                    name: "vector",
                    reason: format!("mode {mode} needs the query's embedding"),
                });
            };
            self.dense_by_vector(vector, dense_k)?
        };
        let ranked = |list: &[(usize, f32)], doc: usize| {
            list.iter().position(|(d, _)| *d == doc).map(|i| Ranked {
                rank: i + 1,
                score: list[i].1,
            })
        };
        let mut order: Vec<(usize, f32)> = match mode {
            Mode::Hybrid => {
                let b: Vec<usize> = bm25.iter().map(|(d, _)| *d).collect();
                let d: Vec<usize> = dense.iter().map(|(d, _)| *d).collect();
                reciprocal_rank_fusion(&[&b, &d])
            }
            Mode::Bm25 => bm25.clone(),
            Mode::Dense => dense.clone(),
        };
        if mode == Mode::Hybrid {
            self.exact_ids_first(text, &mut order);
        }
        Ok(order
            .into_iter()
            .take(top_k)
            .map(|(doc, score)| Hit {
                doc,
                id: id_of(&self.records[doc], doc),
                text: self.texts[doc].clone(),
                record: self.records[doc].clone(),
                score,
                bm25: ranked(&bm25, doc),
                dense: ranked(&dense, doc),
            })
            .collect())
    }

    /// Moves the documents whose id ([`Hit::id`], compared lowercased) is a token of `text` to
    /// the front of `order`, in the order the tokens come, with the best fused score plus one:
    /// an exact identifier such as a trouble code outranks any similarity. Their own BM25 hit
    /// can be outscored by long documents sharing the question's other words, and an embedding
    /// model does not know codes.
    fn exact_ids_first(&self, text: &str, order: &mut Vec<(usize, f32)>) {
        let mut exact: Vec<usize> = Vec::new();
        let mut analyzer = analyzer();
        let mut stream = analyzer.token_stream(text);
        while stream.advance() {
            if let Some(docs) = self.by_id.get(&stream.token().text) {
                for &d in docs {
                    if !exact.contains(&d) {
                        exact.push(d);
                    }
                }
            }
        }
        if exact.is_empty() {
            return;
        }
        let top = order.first().map_or(0.0, |o| o.1) + 1.0;
        order.retain(|(d, _)| !exact.contains(d));
        order.splice(0..0, exact.into_iter().map(|d| (d, top)));
    }

    /// The `k` best documents for `text` by BM25, as `(document, score)` best first (equal
    /// scores by document number). A text with no token (or no token in the index) finds
    /// nothing.
    ///
    /// # Errors
    /// [`RagError::Tantivy`] when the search fails.
    pub fn bm25(&self, text: &str, k: usize) -> Result<Vec<(usize, f32)>> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let mut terms: Vec<String> = Vec::new();
        let mut analyzer = analyzer();
        let mut stream = analyzer.token_stream(text);
        while stream.advance() {
            let t = &stream.token().text;
            if !terms.contains(t) {
                terms.push(t.clone());
            }
        }
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(self.text_field, t),
                    IndexRecordOption::WithFreqs,
                ));
                (Occur::Should, q)
            })
            .collect();
        let query = BooleanQuery::new(clauses);
        let bm25_dir = self.dir.join(BM25_DIR);
        let searcher = self.reader.searcher();
        let top = searcher
            .search(&query, &TopDocs::with_limit(k).order_by_score())
            .map_err(|e| RagError::tantivy(&bm25_dir, e))?;
        let mut out = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument = searcher
                .doc(address)
                .map_err(|e| RagError::tantivy(&bm25_dir, e))?;
            let ord = doc
                .get_first(self.ord_field)
                .and_then(|v| v.as_u64())
                .and_then(|o| usize::try_from(o).ok())
                .filter(|&o| o < self.records.len())
                .ok_or_else(|| {
                    RagError::corrupt(&bm25_dir, "a document without a valid `ord` field")
                })?;
            out.push((ord, score));
        }
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// The `k` documents whose embeddings are most similar (cosine) to `text`'s, as
    /// `(document, similarity)` best first (equal scores by document number).
    ///
    /// # Errors
    /// Errors of the embedder; [`RagError::Embedding`] when it returns a vector of the wrong
    /// size.
    pub fn dense(&self, text: &str, k: usize) -> Result<Vec<(usize, f32)>> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let q = self.embed_query(text)?;
        self.dense_by_vector(&q, k)
    }

    fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        self.embedder
            .embed(std::slice::from_ref(&text.to_string()))?
            .pop()
            .ok_or_else(|| RagError::Embedding("no vector for the query".into()))
    }

    /// As [`HybridIndex::dense`] for a query embedding computed by the caller.
    ///
    /// # Errors
    /// [`RagError::Argument`] when `vector` is not of the index's dimension.
    pub fn dense_by_vector(&self, vector: &[f32], k: usize) -> Result<Vec<(usize, f32)>> {
        if vector.len() != self.meta.dim {
            return Err(RagError::Argument {
                name: "vector",
                reason: format!(
                    "a {}-dimensional query vector, expected {}",
                    vector.len(),
                    self.meta.dim
                ),
            });
        }
        let mut q = vector.to_vec();
        normalize(&mut q);
        let mut scored: Vec<(usize, f32)> = self
            .vectors
            .chunks_exact(self.meta.dim)
            .map(|v| v.iter().zip(&q).map(|(a, b)| a * b).sum())
            .enumerate()
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(k);
        Ok(scored)
    }
}

fn write_index<E: Embed>(
    dir: &Path,
    docs: &[Value],
    texts: &[String],
    text_field: &str,
    embedder: &E,
) -> Result<()> {
    let docs_path = dir.join(DOCS);
    let mut lines = String::new();
    for d in docs {
        lines.push_str(&d.to_string());
        lines.push('\n');
    }
    fs::write(&docs_path, lines).map_err(|e| RagError::io(&docs_path, e))?;

    let dim = embedder.dim();
    if dim == 0 {
        return Err(RagError::Embedding("dimension 0".into()));
    }
    let vectors = embedder.embed(texts)?;
    if vectors.len() != texts.len() {
        return Err(RagError::Embedding(format!(
            "{} vectors for {} texts",
            vectors.len(),
            texts.len()
        )));
    }
    let mut data = Vec::with_capacity(texts.len() * dim);
    for (i, mut v) in vectors.into_iter().enumerate() {
        if v.len() != dim {
            return Err(RagError::Embedding(format!(
                "document {}: a {}-dimensional vector, expected {dim}",
                i + 1,
                v.len()
            )));
        }
        normalize(&mut v);
        data.extend(v);
    }
    let tensors = BTreeMap::from([(
        EMBEDDINGS_TENSOR.to_string(),
        HostTensor {
            shape: vec![texts.len(), dim],
            data,
        },
    )]);
    write_safetensors(&dir.join(EMBEDDINGS), &tensors)?;

    let bm25_dir = dir.join(BM25_DIR);
    fs::create_dir(&bm25_dir).map_err(|e| RagError::io(&bm25_dir, e))?;
    let tantivy_err = |e| RagError::tantivy(&bm25_dir, e);
    let (schema, text, ord) = schema();
    let index = Index::create_in_dir(&bm25_dir, schema).map_err(tantivy_err)?;
    index.tokenizers().register(TOKENIZER, analyzer());
    let mut writer = index
        .writer_with_num_threads::<TantivyDocument>(1, 50_000_000)
        .map_err(tantivy_err)?;
    for (i, t) in texts.iter().enumerate() {
        let mut doc = TantivyDocument::new();
        doc.add_text(text, t);
        doc.add_u64(ord, i as u64);
        writer.add_document(doc).map_err(tantivy_err)?;
    }
    writer.commit().map_err(tantivy_err)?;
    writer.wait_merging_threads().map_err(tantivy_err)?;

    let meta = IndexMeta {
        format: INDEX_FORMAT.into(),
        version: INDEX_VERSION,
        doc_count: docs.len(),
        text_field: text_field.into(),
        embedder: embedder.source(),
        dim,
    };
    let meta_path = dir.join(META);
    let json = serde_json::to_string_pretty(&meta).expect("plain struct serializes");
    fs::write(&meta_path, json + "\n").map_err(|e| RagError::io(&meta_path, e))
}
