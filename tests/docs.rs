//! The long-form pages cannot drift from the code: every number of their worked examples is
//! recomputed here with the library.
//!
//! A page marks each checked number with an HTML comment (invisible when rendered):
//!
//! - `<!-- check: NAME = VALUE -->` — an inline value (a number or a comma-separated list). The
//!   same text must also appear in the visible prose within a few lines of the comment, so the
//!   reader sees exactly what is checked.
//! - `<!-- check: NAME -->` followed by a fenced block — the block's content is the value (a
//!   matrix of numbers, or a support drawing of `·`, `×`, `a`, `b`).
//!
//! `NAME` is a kind and its arguments (`union O=8 I=8 g=2,4 reorder=on,on`) or the name of a
//! quantity of a worked example (`merge4 S`). Every marked check must be understood here: an
//! unknown name fails the test, so a page cannot carry an unchecked marker either.

use consolidator::algebra::{Affine, BlockDiagonal, Dense, LowRank, Pattern, ScaleShift};
use consolidator::kernels::grouped::GroupSpec;
use consolidator::nn::{Module, VisionTransformer, VitConfig};
use consolidator::peft::{BranchConfig, ConsolidatorConfig, Method};
use std::collections::BTreeMap;
use std::path::Path;

/// One marked check: its name, its value text, and the visible text around it.
#[derive(Debug)]
struct Check {
    line: usize,
    name: String,
    value: String,
    /// Fenced-block value (true) or inline value (false).
    block: bool,
}

fn read_page(page: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs").join(page))
        .unwrap_or_else(|e| panic!("docs/{page}: {e}"))
}

/// The marked checks of a page, each inline value verified to be visible nearby.
fn parse_checks(page: &str, text: &str) -> Vec<Check> {
    let lines: Vec<&str> = text.lines().collect();
    let mut checks = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(body) = line.trim().strip_prefix("<!-- check:").and_then(|r| r.strip_suffix("-->")) else {
            continue;
        };
        let body = body.trim();
        if let Some((name, value)) = body.split_once(" = ") {
            let (name, value) = (name.trim().to_string(), value.trim().to_string());
            // The value must be visible: in a non-comment line at most 5 lines away.
            let lo = n.saturating_sub(5);
            let hi = (n + 6).min(lines.len());
            let visible = lines[lo..hi].iter().any(|l| !l.trim_start().starts_with("<!--") && l.contains(&value));
            assert!(visible, "docs/{page}:{}: `{value}` ({name}) is not written in the text near its check", n + 1);
            checks.push(Check { line: n + 1, name, value, block: false });
        } else {
            // The next non-blank line opens a fenced block.
            let mut k = n + 1;
            while k < lines.len() && lines[k].trim().is_empty() {
                k += 1;
            }
            assert!(
                k < lines.len() && lines[k].trim_start().starts_with("```"),
                "docs/{page}:{}: check `{body}` has no value and no fenced block after it",
                n + 1
            );
            let end = (k + 1..lines.len())
                .find(|&e| lines[e].trim_start().starts_with("```"))
                .unwrap_or_else(|| panic!("docs/{page}:{}: unclosed block", k + 1));
            checks.push(Check {
                line: n + 1,
                name: body.to_string(),
                value: lines[k + 1..end].join("\n"),
                block: true,
            });
        }
    }
    checks
}

/// `"10,692"` → 10692.0; `"0.3545"` → 0.3545.
fn number(s: &str) -> f64 {
    s.trim().replace(',', "").parse().unwrap_or_else(|_| panic!("`{s}` is not a number"))
}

fn list(s: &str) -> Vec<f64> {
    s.split(',').map(number).collect()
}

/// A fenced matrix: rows of whitespace-separated numbers.
fn matrix(s: &str) -> Vec<Vec<f64>> {
    s.lines().filter(|l| !l.trim().is_empty()).map(|l| l.split_whitespace().map(number).collect()).collect()
}

/// Named arguments `k=v` of a check name.
fn args(name: &str) -> BTreeMap<&str, &str> {
    name.split_whitespace().filter_map(|w| w.split_once('=')).collect()
}

fn arg_usize(a: &BTreeMap<&str, &str>, k: &str) -> usize {
    a.get(k).unwrap_or_else(|| panic!("missing {k}=")).parse().unwrap()
}

