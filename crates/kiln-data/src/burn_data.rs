//! Burn [`Dataset`] and [`Batcher`] implementations (cargo feature `burn`).
//!
//! The batchers produce host-side batches ([`TokenBatch`], or packed rows); the training crate
//! uploads them to its device, so the `device` argument is not used here.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::Device;

use crate::{DataError, PackedRow, Result, TokenBatch, TokenizedExample, pack};

/// Tokenized examples in memory, as a Burn dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExampleDataset {
    examples: Vec<TokenizedExample>,
}

impl ExampleDataset {
    /// A dataset of examples.
    pub fn new(examples: Vec<TokenizedExample>) -> Self {
        Self { examples }
    }

    /// The examples.
    pub fn examples(&self) -> &[TokenizedExample] {
        &self.examples
    }
}

impl Dataset<TokenizedExample, DataError> for ExampleDataset {
    fn get(&self, index: usize) -> Result<TokenizedExample> {
        self.examples.get(index).cloned().ok_or_else(|| {
            DataError::Config(format!(
                "example {index} requested from a dataset of {}",
                self.examples.len()
            ))
        })
    }

    fn len(&self) -> usize {
        self.examples.len()
    }
}

/// Right-pads examples to the longest in the batch ([`TokenBatch::pad_right`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaddingBatcher {
    /// The padding token id.
    pub pad_id: u32,
}

impl PaddingBatcher {
    /// The batch of `items`, as [`Batcher::batch`] makes it.
    ///
    /// # Errors
    /// As [`TokenBatch::pad_right`].
    pub fn pad(&self, items: &[TokenizedExample]) -> Result<TokenBatch> {
        TokenBatch::pad_right(items, self.pad_id)
    }
}

impl Batcher<TokenizedExample, Result<TokenBatch>> for PaddingBatcher {
    fn batch(&self, items: Vec<TokenizedExample>, _device: &Device) -> Result<TokenBatch> {
        self.pad(&items)
    }
}

/// Packs the examples of a batch into rows of `row_len` tokens ([`pack`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackingBatcher {
    /// Tokens per row.
    pub row_len: usize,
    /// The padding token id.
    pub pad_id: u32,
}

impl PackingBatcher {
    /// The packed rows of `items`, as [`Batcher::batch`] makes them.
    ///
    /// # Errors
    /// As [`pack`].
    pub fn pack(&self, items: &[TokenizedExample]) -> Result<Vec<PackedRow>> {
        pack(items, self.row_len, self.pad_id)
    }
}

impl Batcher<TokenizedExample, Result<Vec<PackedRow>>> for PackingBatcher {
    fn batch(&self, items: Vec<TokenizedExample>, _device: &Device) -> Result<Vec<PackedRow>> {
        self.pack(&items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_and_batchers() {
        let examples = vec![
            TokenizedExample::prompt_completion(&[1, 2], &[3]),
            TokenizedExample::full(&[4, 5, 6, 7]),
        ];
        let ds = ExampleDataset::new(examples.clone());
        assert_eq!(Dataset::len(&ds), 2);
        assert_eq!(ds.get(1).unwrap(), examples[1]);
        assert!(ds.get(2).unwrap_err().to_string().contains("example 2"));
        // Without a backend feature no `Device` can be made here; the trait methods delegate to
        // these.
        fn is_batcher<O>(_: &impl Batcher<TokenizedExample, O>) {}
        let padding = PaddingBatcher { pad_id: 0 };
        is_batcher(&padding);
        let batch = padding.pad(&examples).unwrap();
        assert_eq!(batch, TokenBatch::pad_right(&examples, 0).unwrap());
        let packing = PackingBatcher {
            row_len: 8,
            pad_id: 0,
        };
        is_batcher(&packing);
        let rows = packing.pack(&examples).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].input_ids, [4, 5, 6, 7, 1, 2, 3, 0]);
    }
}
