//! Data: the shipped files, hostile inputs to the readers, Dataset checks, the transfer suite.

use consolidator::data::fuzz::{fuzz_idx, fuzz_optdigits};
use consolidator::data::idx::Idx;
use consolidator::data::optdigits::parse_optdigits;
use consolidator::data::suite::{build_task, Task, TaskData, TEST_SIZE, TRAIN_SIZE, VAL_SIZE};
use consolidator::data::{load_mnist, load_optdigits, Dataset};
use consolidator::{Error, Tensor};
use flate2::write::GzEncoder;
use proptest::prelude::*;
use std::collections::HashSet;
use std::io::Write;
use std::sync::OnceLock;

/// The repository's `data/` (tests may use the build-time path; the library may not).
fn shipped_data_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

fn mnist_test() -> &'static Dataset {
    static D: OnceLock<Dataset> = OnceLock::new();
    D.get_or_init(|| load_mnist(shipped_data_dir().join("mnist"), false).unwrap())
}

fn optdigits() -> &'static Dataset {
    static D: OnceLock<Dataset> = OnceLock::new();
    D.get_or_init(|| load_optdigits(shipped_data_dir().join("optdigits/optdigits-test.csv.gz")).unwrap())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn counts(labels: &[usize], k: usize) -> Vec<usize> {
    let mut c = vec![0; k];
    for &l in labels {
        c[l] += 1;
    }
    c
}

fn format_msg(r: consolidator::Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(e @ Error::Format { .. }) => e.to_string(),
        other => panic!("expected Error::Format, got {other:?}"),
    }
}

fn small_idx_images() -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 3];
    b.extend((0..18).map(|v| v as u8 * 10));
    b
}

