//! Helpers shared by several test files (`#[path = "common/mod.rs"] mod common;`).

#![allow(dead_code)]

use proptest::prelude::*;

fn layers() -> impl Strategy<Value = String> {
    proptest::sample::subsequence(vec!["qkv", "proj", "fc1", "fc2"], 1..=4).prop_map(|v| v.join("+"))
}

/// Method strings of every method, with random options in their valid ranges.
pub fn method_string() -> impl Strategy<Value = String> {
    let f = |lo: f32, hi: f32| (lo..hi).prop_map(|x| x.to_string());
    prop_oneof![
        Just("linear".to_string()),
        Just("full".to_string()),
        Just("bitfit".to_string()),
        (1usize..64, f(0.01, 100.0), layers()).prop_map(|(r, a, l)| format!("lora:r={r},alpha={a},layers={l}")),
        (1usize..64, f(-10.0, 10.0)).prop_map(|(d, s)| format!("adapter:dim={d},scale={s}")),
        (1usize..50).prop_map(|p| format!("vpt:prompts={p}")),
        layers().prop_map(|l| format!("ssf:layers={l}")),
        (
            proptest::collection::vec((prop::sample::select(vec![1usize, 2, 4, 8, 16, 32]), any::<bool>()), 1..6),
            any::<bool>(),
            f(0.0, 0.99),
            prop_oneof![Just("zero".to_string()), f(1e-6, 1.0)],
            layers(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(branches, all_r, dp, init, l, fnorm, fbias)| {
                let g: Vec<String> =
                    branches.iter().map(|(g, r)| format!("{g}{}", if *r { "r" } else { "" })).collect();
                let mut s = format!("consolidator:g={},dp={dp},init={init},layers={l}", g.join("+"));
                for (on, flag) in [(all_r, ",reorder"), (fnorm, ",frozen-norms"), (fbias, ",frozen-biases")] {
                    if on {
                        s.push_str(flag);
                    }
                }
                s
            }),
    ]
}
