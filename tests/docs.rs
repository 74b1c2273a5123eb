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

// ---------------------------------------------------------------------------------------------
// Every file, item and section a page names exists, and every number a page quotes about the
// code is computed.

/// The pages a reader meets, with their text.
fn all_pages() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages: Vec<String> = ["README.md", "CONTRIBUTING.md", "data/README.md", "tests/fixtures/README.md"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            pages.push(format!("docs/{}", p.file_name().unwrap().to_string_lossy()));
        }
    }
    pages.sort();
    pages.into_iter().map(|p| (p.clone(), std::fs::read_to_string(root.join(&p)).unwrap())).collect()
}

/// The lines of a page outside fenced code blocks, numbered from 1.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push((n + 1, line));
        }
    }
    out
}

/// The inline code spans of a page (outside fenced blocks), with their line numbers.
fn inline_code(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose_lines(text) {
        let parts: Vec<&str> = line.split('`').collect();
        for (k, part) in parts.iter().enumerate() {
            if k % 2 == 1 && k + 1 < parts.len() {
                out.push((n, part.to_string()));
            }
        }
    }
    out
}

/// Relative link targets `](target)` of a page (outside fenced blocks).
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose_lines(text) {
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            let target = &after[..end];
            if !target.starts_with("http") && !target.starts_with("mailto:") {
                out.push((n, target.to_string()));
            }
            rest = &after[end..];
        }
    }
    out
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    prose_lines(text)
        .into_iter()
        .filter(|(_, l)| l.starts_with('#'))
        .map(|(_, l)| slug(l.trim_start_matches('#')))
        .collect()
}

const REPO_DIRS: [&str; 12] = [
    "src/",
    "tests/",
    "examples/",
    "docs/",
    "scripts/",
    "benches/",
    "fuzz/",
    "data/",
    "bench/",
    "results/",
    ".ci/",
    ".cargo/",
];

#[test]
fn every_file_and_section_a_page_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    let mut checked = 0;
    for (page, text) in all_pages() {
        let here = Path::new(&page).parent().unwrap().to_path_buf();
        for (line, code) in inline_code(&text) {
            let path = code.trim_end_matches([':', ',']);
            // A repository path, or a long-form page by its name (`AUTOGRAD.md`).
            let page_name =
                path.strip_suffix(".md").is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_uppercase()));
            let is_path = REPO_DIRS.iter().any(|d| path.starts_with(d)) || page_name;
            if !is_path || path.contains(['*', '{', '<', ' ', '$', '…']) {
                continue;
            }
            checked += 1;
            let file =
                if page_name && !root.join(path).exists() { root.join(&here).join(path) } else { root.join(path) };
            if !file.exists() {
                problems.push(format!("{page}:{line}: `{path}` does not exist"));
            }
        }
        for (line, target) in links(&text) {
            let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let target_text = if file.is_empty() {
                text.clone()
            } else {
                let p = root.join(&here).join(file);
                checked += 1;
                match std::fs::read_to_string(&p) {
                    Ok(t) => t,
                    Err(_) if p.exists() => continue, // a picture, a directory
                    Err(_) => {
                        problems.push(format!("{page}:{line}: link to `{file}`, which does not exist"));
                        continue;
                    }
                }
            };
            if !anchor.is_empty() {
                checked += 1;
                if !anchors(&target_text).contains(&anchor.to_string()) {
                    problems.push(format!(
                        "{page}:{line}: link to section `#{anchor}` of `{file}`, which has no such heading"
                    ));
                }
            }
        }
    }
    // Sections quoted by title: `AUTOGRAD.md, "The fused consolidated_linear"`.
    for (page, text) in all_pages() {
        for (n, line) in text.lines().enumerate() {
            for sep in [".md, \"", ".md: \"", ".md \""] {
                let mut rest = line;
                while let Some(i) = rest.find(sep) {
                    let name: String = rest[..i]
                        .chars()
                        .rev()
                        .take_while(|c| c.is_ascii_uppercase())
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    let after = &rest[i + sep.len()..];
                    let title = after.split('"').next().unwrap_or("");
                    rest = &after[title.len()..];
                    if name.is_empty() {
                        continue;
                    }
                    checked += 1;
                    let target = std::fs::read_to_string(root.join("docs").join(format!("{name}.md")))
                        .or_else(|_| std::fs::read_to_string(root.join(format!("{name}.md"))))
                        .unwrap_or_default();
                    let want = title.to_lowercase().replace('`', "");
                    let found =
                        target.lines().any(|l| l.starts_with('#') && l.to_lowercase().replace('`', "").contains(&want));
                    if !found {
                        problems.push(format!("{page}:{}: section \"{title}\" of {name}.md does not exist", n + 1));
                    }
                }
            }
        }
    }
    assert!(checked > 50, "the pages name files: {checked} checked");
    assert!(problems.is_empty(), "pages name what is not there:\n{}", problems.join("\n"));
}

