//! Unit tests of `obd.rs`.

use super::*;
use std::collections::HashSet;

/// Invented codes in the `codes.py` layout.
fn fixture() -> String {
    let mut s = String::from("# header\nOTHER = {'x': 1}\n\nDTC = {\n");
    for i in 0..60 {
        s.push_str(&format!(
            "    \"P03{i:02}\": \"Ignition fault number {i}\",\n"
        ));
    }
    for i in 0..30 {
        s.push_str(&format!("    'U01{i:02X}': 'Lost link to module {i}',\n"));
    }
    s.push_str("    \"P0700\": \"Shared text\",\n    \"P0701\": \"Shared text\",\n}\n");
    s
}

#[test]
fn families_and_subsystems() {
    let cases = [
        ("P0001", Subsystem::FuelAirMetering),
        ("P0171", Subsystem::FuelAirMetering),
        ("P0300", Subsystem::IgnitionMisfire),
        ("P0420", Subsystem::AuxiliaryEmissionControls),
        ("P0505", Subsystem::SpeedIdleControl),
        ("P0606", Subsystem::ComputerOutputCircuits),
        ("P0700", Subsystem::Transmission),
        ("P0900", Subsystem::Transmission),
        ("P0A80", Subsystem::HybridPropulsion),
        ("P2A00", Subsystem::FuelAirMetering),
        ("P2300", Subsystem::IgnitionMisfire),
        ("P2700", Subsystem::Transmission),
        ("P3400", Subsystem::CylinderDeactivation),
        ("P1234", Subsystem::ManufacturerSpecific),
        ("U0001", Subsystem::NetworkElectrical),
        ("U0100", Subsystem::LostCommunication),
        ("U0300", Subsystem::SoftwareIncompatibility),
        ("U0401", Subsystem::InvalidData),
        ("C0035", Subsystem::Other),
        ("", Subsystem::Other),
    ];
    for (code, sub) in cases {
        assert_eq!(Subsystem::of(code), sub, "{code}");
    }
    assert_eq!(Family::of("B1000"), Some(Family::Body));
    assert_eq!(Family::of("C0035").map(Family::label), Some("chassis"));
    assert_eq!(Family::of("X1"), None);
    assert!(is_code("P0A80") && is_code("U3FFF"));
    assert!(!is_code("P4000") && !is_code("P030") && !is_code("p0300") && !is_code("P03G0"));
}

#[test]
fn parses_the_codes_py_layout() {
    let codes = parse_codes(&fixture(), Path::new("codes.py")).unwrap();
    assert_eq!(codes.len(), 92);
    assert_eq!(codes[0].code, "P0300");
    assert_eq!(codes[0].line, 5);
    assert_eq!(codes[60].code, "U0100");
    assert_eq!(codes[69].code, "U0109");
    assert_eq!(codes[70].code, "U010A");
    // A closing brace on the entry's own line is accepted.
    let one = parse_codes("DTC = {\"P0300\": \"Misfire\"}", Path::new("c.py")).unwrap();
    assert_eq!(one[0].description, "Misfire");
}

