//! Files: safetensors round trips and hostile inputs, JSON, atomic writes.

use consolidator::io::fuzz::{fuzz_json, fuzz_safetensors};
use consolidator::io::safetensors::{Dtype, RawFile};
use consolidator::io::{check_output, check_writable, same_file, write_atomic, write_atomic_with, Json, TensorFile};
use consolidator::{Error, Tensor};
use proptest::prelude::*;
use std::path::PathBuf;

fn sample_file() -> TensorFile {
    let mut f = TensorFile::new();
    f.insert(
        "blocks.0.attn.qkv.weight",
        Tensor::new(&[2, 3], vec![1.5, -0.0, f32::MIN_POSITIVE, 1e-45, f32::MAX, -7.25]).unwrap(),
    );
    f.insert("cls_token", Tensor::new(&[1, 1, 2], vec![0.1, 0.2]).unwrap());
    f.insert("scalar", Tensor::scalar(3.0));
    f.insert("empty", Tensor::new(&[0, 4], vec![]).unwrap());
    f.insert("special", Tensor::new(&[3], vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY]).unwrap());
    f.metadata.insert("format".into(), "pt".into());
    f.metadata.insert("note".into(), "quote \" and é".into());
    f
}

/// A raw safetensors file from a header text and a buffer.
fn raw(header: &str, buffer: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(buffer);
    out
}

