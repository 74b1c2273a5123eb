//! The budget sweep as independent runs: `suite --plan DIR` writes one job per run (a JSON file
//! and one shell command each), any runner executes them (`suite --job FILE` runs one and
//! writes its result file), and `suite --gather DIR` chooses each method's settings on
//! validation, plans the seed runs of the chosen settings, and builds the tables and the plot
//! from whatever results exist — listing every run that is missing. docs/SCALE.md gives the
//! runners (GNU parallel, a Slurm array, a Kubernetes Indexed Job).

use super::common::*;
use super::{note, say, R};
use consolidator::data::suite::Task;
use consolidator::io::json::Json;
use consolidator::io::write_atomic;
use consolidator::nn::Module;
use consolidator::peft::Method;
use consolidator::reparam::{consolidate, fingerprint};
use consolidator::train::{evaluate, Trainer};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One point of the sweep's method axis: a method at one budget, with its grids.
#[derive(Clone, Debug)]
pub struct SweepConfig {
    /// Short unique name (`lora-r4`, `consolidator-g8+16+32r`).
    pub name: String,
    /// The curve it belongs to in the plot.
    pub family: String,
    /// The method string, without the drop-path (added per grid point).
    pub method: String,
    /// Learning rates tried (chosen on validation).
    pub lrs: Vec<f32>,
    /// Branch drop-path rates tried (consolidator only; empty otherwise).
    pub dps: Vec<f32>,
}

/// The sweep of issue 17: every method at 3–4 budgets.
pub fn default_configs() -> Vec<SweepConfig> {
    let c = |name: String, family: &str, method: String, lrs: &[f32], dps: &[f32]| SweepConfig {
        name,
        family: family.into(),
        method,
        lrs: lrs.to_vec(),
        dps: dps.to_vec(),
    };
    let (head_lrs, adapter_lrs, full_lrs) = (&[5e-3, 2e-2][..], &[2e-3, 5e-3][..], &[2e-4, 5e-4][..]);
    let dps = [0.0, 0.2, 0.5, 0.8];
    let mut v = vec![
        c("linear".into(), "linear", "linear".into(), head_lrs, &[]),
        c("bitfit".into(), "bitfit", "bitfit".into(), head_lrs, &[]),
        c("ssf".into(), "ssf", "ssf".into(), head_lrs, &[]),
        c("full".into(), "full", "full".into(), full_lrs, &[]),
    ];
    for r in [1, 2, 4, 8] {
        v.push(c(format!("lora-r{r}"), "lora", format!("lora:r={r}"), adapter_lrs, &[]));
    }
    for d in [2, 4, 8] {
        v.push(c(format!("adapter-d{d}"), "adapter", format!("adapter:dim={d}"), adapter_lrs, &[]));
    }
    for p in [1, 5, 10] {
        v.push(c(format!("vpt-p{p}"), "vpt", format!("vpt:prompts={p}"), head_lrs, &[]));
    }
    for g in [32, 16, 8] {
        v.push(c(
            format!("consolidator-g{g}"),
            "consolidator, one branch",
            format!("consolidator:g={g}"),
            adapter_lrs,
            &dps,
        ));
    }
    v.push(c(
        "consolidator-g8+16+32".into(),
        "consolidator, 8+16+32",
        "consolidator:g=8+16+32".into(),
        adapter_lrs,
        &dps,
    ));
    v.push(c(
        "consolidator-g8+16+32r".into(),
        "consolidator, 8+16+32 reordered",
        "consolidator:g=8+16+32,reorder".into(),
        adapter_lrs,
        &dps,
    ));
    v
}

/// `suite --plan` options.
pub struct PlanOptions {
    pub epochs: usize,
    pub eval_every: usize,
    pub seeds: u64,
    pub tasks: Vec<Task>,
    pub configs: Option<Vec<String>>,
}

/// One run, as a file a runner can execute anywhere the paths resolve.
#[derive(Clone, Debug)]
struct Job {
    id: String,
    task: Task,
    config: String,
    family: String,
    method: String,
    lr: f32,
    dp: Option<f32>,
    seed: u64,
    epochs: usize,
    eval_every: usize,
    backbone: PathBuf,
    fingerprint: String,
    data_dir: PathBuf,
    result: PathBuf,
}

