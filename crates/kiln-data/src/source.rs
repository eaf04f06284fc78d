//! Record sources: JSONL (streamed), JSON arrays, CSV and plain-text files or folders.
//!
//! Every source yields [`Record`]s: a JSON object with the file and 1-based line it came from, so
//! that later errors can name file, line and field.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{DataError, JsonlReader, Result};

/// One raw record and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The file it was read from.
    pub path: Arc<Path>,
    /// 1-based line of the record (for JSON arrays: where the element starts; for whole text
    /// files: 1).
    pub line: usize,
    /// The record's fields.
    pub fields: Map<String, Value>,
}

impl Record {
    /// A record from an in-memory object, e.g. for tests or generated data.
    pub fn new(path: impl AsRef<Path>, line: usize, fields: Map<String, Value>) -> Self {
        Self {
            path: Arc::from(path.as_ref()),
            line,
            fields,
        }
    }

    /// The raw value of a field.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field)
    }

    /// A field as text: strings as they are, numbers and booleans printed.
    ///
    /// # Errors
    /// [`DataError::Field`] when the field is missing, null, an array or an object.
    pub fn text(&self, field: &str) -> Result<String> {
        match self.fields.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(v.to_string()),
            Some(other) => Err(self.field_error(field, format!("expected text, found {other}"))),
            None => Err(self.field_error(field, "missing")),
        }
    }

    /// A [`DataError::Field`] about `field` of this record.
    pub fn field_error(&self, field: &str, reason: impl Into<String>) -> DataError {
        DataError::Field {
            path: self.path.to_path_buf(),
            line: self.line,
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// How plain text is cut into records (each record has one field, `text`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextMode {
    /// One record per file.
    #[default]
    Document,
    /// One record per non-blank line.
    Lines,
}

/// The kind of a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceKind {
    /// One JSON object per line, streamed.
    Jsonl,
    /// A JSON array of objects (read whole).
    JsonArray,
    /// CSV with a header row; every row becomes an object of strings. Streamed.
    Csv,
    /// Plain text: a file, or every `.txt`/`.md`/`.text` file under a folder (sorted by path).
    Text {
        /// How text is cut into records.
        #[serde(default)]
        mode: TextMode,
    },
}

impl SourceKind {
    /// The kind from a path: folders and `.txt`/`.md`/`.text` are text documents, `.jsonl` and
    /// `.ndjson` JSONL, `.json` a JSON array, `.csv` CSV.
    ///
    /// # Errors
    /// [`DataError::Config`] for any other extension.
    pub fn from_path(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Ok(Self::Text {
                mode: TextMode::Document,
            });
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("jsonl" | "ndjson") => Ok(Self::Jsonl),
            Some("json") => Ok(Self::JsonArray),
            Some("csv") => Ok(Self::Csv),
            Some(e) if TEXT_EXTENSIONS.contains(&e) => Ok(Self::Text {
                mode: TextMode::Document,
            }),
            _ => Err(DataError::Config(format!(
                "{}: cannot tell the source format from the extension; name it explicitly",
                path.display()
            ))),
        }
    }
}

const TEXT_EXTENSIONS: [&str; 3] = ["txt", "md", "text"];

/// A boxed stream of records.
pub type Records = Box<dyn Iterator<Item = Result<Record>> + Send>;

/// Opens a source; JSONL and CSV are streamed, so files larger than memory are fine.
///
/// # Errors
/// The file cannot be opened; for JSON arrays, the file is not an array of objects.
pub fn read_records(path: impl AsRef<Path>, kind: SourceKind) -> Result<Records> {
    let path = path.as_ref();
    match kind {
        SourceKind::Jsonl => {
            let reader = JsonlReader::open(path)?;
            let shared: Arc<Path> = Arc::from(path);
            Ok(Box::new(reader.map(move |item| {
                let (line, value) = item?;
                object(&shared, line, value)
            })))
        }
        SourceKind::JsonArray => json_array(path),
        SourceKind::Csv => csv_records(path),
        SourceKind::Text { mode } => text_records(path, mode),
    }
}