/// Every `fn`, type, trait, module, macro, const and enum variant defined in the crate's code.
fn defined_names() -> std::collections::BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names = std::collections::BTreeSet::new();
    let mut todo = vec![
        root.join("src"),
        root.join("examples"),
        root.join("tests"),
        root.join("benches"),
        root.join("fuzz/bodies.rs"),
    ];
    while let Some(p) = todo.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
            continue;
        }
        if p.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        names.insert(p.file_stem().unwrap().to_string_lossy().to_string());
        let text = std::fs::read_to_string(&p).unwrap();
        // Enum variants: capitalised names at the first brace level inside an `enum`.
        let mut enum_depth: Option<i32> = None;
        let mut depth = 0i32;
        for line in text.lines() {
            let t = line.trim_start();
            let words: Vec<&str> =
                t.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '!')).filter(|w| !w.is_empty()).collect();
            for (k, w) in words.iter().enumerate() {
                if ["fn", "struct", "enum", "trait", "type", "mod", "const", "static", "macro_rules!"].contains(w) {
                    if let Some(n) = words.get(k + 1) {
                        names.insert(n.to_string());
                    }
                }
            }
            if enum_depth.is_some_and(|d| depth == d + 1) && !t.starts_with("//") && !t.starts_with('#') {
                if let Some(v) = words.first().filter(|v| v.chars().next().is_some_and(char::is_uppercase)) {
                    names.insert(v.to_string());
                }
            }
            if (t.starts_with("pub enum ") || t.starts_with("enum ")) && enum_depth.is_none() {
                enum_depth = Some(depth);
            }
            let code = t.split("//").next().unwrap();
            depth += code.matches('{').count() as i32 - code.matches('}').count() as i32;
            if enum_depth.is_some_and(|d| depth <= d) && code.contains('}') {
                enum_depth = None;
            }
            // Struct fields (`pub name:`) are named by pages too (`Linear::adapter`).
            if let Some(f) = t.strip_prefix("pub ").and_then(|r| r.split_once(':')).map(|(n, _)| n.trim()) {
                if f.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    names.insert(f.to_string());
                }
            }
        }
    }
    names
}

/// Names from outside the crate that pages quote as `Type::item`.
const FOREIGN: [&str; 15] = [
    "Vec",
    "Arc",
    "Box",
    "Option",
    "String",
    "std",
    "F",
    "torch",
    "timm",
    "nn",
    "Iterator",
    "AtomicBool",
    "Path",
    "ErrorKind",
    "File",
];