impl Job {
    fn to_json(&self) -> Json {
        Json::obj([
            ("id", Json::Str(self.id.clone())),
            ("task", Json::Str(self.task.name().into())),
            ("config", Json::Str(self.config.clone())),
            ("family", Json::Str(self.family.clone())),
            ("method", Json::Str(self.method.clone())),
            ("lr", num32(self.lr)),
            ("dp", self.dp.map_or(Json::Null, num32)),
            ("seed", Json::from(self.seed as usize)),
            ("epochs", Json::from(self.epochs)),
            ("eval_every", Json::from(self.eval_every)),
            ("backbone", path_json(&self.backbone)),
            ("fingerprint", Json::Str(self.fingerprint.clone())),
            ("data_dir", path_json(&self.data_dir)),
            ("result", path_json(&self.result)),
        ])
    }

    fn from_json(j: &Json, what: &str) -> R<Job> {
        let bad = |k: &str| format!("{what}: field `{k}` is missing or malformed");
        let s = |k: &str| j.get(k).and_then(Json::as_str).map(String::from).ok_or_else(|| bad(k));
        let n = |k: &str| j.get(k).and_then(Json::as_f64).ok_or_else(|| bad(k));
        let u = |k: &str| j.get(k).and_then(Json::as_usize).ok_or_else(|| bad(k));
        Ok(Job {
            id: s("id")?,
            task: super::args::task(&s("task")?)?,
            config: s("config")?,
            family: s("family")?,
            method: s("method")?,
            lr: n("lr")? as f32,
            dp: j.get("dp").and_then(Json::as_f64).map(|v| v as f32),
            seed: u("seed")? as u64,
            epochs: u("epochs")?,
            eval_every: u("eval_every")?,
            backbone: PathBuf::from(s("backbone")?),
            fingerprint: s("fingerprint")?,
            data_dir: PathBuf::from(s("data_dir")?),
            result: PathBuf::from(s("result")?),
        })
    }
}

fn job_id(task: Task, config: &str, lr: f32, dp: Option<f32>, seed: u64) -> String {
    let dp = dp.map(|d| format!("__dp{d}")).unwrap_or_default();
    format!("{}__{config}__lr{lr:e}{dp}__s{seed}", task.name()).replace('+', "p")
}

fn read_json(path: &Path) -> R<Json> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(Json::parse(&bytes, &path.display().to_string())?)
}

fn absolute(p: &Path) -> R<PathBuf> {
    p.canonicalize().map_err(|e| format!("{}: {e}", p.display()).into())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The shell command that runs one job file.
fn command(job_file: &Path) -> R<String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot name this executable: {e}"))?;
    Ok(format!(
        "{} suite --job {}",
        shell_quote(&exe.display().to_string()),
        shell_quote(&job_file.display().to_string())
    ))
}

/// Writes the job files of `jobs` that do not exist yet; returns the commands of every job in
/// `jobs` whose result is missing.
fn write_jobs(dir: &Path, jobs: &[Job]) -> R<Vec<String>> {
    let mut commands = Vec::new();
    for j in jobs {
        let file = dir.join("jobs").join(format!("{}.json", j.id));
        if !file.exists() {
            write_atomic(&file, j.to_json().to_string_pretty().as_bytes())?;
        }
        if !j.result.exists() {
            commands.push(command(&file)?);
        }
    }
    Ok(commands)
}

