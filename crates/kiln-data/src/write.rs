//! Atomic JSONL output.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{DataError, Result};

/// Writes one JSON object per line to `path` atomically: the lines go to a temporary file in the
/// same folder, which is renamed over `path` only once everything is written and flushed, so a
/// reader never sees a half-written file. Returns the number of lines.
///
/// # Errors
/// [`DataError::Io`] naming the file; the temporary file is removed.
pub fn write_jsonl<T: Serialize>(
    path: impl AsRef<Path>,
    items: impl IntoIterator<Item = T>,
) -> Result<usize> {
    let path = path.as_ref();
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    let tmp: PathBuf = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> std::io::Result<usize> {
        let mut out = BufWriter::new(File::create(&tmp)?);
        let mut n = 0;
        for item in items {
            serde_json::to_writer(&mut out, &item)?;
            out.write_all(b"\n")?;
            n += 1;
        }
        out.into_inner()
            .map_err(std::io::IntoInnerError::into_error)?
            .sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(n)
    })();
    result.map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JsonlReader, PromptCompletion};

    #[test]
    fn writes_atomically_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let items = [
            PromptCompletion {
                prompt: "a\nb".into(),
                completion: "c".into(),
            },
            PromptCompletion {
                prompt: "d".into(),
                completion: "\"e\"".into(),
            },
        ];
        assert_eq!(write_jsonl(&path, &items).unwrap(), 2);
        let back = JsonlReader::open(&path)
            .unwrap()
            .prompt_completions("prompt", "completion")
            .unwrap();
        assert_eq!(back, items);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left");
        let err = write_jsonl(dir.path().join("missing/x.jsonl"), &items).unwrap_err();
        assert!(err.to_string().contains("missing/x.jsonl"), "{err}");
    }
}