#[test]
fn shipped_mnist_test_set() {
    let ds = mnist_test();
    assert_eq!(ds.len(), 10_000);
    assert_eq!(ds.images.shape(), &[10_000, 1, 28, 28]);
    ds.validate(1, 28, 28, 10).unwrap();
    assert_eq!(counts(&ds.labels, 10), vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
    let (lo, hi) = ds.images.data().iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    assert_eq!((lo, hi), (0.0, 1.0));
    assert_eq!(ds.labels[..5], [7, 2, 1, 0, 4]);
}

#[test]
fn shipped_optdigits() {
    let ds = optdigits();
    assert_eq!(ds.len(), 1797);
    assert_eq!(ds.images.shape(), &[1797, 1, 8, 8]);
    assert_eq!(counts(&ds.labels, 10), vec![178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
    assert!(ds.images.data().iter().all(|v| (0.0..=1.0).contains(v)));
    // First row of the file: 0,0,5,13,9,1,0,0,... label 0.
    assert_eq!(ds.images.data()[2], 5.0 / 16.0);
    assert_eq!(ds.labels[0], 0);
}

#[test]
fn missing_mnist_names_the_path() {
    let err = load_mnist(shipped_data_dir().join("mnist"), true).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("train-images-idx3-ubyte"), "{err}");
}

#[test]
fn idx_plain_and_gzip_agree() {
    let raw = small_idx_images();
    let a = Idx::parse_images(&raw, "raw").unwrap();
    let b = Idx::parse_images(&gzip(&raw), "gz").unwrap();
    assert_eq!(a, b);
    assert_eq!(a.dims, vec![2, 3, 3]);
    assert!(Idx::parse_labels(&raw, "raw").is_err(), "images are not labels");
}

#[test]
fn truncated_idx_is_a_clear_error() {
    let raw = small_idx_images();
    for n in 0..raw.len() {
        let msg = format_msg(Idx::parse_images(&raw[..n], "cut.idx"));
        assert!(msg.contains("cut.idx"), "{msg}");
        if n >= 16 {
            assert!(msg.contains("truncated"), "{msg}");
        }
        // The gzip'd truncation too (of the decompressed content).
        assert!(Idx::parse_images(&gzip(&raw[..n]), "cut.idx.gz").is_err());
    }
    // Truncated gzip stream.
    let gz = gzip(&raw);
    for n in 2..gz.len() {
        assert!(Idx::parse_images(&gz[..n], "cut.gz").is_err(), "{n}");
    }
    let mut longer = raw.clone();
    longer.push(0);
    assert!(format_msg(Idx::parse_images(&longer, "long.idx")).contains("trailing"));
}

#[test]
fn hostile_idx_headers() {
    assert!(format_msg(Idx::parse(&[1, 0, 8, 1, 0, 0, 0, 0], "x")).contains("magic"));
    assert!(format_msg(Idx::parse(&[0, 0, 0x0d, 1, 0, 0, 0, 0], "x")).contains("element type"));
    assert!(format_msg(Idx::parse(&[0, 0, 8, 0], "x")).contains("dimensions"));
    // Huge declared dimensions: refused before any allocation, plain and gzip'd.
    let huge = [0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2];
    assert!(format_msg(Idx::parse(&huge, "x")).contains("limit"));
    assert!(format_msg(Idx::parse(&gzip(&huge), "x")).contains("limit"));
    // A gzip bomb: declares 10 bytes, decompresses to 10 MB of zeros.
    let mut bomb = vec![0, 0, 8, 1, 0, 0, 0, 10];
    bomb.extend(std::iter::repeat_n(0, 10 << 20));
    let msg = format_msg(Idx::parse(&gzip(&bomb), "bomb.gz"));
    assert!(msg.contains("trailing"), "{msg}");
}

#[test]
fn gzip_of_garbage_is_an_error() {
    let msg = format_msg(Idx::parse(&gzip(b"definitely not an idx file"), "g.gz"));
    assert!(msg.contains("magic"), "{msg}");
    let mut bad = gzip(&small_idx_images());
    let n = bad.len();
    bad[n - 6] ^= 0xff; // corrupt the CRC
    assert!(Idx::parse(&bad, "crc.gz").is_err());
    let garbage = [0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    assert!(format_msg(Idx::parse(&garbage, "g.gz")).contains("gzip"));
    assert!(parse_optdigits(&garbage, "g.gz").is_err());
}

#[test]
fn optdigits_errors_name_line_and_column() {
    let good = format!("{},3\n", vec!["0"; 64].join(","));
    let two = format!("{good}\n{good}");
    assert_eq!(parse_optdigits(two.as_bytes(), "ok").unwrap().len(), 2);
    assert_eq!(parse_optdigits(&gzip(two.as_bytes()), "ok").unwrap().len(), 2);
    let bad_pixel = format!("{good}{},17,3\n", vec!["0"; 63].join(","));
    let msg = format_msg(parse_optdigits(bad_pixel.as_bytes(), "o.csv"));
    assert!(msg.contains("line 2, column 64") && msg.contains("17"), "{msg}");
    let bad_label = format!("{},10\n", vec!["0"; 64].join(","));
    let msg = format_msg(parse_optdigits(bad_label.as_bytes(), "o.csv"));
    assert!(msg.contains("line 1, column 65") && msg.contains("label"), "{msg}");
    let msg = format_msg(parse_optdigits(b"1,2,x\n", "o.csv"));
    assert!(msg.contains("line 1, column 3"), "{msg}");
    let msg = format_msg(parse_optdigits(b"1,2,3\n", "o.csv"));
    assert!(msg.contains("3 columns"), "{msg}");
    let msg = format_msg(parse_optdigits(b"\xff\xfe", "o.csv"));
    assert!(msg.contains("UTF-8"), "{msg}");
}

#[test]
fn optdigits_gzip_bomb_and_missing_file() {
    let bomb = gzip(&vec![b'\n'; (64 << 20) + 10]);
    let msg = format_msg(parse_optdigits(&bomb, "bomb.csv.gz"));
    assert!(msg.contains("more than"), "{msg}");
    let err = load_optdigits(shipped_data_dir().join("optdigits/missing.csv")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("missing.csv"));
}

#[test]
fn dataset_validation() {
    let images = Tensor::zeros(&[3, 1, 4, 4]);
    assert!(matches!(Dataset::new(images.clone(), vec![0, 1], 2), Err(Error::Data { .. })));
    assert!(Dataset::new(images.clone(), vec![0, 1, 2], 2).is_err());
    let ds = Dataset::new(images.clone(), vec![0, 1, 1], 2).unwrap();
    ds.validate(1, 4, 4, 2).unwrap();
    ds.validate(1, 4, 4, 5).unwrap();
    let e = ds.validate(1, 28, 28, 2).unwrap_err().to_string();
    assert!(e.contains("4×4") && e.contains("28×28"), "{e}");
    let e = ds.validate(3, 4, 4, 2).unwrap_err().to_string();
    assert!(e.contains("channel"), "{e}");
    let e = ds.validate(1, 4, 4, 1).unwrap_err().to_string();
    assert!(e.contains("label 1") && e.contains("out of range"), "{e}");
    // Labels edited after construction are caught too.
    let mut broken = ds.clone();
    broken.labels[2] = 7;
    let e = broken.validate(1, 4, 4, 2).unwrap_err();
    assert!(matches!(e, Error::Data { .. }) && e.to_string().contains("label 7"), "{e}");
    let empty = Dataset::new(Tensor::zeros(&[0, 1, 4, 4]), vec![], 2).unwrap();
    assert!(empty.validate(1, 4, 4, 2).unwrap_err().to_string().contains("empty"));
}

#[test]
fn subset_normalize_and_batches() {
    let images = Tensor::new(&[5, 1, 1, 2], (0..10).map(|v| v as f32).collect()).unwrap();
    let mut ds = Dataset::new(images, vec![0, 1, 2, 0, 1], 3).unwrap();
    let sub = ds.subset(&[4, 0, 4]).unwrap();
    assert_eq!(sub.images.data(), &[8., 9., 0., 1., 8., 9.]);
    assert_eq!(sub.labels, vec![1, 0, 1]);
    assert!(ds.subset(&[5]).is_err());

    let batches: Vec<_> = ds.batches(2, None, false).collect();
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[2].0.shape(), &[1, 1, 1, 2]);
    assert_eq!(batches[0].1, vec![0, 1]);
    assert_eq!(ds.batches(2, None, true).len(), 2);
    // Shuffled: a permutation, deterministic per seed, and not the identity for some seed.
    let order = |seed| -> Vec<f32> {
        ds.batches(2, Some(seed), false)
            .flat_map(|(x, _)| x.data().iter().step_by(2).copied().collect::<Vec<_>>())
            .collect()
    };
    let a = order(3);
    assert_eq!(a, order(3));
    let mut sorted = a.clone();
    sorted.sort_by(f32::total_cmp);
    assert_eq!(sorted, vec![0., 2., 4., 6., 8.]);
    assert!((0..20).any(|s| order(s) != vec![0., 2., 4., 6., 8.]));
    // Labels follow their images.
    for (x, y) in ds.batches(2, Some(9), false) {
        for (i, &l) in y.iter().enumerate() {
            let v = x.data()[2 * i] as usize / 2;
            assert_eq!(l, [0, 1, 2, 0, 1][v]);
        }
    }

    ds.normalize(1.0, 2.0).unwrap();
    assert_eq!(ds.images.data()[..3], [-0.5, 0.0, 0.5]);
    assert!(ds.normalize(0.0, 0.0).is_err());
}

fn check_task(task: Task, data: &TaskData) {
    let k = task.num_classes();
    assert_eq!(data.train.len(), TRAIN_SIZE, "{task}");
    assert_eq!(data.val.len(), VAL_SIZE, "{task}");
    let test_len = if task == Task::Optdigits { 797 } else { TEST_SIZE };
    assert_eq!(data.test.len(), test_len, "{task}");
    for ds in [&data.train, &data.val, &data.test] {
        ds.validate(1, 28, 28, k).unwrap();
        assert_eq!(ds.num_classes, k);
        assert!(ds.images.data().iter().all(|v| (0.0..=1.0).contains(v)), "{task}");
    }
    // Every class appears in training.
    assert!(counts(&data.train.labels, k).iter().all(|&c| c > 0), "{task}");
    // Train/val and test sources are disjoint; no source is reused within a split.
    let flat = |s: &[Vec<usize>]| s.iter().flatten().copied().collect::<Vec<_>>();
    let mut fit = flat(&data.sources.train);
    fit.extend(flat(&data.sources.val));
    let test = flat(&data.sources.test);
    let fit_set: HashSet<_> = fit.iter().copied().collect();
    let test_set: HashSet<_> = test.iter().copied().collect();
    assert_eq!(fit_set.len(), fit.len(), "{task}: a source reused in train/val");
    assert_eq!(test_set.len(), test.len(), "{task}: a source reused in test");
    assert!(fit_set.is_disjoint(&test_set), "{task}: train and test share sources");
    if task != Task::Optdigits {
        assert!(fit.iter().all(|&i| i < 5000) && test.iter().all(|&i| i >= 5000));
    }
    assert_eq!(data.sources.train.len(), TRAIN_SIZE);
    assert_eq!(data.sources.test.len(), test_len);
}

#[test]
fn every_task_builds_deterministically() {
    for task in Task::all() {
        let a = build_task(task, mnist_test(), optdigits(), 7).unwrap();
        check_task(task, &a);
        let b = build_task(task, mnist_test(), optdigits(), 7).unwrap();
        assert!(a == b, "{task}: two builds with one seed differ");
        let c = build_task(task, mnist_test(), optdigits(), 8).unwrap();
        assert!(a.train.images != c.train.images, "{task}: the seed is ignored");
        assert!(!a.description.is_empty());
    }
}

#[test]
fn task_labels_match_their_construction() {
    let m = mnist_test();
    let per = 28 * 28;
    let src_img = |i: usize| &m.images.data()[i * per..(i + 1) * per];
    // Orientation: rotating the source by the label gives the example.
    let o = build_task(Task::Orientation, m, optdigits(), 1).unwrap();
    for j in 0..20 {
        let k = o.train.labels[j];
        let s = o.sources.train[j][0];
        let rotated = consolidator::data::image::rotate90(src_img(s), 28, k);
        assert_eq!(&o.train.images.data()[j * per..(j + 1) * per], &rotated[..]);
    }
    // Location: the ink lies in the labelled 12×12 window.
    let l = build_task(Task::Location, m, optdigits(), 1).unwrap();
    for j in 0..50 {
        let cell = l.train.labels[j];
        let (top, left) = (8 * (cell / 3), 8 * (cell % 3));
        let img = &l.train.images.data()[j * per..(j + 1) * per];
        for y in 0..28 {
            for x in 0..28 {
                let inside = (top..top + 12).contains(&y) && (left..left + 12).contains(&x);
                assert!(inside || img[y * 28 + x] == 0.0, "ink outside cell {cell}");
            }
        }
    }
    // Counting: the label is the number of source digits; shift: labels are the digits.
    let c = build_task(Task::Counting, m, optdigits(), 1).unwrap();
    for (j, s) in c.sources.test.iter().enumerate() {
        assert_eq!(s.len(), c.test.labels[j] + 1);
    }
    assert_eq!(counts(&c.test.labels, 4), vec![250; 4]);
    let s = build_task(Task::Shift, m, optdigits(), 1).unwrap();
    for (j, src) in s.sources.train.iter().enumerate() {
        assert_eq!(s.train.labels[j], m.labels[src[0]]);
    }
    let mean: f32 = s.train.images.data().iter().sum::<f32>() / (800 * per) as f32;
    assert!(mean > 0.6, "inverted digits are mostly bright, mean {mean}");
    // optdigits: labels are the rows' labels.
    let d = build_task(Task::Optdigits, m, optdigits(), 1).unwrap();
    for (j, src) in d.sources.test.iter().enumerate() {
        assert_eq!(d.test.labels[j], optdigits().labels[src[0]]);
    }
}

#[test]
fn task_names_and_bad_inputs() {
    for t in Task::all() {
        assert_eq!(t.name().parse::<Task>().unwrap(), t);
        assert_eq!(t.to_string(), t.name());
    }
    assert_eq!("Counting".parse::<Task>().unwrap(), Task::Counting);
    let e = "rotation".parse::<Task>().unwrap_err().to_string();
    assert!(e.contains("orientation"), "{e}");
    // A too-small MNIST set is refused with a clear message, not a panic.
    let small = mnist_test().subset(&(0..100).collect::<Vec<_>>()).unwrap();
    let e = build_task(Task::Orientation, &small, optdigits(), 0).unwrap_err();
    assert!(matches!(e, Error::Data { .. }), "{e:?}");
    let e = build_task(Task::Optdigits, mnist_test(), &small, 0).unwrap_err();
    assert!(e.to_string().contains("[M, 1, 8, 8]"), "{e}");
}

#[test]
fn fuzz_entry_points_on_seeds() {
    let raw = small_idx_images();
    for n in 0..=raw.len() {
        fuzz_idx(&raw[..n]);
        fuzz_idx(&gzip(&raw[..n]));
    }
    fuzz_optdigits(format!("{},3\n", vec!["16"; 64].join(",")).as_bytes());
    fuzz_optdigits(b"");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        fuzz_idx(&bytes);
        fuzz_optdigits(&bytes);
    }

    #[test]
    fn idx_bit_flips_never_panic(flips in proptest::collection::vec((any::<usize>(), 0u8..8), 1..4), gz in any::<bool>()) {
        let mut bytes = small_idx_images();
        if gz {
            bytes = gzip(&bytes);
        }
        let n = bytes.len();
        for (pos, bit) in flips {
            bytes[pos % n] ^= 1 << bit;
        }
        fuzz_idx(&bytes);
    }
}
