//! Preference pairs from users' feedback, appended to a JSONL file in TRL's preference format:
//! `{"prompt", "chosen", "rejected"}`, conversational (lists of messages) for chat requests and
//! plain text for completions, plus the `model` (adapter) and the response `ids` behind the
//! pair.
//!
//! A pair is written when a response gets a `preferred` answer (chosen: that answer, rejected:
//! the response), or when two responses to the same prompt and model are rated `1` and `-1`.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};

/// Responses remembered for feedback, oldest forgotten first.
const REMEMBERED: usize = 4096;

/// What a response answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Asked {
    /// Chat messages, as `[{"role", "content"}]`.
    Chat(Value),
    /// A completion prompt.
    Text(String),
}

impl Asked {
    fn answer(&self, text: &str) -> Value {
        match self {
            Self::Chat(_) => json!([{"role": "assistant", "content": text}]),
            Self::Text(_) => json!(text),
        }
    }

    fn prompt(&self) -> Value {
        match self {
            Self::Chat(m) => m.clone(),
            Self::Text(t) => json!(t),
        }
    }
}

/// One response the server gave.
#[derive(Debug, Clone)]
struct Given {
    model: String,
    asked: Asked,
    answer: String,
    rating: Option<i64>,
}

/// What feedback did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The response id is not (or no longer) known.
    UnknownId,
    /// Recorded; this many pairs were written.
    Pairs(usize),
}

#[derive(Debug, Default)]
struct Inner {
    given: HashMap<String, Given>,
    order: VecDeque<String>,
}

/// The responses and the pairs file, behind one lock: lines from concurrent requests never
/// interleave.
#[derive(Debug)]
pub struct FeedbackLog {
    path: PathBuf,
    file: Mutex<(File, Inner)>,
}

impl FeedbackLog {
    /// Opens (creates, or appends to) `path`.
    ///
    /// # Errors
    /// The file cannot be opened for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new((file, Inner::default())),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remembers a response for later feedback.
    pub fn remember(&self, id: &str, model: &str, asked: Asked, answer: &str) {
        let mut g = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut g.1;
        if inner.order.len() >= REMEMBERED
            && let Some(old) = inner.order.pop_front()
        {
            inner.given.remove(&old);
        }
        inner.order.push_back(id.to_string());
        inner.given.insert(
            id.to_string(),
            Given {
                model: model.to_string(),
                asked,
                answer: answer.to_string(),
                rating: None,
            },
        );
    }

    /// Records `rating` (`1` or `-1`) or a `preferred` answer for response `id`.
    ///
    /// # Errors
    /// Writing the file.
    pub fn record(
        &self,
        id: &str,
        rating: Option<i64>,
        preferred: Option<&str>,
    ) -> std::io::Result<Outcome> {
        let mut g = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let (file, inner) = &mut *g;
        let Some(this) = inner.given.get(id).cloned() else {
            return Ok(Outcome::UnknownId);
        };
        let mut lines = Vec::new();
        if let Some(better) = preferred {
            lines.push(json!({
                "prompt": this.asked.prompt(),
                "chosen": this.asked.answer(better),
                "rejected": this.asked.answer(&this.answer),
                "model": this.model,
                "ids": [id],
            }));
        }
        if let Some(r) = rating {
            if let Some(g) = inner.given.get_mut(id) {
                g.rating = Some(r);
            }
            // Every response to the same prompt and model rated the other way makes a pair.
            for other_id in &inner.order {
                let Some(o) = inner.given.get(other_id) else {
                    continue;
                };
                if other_id == id
                    || o.model != this.model
                    || o.asked != this.asked
                    || o.rating != Some(-r)
                    || o.answer == this.answer
                {
                    continue;
                }
                let (good, bad, ids) = if r > 0 {
                    (&this.answer, &o.answer, [id, other_id.as_str()])
                } else {
                    (&o.answer, &this.answer, [other_id.as_str(), id])
                };
                lines.push(json!({
                    "prompt": this.asked.prompt(),
                    "chosen": this.asked.answer(good),
                    "rejected": this.asked.answer(bad),
                    "model": this.model,
                    "ids": ids,
                }));
            }
        }
        let mut buf = String::new();
        for l in &lines {
            buf.push_str(&l.to_string());
            buf.push('\n');
        }
        file.write_all(buf.as_bytes())?;
        file.flush()?;
        Ok(Outcome::Pairs(lines.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratings_and_preferred_answers_make_pairs() {
        let dir = std::env::temp_dir().join(format!("kiln-feedback-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pairs.jsonl");
        let _ = std::fs::remove_file(&path);
        let log = FeedbackLog::open(&path).unwrap();
        let asked = Asked::Chat(json!([{"role": "user", "content": "P0300?"}]));
        log.remember("a", "dtc", asked.clone(), "random misfire");
        log.remember("b", "dtc", asked.clone(), "a fuel leak");
        assert_eq!(log.record("x", Some(1), None).unwrap(), Outcome::UnknownId);
        assert_eq!(log.record("a", Some(1), None).unwrap(), Outcome::Pairs(0));
        assert_eq!(log.record("b", Some(-1), None).unwrap(), Outcome::Pairs(1));
        assert_eq!(
            log.record("b", None, Some("misfire, cylinder unknown"))
                .unwrap(),
            Outcome::Pairs(1)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["chosen"][0]["content"], "random misfire");
        assert_eq!(lines[0]["rejected"][0]["content"], "a fuel leak");
        assert_eq!(
            lines[1]["chosen"][0]["content"],
            "misfire, cylinder unknown"
        );
        assert_eq!(lines[1]["prompt"][0]["content"], "P0300?");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
