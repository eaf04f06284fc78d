//! Unit tests of the GGUF tokenizer builder.

use super::merges::{derive_merges, ordered_scores, vocab_of};
use super::models::bytes_to_unicode;
use super::*;
use crate::Tokenizer;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn byte_table_matches_gpt2() {
    let table = bytes_to_unicode();
    assert_eq!(table[usize::from(b' ')], '\u{120}');
    assert_eq!(table[usize::from(b'\n')], '\u{10a}');
    assert_eq!(table[usize::from(b'a')], 'a');
    assert_eq!(table[0xAD], '\u{143}');
    let distinct: std::collections::HashSet<char> = table.iter().copied().collect();
    assert_eq!(distinct.len(), 256);
}

#[test]
fn merges_are_derived_from_scores() {
    let tokens = ["a", "b", "c", "ab", "abc", "bc"];
    let vocab = vocab_of(tokens).unwrap();
    let scores = ordered_scores(
        tokens
            .iter()
            .copied()
            .zip([0.0, 0.0, 0.0, -1.0, -3.0, -2.0]),
    );
    let merges = derive_merges(&vocab, &scores);
    let want = [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(l, r)| ((*l).to_owned(), (*r).to_owned()))
        .collect();
    assert_eq!(merges, want);
}

#[test]
fn malformed_specs_name_the_field() {
    let gpt2 = GgufTokenizerSpec::new("gpt2", strings(&["a", "b"]));
    let err = Tokenizer::from_gguf_spec(&gpt2).unwrap_err().to_string();
    assert!(err.contains("tokenizer.ggml.merges"), "{err}");

    let bad_merge = GgufTokenizerSpec {
        merges: Some(strings(&["a b c"])),
        ..gpt2.clone()
    };
    let err = Tokenizer::from_gguf_spec(&bad_merge)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer.ggml.merges"), "{err}");

    let unknown_merge = GgufTokenizerSpec {
        merges: Some(strings(&["a z"])),
        ..gpt2.clone()
    };
    let err = Tokenizer::from_gguf_spec(&unknown_merge)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer.ggml.merges"), "{err}");

    let out_of_range = GgufTokenizerSpec {
        merges: Some(vec![]),
        eos_token_id: Some(2),
        ..gpt2.clone()
    };
    let err = Tokenizer::from_gguf_spec(&out_of_range)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer.ggml.eos_token_id"), "{err}");

    let nan_score = GgufTokenizerSpec {
        scores: Some(vec![0.0, f32::NAN]),
        ..GgufTokenizerSpec::new("llama", strings(&["a", "b"]))
    };
    let err = Tokenizer::from_gguf_spec(&nan_score)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer.ggml.scores") && err.contains("token 1"),
        "{err}"
    );

    let types = GgufTokenizerSpec {
        merges: Some(vec![]),
        token_types: Some(vec![1]),
        ..gpt2.clone()
    };
    let err = Tokenizer::from_gguf_spec(&types).unwrap_err().to_string();
    assert!(err.contains("tokenizer.ggml.token_type"), "{err}");

    let unknown = GgufTokenizerSpec::new("wordpiece", strings(&["a"]));
    let err = Tokenizer::from_gguf_spec(&unknown).unwrap_err().to_string();
    assert!(err.contains("tokenizer.ggml.model"), "{err}");

    let empty = GgufTokenizerSpec::new("llama", vec![]);
    let err = Tokenizer::from_gguf_spec(&empty).unwrap_err().to_string();
    assert!(err.contains("tokenizer.ggml.tokens"), "{err}");

    let no_scores = GgufTokenizerSpec::new("llama", strings(&["<unk>", "a"]));
    let err = Tokenizer::from_gguf_spec(&no_scores)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer.ggml.scores"), "{err}");

    let colon_bos = GgufTokenizerSpec {
        scores: Some(vec![0.0, 0.0]),
        bos_token_id: Some(1),
        ..GgufTokenizerSpec::new("llama", strings(&["<unk>", "<s:>"]))
    };
    let err = Tokenizer::from_gguf_spec(&colon_bos)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer.ggml.bos_token_id"), "{err}");

    let template = GgufTokenizerSpec {
        merges: Some(vec![]),
        chat_template: Some("{% for %}".into()),
        ..gpt2
    };
    let err = Tokenizer::from_gguf_spec(&template)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer.chat_template"), "{err}");
}

#[test]
fn sentencepiece_vocab_adds_bos_and_metaspace() {
    let tokens = strings(&[
        "<unk>",
        "<s>",
        "</s>",
        "\u{2581}",
        "h",
        "i",
        "\u{2581}h",
        "\u{2581}hi",
        "<0x21>",
    ]);
    let mut types = vec![token_type::NORMAL; tokens.len()];
    types[0] = token_type::UNKNOWN;
    types[1] = token_type::CONTROL;
    types[2] = token_type::CONTROL;
    types[8] = token_type::BYTE;
    let spec = GgufTokenizerSpec {
        token_types: Some(types),
        scores: Some(vec![0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0, 0.0]),
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        unknown_token_id: Some(0),
        ..GgufTokenizerSpec::new("llama", tokens)
    };
    let tk = Tokenizer::from_gguf_spec(&spec).unwrap();
    assert_eq!(tk.encode("hi!", true).unwrap(), [1, 7, 8]);
    assert_eq!(tk.decode(&[1, 7, 8], true).unwrap(), "hi!");
    assert_eq!(tk.bos_token_id(), Some(1));
    assert_eq!(tk.unk_token_id(), Some(0));
    assert_eq!(tk.pad_token_id(), None);
}
