//! Seeded, reproducible train/validation/test splits: random, stratified or grouped.

use std::collections::HashMap;
use std::hash::Hash;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{DataError, Record, Result};

/// How large the validation and test sets are.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum SplitSizes {
    /// Relative weights (normalized by their sum), e.g. `0.8 / 0.1 / 0.1`. Validation and test
    /// sizes are rounded to the nearest item; train takes the rest.
    Ratios {
        /// Weight of the training set.
        train: f64,
        /// Weight of the validation set.
        validation: f64,
        /// Weight of the test set.
        test: f64,
    },
    /// Exact numbers of validation and test items; train takes the rest.
    Counts {
        /// Items in the validation set.
        validation: usize,
        /// Items in the test set.
        test: usize,
    },
}

impl SplitSizes {
    /// `(validation, test)` item counts for `n` items.
    ///
    /// # Errors
    /// [`DataError::Config`] for negative or non-finite ratios, ratios summing to zero, or
    /// counts larger than `n`.
    pub fn counts(&self, n: usize) -> Result<(usize, usize)> {
        match *self {
            Self::Ratios {
                train,
                validation,
                test,
            } => {
                let all = [train, validation, test];
                if all.iter().any(|r| !r.is_finite() || *r < 0.0) || all.iter().sum::<f64>() <= 0.0
                {
                    return Err(DataError::Config(format!(
                        "split ratios must be non-negative and not all zero, got {all:?}"
                    )));
                }
                let sum: f64 = all.iter().sum();
                let round = |r: f64| ((r / sum) * n as f64).round() as usize;
                let test = round(test).min(n);
                let validation = round(validation).min(n - test);
                Ok((validation, test))
            }
            Self::Counts { validation, test } => {
                if validation.saturating_add(test) > n {
                    return Err(DataError::Config(format!(
                        "{validation} validation + {test} test items requested from only {n}"
                    )));
                }
                Ok((validation, test))
            }
        }
    }
}

/// A split: indices into the original items, each set in ascending order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Training indices.
    pub train: Vec<usize>,
    /// Validation indices.
    pub validation: Vec<usize>,
    /// Test indices.
    pub test: Vec<usize>,
}

impl Split {
    fn sorted(mut self) -> Self {
        self.train.sort_unstable();
        self.validation.sort_unstable();
        self.test.sort_unstable();
        self
    }
}

/// Split sizes and the seed; the same seed, sizes and keys always give the same split.
///
/// ```
/// use kiln_data::{SplitSizes, Splitter};
///
/// let s = Splitter::new(SplitSizes::Counts { validation: 1, test: 2 }, 42);
/// let split = s.random(10).unwrap();
/// assert_eq!((split.train.len(), split.validation.len(), split.test.len()), (7, 1, 2));
/// assert_eq!(split, s.random(10).unwrap());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Splitter {
    /// Set sizes.
    pub sizes: SplitSizes,
    /// Random seed.
    pub seed: u64,
}

impl Splitter {
    /// A splitter.
    pub fn new(sizes: SplitSizes, seed: u64) -> Self {
        Self { sizes, seed }
    }

    fn rng(&self) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(self.seed)
    }

    /// A uniformly random split of `n` items with exactly the requested sizes.
    ///
    /// # Errors
    /// As [`SplitSizes::counts`].
    pub fn random(&self, n: usize) -> Result<Split> {
        let (v, t) = self.sizes.counts(n)?;
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut self.rng());
        Ok(Split {
            test: order[..t].to_vec(),
            validation: order[t..t + v].to_vec(),
            train: order[t + v..].to_vec(),
        }
        .sorted())
    }

    /// A split that keeps the proportion of every label (`labels[i]` is item `i`'s stratum) in
    /// each set; the set sizes are exactly those of [`Self::random`], apportioned to the strata
    /// by largest remainder.
    ///
    /// # Errors
    /// As [`SplitSizes::counts`].
    pub fn stratified<K: Hash + Eq>(&self, labels: &[K]) -> Result<Split> {
        let n = labels.len();
        let (v, t) = self.sizes.counts(n)?;
        let mut strata = groups_in_order(labels);
        let mut rng = self.rng();
        for members in &mut strata {
            members.shuffle(&mut rng);
        }
        let sizes: Vec<usize> = strata.iter().map(Vec::len).collect();
        let test = apportion(t, &sizes, &sizes);
        let left: Vec<usize> = sizes.iter().zip(&test).map(|(s, t)| s - t).collect();
        let validation = apportion(v, &sizes, &left);
        let mut split = Split::default();
        for ((members, t), v) in strata.iter().zip(test).zip(validation) {
            split.test.extend(&members[..t]);
            split.validation.extend(&members[t..t + v]);
            split.train.extend(&members[t + v..]);
        }
        Ok(split.sorted())
    }

    /// A split in which every group (`groups[i]` is item `i`'s group) lies in one set only, so
    /// e.g. paraphrases of one item never straddle train and test. Groups are shuffled and
    /// dealt to test, then validation, until each holds at least its requested number of
    /// items; train takes the rest. Sizes are therefore approximate, by up to one group.
    ///
    /// # Errors
    /// As [`SplitSizes::counts`].
    pub fn grouped<K: Hash + Eq>(&self, groups: &[K]) -> Result<Split> {
        let (v, t) = self.sizes.counts(groups.len())?;
        let mut members = groups_in_order(groups);
        members.shuffle(&mut self.rng());
        let mut split = Split::default();
        for group in members {
            if split.test.len() < t {
                split.test.extend(group);
            } else if split.validation.len() < v {
                split.validation.extend(group);
            } else {
                split.train.extend(group);
            }
        }
        Ok(split.sorted())
    }
}

