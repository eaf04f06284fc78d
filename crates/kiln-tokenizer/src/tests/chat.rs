//! Unit tests of `chat.rs`.

use super::*;

fn render(template: &str) -> String {
    ChatTemplate::new(template)
        .unwrap()
        .render(&[], false, &SpecialTokens::default())
        .unwrap()
}

#[test]
fn python_float_repr() {
    for (v, want) in [
        (1.0, "1.0"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e20, "1e+20"),
        (1e16, "1e+16"),
        (1e15, "1000000000000000.0"),
        (1.5e-5, "1.5e-05"),
        (0.0001, "0.0001"),
        (-2.5, "-2.5"),
        (-0.0, "-0.0"),
        (123.456, "123.456"),
        (f64::NAN, "nan"),
    ] {
        assert_eq!(py_float_repr(v), want, "{v}");
    }
}

#[test]
fn python_values() {
    assert_eq!(
        render("{{ none }}|{{ true }}|{{ [none, false, 'a', \"it's\", 1.0] }}|{{ {'k': 1} }}"),
        "None|True|[None, False, 'a', \"it's\", 1.0]|{'k': 1}"
    );
    assert_eq!(render("{{ none | string }}{{ undefined_name }}"), "None");
}

#[test]
fn tojson_matches_python() {
    assert_eq!(
        render("{{ {'a': [1, 2.5, none, true], 'é': '<\"\\n'} | tojson }}"),
        r#"{"a": [1, 2.5, null, true], "é": "<\"\n"}"#
    );
    assert_eq!(
        render("{{ {'b': 1, 'a': []} | tojson(indent=2, sort_keys=true) }}"),
        "{\n  \"a\": [],\n  \"b\": 1\n}"
    );
    assert_eq!(
        render("{{ ['é'] | tojson(ensure_ascii=true, separators=[',', ':']) }}"),
        r#"["\u00e9"]"#
    );
}

#[test]
fn python_string_methods() {
    assert_eq!(
        render("{{ '  x '.strip() }}|{{ 'abc'.startswith('ab') }}|{{ 'a,b'.split(',') }}"),
        "x|True|['a', 'b']"
    );
}

#[test]
fn raise_exception_is_reported_with_its_message() {
    let err = ChatTemplate::new("{{ raise_exception('roles must alternate') }}")
        .unwrap()
        .render(&[], false, &SpecialTokens::default())
        .unwrap_err();
    assert!(
        matches!(&err, TokenizerError::TemplateRaised(m) if m == "roles must alternate"),
        "{err:?}"
    );
}

#[test]
fn syntax_error_is_an_error() {
    let err = ChatTemplate::new("{% for %}").unwrap_err();
    assert!(matches!(err, TokenizerError::Template(_)), "{err:?}");
}

#[test]
fn generation_blocks_render_their_content() {
    assert_eq!(
        render("a\n{%- generation -%}\n b {% endgeneration %}c"),
        "ab c"
    );
}

#[test]
fn strftime_formats_a_known_date() {
    // 2024-02-29 13:05:09 UTC, a Thursday.
    let t = 1_709_211_909;
    assert_eq!(
        strftime("%d %b %Y %H:%M:%S %A %j %B %y %I%p %%", t),
        "29 Feb 2024 13:05:09 Thursday 060 February 24 01PM %"
    );
}

/// Gemma 3's instruction format: `<bos>`, the system message before the first user turn
/// followed by a blank line, `model` for the assistant, trimmed contents.
#[test]
fn gemma_template_writes_gemma_turns() {
    let special = SpecialTokens {
        bos_token: Some("<bos>".into()),
        ..SpecialTokens::default()
    };
    let messages = [
        ChatMessage::system("Be helpful."),
        ChatMessage::user(" Hello "),
        ChatMessage::assistant("Hi."),
        ChatMessage::user("P0300?"),
    ];
    let text = ChatTemplate::gemma()
        .render(&messages, true, &special)
        .unwrap();
    assert_eq!(
        text,
        "<bos><start_of_turn>user\nBe helpful.\n\nHello<end_of_turn>\n\
         <start_of_turn>model\nHi.<end_of_turn>\n\
         <start_of_turn>user\nP0300?<end_of_turn>\n<start_of_turn>model\n"
    );
    let err = ChatTemplate::gemma()
        .render(&messages[2..], false, &special)
        .unwrap_err();
    assert!(err.to_string().contains("alternate"), "{err}");
}