/// The branch specs of `O= I= g=a,b reorder=on,off` (reorder defaults to off).
fn specs(a: &BTreeMap<&str, &str>) -> Vec<GroupSpec> {
    let (o, i) = (arg_usize(a, "O"), arg_usize(a, "I"));
    let gs: Vec<usize> = a["g"].split(',').map(|g| g.parse().unwrap()).collect();
    let reorder: Vec<bool> = match a.get("reorder") {
        Some(r) => r.split(',').map(|f| f == "on").collect(),
        None => vec![false; gs.len()],
    };
    assert_eq!(gs.len(), reorder.len(), "one reorder flag per branch");
    gs.iter().zip(reorder).map(|(&g, r)| GroupSpec::new(i, o, g, r).unwrap()).collect()
}

/// The support of each spec as a set of (row, column).
fn support(spec: &GroupSpec) -> Vec<Vec<bool>> {
    let p = Pattern::Grouped(vec![*spec]);
    (0..spec.out_dim)
        .map(|o| {
            let row = p.row(o);
            (0..spec.in_dim).map(|c| row.contains(&c)).collect()
        })
        .collect()
}

/// A dense `Affine` from a fenced matrix and a bias.
fn dense(m: &[Vec<f64>], bias: Vec<f64>) -> Affine {
    let (o, i) = (m.len(), m[0].len());
    Affine::Dense(Dense { out_dim: o, in_dim: i, weight: m.concat(), bias })
}

fn rows_of(d: &Dense) -> Vec<Vec<f64>> {
    d.weight.chunks(d.in_dim).map(<[f64]>::to_vec).collect()
}

/// Counts of a ViT preset, computed from small models of the same width (one and two blocks),
/// so no 86-million-parameter model is built: `(backbone params without the head, branch
/// weights, branch params)` for one consolidator branch with `g` groups.
fn vit_counts(preset: &str, g: usize) -> (usize, usize, usize) {
    let full = VitConfig::preset(preset).unwrap();
    let no_head = |depth: usize| {
        let cfg = VitConfig { depth, ..full.clone() };
        let vit = VisionTransformer::new(&cfg, 0).unwrap();
        vit.named_params().iter().filter(|(k, _)| !k.starts_with("head.")).map(|(_, p)| p.numel()).sum::<usize>()
    };
    let (one, two) = (no_head(1), no_head(2));
    let per_block = two - one;
    let backbone = one - per_block + full.depth * per_block;
    let mut vit = VisionTransformer::new(&VitConfig { depth: 1, ..full.clone() }, 0).unwrap();
    let cfg = ConsolidatorConfig {
        branches: vec![BranchConfig { groups: g, reorder: false }],
        ..ConsolidatorConfig::released(full.embed_dim)
    };
    Method::new(cfg).apply(&mut vit, 10, 0).unwrap();
    let (mut weights, mut params) = (0, 0);
    for (k, p) in vit.named_params() {
        if k.contains(".consolidator.") {
            params += p.numel();
            if k.ends_with(".weight") {
                weights += p.numel();
            }
        }
    }
    (backbone, full.depth * weights, full.depth * params)
}

fn assert_matrix(page: &str, c: &Check, want: &[Vec<f64>]) {
    let got = matrix(&c.value);
    assert_eq!(got, want, "docs/{page}:{}: `{}` shows\n{}\nbut the library computes {want:?}", c.line, c.name, c.value);
}

fn assert_list(page: &str, c: &Check, want: &[f64]) {
    let got = list(&c.value);
    assert_eq!(got.len(), want.len(), "docs/{page}:{}: `{}` length", c.line, c.name);
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() < 1e-9,
            "docs/{page}:{}: `{}` is {}, the library computes {want:?}",
            c.line,
            c.name,
            c.value
        );
    }
}