/// How records are assigned to sets, by one of their fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum SplitBy {
    /// Uniformly at random ([`Splitter::random`]).
    #[default]
    Random,
    /// Keeping the proportions of the field's values ([`Splitter::stratified`]).
    Stratified {
        /// The field.
        field: String,
    },
    /// Keeping records with equal field values in one set ([`Splitter::grouped`]).
    Grouped {
        /// The field.
        field: String,
    },
}

impl Splitter {
    /// Splits records, by a field where `by` names one.
    ///
    /// # Errors
    /// [`DataError::Field`] naming the file and line of a record without the field; as
    /// [`SplitSizes::counts`].
    pub fn split_records(&self, records: &[Record], by: &SplitBy) -> Result<Split> {
        let keys = |field: &str| -> Result<Vec<String>> {
            records.iter().map(|r| r.text(field)).collect()
        };
        match by {
            SplitBy::Random => self.random(records.len()),
            SplitBy::Stratified { field } => self.stratified(&keys(field)?),
            SplitBy::Grouped { field } => self.grouped(&keys(field)?),
        }
    }
}

/// Indices of each distinct key, in order of first appearance.
fn groups_in_order<K: Hash + Eq>(keys: &[K]) -> Vec<Vec<usize>> {
    let mut index: HashMap<&K, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let g = *index.entry(k).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    groups
}