#[test]
fn parse_errors_name_file_line_and_field() {
    let cases = [
        ("A = 1\n", ":0: field `DTC`: no `DTC = {`"),
        (
            "DTC = {\n  \"P0300\": \"x\",\n",
            "c.py:2: field `DTC`: the dictionary opened on line 1 is not closed",
        ),
        (
            "DTC = {\n}\n",
            "c.py:1: field `DTC`: the dictionary has no entry",
        ),
        (
            "DTC = {\n\n  \"P0300\" \"x\",\n}",
            "c.py:3: field `DTC`: expected `:`",
        ),
        (
            "DTC = {\n  P0300: \"x\",\n}",
            "c.py:2: field `DTC`: expected a quoted code",
        ),
        (
            "DTC = {\n  \"P0300\": \"x\n}",
            "c.py:2: field `DTC`: expected a quoted description",
        ),
        (
            "DTC = {\n  \"P0300\": \"x\" + y,\n}",
            "c.py:2: field `DTC`: unexpected text",
        ),
        (
            "DTC = {\n  \"Q0300\": \"x\",\n}",
            "c.py:2: field `Q0300`: not a trouble code",
        ),
        (
            "DTC = {\n \"P0300\": \"x\",\n \"P0300\": \"y\",\n}",
            "c.py:3: field `P0300`: repeated; first on line 2",
        ),
        (
            "DTC = {\n  \"P0300\": \"  \",\n}",
            "c.py:2: field `P0300`: empty description",
        ),
    ];
    for (text, want) in cases {
        let err = parse_codes(text, Path::new("c.py"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{text:?}: {err}");
    }
    let err = read_codes("/nonexistent/codes.py").unwrap_err().to_string();
    assert!(err.contains("/nonexistent/codes.py"), "{err}");
}

fn check_dataset(codes: &[Dtc], ds: &ObdDataset, config: &ObdConfig) {
    let code_set =
        |set: &[ObdExample]| -> HashSet<String> { set.iter().map(|e| e.code.clone()).collect() };
    let (train, val, test) = (
        code_set(&ds.train),
        code_set(&ds.validation),
        code_set(&ds.test),
    );
    assert!(train.is_disjoint(&val) && train.is_disjoint(&test) && val.is_disjoint(&test));
    assert_eq!(code_set(&ds.test_phrasing), train);
    assert_eq!(train.len() + val.len() + test.len(), codes.len());
    let held = |e: &ObdExample| match e.direction {
        Direction::Forward => ds.held_out_forward.contains(&e.template),
        Direction::Reverse => ds.held_out_reverse.contains(&e.template),
    };
    assert!(ds.train.iter().chain(&ds.validation).all(|e| !held(e)));
    assert!(ds.test.iter().chain(&ds.test_phrasing).all(held));
    assert_eq!(ds.held_out_forward.len(), config.held_out_forward);
    assert_eq!(ds.held_out_reverse.len(), config.held_out_reverse);
    let by_code: HashMap<&str, &Dtc> = codes.iter().map(|c| (c.code.as_str(), c)).collect();
    for (_, set) in ds.sets() {
        for e in set {
            let dtc = by_code[e.code.as_str()];
            assert_eq!(e.completion, format!("{}: {}", dtc.code, dtc.description));
            match e.direction {
                Direction::Forward => assert!(e.prompt.contains(&dtc.code), "{e:?}"),
                Direction::Reverse => {
                    assert!(e.prompt.contains(&dtc.description) && !e.prompt.contains(&dtc.code));
                }
            }
            assert_eq!(e.subsystem, Subsystem::of(&e.code));
            assert_eq!(Some(e.family), Family::of(&e.code));
        }
    }
}

#[test]
fn builds_disjoint_code_and_template_splits() {
    let codes = parse_codes(&fixture(), Path::new("codes.py")).unwrap();
    let config = ObdConfig {
        seed: 3,
        validation_codes: 0.1,
        test_codes: 0.2,
        ..ObdConfig::default()
    };
    let ds = build(&codes, &config).unwrap();
    check_dataset(&codes, &ds, &config);
    assert_eq!(ds.ambiguous_codes, 2);
    assert!(
        ds.train
            .iter()
            .all(|e| e.direction == Direction::Forward || !e.completion.ends_with("Shared text"))
    );
    // 92 codes: 18 test, 9 validation (stratified rounding), the rest train.
    let test_codes: HashSet<&str> = ds.test.iter().map(|e| e.code.as_str()).collect();
    assert_eq!(test_codes.len(), 18);
    // Per code: 18 trained forward + 6 trained reverse questions (unless ambiguous).
    let p0300 = ds
        .train
        .iter()
        .chain(&ds.validation)
        .filter(|e| e.code == "P0300")
        .count();
    let in_test = test_codes.contains("P0300");
    assert_eq!(p0300, if in_test { 0 } else { 24 });
    assert_eq!(build(&codes, &config).unwrap(), ds, "deterministic");
    let other = build(&codes, &ObdConfig { seed: 4, ..config }).unwrap();
    assert_ne!(other.test, ds.test);
    let shown = ds.to_string();
    assert!(
        shown.starts_with("92 codes (62 powertrain, 30 network), 2 without reverse"),
        "{shown}"
    );

    let dir = tempfile::tempdir().unwrap();
    ds.write_jsonl(dir.path()).unwrap();
    let back: Vec<ObdExample> = std::fs::read_to_string(dir.path().join("test.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(back, ds.test);
}

#[test]
fn bad_configurations_are_errors() {
    let codes = parse_codes(&fixture(), Path::new("codes.py")).unwrap();
    for config in [
        ObdConfig {
            test_codes: 0.7,
            validation_codes: 0.4,
            ..ObdConfig::default()
        },
        ObdConfig {
            test_codes: -0.1,
            ..ObdConfig::default()
        },
        ObdConfig {
            held_out_forward: FORWARD_TEMPLATES.len(),
            ..ObdConfig::default()
        },
    ] {
        assert!(
            matches!(build(&codes, &config), Err(DataError::Config(_))),
            "{config:?}"
        );
    }
    assert!(build(&[], &ObdConfig::default()).is_err());
}

#[test]
fn builds_from_the_python_obd_codes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/obd/codes.py");
    if !path.exists() {
        eprintln!("skipping: assets/obd/codes.py not found; run scripts/fetch-assets.sh");
        return;
    }
    let codes = read_codes(&path).unwrap();
    assert!(codes.len() > 2000, "{}", codes.len());
    let p0300 = codes.iter().find(|c| c.code == "P0300").unwrap();
    assert!(p0300.description.contains("Misfire"), "{p0300:?}");
    let config = ObdConfig::default();
    let ds = build(&codes, &config).unwrap();
    check_dataset(&codes, &ds, &config);
    eprintln!("{ds}");
    let total = codes.len() as f64;
    let test_codes: HashSet<&str> = ds.test.iter().map(|e| e.code.as_str()).collect();
    assert!((test_codes.len() as f64 - 0.1 * total).abs() <= 1.0);
}

#[test]
fn code_docs_are_one_line_per_code_with_the_answer_text() {
    let codes = parse_codes(&fixture(), Path::new("codes.py")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The folder is made if it is missing.
    let path = dir.path().join("data/codes.jsonl");
    assert_eq!(write_code_docs(&codes, &path).unwrap(), codes.len());
    let text = std::fs::read_to_string(&path).unwrap();
    let docs: Vec<CodeDoc> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), codes.len());
    for (d, c) in docs.iter().zip(&codes) {
        assert_eq!((&d.code, &d.description), (&c.code, &c.description));
        assert_eq!(d.text, format!("{}: {}", c.code, c.description));
    }
}

#[test]
fn widened_samples_add_variants_unknown_and_grounded_questions() {
    let codes = parse_codes(&fixture(), Path::new("codes.py")).unwrap();
    let ds = build(&codes, &ObdConfig::default()).unwrap();
    let plain = ds.sample(Some(4), None, 5);
    let config = SampleConfig {
        codes: Some(4),
        seed: 5,
        variants: 1,
        unknown_codes: 3,
        grounded_codes: 2,
        passages: 3,
        passage_missing: 0.25,
        questions_per_code: 2,
        validation_own_passage: true,
        ..SampleConfig::default()
    };
    let wide = ds.sample_with(&codes, &config);
    // The test sets and the plain questions are the same as without additions.
    assert_eq!(wide.test_phrasing, plain.test_phrasing);
    assert_eq!(wide.test_unseen, plain.test_unseen);
    assert_eq!(wide.train[..plain.train.len()], plain.train[..]);
    let n = plain.train.len();
    assert_eq!(wide.added.variants, n);
    assert_eq!(wide.added.unknown, 3 * 2);
    assert_eq!(wide.added.grounded, (4 + 3 + 2) * 2);
    assert_eq!(wide.train.len(), 2 * n + 6 + 18);
    let sampled: HashSet<&str> = plain.train.iter().map(|e| e.code.as_str()).collect();
    let test_codes: HashSet<&str> = ds.test.iter().map(|e| e.code.as_str()).collect();
    let by_code: HashMap<&str, &Dtc> = codes.iter().map(|c| (c.code.as_str(), c)).collect();
    let (mut missing, mut variants) = (0, 0);
    for e in &wide.train[n..] {
        assert!(!test_codes.contains(e.code.as_str()), "{e:?}");
        let answer = format!("{}: {}", e.code, by_code[e.code.as_str()].description);
        if e.prompt.starts_with("Reference information:") {
            let has_own = e.prompt.contains(&format!("- {answer}\n"));
            assert_eq!(e.prompt.matches("\n- ").count(), 3, "{e:?}");
            if has_own {
                assert_eq!(e.completion, answer);
            } else {
                missing += 1;
                assert_eq!(e.completion, augment::unknown_answer(&e.code));
            }
        } else if e.completion == answer {
            variants += 1;
            assert!(sampled.contains(e.code.as_str()));
            assert!(!plain.train.iter().any(|p| p.prompt == e.prompt), "{e:?}");
        } else {
            assert_eq!(e.completion, augment::unknown_answer(&e.code));
            assert!(!sampled.contains(e.code.as_str()));
        }
    }
    assert_eq!(variants, n);
    assert!(missing > 0 && missing < 18, "{missing}");
    // Validation questions keep their codes and answers, and come with their own passage
    // among three.
    assert_eq!(wide.validation.len(), plain.validation.len());
    for (w, p) in wide.validation.iter().zip(&plain.validation) {
        assert_eq!((&w.code, &w.completion), (&p.code, &p.completion));
        assert!(w.prompt.starts_with("Reference information:"), "{w:?}");
        assert!(w.prompt.contains(&p.prompt), "{w:?}");
        let own = format!("- {}: {}\n", w.code, by_code[w.code.as_str()].description);
        assert!(w.prompt.contains(&own), "{w:?}");
        assert_eq!(w.prompt.matches("\n- ").count(), 3, "{w:?}");
    }
    assert_eq!(ds.sample_with(&codes, &config), wide, "deterministic");
}

#[test]
fn validation_asks_unseen_and_trained_codes_in_untrained_phrasings() {
    let codes = parse_codes(&fixture(), Path::new("codes.py")).unwrap();
    let ds = build(&codes, &ObdConfig::default()).unwrap();
    for t in VALIDATION_TEMPLATES {
        assert_eq!(t.matches("{code}").count(), 1, "{t}");
        assert!(!FORWARD_TEMPLATES.contains(&t), "{t}");
    }
    let config = SampleConfig {
        codes: Some(4),
        seed: 3,
        variants: 1,
        validation_unseen: Some(6),
        validation_trained: 10,
        ..SampleConfig::default()
    };
    let s = ds.sample_with(&codes, &config);
    assert_eq!(s.validation.len(), 6 + 10, "{:#?}", s.validation);
    let (unseen, trained) = s.validation.split_at(6);
    let validation_codes: HashSet<&str> = ds.validation.iter().map(|e| e.code.as_str()).collect();
    let sampled: HashSet<&str> = s.train.iter().map(|e| e.code.as_str()).collect();
    let answer = |code: &str| {
        let d = codes.iter().find(|c| c.code == code).unwrap();
        format!("{}: {}", d.code, d.description)
    };
    // One question per validation code before any second one; every trained code, none asked
    // twice the same way.
    let distinct: HashSet<&str> = unseen.iter().map(|e| e.code.as_str()).collect();
    assert_eq!(distinct.len(), validation_codes.len().min(6), "{unseen:#?}");
    assert!(
        unseen
            .iter()
            .all(|e| validation_codes.contains(e.code.as_str()))
    );
    let distinct: HashSet<&str> = trained.iter().map(|e| e.code.as_str()).collect();
    assert_eq!(distinct.len(), 4, "{trained:#?}");
    assert!(trained.iter().all(|e| sampled.contains(e.code.as_str())));
    let prompts: HashSet<&str> = trained.iter().map(|e| e.prompt.as_str()).collect();
    assert_eq!(prompts.len(), trained.len(), "{trained:#?}");
    // Forward questions in a validation phrasing, answers unchanged.
    for e in &s.validation {
        assert_eq!(
            (e.direction, &e.completion),
            (Direction::Forward, &answer(&e.code))
        );
        let t = e.template - FORWARD_TEMPLATES.len();
        assert_eq!(e.prompt, VALIDATION_TEMPLATES[t].replace("{code}", &e.code));
    }
    assert_eq!(ds.sample_with(&codes, &config), s, "deterministic");
}

/// Preference pairs: one per forward training question, the true answer over the same code with
/// another code's description from its subsystem.
#[test]
fn preference_pairs_reject_another_codes_description() {
    let codes = parse_codes(&fixture(), Path::new("codes.py")).unwrap();
    let ds = build(&codes, &ObdConfig::default()).unwrap();
    let pairs = preference_pairs(&ds.train, &codes, 0);
    let forward = ds
        .train
        .iter()
        .filter(|e| e.direction == Direction::Forward)
        .count();
    assert_eq!(pairs.len(), forward);
    let description: HashMap<&str, &str> = codes
        .iter()
        .map(|c| (c.code.as_str(), c.description.as_str()))
        .collect();
    for p in &pairs {
        assert_eq!(
            p.chosen,
            format!("{}: {}", p.code, description[p.code.as_str()])
        );
        let (code, other) = p.rejected.split_once(": ").unwrap();
        assert_eq!(code, p.code);
        assert_ne!(other, description[p.code.as_str()]);
        let owner = codes.iter().find(|c| c.description == other).unwrap();
        // From the same subsystem, unless it has no other description (P0700 and P0701
        // share theirs).
        let same_subsystem_exists = codes.iter().any(|c| {
            Subsystem::of(&c.code) == Subsystem::of(&p.code)
                && c.description != description[p.code.as_str()]
        });
        assert_eq!(
            Subsystem::of(&owner.code) == Subsystem::of(&p.code),
            same_subsystem_exists,
            "{p:?}"
        );
    }
    assert_eq!(
        pairs,
        preference_pairs(&ds.train, &codes, 0),
        "deterministic"
    );
}
