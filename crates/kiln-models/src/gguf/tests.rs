//! Fixtures come from `scripts/fixtures/gen_gguf_fixtures.py`; the reference values in the
//! JSON files are those of the Python `gguf` package (`gguf.quants.dequantize`).

use std::path::{Path, PathBuf};

use super::dequant::dequantize;
use super::parse::parse;
use super::*;
use crate::ModelError;
use serde_json::Value;
use std::time::Instant;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gguf");
const SMOLLM2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
);

fn tiny_path() -> PathBuf {
    Path::new(FIXTURES).join("tiny.gguf")
}

fn tiny() -> GgufFile {
    GgufFile::open(tiny_path()).expect("open tiny.gguf")
}

fn json(name: &str) -> Value {
    let path = Path::new(FIXTURES).join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).expect("fixture JSON")
}

fn f32s(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .expect("array of numbers")
        .iter()
        .map(|v| v.as_f64().expect("number") as f32)
        .collect()
}

fn usizes(value: &Value) -> Vec<usize> {
    value
        .as_array()
        .expect("array of integers")
        .iter()
        .map(|v| v.as_u64().expect("integer") as usize)
        .collect()
}

/// A scratch directory unique to one test of this process.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-gguf-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write scratch file");
    path
}

fn gguf_message(err: ModelError) -> (PathBuf, String) {
    match err {
        ModelError::Gguf { path, message } => (path, message),
        other => panic!("expected ModelError::Gguf, got {other:?}"),
    }
}

#[test]
fn gguf_fixture_tensors_match_python_reference() {
    let file = tiny();
    let reference = json("tiny.json");
    let tensors = reference["tensors"].as_object().expect("tensors object");
    assert_eq!(file.tensors().len(), tensors.len());
    let mut checked = Vec::new();
    for (name, entry) in tensors {
        let info = file.tensor_info(name).expect("tensor present");
        assert_eq!(
            info.ggml_type().to_string(),
            entry["type"].as_str().unwrap(),
            "{name}"
        );
        let shape = usizes(&entry["shape"]);
        assert_eq!(info.shape(), shape, "{name}");
        assert_eq!(info.n_elements(), shape.iter().product::<usize>(), "{name}");
        if entry["values"].is_null() {
            continue; // an unsupported type, see `gguf_unsupported_type_is_an_error`
        }
        let expected = f32s(&entry["values"]);
        let (values, got_shape) = file.tensor_f32(name).expect("dequantize");
        assert_eq!(got_shape, shape, "{name}");
        assert_eq!(values.len(), expected.len(), "{name}");
        let exact = info.ggml_type() == GgmlType::F32;
        let identical = values
            .iter()
            .zip(&expected)
            .filter(|(a, b)| a.to_bits() == b.to_bits())
            .count();
        println!(
            "{name} ({}): {identical}/{} values bit-identical to the reference",
            info.ggml_type(),
            values.len()
        );
        for (i, (&got, &want)) in values.iter().zip(&expected).enumerate() {
            if exact {
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{name}[{i}]: {got} vs {want}"
                );
            } else {
                assert!(
                    (got - want).abs() <= 1e-6,
                    "{name}[{i}] ({}): {got} vs {want}",
                    info.ggml_type()
                );
            }
        }
        checked.push(info.ggml_type());
    }
    for ty in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
    ] {
        assert!(checked.contains(&ty), "fixture lacks a {ty} tensor");
    }
}

