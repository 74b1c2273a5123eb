//! The main job, `demo`: the shipped backbone adapted three ways on a shipped task, then the
//! consolidator's two stages through files, verified, and the comparison printed.

use super::args;
use super::common::*;
use super::{say, R};
use consolidator::data::suite::Task;
use consolidator::peft::{ConsolidatorConfig, Method};
use consolidator::reparam::{attach_delta, consolidate, merge, TaskDelta};
use consolidator::Tensor;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `consolidator demo` (also what runs with no command).
#[derive(clap::Args)]
pub struct DemoArgs {
    /// A task of the transfer suite
    #[arg(long, value_parser = args::task, default_value = "shift")]
    task: Task,
    /// Epochs of each adaptation
    #[arg(long, value_parser = args::epochs, default_value_t = 12)]
    epochs: usize,
    /// Where to write the delta and the merged model
    #[arg(long, value_name = "DIR", default_value = "runs/demo")]
    out: PathBuf,
    /// The backbone [default: the shipped one]
    #[arg(long, value_name = "FILE")]
    backbone: Option<PathBuf>,
    /// No progress lines on standard error
    #[arg(long)]
    no_progress: bool,
}

impl Default for DemoArgs {
    fn default() -> Self {
        DemoArgs { task: Task::Shift, epochs: 12, out: PathBuf::from("runs/demo"), backbone: None, no_progress: false }
    }
}

pub fn demo(a: &DemoArgs, data: Option<&Path>) -> R {
    let bb_path = backbone_path(a.backbone.as_deref(), data)?;
    let backbone = load_backbone(&bb_path, None)?;
    std::fs::create_dir_all(&a.out).map_err(|err| format!("cannot create {}: {err}", a.out.display()))?;
    let (delta_path, merged_path) = (a.out.join("delta.safetensors"), a.out.join("merged.safetensors"));
    check_output(&delta_path, &[&bb_path])?;
    check_output(&merged_path, &[&bb_path])?;
    let t_start = Instant::now();
    let data = load_task(a.task, data)?;
    let adapt_data = AdaptData::task(&data);
    let bb = backbone_params(&backbone.vit);
    say!("consolidator demo: adapting the shipped backbone {} ({bb} parameters)", bb_path.display());
    say!(
        "task `{}`: {} ({} train, {} val, {} test)\n",
        a.task.name(),
        data.description,
        data.train.len(),
        data.val.len(),
        data.test.len()
    );
    let methods = [
        Method::parse("linear", 0)?,
        Method::parse("full", 0)?,
        Method::new(ConsolidatorConfig::released(backbone.vit.config.embed_dim)),
    ];
    let mut rows = Vec::new();
    let mut adapted = None;
    for m in &methods {
        let cfg = suite_config(m, a.epochs, lr_grid(m)[0], 0);
        let r = run_adapt(&backbone, m, &adapt_data, &cfg, format!("{:<13}", m.name()), !a.no_progress, None)?;
        rows.push((
            m.name(),
            r.val_acc.unwrap_or(f32::NAN),
            r.test_acc.unwrap_or(f32::NAN),
            r.tunable,
            r.stored_bytes,
            r.report.seconds,
        ));
        adapted = Some(r.model);
    }
    // Stage 1 and stage 2 on the consolidator (the last run), through files, then verify.
    let adapted = adapted.expect("the consolidator ran");
    consolidate(&adapted, &backbone.vit)?.save(&delta_path)?;
    let delta = TaskDelta::load(&delta_path)?;
    merge(&backbone, &delta)?.model.save(&merged_path)?;
    let merged = load_model(&merged_path, None)?;
    let served = attach_delta(&backbone, &delta)?;
    let prep = backbone.preprocess();
    let x = prep.materialize(&data.test)?.images;
    let unmerged_logits = adapted.predict(&x)?;
    let merged_logits = merged.predict(&x)?;
    let stage1_logits = served.predict(&x)?;
    let scale = unmerged_logits.max_abs().max(1.0);
    let d2 = merged_logits.max_abs_diff(&unmerged_logits);
    let d1 = stage1_logits.max_abs_diff(&unmerged_logits);
    let agree = argmax_agreement(&merged_logits, &unmerged_logits);
    if d2 > 1e-4 * scale || d1 > 1e-4 * scale {
        return Err(format!(
            "merged logits differ from unmerged ones by {d2:.3e} (stage 1: {d1:.3e}; logit scale {scale:.2})"
        )
        .into());
    }
    // Latency of one batch of 64 test images.
    let xb = prep.batch(&data.test, &(0..64.min(data.test.len())).collect::<Vec<_>>())?.0;
    let mut base = backbone.vit.clone();
    base.reset_head(data.train.num_classes, 0);
    // Timed in turn within each repetition, so the ratios are not at the mercy of machine noise.
    let (mut f0, mut f1, mut f2) =
        (|| base.predict(&xb).map(|_| ()), || adapted.predict(&xb).map(|_| ()), || merged.predict(&xb).map(|_| ()));
    let lat = consolidator::bench::median_ms_interleaved(15, &mut [&mut f0, &mut f1, &mut f2])?;
    let (lat_base, lat_unmerged, lat_merged) = (lat[0], lat[1], lat[2]);

    say!("\n| method | val acc | test acc | tunable params | % of backbone | stored per task | train time |");
    say!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, va, ta, tun, st, secs) in &rows {
        say!(
            "| {name} | {:.1}% | {:.1}% | {tun} | {:.2}% | {} | {secs:.1}s |",
            100.0 * va,
            100.0 * ta,
            100.0 * *tun as f64 / bb as f64,
            bytes(*st)
        );
    }
    say!(
        "\nconsolidator, stage 1 → {} ({}), stage 2 → {}",
        delta_path.display(),
        bytes(delta.storage_bytes()),
        merged_path.display()
    );
    say!(
        "merged vs unmerged logits on {} test images: max |diff| {d2:.2e} (stage 1 on the fly: {d1:.2e}; logit scale {scale:.1}); predictions agree on {:.2}%",
        x.shape()[0],
        100.0 * agree
    );
    say!("\ninference latency, batch of {} images (median of 15, the three timed in turn):", xb.shape()[0]);
    say!("| model | latency | vs backbone |");
    say!("|---|---:|---:|");
    for (n, l) in
        [("backbone", lat_base), ("unmerged (with branches)", lat_unmerged), ("merged (plain ViT)", lat_merged)]
    {
        say!("| {n} | {l:.2} ms | {:.2}× |", l / lat_base);
    }
    say!("\ndone in {:.1}s", t_start.elapsed().as_secs_f32());
    Ok(())
}

/// The fraction of rows whose arg-max agree.
pub fn argmax_agreement(a: &Tensor, b: &Tensor) -> f64 {
    let k = a.shape()[1];
    let arg = |r: &[f32]| r.iter().enumerate().fold(0, |m, (j, &v)| if v > r[m] { j } else { m });
    let n = a.shape()[0];
    (0..n).filter(|&i| arg(&a.data()[i * k..(i + 1) * k]) == arg(&b.data()[i * k..(i + 1) * k])).count() as f64
        / n as f64
}
