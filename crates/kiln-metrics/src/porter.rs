//! The Porter stemmer with the NLTK extensions.
//!
//! This is the `NLTK_EXTENSIONS` mode of `nltk.stem.porter.PorterStemmer` (NLTK's default, and
//! the stemmer used by Google's `rouge-score`): the algorithm of Porter (1980) with the
//! modifications of Martin Porter's reference implementations and a few NLTK additions (a small
//! table of irregular forms, `-ies`/`-ied` handling of four-letter words, `y -> i` only after a
//! consonant, `-alli`, `-fulli` and `-logi` rules). Words of one or two characters are returned
//! lower-cased but otherwise unchanged.

/// Irregular forms and their stems.
const IRREGULAR: &[(&str, &str)] = &[
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

type Word = Vec<char>;

/// Stems one word with the Porter algorithm (NLTK extensions).
///
/// The word is lower-cased first.
///
/// ```
/// use kiln_metrics::porter_stem;
/// assert_eq!(porter_stem("misfiring"), "misfir");
/// assert_eq!(porter_stem("Cylinders"), "cylind");
/// assert_eq!(porter_stem("generalization"), "gener");
/// assert_eq!(porter_stem("dying"), "die");
/// ```
pub fn porter_stem(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some((_, stem)) = IRREGULAR.iter().find(|(w, _)| *w == lower) {
        return (*stem).to_string();
    }
    if word.chars().count() <= 2 {
        return lower;
    }
    let mut w: Word = lower.chars().collect();
    w = step1a(w);
    w = step1b(w);
    w = step1c(w);
    w = step2(w);
    w = step3(w);
    w = step4(w);
    w = step5a(w);
    w = step5b(w);
    w.into_iter().collect()
}

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u')
}

/// Consonant flag of every position: `y` is a consonant at the start of a word or after a
/// vowel, and a vowel after a consonant.
fn consonant_flags(w: &[char]) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(w.len());
    for (i, &c) in w.iter().enumerate() {
        let f = if is_vowel(c) {
            false
        } else if c == 'y' {
            i == 0 || !flags[i - 1]
        } else {
            true
        };
        flags.push(f);
    }
    flags
}

fn is_consonant(w: &[char], i: usize) -> bool {
    consonant_flags(&w[..=i])[i]
}

/// Porter's measure `m` of `[C](VC){m}[V]`.
fn measure(w: &[char]) -> usize {
    consonant_flags(w)
        .windows(2)
        .filter(|p| !p[0] && p[1])
        .count()
}

fn contains_vowel(w: &[char]) -> bool {
    consonant_flags(w).iter().any(|&c| !c)
}