/// Checks of the grouped-connection kinds (`union`, `trained`, `support`, `src`, `vit-*`).
/// Returns false when the name is not one of them.
fn check_generic(page: &str, c: &Check) -> bool {
    let kind = c.name.split_whitespace().next().unwrap();
    let a = args(&c.name);
    let at = format!("docs/{page}:{} `{}`", c.line, c.name);
    match kind {
        "union" => {
            let s = specs(&a);
            let nnz = Pattern::Grouped(s.clone()).nnz(s[0].out_dim);
            assert_eq!(nnz as f64, number(&c.value), "{at}: the union support has {nnz} entries");
            // The stage-1 sum of the branches stores exactly that many values.
            let branches: Vec<Affine> = s
                .iter()
                .map(|&sp| {
                    Affine::BlockDiagonal(
                        BlockDiagonal::new(sp, vec![1.0; sp.weight_len()], vec![0.0; sp.out_dim]).unwrap(),
                    )
                })
                .collect();
            let sum = branches[1..].iter().fold(branches[0].clone(), |acc, b| acc.add(b).unwrap());
            if s.len() > 1 {
                assert_eq!(sum.nnz(), nnz, "{at}: `Affine::add` stores the union");
            }
        }
        "trained" => {
            let n: usize = specs(&a).iter().map(GroupSpec::weight_len).sum();
            assert_eq!(n as f64, number(&c.value), "{at}: the branches train {n} weights");
        }
        "support" => {
            let s = specs(&a);
            assert!(c.block && s.len() <= 2, "{at}: a support drawing of one or two branches");
            let sup: Vec<Vec<Vec<bool>>> = s.iter().map(support).collect();
            let drawn: Vec<Vec<&str>> = c.value.lines().map(|l| l.split_whitespace().collect()).collect();
            assert_eq!(drawn.len(), s[0].out_dim, "{at}: one drawn row per output");
            for (o, row) in drawn.iter().enumerate() {
                assert_eq!(row.len(), s[0].in_dim, "{at}: row {o} has one cell per input");
                for (col, cell) in row.iter().enumerate() {
                    let inside: Vec<bool> = sup.iter().map(|m| m[o][col]).collect();
                    let want = match (inside[0], inside.get(1).copied().unwrap_or(false), s.len()) {
                        (false, false, _) => "·",
                        (true, _, 1) => "×",
                        (true, true, _) => "×",
                        (true, false, _) => "a",
                        (false, true, _) => "b",
                    };
                    assert_eq!(*cell, want, "{at}: cell (row {o}, column {col})");
                }
            }
        }
        "src" => {
            let (i, g) = (arg_usize(&a, "I"), arg_usize(&a, "g"));
            let spec = GroupSpec::new(i, i, g, true).unwrap();
            let src: Vec<f64> = (0..i).map(|j| spec.src(j) as f64).collect();
            assert_list(page, c, &src);
            for j in 0..i {
                assert_eq!(spec.pos(spec.src(j)), j, "{at}: pos inverts src");
            }
        }
        "vit-params" | "vit-branch-weights" | "vit-branch-params" | "vit-branch-percent" => {
            let g = a.get("g").map_or(2, |g| g.parse().unwrap());
            let (backbone, weights, params) = vit_counts(a["preset"], g);
            let got = match kind {
                "vit-params" => backbone as f64,
                "vit-branch-weights" => weights as f64,
                "vit-branch-params" => params as f64,
                _ => (100.0 * params as f64 / backbone as f64 * 1e4).round() / 1e4,
            };
            assert_eq!(got, number(&c.value), "{at}: the library computes {got}");
        }
        "code" => {} // checked by `code_quoted_in_the_pages_is_the_code_of_the_examples`
        _ => return false,
    }
    true
}

/// The checks of a page, by name, after the generic kinds are done.
fn named(page: &str, checks: &[Check]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (k, c) in checks.iter().enumerate() {
        if !check_generic(page, c) {
            assert!(out.insert(c.name.clone(), k).is_none(), "docs/{page}:{}: `{}` is marked twice", c.line, c.name);
        }
    }
    out
}

/// Removes the check called `name` from `named` and returns it.
fn take<'a>(page: &str, checks: &'a [Check], named: &mut BTreeMap<String, usize>, name: &str) -> &'a Check {
    let k = named.remove(name).unwrap_or_else(|| panic!("docs/{page}: the `{name}` check is missing"));
    &checks[k]
}