fn object(path: &Arc<Path>, line: usize, value: Value) -> Result<Record> {
    match value {
        Value::Object(fields) => Ok(Record {
            path: path.clone(),
            line,
            fields,
        }),
        other => Err(DataError::Field {
            path: path.to_path_buf(),
            line,
            field: "(record)".into(),
            reason: format!("expected a JSON object, found {other}"),
        }),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn json_array(path: &Path) -> Result<Records> {
    let text = read_text(path)?;
    let value: Value = serde_json::from_str(&text).map_err(|source| DataError::Json {
        path: path.to_path_buf(),
        line: source.line(),
        source,
    })?;
    let Value::Array(items) = value else {
        return Err(DataError::Field {
            path: path.to_path_buf(),
            line: 1,
            field: "(file)".into(),
            reason: "expected a JSON array of objects".into(),
        });
    };
    let mut lines = element_lines(&text);
    if lines.len() != items.len() {
        lines = (1..=items.len()).collect();
    }
    let shared: Arc<Path> = Arc::from(path);
    Ok(Box::new(
        items
            .into_iter()
            .zip(lines)
            .map(move |(v, line)| object(&shared, line, v)),
    ))
}

/// 1-based lines on which the elements of a valid top-level JSON array start.
fn element_lines(text: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    let (mut line, mut depth, mut in_string, mut escaped) = (1, 0usize, false, false);
    let mut expecting = false;
    for c in text.chars() {
        if c == '\n' {
            line += 1;
        }
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if c.is_whitespace() {
            continue;
        }
        if depth == 1 && expecting && c != ']' {
            lines.push(line);
            expecting = false;
        }
        match c {
            '"' => in_string = true,
            '[' | '{' => {
                depth += 1;
                if depth == 1 {
                    expecting = true;
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            ',' if depth == 1 => expecting = true,
            _ => {}
        }
    }
    lines
}

fn csv_records(path: &Path) -> Result<Records> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(BufReader::new(file));
    let csv_error = |path: &Path, e: csv::Error| DataError::Csv {
        path: path.to_path_buf(),
        line: e
            .position()
            .map_or(0, |p| usize::try_from(p.line()).unwrap_or(usize::MAX)),
        message: e.to_string(),
    };
    let headers = reader.headers().map_err(|e| csv_error(path, e))?.clone();
    let shared: Arc<Path> = Arc::from(path);
    Ok(Box::new(reader.into_records().map(move |row| {
        let row = row.map_err(|e| csv_error(&shared, e))?;
        let line = row
            .position()
            .map_or(0, |p| usize::try_from(p.line()).unwrap_or(usize::MAX));
        let fields = headers
            .iter()
            .zip(row.iter())
            .map(|(h, v)| (h.to_string(), Value::String(v.to_string())))
            .collect();
        Ok(Record {
            path: shared.clone(),
            line,
            fields,
        })
    })))
}

fn text_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries = std::fs::read_dir(path)
        .map_err(io_error(path))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(io_error(path))?;
    entries.sort();
    for entry in entries {
        let hidden = entry
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if entry.is_dir() {
            text_files(&entry, out)?;
        } else if entry
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| TEXT_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(entry);
        }
    }
    Ok(())
}

fn text_records(path: &Path, mode: TextMode) -> Result<Records> {
    let files = if path.is_dir() {
        let mut files = Vec::new();
        text_files(path, &mut files)?;
        files
    } else {
        vec![path.to_path_buf()]
    };
    Ok(Box::new(files.into_iter().flat_map(
        move |file| match read_text(&file) {
            Err(e) => vec![Err(e)],
            Ok(text) => {
                let shared: Arc<Path> = Arc::from(file.as_path());
                let record = |line: usize, text: &str| {
                    let mut fields = Map::new();
                    fields.insert("text".into(), Value::String(text.to_string()));
                    Ok(Record {
                        path: shared.clone(),
                        line,
                        fields,
                    })
                };
                match mode {
                    TextMode::Document if text.trim().is_empty() => vec![],
                    TextMode::Document => vec![record(1, &text)],
                    TextMode::Lines => text
                        .lines()
                        .enumerate()
                        .filter(|(_, l)| !l.trim().is_empty())
                        .map(|(i, l)| record(i + 1, l))
                        .collect(),
                }
            }
        },
    )))
}

fn read_text(path: &Path) -> Result<String> {
    let mut text = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(io_error(path))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(ext: &str, text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(ext).tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn collect(path: &Path) -> Result<Vec<Record>> {
        read_records(path, SourceKind::from_path(path)?)?.collect()
    }

    /// Mutates 1 to 3 bytes of `seed` (or cuts it short) with a xorshift stream.
    fn mutations(seed: &[u8], cases: usize, mut state: u64) -> impl Iterator<Item = Vec<u8>> {
        let seed = seed.to_vec();
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..cases).map(move |_| {
            let mut b = seed.clone();
            if next() % 5 == 0 {
                b.truncate((next() % b.len() as u64) as usize);
            } else {
                for _ in 0..1 + next() % 3 {
                    let at = (next() % b.len() as u64) as usize;
                    b[at] = match next() % 6 {
                        0 => b'"',
                        1 => b',',
                        2 => b'\n',
                        3 => 0xFF,
                        _ => next() as u8,
                    };
                }
            }
            b
        })
    }

    /// Bounded fuzzing of the JSONL and CSV readers from valid files: every mutation reads to
    /// records or to an error naming the file, never a panic.
    #[test]
    fn mutated_jsonl_and_csv_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let seeds = [
            (
                "a.jsonl",
                "{\"prompt\": \"P0300?\", \"completion\": \"misfire\"}\n{\"prompt\": \"x\", \"completion\": [1, {\"a\": null}]}\n",
            ),
            (
                "a.csv",
                "prompt,completion\n\"P0300, code?\",misfire\nP0171,\"too \"\"lean\"\"\"\n",
            ),
        ];
        for (i, (name, text)) in seeds.into_iter().enumerate() {
            let path = dir.path().join(name);
            for bytes in mutations(text.as_bytes(), 300, 0x9E37_79B9 + i as u64) {
                std::fs::write(&path, &bytes).unwrap();
                match collect(&path) {
                    Ok(records) => {
                        for r in &records {
                            let _ = r.text("prompt");
                        }
                    }
                    Err(e) => assert!(e.to_string().contains(name), "{e}"),
                }
            }
        }
    }

    #[test]
    fn jsonl_records_keep_their_line() {
        let f = file(".jsonl", "{\"a\":1}\n\n{\"a\":\"x\"}\n");
        let recs = collect(f.path()).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].line, 3);
        assert_eq!(recs[0].text("a").unwrap(), "1");
        let err = recs[1].text("b").unwrap_err().to_string();
        assert!(err.contains(":3: field `b`: missing"), "{err}");
        let f = file(".jsonl", "[1]\n");
        let err = collect(f.path()).unwrap_err().to_string();
        assert!(err.contains(":1: field `(record)`"), "{err}");
    }

    #[test]
    fn json_arrays_know_where_their_elements_start() {
        let f = file(".json", "[{\"a\":\"x\"},{\"a\":\"y\"}]");
        let recs = collect(f.path()).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!((recs[1].line, recs[1].text("a").unwrap()), (1, "y".into()));
        let text =
            "[\n  {\"a\": \"x,]\\\"{\",\n   \"b\": [1, {\"c\": 2}]},\n\n  {\"a\": \"y\"}\n]\n";
        let f = file(".json", text);
        let recs = collect(f.path()).unwrap();
        assert_eq!(recs.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 5]);
        assert_eq!(recs[0].text("a").unwrap(), "x,]\"{");
        let err = recs[1].text("b").unwrap_err().to_string();
        assert!(err.contains(":5: field `b`: missing"), "{err}");
        assert_eq!(element_lines("[]"), Vec::<usize>::new());
        assert_eq!(element_lines("[1,\n2]"), [1, 2]);
        let f = file(".json", "{\"a\":1}");
        let err = collect(f.path()).unwrap_err().to_string();
        assert!(err.contains("expected a JSON array"), "{err}");
        let f = file(".json", "[{\"a\":1},\n{oops}]");
        let err = collect(f.path()).unwrap_err().to_string();
        assert!(err.contains(":2: invalid JSON"), "{err}");
    }

    #[test]
    fn csv_handles_quoting_and_reports_lines() {
        let f = file(
            ".csv",
            "prompt,completion\n\"Hello, \"\"world\"\"\",\"two\nlines\"\nx,y\n",
        );
        let recs = collect(f.path()).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].text("prompt").unwrap(), "Hello, \"world\"");
        assert_eq!(recs[0].text("completion").unwrap(), "two\nlines");
        assert_eq!(recs[0].line, 2);
        assert_eq!(recs[1].line, 4);
        let f = file(".csv", "a,b\n1,2\n3\n");
        let err = collect(f.path()).unwrap_err().to_string();
        assert!(err.contains(":3: invalid CSV"), "{err}");
    }

    #[test]
    fn text_folders_are_read_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("b.txt"), "second").unwrap();
        std::fs::write(dir.path().join("a.md"), "first\n\nmore").unwrap();
        std::fs::write(dir.path().join("sub/c.txt"), "third").unwrap();
        std::fs::write(dir.path().join("skip.bin"), [0u8, 159]).unwrap();
        std::fs::write(dir.path().join("empty.txt"), " \n").unwrap();
        let recs = collect(dir.path()).unwrap();
        let texts: Vec<_> = recs.iter().map(|r| r.text("text").unwrap()).collect();
        assert_eq!(texts, ["first\n\nmore", "second", "third"]);
        let lines: Vec<_> = read_records(
            dir.path(),
            SourceKind::Text {
                mode: TextMode::Lines,
            },
        )
        .unwrap()
        .map(|r| r.map(|r| (r.line, r.text("text").unwrap())))
        .collect::<Result<_>>()
        .unwrap();
        assert_eq!(lines[0], (1, "first".into()));
        assert_eq!(lines[1], (3, "more".into()));
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn unknown_extension_is_a_config_error() {
        let err = SourceKind::from_path(Path::new("data.parquet")).unwrap_err();
        assert!(matches!(err, DataError::Config(_)), "{err}");
        let err = collect(Path::new("/nonexistent/x.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/x.jsonl"), "{err}");
    }
}