/// Q5_0 blocks kept for the block kernels decode to the values the `gguf` package reads.
#[test]
fn q5_0_blocks_keep_their_values() {
    let file = tiny();
    let reference = json("tiny.json");
    let tensors = reference["tensors"].as_object().expect("tensors object");
    let (name, entry) = tensors
        .iter()
        .find(|(_, e)| e["type"].as_str() == Some("Q5_0"))
        .expect("a Q5_0 tensor");
    let shape = usizes(&entry["shape"]);
    let cols = *shape.last().unwrap();
    let rows = shape.iter().product::<usize>() / cols;
    let m = kiln_nn::QuantizedMatrix::from_gguf_blocks(
        kiln_nn::QuantFormat::Q5_0,
        rows,
        cols,
        file.tensor_bytes(name).unwrap(),
    )
    .unwrap();
    let expected = f32s(&entry["values"]);
    for (i, (got, want)) in m.dequantize().iter().zip(&expected).enumerate() {
        assert!((got - want).abs() <= 1e-6, "{name}[{i}]: {got} vs {want}");
    }
}

#[test]
fn gguf_fixture_layout_and_metadata() {
    let file = tiny();
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 64);
    assert_eq!(file.data_offset() % 64, 0);
    for info in file.tensors() {
        assert_eq!(info.offset() % 64, 0, "{}", info.name());
    }
    let q8 = file.tensor_info("q8_0").unwrap();
    assert_eq!(q8.dims(), &[32, 3, 2]);
    assert_eq!(q8.shape(), vec![2, 3, 32]);
    assert_eq!(q8.n_bytes(), Some(6 * 34));
    assert_eq!(file.tensor_bytes("q8_0").unwrap().len(), 6 * 34);

    assert_eq!(file.get_str("general.architecture").unwrap(), "kiln-test");
    assert_eq!(file.get_str("general.name").unwrap(), "tiny fixture");
    assert_eq!(file.get_u32("general.alignment").unwrap(), 64);
    assert_eq!(file.get("test.u8"), Some(&GgufValue::U8(200)));
    assert_eq!(file.get("test.i8"), Some(&GgufValue::I8(-100)));
    assert_eq!(file.get("test.u16"), Some(&GgufValue::U16(60000)));
    assert_eq!(file.get("test.i16"), Some(&GgufValue::I16(-30000)));
    assert_eq!(file.get_u32("test.u32").unwrap(), 4_000_000_000);
    assert_eq!(file.get_i64("test.i32").unwrap(), -2_000_000_000);
    assert_eq!(
        file.get_u64("test.u64").unwrap(),
        18_000_000_000_000_000_000
    );
    assert_eq!(
        file.get_i64("test.i64").unwrap(),
        -9_000_000_000_000_000_000
    );
    assert_eq!(file.get_f32("test.f32").unwrap(), 0.125);
    assert_eq!(file.get_f64("test.f64").unwrap(), -2.5e-300);
    assert!(file.get_bool("test.true").unwrap());
    assert!(!file.get_bool("test.false").unwrap());
    assert_eq!(file.get_str("test.unicode").unwrap(), "h\u{e9}llo \u{2603}");
    assert_eq!(
        file.get_str_array("test.str_array").unwrap(),
        ["a", "bc", "", "d\u{e9}f"]
    );
    assert_eq!(
        file.get_i32_array("test.i32_array").unwrap(),
        [1, -2, 3, i32::MAX]
    );
    assert_eq!(
        file.get_f32_array("test.f32_array").unwrap(),
        [0.5, -1.25, 3.0]
    );
    assert_eq!(
        file.get_array("test.bool_array").unwrap(),
        &GgufArray::Bool(vec![true, false, true])
    );
    assert_eq!(
        file.get_array("test.u8_array").unwrap(),
        &GgufArray::U8(vec![1, 2, 255])
    );
    assert_eq!(
        file.get_array("test.nested").unwrap(),
        &GgufArray::Array(vec![
            GgufArray::String(vec!["x".into(), "yz".into()]),
            GgufArray::String(vec!["w".into()]),
        ])
    );
    assert_eq!(file.metadata().len(), 22);
}