/// `suite --plan DIR`: the selection runs (seed 0, every grid point).
pub fn plan(dir: &Path, backbone_path: &Path, data_dir: &Path, o: &PlanOptions) -> R {
    let backbone = load_backbone(backbone_path, None)?;
    let mut configs = default_configs();
    if let Some(only) = &o.configs {
        let known: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
        if let Some(bad) = only.iter().find(|n| !known.contains(n)) {
            return Err(format!("unknown sweep config `{bad}` (known: {})", known.join(", ")).into());
        }
        configs.retain(|c| only.contains(&c.name));
    }
    for c in &configs {
        Method::parse(&c.method, backbone.vit.config.embed_dim)?;
    }
    std::fs::create_dir_all(dir.join("jobs")).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::create_dir_all(dir.join("results")).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dir = absolute(dir)?;
    let (backbone_abs, data_abs) = (absolute(backbone_path)?, absolute(data_dir)?);
    let fp = fingerprint(&backbone.vit);
    let plan = Json::obj([
        ("backbone", path_json(&backbone_abs)),
        ("fingerprint", Json::Str(fp.clone())),
        ("data_dir", path_json(&data_abs)),
        ("epochs", Json::from(o.epochs)),
        ("eval_every", Json::from(o.eval_every)),
        ("seeds", Json::from(o.seeds as usize)),
        ("tasks", Json::Arr(o.tasks.iter().map(|t| Json::Str(t.name().into())).collect())),
        (
            "configs",
            Json::Arr(
                configs
                    .iter()
                    .map(|c| {
                        Json::obj([
                            ("name", Json::Str(c.name.clone())),
                            ("family", Json::Str(c.family.clone())),
                            ("method", Json::Str(c.method.clone())),
                            ("lrs", Json::Arr(c.lrs.iter().map(|&l| num32(l)).collect())),
                            ("dps", Json::Arr(c.dps.iter().map(|&d| num32(d)).collect())),
                        ])
                    })
                    .collect(),
            ),
        ),
    ]);
    write_atomic(&dir.join("plan.json"), plan.to_string_pretty().as_bytes())?;
    let base = |task: Task, c: &SweepConfig, lr: f32, dp: Option<f32>, seed: u64| {
        let id = job_id(task, &c.name, lr, dp, seed);
        let method = match dp {
            Some(d) => format!("{},dp={d}", c.method),
            None => c.method.clone(),
        };
        Job {
            result: dir.join("results").join(format!("{id}.json")),
            id,
            task,
            config: c.name.clone(),
            family: c.family.clone(),
            method,
            lr,
            dp,
            seed,
            epochs: o.epochs,
            eval_every: o.eval_every,
            backbone: backbone_abs.clone(),
            fingerprint: fp.clone(),
            data_dir: data_abs.clone(),
        }
    };
    let mut jobs = Vec::new();
    for &task in &o.tasks {
        for c in &configs {
            for &lr in &c.lrs {
                if c.dps.is_empty() {
                    jobs.push(base(task, c, lr, None, 0));
                } else {
                    jobs.extend(c.dps.iter().map(|&dp| base(task, c, lr, Some(dp), 0)));
                }
            }
        }
    }
    let commands = write_jobs(&dir, &jobs)?;
    write_atomic(&dir.join("commands.txt"), (commands.join("\n") + "\n").as_bytes())?;
    say!(
        "planned {} selection runs ({} tasks × {} configs × their grids, seed 0) in {}: run the lines of {} with any runner (docs/SCALE.md), then `consolidator suite --gather {}`",
        jobs.len(),
        o.tasks.len(),
        configs.len(),
        dir.display(),
        dir.join("commands.txt").display(),
        dir.display()
    );
    Ok(())
}

