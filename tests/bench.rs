//! The benchmark plumbing: workload names resolve, the PyTorch side-by-side matches like with
//! like and computes the ratios the goals are stated in.

use consolidator::bench::gemm::{GemmReport, GemmRow};
use consolidator::bench::versus::compare;
use consolidator::bench::vit::{run_one, workloads, VitReport, VitRow};
use consolidator::io::json::Json;

#[test]
fn unknown_workloads_are_errors() {
    for name in ["", "vit_tiny_patch16_224 forward bx", "train nope full", "train vit_tiny_224_b16 half", "x y z"] {
        assert!(run_one(name, 1).is_err(), "{name}");
    }
    assert!(workloads(false).len() > workloads(true).len());
    // The small model's workloads (issue 16), in both lists.
    for w in [
        "vit_mnist_tiny forward b1",
        "vit_mnist_tiny forward b128",
        "train vit_mnist_tiny_b32 full",
        "train vit_mnist_tiny_b32 consolidator",
        "train vit_mnist_tiny_b128 full",
        "train vit_mnist_tiny_b128 consolidator",
    ] {
        assert!(workloads(true).iter().any(|x| x == w), "{w}");
    }
}

#[test]
fn the_small_model_workloads_run_and_report_images_per_second() {
    let rows = run_one("train vit_mnist_tiny_b32 consolidator", 0).unwrap();
    assert_eq!(rows[0].batch, 32);
    assert!((rows[0].images_per_s() - 32.0 / rows[0].ms * 1e3).abs() < 1e-9);
    assert!(rows[0].to_json().contains("\"images_per_s\""));
    let (ops, wall, _) = consolidator::bench::vit::profile_one("vit_mnist_tiny forward b1", 2).unwrap();
    assert!(wall > 0.0 && ops.iter().any(|(op, t)| *op == "attention" && t.calls == 8));
}

#[test]
fn the_small_training_workload_runs_with_its_memory_reported() {
    let rows = run_one("train vit_c32_p4_d192_l6_b64 consolidator", 0).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].batch, 64);
    assert!(rows[0].ms > 0.0 && (0.0..=1.0).contains(&rows[0].gemm_share));
    if cfg!(target_os = "linux") {
        assert!(consolidator::bench::vit::peak_rss_mb().unwrap() > 1.0);
    }
}

