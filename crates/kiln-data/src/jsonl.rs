use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::{DataError, PromptCompletion, Result};

/// Streams the records of a JSONL file one line at a time (the file is never read whole), with
/// errors that name the file and line. Blank lines are skipped.
#[derive(Debug)]
pub struct JsonlReader {
    path: PathBuf,
    lines: std::io::Lines<BufReader<File>>,
    line: usize,
}

impl JsonlReader {
    /// Opens a JSONL file.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| DataError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            path,
            lines: BufReader::new(file).lines(),
            line: 0,
        })
    }

    /// Reads every record as a prompt/completion pair from the named fields.
    ///
    /// # Errors
    /// The first malformed line or missing field, or an empty file.
    pub fn prompt_completions(
        self,
        prompt_field: &str,
        completion_field: &str,
    ) -> Result<Vec<PromptCompletion>> {
        let path = self.path.clone();
        let mut out = Vec::new();
        for item in self {
            let (line, value) = item?;
            let get = |field: &str| -> Result<String> {
                match value.get(field) {
                    Some(serde_json::Value::String(s)) => Ok(s.clone()),
                    Some(other) => Err(DataError::Field {
                        path: path.clone(),
                        line,
                        field: field.into(),
                        reason: format!("expected a string, found {other}"),
                    }),
                    None => Err(DataError::Field {
                        path: path.clone(),
                        line,
                        field: field.into(),
                        reason: "missing".into(),
                    }),
                }
            };
            out.push(PromptCompletion {
                prompt: get(prompt_field)?,
                completion: get(completion_field)?,
            });
        }
        if out.is_empty() {
            return Err(DataError::Empty(path));
        }
        Ok(out)
    }
}

impl Iterator for JsonlReader {
    /// `(1-based line number, parsed value)`.
    type Item = Result<(usize, serde_json::Value)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let text = match self.lines.next()? {
                Ok(t) => t,
                Err(source) => {
                    return Some(Err(DataError::Io {
                        path: self.path.clone(),
                        source,
                    }));
                }
            };
            self.line += 1;
            if text.trim().is_empty() {
                continue;
            }
            return Some(
                serde_json::from_str(&text)
                    .map(|v| (self.line, v))
                    .map_err(|source| DataError::Json {
                        path: self.path.clone(),
                        line: self.line,
                        source,
                    }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn reads_pairs_and_skips_blank_lines() {
        let f = file("{\"q\":\"What is P0300?\",\"a\":\"Misfire\"}\n\n{\"q\":\"x\",\"a\":\"y\"}\n");
        let recs = JsonlReader::open(f.path())
            .unwrap()
            .prompt_completions("q", "a")
            .unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].completion, "Misfire");
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let f = file("{\"q\":\"a\",\"a\":\"b\"}\n{\"q\":\"a\"}\n");
        let err = JsonlReader::open(f.path())
            .unwrap()
            .prompt_completions("q", "a")
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(":2:") && msg.contains("`a`") && msg.contains("missing"),
            "{msg}"
        );
        let f = file("{\"q\":\"a\",\"a\":\"b\"}\n{oops\n");
        let msg = JsonlReader::open(f.path())
            .unwrap()
            .prompt_completions("q", "a")
            .unwrap_err()
            .to_string();
        assert!(msg.contains(":2: invalid JSON"), "{msg}");
        let f = file("\n\n");
        let msg = JsonlReader::open(f.path())
            .unwrap()
            .prompt_completions("q", "a")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("empty"), "{msg}");
    }
}