/// `suite --job FILE`: one run; its result file is written atomically when it ends.
pub fn run_job(file: &Path, quiet: bool) -> R {
    let job = Job::from_json(&read_json(file)?, &file.display().to_string())?;
    let backbone = load_backbone(&job.backbone, None)?;
    let fp = fingerprint(&backbone.vit);
    if fp != job.fingerprint {
        return Err(format!(
            "{}: the backbone changed since the plan was made ({fp}, planned {})",
            job.backbone.display(),
            job.fingerprint
        )
        .into());
    }
    check_output(&job.result, &[file, &job.backbone])?;
    let task = load_task(job.task, Some(&job.data_dir))?;
    let method = Method::parse(&job.method, backbone.vit.config.embed_dim)?;
    let mut cfg = suite_config(&method, job.epochs, job.lr, job.seed);
    cfg.eval_every = job.eval_every;
    let mut model = backbone.adapt(&method, task.train.num_classes, job.seed)?;
    let mut test_curve = Vec::new();
    let report = Trainer::new(cfg)
        .on_progress(progress_line(job.id.clone(), !quiet))
        .on_epoch_end(|log, m| {
            if log.epoch % job.eval_every == 0 || log.epoch == job.epochs {
                test_curve.push((log.epoch, evaluate(m, &task.test, 256)?.0));
            }
            Ok(())
        })
        .run(&mut model, &task.train, Some(&task.val))?;
    let (val_acc, _) = evaluate(&model, &task.val, 256)?;
    let (test_acc, _) = evaluate(&model, &task.test, 256)?;
    let tunable = model.vit.num_trainable();
    let stored = if method.mergeable() { consolidate(&model, &backbone.vit)?.storage_bytes() } else { 4 * tunable };
    let curve = |v: Vec<(usize, f32)>| {
        Json::Arr(v.into_iter().map(|(e, a)| Json::Arr(vec![Json::from(e), num32(a)])).collect())
    };
    let val_curve: Vec<(usize, f32)> = report.epochs.iter().filter_map(|e| e.val_acc.map(|a| (e.epoch, a))).collect();
    let mut j = job.to_json();
    if let Json::Obj(pairs) = &mut j {
        pairs.extend([
            ("val_acc".to_string(), num32(val_acc)),
            ("test_acc".to_string(), num32(test_acc)),
            ("val_curve".to_string(), curve(val_curve)),
            ("test_curve".to_string(), curve(test_curve)),
            ("stored_bytes".to_string(), Json::from(stored)),
            ("tunable".to_string(), Json::from(tunable)),
            ("train_seconds".to_string(), num32(report.seconds)),
        ]);
    }
    write_atomic(&job.result, j.to_string_pretty().as_bytes())?;
    say!("{}: val {:.2}%, test {:.2}% → {}", job.id, 100.0 * val_acc, 100.0 * test_acc, job.result.display());
    Ok(())
}

/// One finished run.
struct Run {
    job: Job,
    val: f64,
    test: f64,
    /// The paper's protocol: the best test accuracy over the evaluations every `eval_every` epochs.
    best_test: f64,
    stored: usize,
    tunable: usize,
    seconds: f64,
}

fn read_run(path: &Path) -> R<Run> {
    let j = read_json(path)?;
    let what = path.display().to_string();
    let job = Job::from_json(&j, &what)?;
    let n = |k: &str| j.get(k).and_then(Json::as_f64).ok_or_else(|| format!("{what}: no `{k}`"));
    let best_test = j
        .get("test_curve")
        .and_then(Json::as_array)
        .map(|c| c.iter().filter_map(|p| p.at(1).and_then(Json::as_f64)).fold(f64::NAN, f64::max))
        .unwrap_or(f64::NAN);
    Ok(Run {
        val: n("val_acc")?,
        test: n("test_acc")?,
        best_test,
        stored: n("stored_bytes")? as usize,
        tunable: n("tunable")? as usize,
        seconds: n("train_seconds")?,
        job,
    })
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, var.sqrt())
}

/// A chosen setting and its seeds' results.
struct Row {
    task: Task,
    config: String,
    family: String,
    lr: f32,
    dp: Option<f32>,
    stored: usize,
    tunable: usize,
    tests: Vec<f64>,
    best_tests: Vec<f64>,
    planned_seeds: usize,
}