#[test]
fn versus_torch_pairs_like_with_like() {
    let torch = Json::parse_str(
        r#"{"sgemm":[{"m":64,"k":32,"n":16,"gflops_best":200.0,"gflops_nn_best":250.0}],
            "vit_fwd":[{"model":"vit_tiny_patch16_224","batch":8,"ms":100.0,"peak_rss_mb":900.0},
                       {"model":"vit_mnist_tiny","batch":128,"ms":64.0}],
            "train":[{"case":"vit_c32_p4_d192_l6_b64","mode":"consolidator","ms":400.0,"peak_rss_mb":1300.0},
                     {"case":"vit_mnist_tiny_b128","mode":"full","ms":80.0}]}"#,
        "torch",
    )
    .unwrap();
    let gemm = GemmReport {
        threads: 2,
        peak_gflops: 100.0,
        rows: vec![
            GemmRow { m: 64, k: 32, n: 16, gflops: 150.0, ratio_to_peak: 1.5 },
            GemmRow { m: 1, k: 1, n: 1, gflops: 1.0, ratio_to_peak: 0.01 },
        ],
    };
    let row = |name: &str, batch, ms, rss| VitRow { name: name.into(), batch, ms, gemm_share: 0.5, rss_mb: rss };
    let vit = VitReport {
        rows: vec![
            row("vit_tiny_patch16_224 forward b8", 8, 120.0, Some(60.0)),
            row("vit_tiny_patch16_224 forward b1", 1, 30.0, None),
            row("train vit_c32_p4_d192_l6_b64 consolidator", 64, 300.0, Some(325.0)),
            row("vit_mnist_tiny forward b128", 128, 32.0, None),
            row("train vit_mnist_tiny_b128 full", 128, 50.0, None),
        ],
    };
    let v = compare(&torch, Some(&gemm), None, Some(&vit));
    let get = |w: &str| v.iter().find(|r| r.work == w).unwrap_or_else(|| panic!("{w} missing: {v:?}"));
    assert!((get("sgemm 64×32×16").ratio - 0.75).abs() < 1e-12);
    // MKL's row-major product, shown beside the like-for-like one with no goal.
    let nn = get("sgemm 64×32×16, PyTorch's B row-major");
    assert!((nn.ratio - 0.6).abs() < 1e-12 && nn.goal == "reference");
    assert!((get("vit_tiny_patch16_224 forward b8").ratio - 1.2).abs() < 1e-12);
    assert!((get("vit_tiny_patch16_224 forward b8 peak RSS").ratio - 15.0).abs() < 1e-12);
    assert!((get("train vit_c32_p4_d192_l6_b64 consolidator").ratio - 0.75).abs() < 1e-12);
    assert!((get("train vit_c32_p4_d192_l6_b64 consolidator peak RSS").ratio - 4.0).abs() < 1e-12);
    // The small model is compared in images per second, higher is better.
    let m = get("vit_mnist_tiny forward b128");
    assert_eq!((m.unit, m.ours, m.torch), ("img/s", 4000.0, 2000.0));
    assert!((m.ratio - 2.0).abs() < 1e-12);
    assert!((get("train vit_mnist_tiny_b128 full").ratio - 1.6).abs() < 1e-12);
    // Workloads PyTorch did not run are left out, not invented.
    assert_eq!(v.len(), 8, "{v:?}");
}

#[test]
fn rounds_keep_each_sides_best_and_recompute_the_ratio() {
    use consolidator::bench::versus::{best_of_rounds, VersusRow};
    let row = |work: &str, ours, torch, unit, ours_over_torch| VersusRow {
        work: work.into(),
        ours,
        torch,
        unit,
        ratio: f64::NAN,
        ours_over_torch,
        goal: "",
    };
    let r1 = vec![
        row("gemm", 100.0, 300.0, "GFLOP/s", true),
        row("fwd", 50.0, 20.0, "ms", true),
        row("small", 900.0, 500.0, "img/s", true),
    ];
    let r2 = vec![
        row("gemm", 150.0, 250.0, "GFLOP/s", true),
        row("fwd", 40.0, 25.0, "ms", true),
        row("small", 800.0, 600.0, "img/s", true),
    ];
    let b = best_of_rounds(&[r1, r2]);
    assert_eq!((b[2].ours, b[2].torch), (900.0, 600.0));
    assert_eq!((b[0].ours, b[0].torch), (150.0, 300.0));
    assert!((b[0].ratio - 0.5).abs() < 1e-12);
    assert_eq!((b[1].ours, b[1].torch), (40.0, 20.0));
    assert!((b[1].ratio - 2.0).abs() < 1e-12);
}

#[test]
fn interleaved_medians_run_each_workload_in_turn() {
    use consolidator::bench::median_ms_interleaved;
    let order = std::cell::RefCell::new(Vec::new());
    let (mut a, mut b) = (
        || {
            order.borrow_mut().push('a');
            std::thread::sleep(std::time::Duration::from_millis(2));
            Ok(())
        },
        || {
            order.borrow_mut().push('b');
            Ok(())
        },
    );
    let ms = median_ms_interleaved(3, &mut [&mut a, &mut b]).unwrap();
    assert_eq!(ms.len(), 2);
    assert!(ms[0] >= 2.0, "a sleep of 2 ms cannot take less: {ms:?}");
    // One warm-up round, then three timed rounds, alternating.
    assert_eq!(order.borrow().iter().collect::<String>(), "abababab");
    let mut bad = || Err(consolidator::Error::invalid("bench", "boom"));
    assert!(median_ms_interleaved(3, &mut [&mut bad]).is_err());
}