#[test]
fn consolidator_page_numbers_match_the_library() {
    const PAGE: &str = "CONSOLIDATOR.md";
    let checks = parse_checks(PAGE, &read_page(PAGE));
    assert!(checks.len() >= 15, "the page lost its checked examples");
    let mut named = named(PAGE, &checks);
    let mut take = |name: &str| take(PAGE, &checks, &mut named, name);

    // The 4×4 merge: inputs read from the page, outputs computed and compared.
    let w = matrix(&take("merge4 W").value);
    let (ga, gb) = (list(&take("merge4 GA").value), list(&take("merge4 GB").value));
    let (ba, bb) = (list(&take("merge4 betaA").value), list(&take("merge4 betaB").value));
    let a = Affine::BlockDiagonal(BlockDiagonal::new(GroupSpec::new(4, 4, 2, false).unwrap(), ga, ba).unwrap());
    let b = Affine::BlockDiagonal(BlockDiagonal::new(GroupSpec::new(4, 4, 2, true).unwrap(), gb, bb).unwrap());
    assert_matrix(PAGE, take("merge4 A"), &rows_of(&a.to_dense()));
    assert_matrix(PAGE, take("merge4 B"), &rows_of(&b.to_dense()));
    let s = a.add(&b).unwrap(); // stage 1
    let Affine::Sparse(sparse) = &s else { panic!("two grouped branches add into a sparse map") };
    assert_matrix(PAGE, take("merge4 S"), &rows_of(&s.to_dense()));
    assert_list(PAGE, take("merge4 values"), &sparse.values);
    assert_list(PAGE, take("merge4 db"), &sparse.bias);
    let merged = dense(&w, vec![0.0; 4]).add(&s).unwrap(); // stage 2
    assert_matrix(PAGE, take("merge4 W'"), &rows_of(&merged.to_dense()));
    // And the merged layer computes what the three pieces compute.
    let x = [0.5, -1.0, 2.0, 0.25];
    let (y_m, y_w, y_s) = (merged.apply(&x).unwrap(), dense(&w, vec![0.0; 4]).apply(&x).unwrap(), s.apply(&x).unwrap());
    for k in 0..4 {
        assert!((y_m[k] - y_w[k] - y_s[k]).abs() < 1e-12);
    }
    assert!(named.is_empty(), "docs/{PAGE}: checks this test does not understand: {:?}", named.keys());
}

#[test]
fn reparam_page_numbers_match_the_library() {
    const PAGE: &str = "REPARAM.md";
    let checks = parse_checks(PAGE, &read_page(PAGE));
    assert!(checks.len() >= 6, "the page lost its checked examples");
    let mut named = named(PAGE, &checks);
    let mut take = |name: &str| take(PAGE, &checks, &mut named, name);

    // SSF after a 2×2 layer folds into it: W' = diag(γ)·W, b' = γ ⊙ b + β.
    let w = matrix(&take("ssf2 W").value);
    let b = list(&take("ssf2 b").value);
    let gamma = list(&take("ssf2 gamma").value);
    let beta = list(&take("ssf2 beta").value);
    let ssf = Affine::ScaleShift(ScaleShift { gamma, beta });
    let folded = ssf.compose(&dense(&w, b)).unwrap();
    let d = folded.to_dense();
    assert_matrix(PAGE, take("ssf2 W'"), &rows_of(&d));
    assert_list(PAGE, take("ssf2 b'"), &d.bias);

    // LoRA on a 768×768 layer: r·(I + O) stored values against I·O dense.
    let lora_rank = number(&take("lora-values r=4 O=768 I=768").value) as usize;
    let l = Affine::LowRank(LowRank {
        rank: 4,
        in_dim: 768,
        out_dim: 768,
        a: vec![0.0; 4 * 768],
        b: vec![0.0; 768 * 4],
        scale: 1.0,
        bias: vec![0.0; 768],
    });
    assert_eq!(lora_rank, l.nnz() - 1, "A and B values (nnz also counts the scale)");
    let dense_values = number(&take("dense-values O=768 I=768").value) as usize;
    assert_eq!(dense_values, l.to_dense().weight.len());
    assert!(named.is_empty(), "docs/{PAGE}: checks this test does not understand: {:?}", named.keys());
}

#[test]
fn the_parser_reads_blocks_and_refuses_invisible_values() {
    let page = "a\n<!-- check: merge4 S -->\n```text\n1 2\n3 4\n```\nthe count is 1,234\n<!-- check: x = 1,234 -->\n";
    let c = parse_checks("test", page);
    assert_eq!(c.len(), 2);
    assert_eq!(matrix(&c[0].value), vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
    assert_eq!(number(&c[1].value), 1234.0);
    let hidden = std::panic::catch_unwind(|| parse_checks("test", "text\n<!-- check: x = 99 -->\n"));
    assert!(hidden.is_err(), "a value that is not in the visible text must be refused");
}

#[test]
fn code_quoted_in_the_pages_is_the_code_of_the_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut quoted = 0;
    for page in ["ARCHITECTURE.md", "AUTOGRAD.md", "CONSOLIDATOR.md", "REPARAM.md"] {
        for c in parse_checks(page, &read_page(page)) {
            let Some(file) = c.name.strip_prefix("code ") else { continue };
            let source = std::fs::read_to_string(root.join(file.trim())).unwrap();
            assert!(
                source.contains(&c.value),
                "docs/{page}:{}: the quoted code is no longer the code of {file}:\n{}",
                c.line,
                c.value
            );
            quoted += 1;
        }
    }
    assert!(quoted >= 1, "ARCHITECTURE.md quotes examples/custom_op.rs");
}
