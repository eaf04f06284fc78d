//! Widening the training questions: surface variants of a question, questions about codes the
//! model should say it does not know, and questions answered from retrieved passages.

use rand::Rng;
use rand::seq::IndexedRandom;

use super::{Dtc, ObdExample};
use crate::template::rag_prompt;

/// What the model answers about a code it was not taught, after `"<code>: "`.
pub const UNKNOWN_ANSWER: &str =
    "I do not know this code; check the vehicle's service information.";

/// The answer for a code the model should not describe: `"<code>: "` + [`UNKNOWN_ANSWER`].
pub fn unknown_answer(code: &str) -> String {
    format!("{code}: {UNKNOWN_ANSWER}")
}

const GREETINGS: [&str; 8] = [
    "Hi, ",
    "Hello! ",
    "Quick question: ",
    "Hey there. ",
    "Sorry to bother you, ",
    "Good morning. ",
    "Please help: ",
    "Question for a mechanic: ",
];

const VEHICLES: [&str; 8] = [
    " It's a 2012 Ford Focus.",
    " The car is a 2008 Toyota Corolla.",
    " Thanks in advance.",
    " I drive a 2015 VW Golf.",
    " Happened on the highway yesterday.",
    " The light came on this morning.",
    " 2010 Honda Civic, 180k miles.",
    " Thanks!",
];

/// A surface variant of `question`, never equal to it: one to three of lower or upper case,
/// changed end punctuation, a greeting before, a remark about the vehicle after, and one typo in
/// a word that is not `code`. The question's words and the code's position stay; `code` (when
/// given) is never misspelt, only its case may change.
pub fn surface_variant(question: &str, code: Option<&str>, rng: &mut impl Rng) -> String {
    for _ in 0..8 {
        let q = transformed(question, code, rng);
        if q != question {
            return q;
        }
    }
    format!("{}{question}", GREETINGS[0])
}

fn transformed(question: &str, code: Option<&str>, rng: &mut impl Rng) -> String {
    let mut q = question.to_string();
    let mut kinds: Vec<u8> = (0..6).collect();
    let n = rng.random_range(1..=3usize);
    let mut picked = Vec::with_capacity(n);
    for _ in 0..n {
        let i = rng.random_range(0..kinds.len());
        picked.push(kinds.swap_remove(i));
    }
    picked.sort_unstable();
    for kind in picked {
        match kind {
            0 => q = typo(&q, code, rng),
            1 => {
                let trimmed = q.trim_end_matches(['?', '.', '!']).to_string();
                let ends = ["", "??", ".", " ?", "?!"];
                q = format!("{trimmed}{}", ends.choose(rng).copied().unwrap_or(""));
            }
            2 => q = format!("{}{q}", GREETINGS.choose(rng).copied().unwrap_or("")),
            3 => q.push_str(VEHICLES.choose(rng).copied().unwrap_or("")),
            4 => q = q.to_lowercase(),
            _ => q = q.to_uppercase(),
        }
    }
    q
}

/// `text` with two neighbouring letters swapped inside one word of at least five letters that
/// is not (and does not contain) `code`; unchanged when there is no such word.
fn typo(text: &str, code: Option<&str>, rng: &mut impl Rng) -> String {
    let words: Vec<&str> = text.split(' ').collect();
    let candidates: Vec<usize> = words
        .iter()
        .enumerate()
        .filter(|(_, w)| {
            w.chars().count() >= 5
                && w.chars().all(char::is_alphabetic)
                && code.is_none_or(|c| !w.to_lowercase().contains(&c.to_lowercase()))
        })
        .map(|(i, _)| i)
        .collect();
    let Some(&i) = candidates.choose(rng) else {
        return text.to_string();
    };
    let mut chars: Vec<char> = words[i].chars().collect();
    let j = rng.random_range(1..chars.len() - 2);
    chars.swap(j, j + 1);
    let swapped: String = chars.into_iter().collect();
    let mut out: Vec<String> = words.iter().map(|w| (*w).to_string()).collect();
    out[i] = swapped;
    out.join(" ")
}

/// `example` asked with retrieved passages before it ([`rag_prompt`]): the passages are the
/// answer's own code (unless `with_answer` is false) and `distractors`, in a random order. The
/// answer stays the example's answer when its passage is present, and becomes
/// [`unknown_answer`] when it is not (the model learns not to take another code's passage).
pub fn grounded(
    example: &ObdExample,
    own: &Dtc,
    distractors: &[&Dtc],
    with_answer: bool,
    rng: &mut impl Rng,
) -> ObdExample {
    let mut passages: Vec<String> = distractors
        .iter()
        .map(|d| format!("{}: {}", d.code, d.description))
        .collect();
    if with_answer {
        let at = rng.random_range(0..=passages.len());
        passages.insert(at, format!("{}: {}", own.code, own.description));
    }
    let completion = if with_answer {
        example.completion.clone()
    } else {
        unknown_answer(&own.code)
    };
    ObdExample {
        prompt: rag_prompt(&example.prompt, &passages),
        completion,
        ..example.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn variants_keep_the_code_and_differ() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let q = "My check engine light is on and the code is P0300. What does that mean?";
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..200 {
            let v = surface_variant(q, Some("P0300"), &mut rng);
            assert!(v.to_uppercase().contains("P0300"), "{v}");
            distinct.insert(v);
        }
        assert!(distinct.len() > 100, "{}", distinct.len());
        assert!(!distinct.contains(q));
    }

    #[test]
    fn typos_swap_two_letters_of_one_long_word() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let t = typo("Explain the trouble code P0300.", Some("P0300"), &mut rng);
        assert_ne!(t, "Explain the trouble code P0300.");
        assert!(t.ends_with("code P0300."), "{t}");
        let mut a: Vec<char> = t.chars().collect();
        let mut b: Vec<char> = "Explain the trouble code P0300.".chars().collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
        assert_eq!(
            typo("Is it P0300?", Some("P0300"), &mut rng),
            "Is it P0300?"
        );
    }

    #[test]
    fn grounded_questions_answer_from_their_passage_or_not_at_all() {
        let dtc = |c: &str, d: &str| Dtc {
            code: c.into(),
            description: d.into(),
            line: 1,
        };
        let own = dtc("P0130", "O2 Sensor Circuit");
        let others = [dtc("P0131", "O2 Low"), dtc("P0420", "Catalyst")];
        let refs: Vec<&Dtc> = others.iter().collect();
        let ex = ObdExample {
            prompt: "What does P0130 mean?".into(),
            completion: "P0130: O2 Sensor Circuit".into(),
            code: "P0130".into(),
            family: super::super::Family::Powertrain,
            subsystem: super::super::Subsystem::of("P0130"),
            direction: super::super::Direction::Forward,
            template: 0,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let g = grounded(&ex, &own, &refs, true, &mut rng);
        assert!(g.prompt.starts_with("Reference information:\n- "));
        assert!(g.prompt.ends_with("\n\nQuestion: What does P0130 mean?"));
        assert!(g.prompt.contains("- P0130: O2 Sensor Circuit\n"));
        assert_eq!(g.prompt.matches("\n- ").count(), 3);
        assert_eq!(g.completion, ex.completion);
        let g = grounded(&ex, &own, &refs, false, &mut rng);
        assert!(!g.prompt.contains("P0130: O2"));
        assert_eq!(g.completion, unknown_answer("P0130"));
    }
}