fn format_err(bytes: &[u8]) -> String {
    match TensorFile::from_bytes(bytes, "test.safetensors") {
        Err(e @ Error::Format { .. }) => {
            let s = e.to_string();
            assert!(s.contains("test.safetensors"), "error does not name the file: {s}");
            s
        }
        Err(e) => panic!("expected Error::Format, got {e:?}"),
        Ok(_) => panic!("expected an error"),
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.data().iter().map(|v| v.to_bits()).collect()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("consolidator-io-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn round_trip_is_bit_exact() {
    let f = sample_file();
    let bytes = f.to_bytes();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!((8 + header_len) % 8, 0, "buffer must start 8-byte aligned");
    let back = TensorFile::from_bytes(&bytes, "mem").unwrap();
    assert_eq!(back.metadata, f.metadata);
    assert_eq!(back.tensors.keys().collect::<Vec<_>>(), f.tensors.keys().collect::<Vec<_>>());
    for (k, t) in &f.tensors {
        let b = back.get(k).unwrap();
        assert_eq!(b.shape(), t.shape(), "{k}");
        assert_eq!(bits(b), bits(t), "{k}");
    }
    // Serialization is deterministic.
    assert_eq!(back.to_bytes(), bytes);
}

#[test]
fn save_and_load() {
    let dir = temp_dir("save");
    let path = dir.join("model.safetensors");
    let mut f = sample_file();
    f.tensors.remove("special"); // NaN and infinities are never saved (see below)
    let big: Vec<f32> = (0..40_000).map(|i| i as f32 * 0.5 - 7.0).collect();
    f.insert("big", Tensor::new(&[200, 200], big).unwrap()); // several write chunks
    f.save(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), f.to_bytes(), "save streams to_bytes");
    let back = TensorFile::load(&path).unwrap();
    assert_eq!(back.to_bytes(), f.to_bytes());
    let missing = TensorFile::load(dir.join("nope.safetensors")).unwrap_err();
    assert!(matches!(missing, Error::Io { .. }), "{missing:?}");
    assert!(missing.to_string().contains("nope.safetensors"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn metadata_round_trip_and_missing_key() {
    let mut f = TensorFile::new();
    f.metadata.insert("a".into(), "1".into());
    f.metadata.insert("line\nbreak".into(), "\u{0}\u{1f}".into());
    let back = TensorFile::from_bytes(&f.to_bytes(), "mem").unwrap();
    assert_eq!(back.metadata, f.metadata);
    assert!(back.tensors.is_empty());
    assert!(matches!(back.get("x"), Err(Error::MissingKey { key }) if key == "x"));
}

#[test]
fn reads_other_dtypes() {
    let mut buf = Vec::new();
    for v in [1.5f64, -2.0] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    for v in [0x3c00u16, 0xc000] {
        buf.extend_from_slice(&v.to_le_bytes()); // F16 1, -2
    }
    for v in [0x3fc0u16, 0x4040] {
        buf.extend_from_slice(&v.to_le_bytes()); // BF16 1.5, 3
    }
    for v in [-(1i64 << 40), 7] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    for v in [16_777_216i32, -3] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    buf.extend_from_slice(&[255, 0]); // U8
    buf.extend_from_slice(&[1, 0]); // BOOL
    let header = r#"{"a":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},"b":{"dtype":"F16","shape":[2],"data_offsets":[16,20]},"c":{"dtype":"BF16","shape":[2],"data_offsets":[20,24]},"d":{"dtype":"I64","shape":[2],"data_offsets":[24,40]},"e":{"dtype":"I32","shape":[2,1],"data_offsets":[40,48]},"f":{"dtype":"U8","shape":[2],"data_offsets":[48,50]},"g":{"dtype":"BOOL","shape":[2],"data_offsets":[50,52]}}"#;
    let f = TensorFile::from_bytes(&raw(header, &buf), "mem").unwrap();
    let d = |k: &str| f.get(k).unwrap().data().to_vec();
    assert_eq!(d("a"), vec![1.5, -2.0]);
    assert_eq!(d("b"), vec![1.0, -2.0]);
    assert_eq!(d("c"), vec![1.5, 3.0]);
    assert_eq!(d("d"), vec![-(2f32.powi(40)), 7.0]);
    assert_eq!(d("e"), vec![16_777_216.0, -3.0]);
    assert_eq!(f.get("e").unwrap().shape(), &[2, 1]);
    assert_eq!(d("f"), vec![255.0, 0.0]);
    assert_eq!(d("g"), vec![1.0, 0.0]);
}

#[test]
fn inexact_integers_and_bad_bools_are_refused() {
    let h = |dt: &str, n: usize| format!(r#"{{"x":{{"dtype":"{dt}","shape":[1],"data_offsets":[0,{n}]}}}}"#);
    let e = format_err(&raw(&h("I32", 4), &16_777_217i32.to_le_bytes()));
    assert!(e.contains("not exactly representable") && e.contains("`x`"), "{e}");
    let e = format_err(&raw(&h("I64", 8), &i64::MAX.to_le_bytes()));
    assert!(e.contains("not exactly representable"), "{e}");
    let e = format_err(&raw(&h("BOOL", 1), &[2]));
    assert!(e.contains("BOOL"), "{e}");
    let e = format_err(&raw(&h("F64", 8), &1e300f64.to_le_bytes()));
    assert!(e.contains("f32 range"), "{e}");
    let e = format_err(&raw(&h("F8_E4M3", 1), &[0]));
    assert!(e.contains("unsupported dtype"), "{e}");
}

#[test]
fn truncation_at_every_length_is_a_clean_error() {
    let bytes = sample_file().to_bytes();
    for n in 0..bytes.len() {
        assert!(TensorFile::from_bytes(&bytes[..n], "truncated").is_err(), "prefix of {n} bytes parsed");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(format_err(&longer).contains("buffer"));
}

#[test]
fn huge_declared_header_length() {
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    assert!(format_err(&bytes).contains("header length"));
    let mut bytes = 99_000_000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let e = format_err(&bytes);
    assert!(e.contains("header length") && e.contains("truncated"), "{e}");
}

#[test]
fn header_value_bomb_is_refused() {
    // 8 MB of `1,` would parse to ~130 MB of JSON values; the value limit stops it early.
    let ones = vec!["1"; consolidator::io::safetensors::MAX_HEADER_VALUES].join(",");
    let header = format!(r#"{{"a":{{"dtype":"F32","shape":[{ones}],"data_offsets":[0,4]}}}}"#);
    let e = format_err(&raw(&header, &[0; 4]));
    assert!(e.contains("values"), "{e}");
}

#[test]
fn shape_overflow_and_offsets() {
    let e = format_err(&raw(r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}"#, &[]));
    assert!(e.contains("overflows") && e.contains("`w`"), "{e}");
    let e = format_err(&raw(r#"{"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}}"#, &[]));
    assert!(e.contains("overflows") || e.contains("not a non-negative integer"), "{e}");
    let e = format_err(&raw(r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, &[0; 4]));
    assert!(e.contains("past the end"), "{e}");
    let e = format_err(&raw(r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, &[0; 8]));
    assert!(e.contains("backwards"), "{e}");
    let e = format_err(&raw(r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, &[0; 8]));
    assert!(e.contains("needs 12"), "{e}");
    let e = format_err(&raw(r#"{"w":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}}"#, &[0; 8]));
    assert!(e.contains("needs 16"), "{e}");
    let e = format_err(&raw(r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}"#, &[]));
    assert!(e.contains("shape entry"), "{e}");
    let e = format_err(&raw(r#"{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,0]}}"#, &[]));
    assert!(e.contains("shape entry"), "{e}");
    let e = format_err(&raw(r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#, &[0; 8]));
    assert!(e.contains("exactly 2"), "{e}");
}

#[test]
fn overlapping_gapped_and_duplicate_tensors() {
    let e = format_err(&raw(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
        &[0; 12],
    ));
    assert!(e.contains("overlap") && e.contains("`b`"), "{e}");
    let e = format_err(&raw(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
        &[0; 12],
    ));
    assert!(e.contains("gap"), "{e}");
    let e = format_err(&raw(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        &[0; 8],
    ));
    assert!(e.contains("duplicate key"), "{e}");
}

#[test]
fn malformed_headers() {
    for (header, needle) in [
        ("[]", "does not start"),
        ("{\"a\":1}", "not an object"),
        ("{\"a\":{}}", "missing `dtype`"),
        ("{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4],\"x\":1}}", "unknown field"),
        ("{\"__metadata__\":{\"k\":1}}", "not a string"),
        ("{\"__metadata__\":[]}", "not an object"),
        ("{\"a\":", "JSON"),
    ] {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        let e = format_err(&bytes);
        assert!(e.contains(needle), "{header}: {e}");
    }
    let header = b"{\"a\xff\":1}";
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    let e = format_err(&bytes);
    assert!(e.contains("UTF-8"), "{e}");
}

#[test]
fn json_accessors_and_errors() {
    let v = Json::parse_str(r#"{"n": 3, "f": 2.5, "neg": -1, "s": "x", "a": [true, null]}"#, "cfg").unwrap();
    assert_eq!(v.get("n").and_then(Json::as_usize), Some(3));
    assert_eq!(v.get("f").and_then(Json::as_usize), None);
    assert_eq!(v.get("f").and_then(Json::as_f64), Some(2.5));
    assert_eq!(v.get("neg").and_then(Json::as_usize), None);
    assert_eq!(v.get("neg").and_then(Json::as_i64), Some(-1));
    assert_eq!(v.get("a").and_then(|a| a.at(0)).and_then(Json::as_bool), Some(true));
    assert!(v.get("a").and_then(|a| a.at(1)).unwrap().is_null());
    assert_eq!(v.get("missing"), None);
    let e = Json::parse_str("{\"a\": [1, 2,, 3]}", "cfg.json").unwrap_err().to_string();
    assert!(e.contains("cfg.json") && e.contains("at byte 12"), "{e}");
}

#[test]
fn atomic_write_replaces_and_failed_write_keeps_old_file() {
    let dir = temp_dir("atomic");
    let path = dir.join("state.json");
    write_atomic(&path, b"old").unwrap();
    write_atomic(&path, b"new").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new");

    let err = write_atomic_with(&path, |w| {
        w.write_all(&[b'x'; 100_000])?;
        Err(std::io::Error::other("simulated failure mid-write"))
    })
    .unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(err.to_string().contains("simulated failure"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    let names: Vec<_> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, vec!["state.json".to_string()], "temp files left behind");

    // Temp-file creation fails: the directory does not exist.
    let bad = dir.join("no-such-dir").join("x.bin");
    assert!(matches!(write_atomic(&bad, b"x"), Err(Error::Io { .. })));
    // Rename fails: the target is a non-empty directory. The directory survives, no temp left.
    let target = dir.join("occupied");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"k").unwrap();
    assert!(write_atomic(&target, b"x").is_err());
    assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"k");
    let mut names: Vec<_> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, vec!["occupied".to_string(), "state.json".to_string()]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fuzz_entry_points_on_seeds() {
    let bytes = sample_file().to_bytes();
    fuzz_safetensors(&bytes);
    for n in 0..bytes.len() {
        fuzz_safetensors(&bytes[..n]);
    }
    for s in ["", "{", "[[[[", "\"\\u12", "{\"a\":[1,{\"b\":null}]}", "-0", "1e308"] {
        fuzz_json(s.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bit_flips_never_panic(flips in proptest::collection::vec((any::<usize>(), 0u8..8), 1..6)) {
        let mut bytes = sample_file().to_bytes();
        let n = bytes.len();
        for (pos, bit) in flips {
            bytes[pos % n] ^= 1 << bit;
        }
        fuzz_safetensors(&bytes);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        fuzz_safetensors(&bytes);
        fuzz_json(&bytes);
    }

    #[test]
    fn json_text_fragments_never_panic(parts in proptest::collection::vec(
        prop_oneof![
            Just("{"), Just("}"), Just("["), Just("]"), Just(","), Just(":"), Just("\""),
            Just("\\u"), Just("\\ud83d"), Just("1"), Just("-"), Just("e"), Just("."), Just("null"),
            Just(" "), Just("a"), Just("é")
        ], 0..40)) {
        fuzz_json(parts.concat().as_bytes());
    }

    #[test]
    fn tensors_round_trip(shape in proptest::collection::vec(0usize..4, 0..4), seed in any::<u64>()) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| f32::from_bits(rng.gen())).collect();
        let mut f = TensorFile::new();
        f.insert("t", Tensor::new(&shape, data).unwrap());
        let back = TensorFile::from_bytes(&f.to_bytes(), "mem").unwrap();
        prop_assert_eq!(back.get("t").unwrap().shape(), &shape[..]);
        prop_assert_eq!(bits(back.get("t").unwrap()), bits(f.get("t").unwrap()));
    }
}

/// An independent oracle for the layout rules: entries (dtype size, numel, start, end) are valid
/// iff each spans exactly numel × size bytes and, sorted by start, they tile the buffer.
fn layout_is_valid(entries: &[(usize, usize, usize, usize)], buffer_len: usize) -> bool {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for &(size, numel, start, end) in entries {
        if start > end || end > buffer_len || end - start != size * numel {
            return false;
        }
        spans.push((start, end));
    }
    spans.sort();
    let mut cursor = 0;
    for (s, e) in spans {
        if s != cursor {
            return false;
        }
        cursor = e;
    }
    cursor == buffer_len
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn random_layouts_match_the_oracle(
        entries in proptest::collection::vec(
            (prop_oneof![Just(("F32", 4usize)), Just(("F16", 2)), Just(("U8", 1))], 0usize..4),
            0..5),
        order_seed in any::<u64>(),
        tweak in proptest::option::of((any::<usize>(), any::<bool>(), -3i64..=3)),
        extra in 0usize..2,
    ) {
        use rand::{seq::SliceRandom, SeedableRng};
        // A valid tiling in a random storage order, then maybe one offset nudged.
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(order_seed));
        let mut spans = vec![(0usize, 0usize); entries.len()];
        let mut cursor = 0;
        for &i in &order {
            let (_, size) = entries[i].0;
            spans[i] = (cursor, cursor + size * entries[i].1);
            cursor = spans[i].1;
        }
        let mut buffer_len = cursor + extra;
        if let Some((which, is_end, delta)) = tweak {
            if !spans.is_empty() {
                let j = which % spans.len();
                let v = if is_end { &mut spans[j].1 } else { &mut spans[j].0 };
                *v = (*v as i64 + delta).max(0) as usize;
            } else {
                buffer_len = (buffer_len as i64 + delta).max(0) as usize;
            }
        }
        let mut header = String::from("{");
        let mut oracle = Vec::new();
        for (i, (((dtype, size), numel), (start, end))) in entries.iter().zip(&spans).enumerate() {
            if i > 0 {
                header.push(',');
            }
            header.push_str(&format!(
                r#""t{i}":{{"dtype":"{dtype}","shape":[{numel}],"data_offsets":[{start},{end}]}}"#
            ));
            oracle.push((*size, *numel, *start, *end));
        }
        header.push('}');
        let bytes = raw(&header, &vec![0u8; buffer_len]);
        let got = TensorFile::from_bytes(&bytes, "layout");
        prop_assert_eq!(got.is_ok(), layout_is_valid(&oracle, buffer_len), "{}", header);
        if let Ok(f) = got {
            prop_assert_eq!(f.tensors.len(), entries.len());
        }
    }
}

#[test]
fn save_refuses_non_finite_values_and_keeps_the_old_file() {
    let dir = temp_dir("nonfinite");
    let path = dir.join("model.safetensors");
    let mut good = TensorFile::new();
    good.insert("a", Tensor::new(&[2], vec![1.0, 2.0]).unwrap());
    good.save(&path).unwrap();
    for bad_value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut bad = good.clone();
        let mut v = vec![0.5; 20];
        v[17] = bad_value;
        bad.insert("blocks.0.attn.qkv.weight", Tensor::new(&[4, 5], v).unwrap());
        let e = bad.save(&path).unwrap_err();
        assert!(matches!(e, Error::NonFinite { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("`blocks.0.attn.qkv.weight`") && msg.contains("index 17"), "{msg}");
        assert!(msg.contains("model.safetensors"), "{msg}");
        assert!(bad.to_bytes_checked().is_err());
        // The raw serializer still writes what it is given (for round trips of foreign files).
        assert_eq!(
            bits(TensorFile::from_bytes(&bad.to_bytes(), "mem").unwrap().get("blocks.0.attn.qkv.weight").unwrap())[17],
            bad_value.to_bits()
        );
    }
    assert_eq!(TensorFile::load(&path).unwrap(), good, "the previous file is untouched");
    assert_eq!(good.to_bytes_checked().unwrap(), good.to_bytes());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `f` on another thread and fails if it takes longer than `secs` (a FIFO would block).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs)).expect("did not return in time")
}

#[test]
fn load_refuses_what_is_not_a_regular_file() {
    let dir = temp_dir("special");
    let e = TensorFile::load(&dir).unwrap_err().to_string();
    assert!(e.contains("not a regular file") && e.contains("directory"), "{e}");
    if std::path::Path::new("/dev/zero").exists() {
        let e = within(5, || TensorFile::load("/dev/zero").unwrap_err().to_string());
        assert!(e.contains("/dev/zero") && e.contains("character device"), "{e}");
    }
    // A named pipe with no writer: opening it would block forever.
    let fifo = dir.join("pipe.safetensors");
    if std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success()) {
        let f = fifo.clone();
        let e = within(5, move || TensorFile::load(&f).unwrap_err().to_string());
        assert!(e.contains("named pipe") && e.contains("pipe.safetensors"), "{e}");
        let f = fifo.clone();
        let e = within(5, move || RawFile::load(&f).unwrap_err().to_string());
        assert!(e.contains("named pipe"), "{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_huge_file_is_refused_from_its_header_without_reading_the_data() {
    let dir = temp_dir("huge");
    // 3 GB of zeros (sparse): the header length is 0, which is not a JSON object.
    let zeros = dir.join("zeros.safetensors");
    std::fs::File::create(&zeros).unwrap().set_len(3 << 30).unwrap();
    let t = std::time::Instant::now();
    let e = TensorFile::load(&zeros).unwrap_err().to_string();
    assert!(e.contains("does not start with '{'") && e.contains("zeros.safetensors"), "{e}");
    // A valid header declaring 4 bytes of data, then 3 GB: refused on the header's word.
    let lying = dir.join("lying.safetensors");
    let header = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    std::fs::write(&lying, raw(header, &[0; 4])).unwrap();
    std::fs::OpenOptions::new().write(true).open(&lying).unwrap().set_len(3 << 30).unwrap();
    let e = TensorFile::load(&lying).unwrap_err().to_string();
    assert!(e.contains("cover 4 bytes"), "{e}");
    assert!(t.elapsed().as_secs_f64() < 2.0, "took {:?}: the data was read", t.elapsed());
    // A header longer than the file, and a file shorter than the length field.
    std::fs::write(&lying, &raw(header, &[0; 4])[..30]).unwrap();
    assert!(TensorFile::load(&lying).unwrap_err().to_string().contains("truncated"));
    std::fs::write(&lying, [1, 2, 3]).unwrap();
    assert!(TensorFile::load(&lying).unwrap_err().to_string().contains("too short"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn raw_file_keeps_stored_dtypes() {
    let mut buf = vec![7u8, 255];
    buf.extend_from_slice(&(-3i16).to_le_bytes());
    buf.extend_from_slice(&40_000u16.to_le_bytes());
    buf.extend_from_slice(&(-1i8 as u8).to_le_bytes());
    buf.push(0);
    buf.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let header = r#"{"__metadata__":{"layout":"NHW"},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"I16","shape":[1],"data_offsets":[2,4]},"c":{"dtype":"U16","shape":[1],"data_offsets":[4,6]},"d":{"dtype":"I8","shape":[2],"data_offsets":[6,8]},"e":{"dtype":"U64","shape":[1],"data_offsets":[8,16]}}"#;
    let bytes = raw(header, &buf);
    let r = RawFile::from_bytes(&bytes, "mem").unwrap();
    assert_eq!(r.keys().collect::<Vec<_>>(), vec!["a", "b", "c", "d", "e"]);
    assert_eq!(r.metadata["layout"], "NHW");
    let a = r.view("a").unwrap();
    assert_eq!((a.dtype, a.shape, a.bytes, a.numel()), (Dtype::U8, &[2][..], &[7u8, 255][..], 2));
    assert_eq!(r.view("b").unwrap().dtype.element_f64(r.view("b").unwrap().bytes), -3.0);
    assert_eq!(Dtype::U16.element_f64(r.view("c").unwrap().bytes), 40_000.0);
    assert!(r.view("zz").is_none());
    // TensorFile keeps its own dtypes: the other integer types are RawFile's alone.
    let e = r.clone().into_tensor_file().unwrap_err().to_string();
    assert!(e.contains("unsupported dtype") && e.contains("RawFile"), "{e}");
    assert!(TensorFile::from_bytes(&bytes, "mem").is_err());
    let plain = raw(r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#, &[7, 255]);
    let f = RawFile::from_bytes(&plain, "mem").unwrap().into_tensor_file().unwrap();
    assert_eq!(f, TensorFile::from_bytes(&plain, "mem").unwrap());
    assert_eq!(f.get("a").unwrap().data(), &[7.0, 255.0]);
    // The file path gives the same.
    let dir = temp_dir("raw");
    std::fs::write(dir.join("r.safetensors"), &bytes).unwrap();
    let r2 = RawFile::load(dir.join("r.safetensors")).unwrap();
    assert_eq!(r2.view("a").unwrap().bytes, &[7, 255]);
    assert_eq!(r2.what(), dir.join("r.safetensors").display().to_string());
    assert!(TensorFile::load(dir.join("r.safetensors")).is_err());
    for d in Dtype::ALL {
        assert_eq!(Dtype::parse(d.name()), Some(d));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn same_file_and_output_checks() {
    let dir = temp_dir("same");
    let a = dir.join("a.safetensors");
    write_atomic(&a, b"x").unwrap();
    let b = dir.join("b.safetensors");
    write_atomic(&b, b"x").unwrap();
    assert!(same_file(&a, &a));
    assert!(same_file(&a, &dir.join(".").join("a.safetensors")));
    assert!(!same_file(&a, &b), "same content, different files");
    assert!(!same_file(&a, &dir.join("new.safetensors")), "a missing output is never an input");
    assert!(!same_file(&dir.join("x"), &dir.join("x")), "two missing paths are not the same file");
    #[cfg(unix)]
    {
        let link = dir.join("link.safetensors");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        assert!(same_file(&a, &link));
        let hard = dir.join("hard.safetensors");
        std::fs::hard_link(&a, &hard).unwrap();
        assert!(same_file(&hard, &a));
        let e = check_output(&link, &[&b, &a]).unwrap_err().to_string();
        assert!(e.contains("same file as input") && e.contains("a.safetensors") && e.contains("refusing"), "{e}");
    }
    check_output(&dir.join("new.safetensors"), &[&a, &b]).unwrap();
    assert!(check_output(&a, &[&a]).is_err());
    check_output(&a, &[]).unwrap();

    check_writable(&dir.join("new.safetensors")).unwrap();
    check_writable(&a).unwrap(); // replacing an existing file is fine
    let e = check_writable(&dir).unwrap_err().to_string();
    assert!(e.contains("directory"), "{e}");
    let e = check_writable(&dir.join("missing/out.safetensors")).unwrap_err().to_string();
    assert!(e.contains("does not exist") && e.contains("missing"), "{e}");
    let e = check_writable(&a.join("out.safetensors")).unwrap_err().to_string();
    assert!(e.contains("not a directory"), "{e}");
    if std::path::Path::new("/dev/null").exists() {
        let e = check_writable(std::path::Path::new("/dev/null")).unwrap_err().to_string();
        assert!(e.contains("character device"), "{e}");
        assert!(write_atomic(std::path::Path::new("/dev/null"), b"x").is_err(), "never replace a device");
    }
    // The probe leaves nothing behind.
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert!(names.iter().all(|n| !n.to_string_lossy().contains(".tmp.")), "{names:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn atomic_write_of_a_long_name_and_errors_name_the_target() {
    let dir = temp_dir("longname");
    // 250 bytes: valid for the file system, but `.<name>.tmp.<pid>.<n>` would not be.
    let name = format!("{}.safetensors", "é".repeat(59) + &"m".repeat(120));
    assert_eq!(name.len(), 250);
    let path = dir.join(&name);
    write_atomic(&path, b"long").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"long");
    write_atomic(&path, b"longer").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"longer");
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    // A failure names the target, not a temporary file.
    let target = dir.join("no-such-dir").join("model.safetensors");
    let e = write_atomic(&target, b"x").unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with(&target.display().to_string()), "{msg}");
    assert!(!msg.contains(".tmp."), "{msg}");
    let e = write_atomic_with(&dir.join("f.bin"), |_| Err(std::io::Error::other("disk full"))).unwrap_err().to_string();
    assert!(e.contains("f.bin") && e.contains("disk full") && !e.contains(".tmp."), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
