//! A small in-memory cosine-similarity index over sentence embeddings (retrieval-augmented
//! generation: embed documents once, then find the nearest ones for a query).

use crate::{ModelError, Result};

/// Unit-normalized embeddings with their ids, searched exhaustively.
#[derive(Debug, Clone, Default)]
pub struct CosineIndex {
    dim: usize,
    vectors: Vec<f32>,
    ids: Vec<String>,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The document id.
    pub id: String,
    /// Cosine similarity with the query.
    pub score: f32,
}

fn normalized(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / n).collect()
}

impl CosineIndex {
    /// An empty index for `dim`-dimensional vectors.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            ..Default::default()
        }
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Adds a document's embedding (normalized on insertion).
    ///
    /// # Errors
    /// [`ModelError::Dimension`] when `embedding` does not have the index's dimension.
    pub fn add(&mut self, id: impl Into<String>, embedding: &[f32]) -> Result<()> {
        self.check("document embedding", embedding)?;
        self.vectors.extend(normalized(embedding));
        self.ids.push(id.into());
        Ok(())
    }

    /// The `k` documents most similar to `query`, best first.
    ///
    /// # Errors
    /// [`ModelError::Dimension`] when `query` does not have the index's dimension.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        self.check("query embedding", query)?;
        let q = normalized(query);
        let mut hits: Vec<Hit> = self
            .vectors
            .chunks_exact(self.dim.max(1))
            .zip(&self.ids)
            .map(|(v, id)| Hit {
                id: id.clone(),
                score: v.iter().zip(&q).map(|(a, b)| a * b).sum(),
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(k);
        Ok(hits)
    }

    fn check(&self, what: &str, v: &[f32]) -> Result<()> {
        if v.len() != self.dim {
            return Err(ModelError::Dimension {
                what: what.into(),
                expected: self.dim,
                got: v.len(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_first() {
        let mut idx = CosineIndex::new(2);
        idx.add("x", &[1.0, 0.0]).unwrap();
        idx.add("y", &[0.0, 2.0]).unwrap();
        idx.add("xy", &[1.0, 1.0]).unwrap();
        let hits = idx.search(&[0.9, 0.1], 2).unwrap();
        assert_eq!(hits[0].id, "x");
        assert_eq!(hits[1].id, "xy");
        assert!((hits[0].score - 0.9 / (0.82f32).sqrt()).abs() < 1e-6);
        assert_eq!(idx.len(), 3);
    }

    #[test]
    fn a_vector_of_the_wrong_dimension_is_an_error() {
        let mut idx = CosineIndex::new(2);
        let err = idx.add("x", &[1.0, 0.0, 0.0]).unwrap_err();
        assert!(
            err.to_string().contains("document embedding has 3"),
            "{err}"
        );
        idx.add("x", &[1.0, 0.0]).unwrap();
        let err = idx.search(&[1.0], 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "query embedding has 1 dimensions, expected 2"
        );
    }
}