/// `*d`: ends with a double consonant.
fn ends_double_consonant(w: &[char]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

/// `*o`: ends consonant-vowel-consonant with the last not `w`, `x` or `y`; or is a two-letter
/// vowel-consonant word.
fn ends_cvc(w: &[char]) -> bool {
    let n = w.len();
    (n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !matches!(w[n - 1], 'w' | 'x' | 'y'))
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

fn ends_with(w: &[char], suffix: &str) -> bool {
    let s: Vec<char> = suffix.chars().collect();
    w.len() >= s.len() && w[w.len() - s.len()..] == s[..]
}

fn strip(w: &[char], suffix: &str) -> Word {
    w[..w.len() - suffix.chars().count()].to_vec()
}

fn with(mut stem: Word, replacement: &str) -> Word {
    stem.extend(replacement.chars());
    stem
}

type Condition<'a> = &'a dyn Fn(&[char]) -> bool;

/// Applies the first rule whose suffix matches; when its condition fails the word is returned
/// unchanged and no later rule is tried.
fn apply_rules(w: Word, rules: &[(&str, &str, Option<Condition<'_>>)]) -> Word {
    for (suffix, replacement, condition) in rules {
        if ends_with(&w, suffix) {
            let stem = strip(&w, suffix);
            return if condition.is_none_or(|c| c(&stem)) {
                with(stem, replacement)
            } else {
                w
            };
        }
    }
    w
}

fn positive_measure(w: &[char]) -> bool {
    measure(w) > 0
}

fn measure_gt_1(w: &[char]) -> bool {
    measure(w) > 1
}

fn step1a(w: Word) -> Word {
    if ends_with(&w, "ies") && w.len() == 4 {
        return with(strip(&w, "ies"), "ie");
    }
    apply_rules(
        w,
        &[
            ("sses", "ss", None),
            ("ies", "i", None),
            ("ss", "ss", None),
            ("s", "", None),
        ],
    )
}

fn step1b(w: Word) -> Word {
    if ends_with(&w, "ied") {
        let replacement = if w.len() == 4 { "ie" } else { "i" };
        return with(strip(&w, "ied"), replacement);
    }
    if ends_with(&w, "eed") {
        let stem = strip(&w, "eed");
        return if measure(&stem) > 0 {
            with(stem, "ee")
        } else {
            w
        };
    }
    let mut intermediate = None;
    for suffix in ["ed", "ing"] {
        if ends_with(&w, suffix) {
            let stem = strip(&w, suffix);
            if contains_vowel(&stem) {
                intermediate = Some(stem);
                break;
            }
        }
    }
    let Some(stem) = intermediate else {
        return w;
    };
    for (suffix, replacement) in [("at", "ate"), ("bl", "ble"), ("iz", "ize")] {
        if ends_with(&stem, suffix) {
            return with(strip(&stem, suffix), replacement);
        }
    }
    if ends_double_consonant(&stem) {
        let last = stem[stem.len() - 1];
        return if matches!(last, 'l' | 's' | 'z') {
            stem
        } else {
            let mut short = stem[..stem.len() - 2].to_vec();
            short.push(last);
            short
        };
    }
    if measure(&stem) == 1 && ends_cvc(&stem) {
        with(stem, "e")
    } else {
        stem
    }
}

fn step1c(w: Word) -> Word {
    let condition = |stem: &[char]| stem.len() > 1 && is_consonant(stem, stem.len() - 1);
    apply_rules(w, &[("y", "i", Some(&condition))])
}

fn step2(w: Word) -> Word {
    if ends_with(&w, "alli") && positive_measure(&strip(&w, "alli")) {
        return step2(with(strip(&w, "alli"), "al"));
    }
    let m: Condition<'_> = &positive_measure;
    // the `l` of `-logi` stays with the stem for the measure
    let logi_stem: Word = w[..w.len().saturating_sub(3)].to_vec();
    let logi = move |_: &[char]| positive_measure(&logi_stem);
    apply_rules(
        w,
        &[
            ("ational", "ate", Some(m)),
            ("tional", "tion", Some(m)),
            ("enci", "ence", Some(m)),
            ("anci", "ance", Some(m)),
            ("izer", "ize", Some(m)),
            ("bli", "ble", Some(m)),
            ("alli", "al", Some(m)),
            ("entli", "ent", Some(m)),
            ("eli", "e", Some(m)),
            ("ousli", "ous", Some(m)),
            ("ization", "ize", Some(m)),
            ("ation", "ate", Some(m)),
            ("ator", "ate", Some(m)),
            ("alism", "al", Some(m)),
            ("iveness", "ive", Some(m)),
            ("fulness", "ful", Some(m)),
            ("ousness", "ous", Some(m)),
            ("aliti", "al", Some(m)),
            ("iviti", "ive", Some(m)),
            ("biliti", "ble", Some(m)),
            ("fulli", "ful", Some(m)),
            ("logi", "log", Some(&logi)),
        ],
    )
}

fn step3(w: Word) -> Word {
    let m: Condition<'_> = &positive_measure;
    apply_rules(
        w,
        &[
            ("icate", "ic", Some(m)),
            ("ative", "", Some(m)),
            ("alize", "al", Some(m)),
            ("iciti", "ic", Some(m)),
            ("ical", "ic", Some(m)),
            ("ful", "", Some(m)),
            ("ness", "", Some(m)),
        ],
    )
}

fn step4(w: Word) -> Word {
    let m: Condition<'_> = &measure_gt_1;
    let ion = |stem: &[char]| measure_gt_1(stem) && matches!(stem.last(), Some('s' | 't'));
    apply_rules(
        w,
        &[
            ("al", "", Some(m)),
            ("ance", "", Some(m)),
            ("ence", "", Some(m)),
            ("er", "", Some(m)),
            ("ic", "", Some(m)),
            ("able", "", Some(m)),
            ("ible", "", Some(m)),
            ("ant", "", Some(m)),
            ("ement", "", Some(m)),
            ("ment", "", Some(m)),
            ("ent", "", Some(m)),
            ("ion", "", Some(&ion)),
            ("ou", "", Some(m)),
            ("ism", "", Some(m)),
            ("ate", "", Some(m)),
            ("iti", "", Some(m)),
            ("ous", "", Some(m)),
            ("ive", "", Some(m)),
            ("ize", "", Some(m)),
        ],
    )
}

fn step5a(w: Word) -> Word {
    if ends_with(&w, "e") {
        let stem = strip(&w, "e");
        let m = measure(&stem);
        if m > 1 || (m == 1 && !ends_cvc(&stem)) {
            return stem;
        }
    }
    w
}

fn step5b(w: Word) -> Word {
    let without_last: Word = w[..w.len().saturating_sub(1)].to_vec();
    let condition = move |_: &[char]| measure_gt_1(&without_last);
    apply_rules(w, &[("ll", "l", Some(&condition))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_examples() {
        for (word, stem) in [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "tie"),
            ("cats", "cat"),
            ("feed", "feed"),
            ("agreed", "agre"),
            ("plastered", "plaster"),
            ("bled", "bled"),
            ("motoring", "motor"),
            ("sing", "sing"),
            ("conflated", "conflat"),
            ("troubled", "troubl"),
            ("sized", "size"),
            ("hopping", "hop"),
            ("falling", "fall"),
            ("hissing", "hiss"),
            ("filing", "file"),
            ("happy", "happi"),
            ("enjoy", "enjoy"),
            ("relational", "relat"),
            ("conditional", "condit"),
            ("rational", "ration"),
            ("triplicate", "triplic"),
            ("formative", "form"),
            ("electrical", "electr"),
            ("hopeful", "hope"),
            ("goodness", "good"),
            ("adoption", "adopt"),
            ("controlling", "control"),
            ("roll", "roll"),
            ("generously", "gener"),
        ] {
            assert_eq!(porter_stem(word), stem, "{word}");
        }
    }

    #[test]
    fn nltk_extensions() {
        assert_eq!(porter_stem("dies"), "die");
        assert_eq!(porter_stem("died"), "die");
        assert_eq!(porter_stem("spied"), "spi");
        assert_eq!(porter_stem("flies"), "fli");
        assert_eq!(porter_stem("skies"), "sky");
        assert_eq!(porter_stem("news"), "news");
        assert_eq!(porter_stem("is"), "is");
        assert_eq!(porter_stem("As"), "as");
        assert_eq!(porter_stem("geology"), "geolog");
        assert_eq!(porter_stem("radically"), "radic");
    }

    #[test]
    fn y_is_a_consonant_only_after_a_vowel() {
        assert_eq!(consonant_flags(&['t', 'o', 'y']), [true, false, true]);
        assert_eq!(
            consonant_flags(&['s', 'y', 'z', 'y']),
            [true, false, true, false]
        );
        assert_eq!(consonant_flags(&['y', 'y', 'y']), [true, false, true]);
        assert_eq!(measure(&"trouble".chars().collect::<Vec<_>>()), 1);
        assert_eq!(measure(&"troubles".chars().collect::<Vec<_>>()), 2);
    }
}
