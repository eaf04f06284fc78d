//! The retrieval-augmented prompt.

use crate::Hit;

/// The user message for `question` with the retrieved passages before it:
///
/// ```text
/// Reference information:
/// - {text of the first hit}
/// - {text of the second hit}
///
/// Question: {question}
/// ```
///
/// Hits are listed in the order given (best first from [`crate::HybridIndex::query`]); line
/// breaks inside a passage become spaces so that each passage stays one list item. With no hit
/// the question is returned unchanged. The caller puts the result into the user message of the
/// model's chat template. The template is [`kiln_data::rag_prompt`]'s, which training data
/// with passages (e.g. `kiln_data::obd`'s grounded questions) uses too.
pub fn rag_prompt(question: &str, hits: &[Hit]) -> String {
    let passages: Vec<&str> = hits.iter().map(|h| h.text.as_str()).collect();
    kiln_data::rag_prompt(question, &passages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(text: &str) -> Hit {
        Hit {
            doc: 0,
            id: String::new(),
            text: text.into(),
            record: serde_json::Value::Null,
            score: 0.0,
            bm25: None,
            dense: None,
        }
    }

    #[test]
    fn template_puts_passages_before_the_question() {
        let hits = [
            hit("P0130: O2 Sensor Circuit"),
            hit("P0300: Random\nMisfire"),
        ];
        assert_eq!(
            rag_prompt("What does P0130 mean?", &hits),
            "Reference information:\n- P0130: O2 Sensor Circuit\n- P0300: Random Misfire\n\n\
             Question: What does P0130 mean?"
        );
        assert_eq!(rag_prompt("Hi?", &[]), "Hi?");
    }
}