#[test]
fn every_item_a_page_names_exists() {
    let names = defined_names();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (page, text) in all_pages() {
        for (line, code) in inline_code(&text) {
            // `Type::item`, `Type::item(…)`, `consolidator::module::item`, `name!`.
            let head = code.split(['(', ' ', '<', '[', '{']).next().unwrap_or("");
            let segs: Vec<&str> = head.split("::").collect();
            if segs.len() < 2
                || segs.iter().any(|s| s.is_empty() || !s.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '!'))
            {
                continue;
            }
            let first = segs[0];
            if FOREIGN.contains(&first)
                || !(first.chars().next().unwrap().is_uppercase() || first == "consolidator" || first == "crate")
            {
                continue;
            }
            checked += 1;
            for s in segs.iter().filter(|s| !["consolidator", "crate"].contains(s)) {
                let s = s.trim_end_matches('!');
                if !names.contains(s) {
                    problems.push(format!("{page}:{line}: `{code}` — no item `{s}` is defined in the code"));
                    break;
                }
            }
        }
    }
    assert!(checked > 40, "the pages name items: {checked} checked");
    assert!(problems.is_empty(), "pages name items that do not exist:\n{}", problems.join("\n"));
}

/// Lines of a file as `wc -l` counts them.
fn file_lines(path: &str) -> usize {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap().lines().count()
}

/// Calls of a GEMM kernel (`gemm…(`) in the body of `fn name` of a file, comments excluded.
fn gemm_calls(path: &str, name: &str) -> usize {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    let start = text.find(&format!("fn {name}")).unwrap_or_else(|| panic!("{path}: no fn {name}"));
    let body_start = start + text[start..].find('{').unwrap();
    let mut depth = 0;
    let mut end = body_start;
    for (k, c) in text[body_start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    end = body_start + k;
                    break;
                }
            }
            _ => {}
        }
    }
    text[body_start..end]
        .lines()
        .map(|l| l.split("//").next().unwrap())
        .map(|l| {
            let mut n = 0;
            let mut rest = l;
            while let Some(i) = rest.find("gemm") {
                let after = &rest[i..];
                let ident: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                let before_ok = i == 0 || !rest[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '.');
                if before_ok && after[ident.len()..].starts_with('(') {
                    n += 1;
                }
                rest = &after[ident.len().max(1)..];
            }
            n
        })
        .sum()
}

#[test]
fn numbers_the_pages_quote_about_the_code_are_computed() {
    let mut seen = 0;
    for (page, text) in all_pages() {
        for (n, line) in text.lines().enumerate() {
            let Some(body) = line.trim().strip_prefix("<!-- check:").and_then(|r| r.strip_suffix("-->")) else {
                continue;
            };
            let Some((name, value)) = body.trim().split_once(" = ") else { continue };
            let a: Vec<&str> = name.split_whitespace().collect();
            let got = match a.as_slice() {
                ["lines", file] => file_lines(file),
                ["gemm-calls", file, func] => gemm_calls(file, func),
                ["core-lines"] => line_budget_count(),
                ["core-budget"] => line_budget_limit(),
                _ => continue,
            };
            seen += 1;
            assert_eq!(number(value) as usize, got, "{page}:{}: `{name}` is {got}, the page says {value}", n + 1);
            let lo = n.saturating_sub(5);
            let visible =
                text.lines().skip(lo).take(11).any(|l| !l.trim_start().starts_with("<!--") && l.contains(value.trim()));
            assert!(visible, "{page}:{}: `{value}` is not written near its check", n + 1);
        }
    }
    assert!(seen >= 3, "the pages quote line and GEMM counts: {seen} checked");
}

/// The engine core's counted lines and budget, as `tests/line_budget.rs` counts them.
fn line_budget_count() -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<std::path::PathBuf> =
        ["src/tensor.rs", "src/error.rs", "src/par.rs"].iter().map(|f| root.join(f)).collect();
    let mut todo = vec![root.join("src/kernels"), root.join("src/autograd")];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("//"))
                .count()
        })
        .sum()
}

fn line_budget_limit() -> usize {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/line_budget.rs")).unwrap();
    let line = text.lines().find(|l| l.starts_with("const CORE_BUDGET: usize")).unwrap();
    line.split('=').nth(1).unwrap().trim().trim_end_matches(';').replace('_', "").parse().unwrap()
}