#[test]
fn gguf_metadata_errors_name_the_key() {
    let file = tiny();
    let (path, msg) = gguf_message(file.get_u32("llama.block_count").unwrap_err());
    assert_eq!(path, tiny_path());
    assert!(
        msg.contains("`llama.block_count`") && msg.contains("missing"),
        "{msg}"
    );

    let err = file.get_u32("general.name").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("tiny.gguf"), "{text}");
    assert!(
        text.contains("`general.name`") && text.contains("expected u32"),
        "{text}"
    );
    assert!(text.contains("string \"tiny fixture\""), "{text}");

    let (_, msg) = gguf_message(file.get_u32("test.i8").unwrap_err());
    assert!(
        msg.contains("`test.i8`") && msg.contains("i8 -100"),
        "{msg}"
    );
    let (_, msg) = gguf_message(file.get_u32("test.u64").unwrap_err());
    assert!(msg.contains("`test.u64`"), "{msg}");
    let (_, msg) = gguf_message(file.get_str_array("test.i32_array").unwrap_err());
    assert!(
        msg.contains("`test.i32_array`") && msg.contains("array of i32 (4 elements)"),
        "{msg}"
    );
    let (_, msg) = gguf_message(file.get_f32_array("test.nested").unwrap_err());
    assert!(msg.contains("expected array of f32"), "{msg}");
    assert!(file.get_i32_array("test.f32_array").is_err());
    assert!(file.get_bool("test.u8").is_err());
    assert!(file.get_f32("test.u32").is_err());
    assert_eq!(file.get_u32("test.u8").unwrap(), 200);
}

#[test]
fn gguf_unknown_tensor_is_an_error_naming_it() {
    let file = tiny();
    let err = file.tensor_f32("no.such.tensor").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("`no.such.tensor`"), "{text}");
    assert!(text.contains("tiny.gguf"), "{text}");
    assert!(file.tensor_info("no.such.tensor").is_err());
    assert!(file.tensor_bytes("no.such.tensor").is_err());
}

#[test]
fn gguf_unsupported_type_is_an_error() {
    let file = tiny();
    let info = file.tensor_info("iq4_nl").unwrap();
    assert_eq!(info.ggml_type(), GgmlType::IQ4_NL);
    assert!(!info.ggml_type().can_dequantize());
    let (_, msg) = gguf_message(file.tensor_f32("iq4_nl").unwrap_err());
    assert!(msg.contains("`iq4_nl`") && msg.contains("IQ4_NL"), "{msg}");
    // Raw bytes of a known-size type are still available.
    assert_eq!(file.tensor_bytes("iq4_nl").unwrap().len(), 18);
}