/// `suite --gather DIR`: selection, the seed runs' plan, tables and plot.
pub fn gather(dir: &Path, out: &Path) -> R {
    let dir = &absolute(dir)?;
    let plan = read_json(&dir.join("plan.json"))?;
    let seeds = plan.get("seeds").and_then(Json::as_usize).ok_or("plan.json: no `seeds`")?;
    let mut jobs = Vec::new();
    let jobs_dir = dir.join("jobs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&jobs_dir)
        .map_err(|e| format!("cannot read {}: {e}", jobs_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for f in &files {
        jobs.push(Job::from_json(&read_json(f)?, &f.display().to_string())?);
    }
    let mut runs: BTreeMap<String, Run> = BTreeMap::new();
    let mut missing = Vec::new();
    for j in &jobs {
        if j.result.exists() {
            runs.insert(j.id.clone(), read_run(&j.result)?);
        } else {
            missing.push(j.id.clone());
        }
    }
    // Selection on validation, seed 0, per (task, config).
    let mut groups: BTreeMap<(String, String), Vec<&Job>> = BTreeMap::new();
    for j in jobs.iter().filter(|j| j.seed == 0) {
        groups.entry((j.task.name().to_string(), j.config.clone())).or_default().push(j);
    }
    let mut chosen: Vec<&Job> = Vec::new();
    let mut incomplete = 0;
    for grid in groups.values() {
        if grid.iter().any(|j| !runs.contains_key(&j.id)) {
            incomplete += 1;
            continue;
        }
        // The best validation accuracy; the first in grid order on a tie.
        let mut best = grid[0];
        for j in &grid[1..] {
            if runs[&j.id].val > runs[&best.id].val {
                best = j;
            }
        }
        chosen.push(best);
    }
    // The seed runs of every chosen setting.
    let mut seed_jobs = Vec::new();
    for j in &chosen {
        for seed in 1..seeds as u64 {
            let id = job_id(j.task, &j.config, j.lr, j.dp, seed);
            let result = j.result.with_file_name(format!("{id}.json"));
            seed_jobs.push(Job { id, seed, result, ..(*j).clone() });
        }
    }
    let commands = write_jobs(dir, &seed_jobs)?;
    write_atomic(
        &dir.join("commands-seeds.txt"),
        (commands.join("\n") + if commands.is_empty() { "" } else { "\n" }).as_bytes(),
    )?;
    for j in &seed_jobs {
        if !runs.contains_key(&j.id) {
            if j.result.exists() {
                runs.insert(j.id.clone(), read_run(&j.result)?);
            } else if !missing.contains(&j.id) {
                missing.push(j.id.clone());
            }
        }
    }
    let mut rows = Vec::new();
    for j in &chosen {
        let ids: Vec<String> = (0..seeds as u64).map(|s| job_id(j.task, &j.config, j.lr, j.dp, s)).collect();
        let done: Vec<&Run> = ids.iter().filter_map(|id| runs.get(id)).collect();
        let r0 = &runs[&j.id];
        rows.push(Row {
            task: j.task,
            config: j.config.clone(),
            family: j.family.clone(),
            lr: j.lr,
            dp: j.dp,
            stored: r0.stored,
            tunable: r0.tunable,
            tests: done.iter().map(|r| r.test).collect(),
            best_tests: done.iter().map(|r| r.best_test).collect(),
            planned_seeds: seeds,
        });
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    write_atomic(&out.join("sweep.csv"), runs_csv(&runs).as_bytes())?;
    let md = summary_md(&rows, &missing, incomplete, &runs);
    write_atomic(&out.join("sweep.md"), md.as_bytes())?;
    write_atomic(&out.join("sweep.svg"), plot(&rows).as_bytes())?;
    missing.sort();
    write_atomic(&dir.join("missing.txt"), missing.iter().map(|m| format!("{m}\n")).collect::<String>().as_bytes())?;
    say!("{md}");
    if !missing.is_empty() {
        note!("{} runs have no result yet (listed in {}):", missing.len(), dir.join("missing.txt").display());
        for m in missing.iter().take(20) {
            note!("  {m}");
        }
    }
    if !commands.is_empty() {
        note!(
            "{} seed runs of the chosen settings to run: {}",
            commands.len(),
            dir.join("commands-seeds.txt").display()
        );
    }
    say!("wrote {}/sweep.{{csv,md,svg}}", out.display());
    Ok(())
}

fn runs_csv(runs: &BTreeMap<String, Run>) -> String {
    let mut csv = String::from(
        "id,task,config,family,method,lr,dp,seed,epochs,val_acc,test_acc,best_test_every_eval,stored_bytes,tunable,train_seconds\n",
    );
    for r in runs.values() {
        let j = &r.job;
        let _ = writeln!(
            csv,
            "{},{},{},\"{}\",\"{}\",{},{},{},{},{:.4},{:.4},{:.4},{},{},{:.1}",
            j.id,
            j.task.name(),
            j.config,
            j.family,
            j.method,
            j.lr,
            j.dp.map(|d| d.to_string()).unwrap_or_default(),
            j.seed,
            j.epochs,
            r.val,
            r.test,
            r.best_test,
            r.stored,
            r.tunable,
            r.seconds
        );
    }
    csv
}

fn pct((m, sd): (f64, f64), n: usize) -> String {
    if n > 1 {
        format!("{:.1} ± {:.1}", 100.0 * m, 100.0 * sd)
    } else {
        format!("{:.1}", 100.0 * m)
    }
}

fn summary_md(rows: &[Row], missing: &[String], incomplete: usize, runs: &BTreeMap<String, Run>) -> String {
    let mut md = String::new();
    let tasks: BTreeSet<&str> = rows.iter().map(|r| r.task.name()).collect();
    let configs: Vec<String> =
        default_configs().into_iter().map(|c| c.name).filter(|n| rows.iter().any(|r| &r.config == n)).collect();
    let _ = writeln!(
        md,
        "Test accuracy (%) of the setting chosen on validation (seed 0), last epoch, mean ± sd over seeds; in brackets the paper's protocol (the best test accuracy over the evaluations), same runs.\n"
    );
    let _ = writeln!(
        md,
        "| config | stored per task | {} | mean | mean (paper's protocol) |",
        tasks.iter().copied().collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(md, "|---|---:|{}---:|---:|", "---:|".repeat(tasks.len()));
    for c in &configs {
        let cells: Vec<Option<&Row>> =
            tasks.iter().map(|t| rows.iter().find(|r| r.task.name() == *t && r.config == *c)).collect();
        let stored = cells.iter().flatten().map(|r| r.stored).max().unwrap_or(0);
        let mut means = Vec::new();
        let mut paper = Vec::new();
        let text: Vec<String> = cells
            .iter()
            .map(|r| match r {
                Some(r) if !r.tests.is_empty() => {
                    let ms = mean_sd(&r.tests);
                    means.push(ms.0);
                    paper.push(mean_sd(&r.best_tests).0);
                    let seeds = if r.tests.len() < r.planned_seeds {
                        format!(" ({}/{} seeds)", r.tests.len(), r.planned_seeds)
                    } else {
                        String::new()
                    };
                    format!("{} [{:.1}]{seeds}", pct(ms, r.tests.len()), 100.0 * mean_sd(&r.best_tests).0)
                }
                _ => "–".into(),
            })
            .collect();
        let avg = |v: &[f64]| {
            if v.len() == tasks.len() {
                format!("{:.1}", 100.0 * v.iter().sum::<f64>() / v.len() as f64)
            } else {
                "–".into()
            }
        };
        let _ =
            writeln!(md, "| {c} | {} | {} | **{}** | {} |", bytes(stored), text.join(" | "), avg(&means), avg(&paper));
    }
    let _ = writeln!(md, "\nChosen settings (learning rate, branch drop-path):\n");
    for r in rows {
        let _ = writeln!(
            md,
            "- {} / {}: lr {:e}{}, {} tunable values",
            r.task.name(),
            r.config,
            r.lr,
            r.dp.map(|d| format!(", dp {d}")).unwrap_or_default(),
            r.tunable
        );
    }
    let secs: f64 = runs.values().map(|r| r.seconds).sum();
    let _ = writeln!(md, "\n{} runs finished ({:.1} h of training in all).", runs.len(), secs / 3600.0);
    if incomplete > 0 || !missing.is_empty() {
        let _ = writeln!(
            md,
            "\n**Incomplete:** {incomplete} (task, config) selections still wait for runs; {} runs have no result: {}",
            missing.len(),
            missing.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    md
}

/// Test accuracy against stored bytes per task (a panel each, and their mean), a curve per family.
fn plot(rows: &[Row]) -> String {
    let tasks: Vec<&str> = rows.iter().map(|r| r.task.name()).collect::<BTreeSet<_>>().into_iter().collect();
    let families: Vec<String> = {
        let mut f: Vec<String> = Vec::new();
        for c in default_configs() {
            if !f.contains(&c.family) && rows.iter().any(|r| r.family == c.family) {
                f.push(c.family);
            }
        }
        f
    };
    let colors =
        ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
    let panels: Vec<String> = tasks.iter().map(|t| t.to_string()).chain(["mean".to_string()]).collect();
    let (pw, ph, m) = (360.0, 260.0, 46.0);
    let cols = 3usize;
    let nrows = panels.len().div_ceil(cols);
    let (w, h) = (pw * cols as f64 + 220.0, ph * nrows as f64 + 30.0);
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    let point = |fam: &str, panel: &str| -> Vec<(f64, f64)> {
        let mut pts: Vec<(f64, f64)> = if panel == "mean" {
            let mut by_config: BTreeMap<&str, (usize, Vec<f64>)> = BTreeMap::new();
            for r in rows.iter().filter(|r| r.family == fam && !r.tests.is_empty()) {
                let e = by_config.entry(r.config.as_str()).or_insert((r.stored, vec![]));
                e.1.push(mean_sd(&r.tests).0);
            }
            by_config
                .values()
                .filter(|(_, v)| v.len() == tasks.len())
                .map(|(b, v)| (*b as f64, v.iter().sum::<f64>() / v.len() as f64))
                .collect()
        } else {
            rows.iter()
                .filter(|r| r.family == fam && r.task.name() == panel && !r.tests.is_empty())
                .map(|r| (r.stored as f64, mean_sd(&r.tests).0))
                .collect()
        };
        pts.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        pts
    };
    let all: Vec<(f64, f64)> = families.iter().flat_map(|f| panels.iter().flat_map(move |p| point(f, p))).collect();
    if all.is_empty() {
        s.push_str("<text x=\"20\" y=\"30\">no finished runs yet</text>\n</svg>\n");
        return s;
    }
    let (xmin, xmax) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
        (a.min(p.0.max(1.0).log10().floor()), b.max(p.0.max(1.0).log10().ceil()))
    });
    for (k, panel) in panels.iter().enumerate() {
        let (ox, oy) = (pw * (k % cols) as f64, ph * (k / cols) as f64);
        let pts: Vec<(f64, f64)> = families.iter().flat_map(|f| point(f, panel)).collect();
        if pts.is_empty() {
            continue;
        }
        let (ymin, ymax) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let (ymin, ymax) =
            (((ymin * 100.0 - 2.0) / 5.0).floor() * 5.0, (((ymax * 100.0 + 2.0) / 5.0).ceil() * 5.0).min(100.0));
        let sx = |x: f64| ox + m + (x.max(1.0).log10() - xmin) / (xmax - xmin).max(1e-9) * (pw - 1.5 * m);
        let sy = |y: f64| oy + ph - m - (100.0 * y - ymin) / (ymax - ymin).max(1e-9) * (ph - 2.0 * m);
        let _ = writeln!(s, "<text x=\"{:.1}\" y=\"{:.1}\" font-weight=\"bold\">{panel}</text>", ox + m, oy + m - 12.0);
        let _ = writeln!(s, "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{2:.1}\" y2=\"{1:.1}\" stroke=\"black\"/><line x1=\"{0:.1}\" y1=\"{3:.1}\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"black\"/>", ox + m, oy + ph - m, ox + pw - 0.5 * m, oy + m);
        let mut d = xmin;
        while d <= xmax + 1e-9 {
            let label = match d as i32 {
                e if e < 3 => format!("{} B", 10i64.pow(e.max(0) as u32)),
                e if e < 6 => format!("{} kB", 10i64.pow(e as u32 - 3)),
                e => format!("{} MB", 10i64.pow((e - 6).max(0) as u32)),
            };
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
                sx(10f64.powf(d)),
                oy + ph - m + 14.0
            );
            d += 1.0;
        }
        for q in 0..=2 {
            let y = ymin + (ymax - ymin) * q as f64 / 2.0;
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{y:.0}</text>",
                ox + m - 4.0,
                sy(y / 100.0) + 4.0
            );
        }
        for (fi, f) in families.iter().enumerate() {
            let p = point(f, panel);
            let c = colors[fi % colors.len()];
            if p.len() > 1 {
                let path: Vec<String> = p.iter().map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y))).collect();
                let _ = writeln!(
                    s,
                    "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\" points=\"{}\"/>",
                    path.join(" ")
                );
            }
            for (x, y) in p {
                let _ = writeln!(s, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>", sx(x), sy(y));
            }
        }
    }
    let lx = pw * cols as f64 + 10.0;
    let _ = writeln!(s, "<text x=\"{lx}\" y=\"40\" font-weight=\"bold\">test accuracy (%)</text>");
    let _ = writeln!(s, "<text x=\"{lx}\" y=\"54\">against stored bytes per task (log)</text>");
    for (fi, f) in families.iter().enumerate() {
        let y = 76.0 + 16.0 * fi as f64;
        let _ = writeln!(s, "<rect x=\"{lx}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\">{f}</text>", y - 9.0, colors[fi % colors.len()], lx + 14.0, y);
    }
    s.push_str("</svg>\n");
    s
}