/// Shares `total` among buckets in proportion to `weights` (largest remainder, ties to the
/// earlier bucket), never giving a bucket more than its capacity.
fn apportion(total: usize, weights: &[usize], capacity: &[usize]) -> Vec<usize> {
    let sum: usize = weights.iter().sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let mut out: Vec<usize> = weights
        .iter()
        .zip(capacity)
        .map(|(&w, &c)| (total * w / sum).min(c))
        .collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    // Largest fractional part first.
    order.sort_by_key(|&i| std::cmp::Reverse((total * weights[i]) % sum));
    let mut given: usize = out.iter().sum();
    while given < total {
        let before = given;
        for &i in &order {
            if given < total && out[i] < capacity[i] {
                out[i] += 1;
                given += 1;
            }
        }
        if given == before {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn check_partition(split: &Split, n: usize) {
        let mut all: Vec<usize> = split
            .train
            .iter()
            .chain(&split.validation)
            .chain(&split.test)
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>(), "not a partition");
    }

    fn sizes() -> impl Strategy<Value = SplitSizes> {
        prop_oneof![
            (0.0f64..1.0, 0.0f64..1.0, 0.01f64..1.0).prop_map(|(v, t, tr)| SplitSizes::Ratios {
                train: tr,
                validation: v,
                test: t
            }),
            (0usize..20, 0usize..20).prop_map(|(v, t)| SplitSizes::Counts {
                validation: v,
                test: t
            }),
        ]
    }

    proptest! {
        #[test]
        fn random_splits_partition_and_are_deterministic(
            n in 0usize..200, sizes in sizes(), seed in any::<u64>()
        ) {
            let s = Splitter::new(sizes, seed);
            let split = match s.random(n) {
                Ok(split) => split,
                Err(_) => {
                    prop_assert!(sizes.counts(n).is_err());
                    return Ok(());
                }
            };
            check_partition(&split, n);
            let (v, t) = sizes.counts(n).unwrap();
            prop_assert_eq!((split.validation.len(), split.test.len()), (v, t));
            prop_assert_eq!(&split, &s.random(n).unwrap());
        }

        #[test]
        fn stratified_splits_keep_totals_and_proportions(
            labels in proptest::collection::vec(0u8..4, 0..200),
            sizes in sizes(),
            seed in any::<u64>()
        ) {
            let s = Splitter::new(sizes, seed);
            let split = match s.stratified(&labels) {
                Ok(split) => split,
                Err(_) => {
                    prop_assert!(sizes.counts(labels.len()).is_err());
                    return Ok(());
                }
            };
            check_partition(&split, labels.len());
            let (v, t) = sizes.counts(labels.len()).unwrap();
            prop_assert_eq!((split.validation.len(), split.test.len()), (v, t));
            prop_assert_eq!(&split, &s.stratified(&labels).unwrap());
            // Each stratum's share of the test set is within one item of proportional.
            let n = labels.len();
            for k in 0u8..4 {
                let nk = labels.iter().filter(|&&l| l == k).count();
                let tk = split.test.iter().filter(|&&i| labels[i] == k).count();
                let ideal = (t * nk) as f64 / n.max(1) as f64;
                prop_assert!((tk as f64 - ideal).abs() <= 1.0 + 1e-9, "stratum {k}: {tk} vs {ideal}");
            }
        }

        #[test]
        fn grouped_splits_never_straddle(
            groups in proptest::collection::vec(0u16..30, 0..200),
            sizes in sizes(),
            seed in any::<u64>()
        ) {
            let s = Splitter::new(sizes, seed);
            let split = match s.grouped(&groups) {
                Ok(split) => split,
                Err(_) => {
                    prop_assert!(sizes.counts(groups.len()).is_err());
                    return Ok(());
                }
            };
            check_partition(&split, groups.len());
            prop_assert_eq!(&split, &s.grouped(&groups).unwrap());
            let set_of = |i: usize| {
                if split.test.binary_search(&i).is_ok() { 2 }
                else if split.validation.binary_search(&i).is_ok() { 1 } else { 0 }
            };
            for i in 0..groups.len() {
                for j in 0..groups.len() {
                    if groups[i] == groups[j] {
                        prop_assert_eq!(set_of(i), set_of(j));
                    }
                }
            }
        }
    }

    #[test]
    fn seeds_change_the_split_and_bad_sizes_are_errors() {
        let a = Splitter::new(
            SplitSizes::Counts {
                validation: 10,
                test: 10,
            },
            1,
        )
        .random(100)
        .unwrap();
        let b = Splitter::new(
            SplitSizes::Counts {
                validation: 10,
                test: 10,
            },
            2,
        )
        .random(100)
        .unwrap();
        assert_ne!(a, b);
        let err = Splitter::new(
            SplitSizes::Counts {
                validation: 3,
                test: 3,
            },
            0,
        )
        .random(5)
        .unwrap_err();
        assert!(err.to_string().contains("only 5"), "{err}");
        let bad = SplitSizes::Ratios {
            train: -1.0,
            validation: 0.5,
            test: 0.5,
        };
        assert!(bad.counts(10).is_err());
        let ratios = SplitSizes::Ratios {
            train: 8.0,
            validation: 1.0,
            test: 1.0,
        };
        assert_eq!(ratios.counts(1000).unwrap(), (100, 100));
    }

    #[test]
    fn records_split_by_a_field() {
        let records: Vec<Record> = (0..40)
            .map(|i| {
                let serde_json::Value::Object(m) = serde_json::json!({
                    "code": format!("P03{:02}", i / 4),
                    "family": if i % 4 == 0 { "U" } else { "P" },
                }) else {
                    unreachable!()
                };
                Record::new("d.jsonl", i + 1, m)
            })
            .collect();
        let s = Splitter::new(
            SplitSizes::Counts {
                validation: 4,
                test: 8,
            },
            5,
        );
        let grouped = s
            .split_records(
                &records,
                &SplitBy::Grouped {
                    field: "code".into(),
                },
            )
            .unwrap();
        assert_eq!(
            grouped,
            s.grouped(
                &records
                    .iter()
                    .map(|r| r.text("code").unwrap())
                    .collect::<Vec<_>>()
            )
            .unwrap()
        );
        let test_codes: HashSet<String> = grouped
            .test
            .iter()
            .map(|&i| records[i].text("code").unwrap())
            .collect();
        assert!(
            grouped
                .train
                .iter()
                .all(|&i| !test_codes.contains(&records[i].text("code").unwrap()))
        );
        let strat = s
            .split_records(
                &records,
                &SplitBy::Stratified {
                    field: "family".into(),
                },
            )
            .unwrap();
        let u_in_test = strat
            .test
            .iter()
            .filter(|&&i| records[i].text("family").unwrap() == "U")
            .count();
        assert_eq!(u_in_test, 2, "a quarter of the test set");
        assert_eq!(
            s.split_records(&records, &SplitBy::Random).unwrap(),
            s.random(40).unwrap()
        );
        let err = s
            .split_records(
                &records,
                &SplitBy::Grouped {
                    field: "make".into(),
                },
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("d.jsonl:1: field `make`: missing"), "{err}");
        let by: SplitBy = serde_json::from_str(r#"{"by": "grouped", "field": "code"}"#).unwrap();
        assert_eq!(
            by,
            SplitBy::Grouped {
                field: "code".into()
            }
        );
    }

    #[test]
    fn grouped_split_reaches_its_targets() {
        // 50 groups of 4: test and validation each get 10% of the items, whole groups.
        let groups: Vec<usize> = (0..200).map(|i| i / 4).collect();
        let split = Splitter::new(
            SplitSizes::Ratios {
                train: 0.8,
                validation: 0.1,
                test: 0.1,
            },
            7,
        )
        .grouped(&groups)
        .unwrap();
        assert_eq!(split.test.len(), 20);
        assert_eq!(split.validation.len(), 20);
        assert_eq!(split.train.len(), 160);
    }
}