#[test]
fn gguf_truncated_files_are_errors_naming_the_file() {
    let bytes = std::fs::read(tiny_path()).unwrap();
    let file = tiny();
    let data_offset = file.data_offset() as usize;
    // End of the last tensor's data; the writer pads the file after it.
    let last = file.tensors().last().unwrap();
    let data_end = data_offset + last.offset() as usize + last.n_bytes().unwrap();
    assert_eq!(last.name(), "iq4_nl");
    let dir = scratch("truncated");
    let cases = [
        (0, "empty"),
        (3, "the magic number"),
        (6, "the format version"),
        (20, "the metadata entry count"),
        (24, "the key of metadata entry 0"),
        (30, "the key of metadata entry 0"),
        (300, "metadata key `"),
        (data_offset - 70, "tensor"),
        (data_offset + 100, "the data of tensor `"),
        (data_end - 1, "the data of tensor `iq4_nl`"),
    ];
    for (len, what) in cases {
        let path = write(&dir, &format!("cut_{len}.gguf"), &bytes[..len]);
        let err = GgufFile::open(&path).expect_err("truncated file must not open");
        let text = err.to_string();
        let (err_path, msg) = gguf_message(err);
        assert_eq!(err_path, path);
        assert!(text.contains(&format!("cut_{len}.gguf")), "{text}");
        assert!(msg.contains("truncated"), "cut at {len}: {msg}");
        assert!(
            msg.contains(what),
            "cut at {len}: expected {what:?} in {msg}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
    // Every cut before the end of the data fails cleanly; cutting only padding is fine.
    for len in 0..data_end {
        let msg = parse(&bytes[..len])
            .err()
            .unwrap_or_else(|| panic!("cut at {len} parsed"));
        assert!(msg.contains("truncated"), "cut at {len}: {msg}");
    }
    for len in data_end..=bytes.len() {
        assert!(parse(&bytes[..len]).is_ok(), "cut at {len} failed");
    }
}

#[test]
fn gguf_versions_and_bad_headers() {
    let bytes = std::fs::read(tiny_path()).unwrap();
    let dir = scratch("versions");
    let with_version = |v: [u8; 4]| {
        let mut b = bytes.clone();
        b[4..8].copy_from_slice(&v);
        b
    };

    // Version 2 has the same little-endian layout as version 3.
    let v2 = GgufFile::open(write(&dir, "v2.gguf", &with_version(2u32.to_le_bytes()))).unwrap();
    assert_eq!(v2.version(), 2);
    assert_eq!(
        v2.tensor_f32("q6_k").unwrap(),
        tiny().tensor_f32("q6_k").unwrap()
    );

    let cases = [
        (with_version(1u32.to_le_bytes()), "version 1"),
        (with_version(3u32.to_be_bytes()), "big-endian"),
        (with_version(7u32.to_le_bytes()), "version 7"),
        (
            {
                let mut b = bytes.clone();
                b[0] = b'X';
                b
            },
            "not a GGUF file",
        ),
    ];
    for (i, (b, want)) in cases.into_iter().enumerate() {
        let path = write(&dir, &format!("bad{i}.gguf"), &b);
        let (err_path, msg) = gguf_message(GgufFile::open(&path).unwrap_err());
        assert_eq!(err_path, path);
        assert!(msg.contains(want), "expected {want:?} in {msg}");
    }

    let missing = dir.join("missing.gguf");
    match GgufFile::open(&missing).unwrap_err() {
        ModelError::Io { path, .. } => assert_eq!(path, missing),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn gguf_corrupt_headers_never_panic() {
    let bytes = std::fs::read(tiny_path()).unwrap();
    let data_offset = tiny().data_offset() as usize;
    // Deterministic xorshift; corrupts bytes of the header, metadata and tensor table.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut opened = 0;
    for _ in 0..2000 {
        let mut b = bytes.clone();
        for _ in 0..1 + next() % 3 {
            let at = (next() % data_offset as u64) as usize;
            b[at] = match next() % 4 {
                0 => 0xFF,
                1 => 0,
                _ => next() as u8,
            };
        }
        if let Ok(parsed) = parse(&b) {
            opened += 1;
            // Whatever parsed must be readable within bounds.
            for info in &parsed.tensors {
                if let (Some(n), true) = (info.n_bytes, info.ggml_type.can_dequantize()) {
                    let start = parsed.data_offset + info.offset as usize;
                    let mut out = vec![0f32; info.n_elements];
                    dequantize(info.ggml_type, &b[start..start + n], &mut out).unwrap();
                }
            }
        }
    }
    assert!(opened > 0);
}

#[test]
fn gguf_hostile_counts_are_errors() {
    let mut header = Vec::new();
    header.extend_from_slice(b"GGUF");
    header.extend_from_slice(&3u32.to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes()); // tensors
    header.extend_from_slice(&1u64.to_le_bytes()); // metadata entries
    let key = |b: &mut Vec<u8>| {
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(b'k');
    };

    // An array claiming 2^62 strings.
    let mut b = header.clone();
    key(&mut b);
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&(1u64 << 62).to_le_bytes());
    let msg = parse(&b).err().unwrap();
    assert!(msg.contains("truncated") && msg.contains("`k`"), "{msg}");

    // A string claiming u64::MAX bytes.
    let mut b = header.clone();
    key(&mut b);
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    let msg = parse(&b).err().unwrap();
    assert!(msg.contains("truncated") && msg.contains("`k`"), "{msg}");

    // Arrays nested past the depth limit.
    let mut b = header.clone();
    key(&mut b);
    b.extend_from_slice(&9u32.to_le_bytes());
    for _ in 0..40 {
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
    }
    b.extend_from_slice(&[0; 64]);
    let msg = parse(&b).err().unwrap();
    assert!(msg.contains("nested"), "{msg}");

    // An unknown value type.
    let mut b = header.clone();
    key(&mut b);
    b.extend_from_slice(&99u32.to_le_bytes());
    b.extend_from_slice(&[0; 16]);
    let msg = parse(&b).err().unwrap();
    assert!(msg.contains("unknown metadata value type 99"), "{msg}");

    // Many tensors announced, none present.
    let mut b = header.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    b[16..24].copy_from_slice(&0u64.to_le_bytes());
    let msg = parse(&b).err().unwrap();
    assert!(msg.contains("the name of tensor 0"), "{msg}");
}

#[test]
fn gguf_type_ids_round_trip() {
    for id in 0..64 {
        let ty = GgmlType::from_id(id);
        assert_eq!(ty.id(), id);
        assert_eq!(ty.name().is_none(), matches!(ty, GgmlType::Unknown(_)));
        assert_eq!(ty.block_layout().is_none(), ty.name().is_none());
    }
    assert_eq!(GgmlType::Q6_K.block_layout(), Some((256, 210)));
    assert_eq!(GgmlType::Q4_1.to_string(), "Q4_1");
    assert_eq!(
        GgmlType::from_id(1000).to_string(),
        "unknown ggml type 1000"
    );
}

#[test]
fn gguf_smollm2_asset_matches_python_reference() {
    let asset = Path::new(SMOLLM2);
    if !asset.exists() {
        println!("skipped: {SMOLLM2} is missing (run scripts/fetch-assets.sh)");
        return;
    }
    let ref_path = Path::new(FIXTURES).join("smollm2_ref.json");
    if !ref_path.exists() {
        println!("skipped: {ref_path:?} is missing (run scripts/fixtures/gen_gguf_fixtures.py)");
        return;
    }
    let file = GgufFile::open(asset).expect("open SmolLM2");
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), DEFAULT_ALIGNMENT);
    assert_eq!(file.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(file.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(file.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(file.get_u32("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(file.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
    assert_eq!(
        file.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        49152
    );
    assert_eq!(
        file.get_i32_array("tokenizer.ggml.token_type")
            .unwrap()
            .len(),
        49152
    );
    assert_eq!(
        file.get_str_array("tokenizer.ggml.merges").unwrap().len(),
        48900
    );
    assert!(!file.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    assert_eq!(file.tensors().len(), 272);

    let reference = json("smollm2_ref.json");
    let heads = reference["heads"].as_object().unwrap();
    let mut head_types = Vec::new();
    for (name, entry) in heads {
        let (values, shape) = file.tensor_f32(name).unwrap();
        assert_eq!(shape, usizes(&entry["shape"]), "{name}");
        let ty = file.tensor_info(name).unwrap().ggml_type();
        assert_eq!(ty.to_string(), entry["type"].as_str().unwrap());
        for (i, (&got, &want)) in values.iter().zip(&f32s(&entry["first_64"])).enumerate() {
            assert!(
                (got - want).abs() <= 1e-6,
                "{name}[{i}] ({ty}): {got} vs {want}"
            );
        }
        head_types.push(ty);
    }
    assert!(head_types.contains(&GgmlType::Q4_1));
    assert!(head_types.contains(&GgmlType::Q8_0));

    // Every tensor: sums of the dequantized values against the reference, and timing.
    let sums = reference["sums"].as_object().unwrap();
    assert_eq!(sums.len(), file.tensors().len());
    let start = Instant::now();
    let mut total = 0usize;
    for info in file.tensors() {
        let (values, shape) = file.tensor_f32(info.name()).unwrap();
        total += values.len();
        let entry = &sums[info.name()];
        assert_eq!(shape, usizes(&entry["shape"]), "{}", info.name());
        let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
        let sum_abs: f64 = values.iter().map(|&v| f64::from(v).abs()).sum();
        let want_sum = entry["sum"].as_f64().unwrap();
        let want_abs = entry["sum_abs"].as_f64().unwrap();
        // Same f32 values summed in f64 in another order: differences are rounding only.
        assert!(
            (sum - want_sum).abs() <= 1e-9 * want_abs.max(1.0),
            "{}: sum {sum} vs {want_sum}",
            info.name()
        );
        assert!(
            (sum_abs - want_abs).abs() <= 1e-9 * want_abs.max(1.0),
            "{}: sum_abs {sum_abs} vs {want_abs}",
            info.name()
        );
    }
    println!(
        "dequantized {} tensors ({total} values) of {SMOLLM2} in {:?}",
        file.tensors().len(),
        start.elapsed()
    );
}

/// The writer's encodings equal the `gguf` package's reference quantizers byte for byte
/// (`scripts/fixtures/gen_gguf_quant_fixtures.py`).
#[test]
fn quantize_matches_gguf_package() {
    let reference = json("quantize_reference.json");
    let rows: Vec<Vec<f32>> = reference["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(f32s)
        .collect();
    for (ty, name) in [
        (GgmlType::F16, "F16"),
        (GgmlType::Q8_0, "Q8_0"),
        (GgmlType::Q4_0, "Q4_0"),
    ] {
        for (i, (row, want)) in rows
            .iter()
            .zip(reference["encoded"][name].as_array().unwrap())
            .enumerate()
        {
            let got: String = quantize(ty, row, row.len())
                .unwrap()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(got, want.as_str().unwrap(), "{name} row {i}");
        }
    }
    let err = quantize(GgmlType::Q8_0, &[0.0; 48], 48).unwrap_err();
    assert!(err.contains("multiple of 32"), "{err}");
    assert!(quantize(GgmlType::Q4_K, &[0.0; 256], 256).is_err());
}

/// A file written by [`GgufWriter`] reads back with the same metadata (every value type, nested
/// arrays) and tensors, at the alignment it names.
#[test]
fn written_files_read_back() {
    let source = tiny();
    let mut writer = GgufWriter::new();
    for (key, value) in source.metadata() {
        writer.set(key.clone(), value.clone());
    }
    let mut expected = Vec::new();
    for info in source.tensors() {
        if !info.ggml_type().can_dequantize() {
            continue;
        }
        let (values, shape) = source.tensor_f32(info.name()).unwrap();
        let ty = if shape.last().unwrap().is_multiple_of(32) {
            GgmlType::Q8_0
        } else {
            GgmlType::F32
        };
        writer.add_tensor(info.name(), &shape, ty, &values).unwrap();
        expected.push((info.name().to_string(), shape, ty, values));
    }
    let dir = scratch("written_files_read_back");
    let path = dir.join("copy.gguf");
    writer.write(&path).unwrap();
    let copy = GgufFile::open(&path).unwrap();
    assert_eq!(copy.metadata(), source.metadata());
    assert_eq!(copy.version(), 3);
    assert_eq!(copy.data_offset() % copy.alignment(), 0);
    for (name, shape, ty, values) in expected {
        let info = copy.tensor_info(&name).unwrap();
        assert_eq!(info.ggml_type(), ty, "{name}");
        assert_eq!(info.offset() % copy.alignment(), 0, "{name}");
        let (got, got_shape) = copy.tensor_f32(&name).unwrap();
        assert_eq!(got_shape, shape, "{name}");
        if ty == GgmlType::F32 {
            assert_eq!(got, values, "{name}");
        } else {
            let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = got
                .iter()
                .zip(&values)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst <= amax / 127.0, "{name}: {worst} vs {amax}");
        }
    }
    let err = writer
        .add_tensor("bad", &[2, 3], GgmlType::F32, &[0.0; 5])
        .unwrap_err();
    assert!(err.to_string().contains("`bad`"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}
