//! Reciprocal rank fusion.

/// The constant `k` of reciprocal rank fusion (Cormack et al., 2009): a document at rank `r`
/// (counted from 1) of a list scores `1 / (RRF_K + r)`.
pub const RRF_K: f32 = 60.0;

/// Fuses ranked lists of document numbers by reciprocal rank: each document scores
/// `sum over lists of 1 / (RRF_K + rank)`, with `rank` counted from 1 and lists that do not
/// hold the document adding nothing. Returns `(document, score)` best first; equal scores are
/// ordered by document number.
pub fn reciprocal_rank_fusion(lists: &[&[usize]]) -> Vec<(usize, f32)> {
    let mut scores: std::collections::BTreeMap<usize, f32> = std::collections::BTreeMap::new();
    for list in lists {
        for (i, &doc) in list.iter().enumerate() {
            *scores.entry(doc).or_default() += 1.0 / (RRF_K + (i + 1) as f32);
        }
    }
    let mut fused: Vec<(usize, f32)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_adds_reciprocal_ranks() {
        // Document 7 is 1st in one list and 3rd in the other; 2 is 2nd in both; 5 only 1st.
        let fused = reciprocal_rank_fusion(&[&[7, 2, 9], &[5, 2, 7]]);
        let score = |d: usize| fused.iter().find(|(x, _)| *x == d).unwrap().1;
        assert!((score(7) - (1.0 / 61.0 + 1.0 / 63.0)).abs() < 1e-7);
        assert!((score(2) - 2.0 / 62.0).abs() < 1e-7);
        assert!((score(5) - 1.0 / 61.0).abs() < 1e-7);
        assert!((score(9) - 1.0 / 63.0).abs() < 1e-7);
        let order: Vec<usize> = fused.iter().map(|(d, _)| *d).collect();
        // 1/61 + 1/63 = 0.032266 just beats 2/62 = 0.032258.
        assert_eq!(order, vec![7, 2, 5, 9]);
    }

    #[test]
    fn ties_are_ordered_by_document() {
        let fused = reciprocal_rank_fusion(&[&[4], &[1]]);
        assert_eq!(
            fused.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
            vec![1, 4]
        );
        assert!(reciprocal_rank_fusion(&[]).is_empty());
    }
}
