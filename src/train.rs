//! The training loop: mini-batches, AdamW or SGD, cosine schedule with warm-up, gradient
//! clipping, evaluation every N epochs, periodic atomic checkpoints with `resume`, and a clear
//! stop (keeping the last good checkpoint) when the loss stops being finite.
//!
//! Runs are reproducible: epoch `e` shuffles with seed `seed + e`, step `s`'s tape (drop-path,
//! dropout) with a seed derived from `(seed, s)`, so a resumed run continues exactly as an
//! uninterrupted one would.

use crate::autograd::Tape;
use crate::data::Dataset;
use crate::io::safetensors::TensorFile;
use crate::nn::{Module, VisionTransformer};
use crate::optim::{clip_scale, CosineSchedule, Optimizer};
use crate::{Error, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// How to train.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Number of passes over the training set.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate (after warm-up).
    pub lr: f32,
    /// Decoupled weight decay (AdamW) or L2 (SGD), on the parameters `optim::decays` selects.
    pub weight_decay: f32,
    /// `true`: SGD with momentum 0.9; `false`: AdamW.
    pub sgd: bool,
    /// Epochs of linear warm-up from `warmup_lr` to `lr`.
    pub warmup_epochs: usize,
    /// Learning rate at the first step.
    pub warmup_lr: f32,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f32,
    /// Global gradient-norm clip (0 = off).
    pub clip_grad: f32,
    /// Label smoothing of the cross-entropy (0 = off).
    pub label_smoothing: f32,
    /// Seed of the shuffling and of the stochastic regularisers.
    pub seed: u64,
    /// Evaluate on the validation set every this many epochs (and after the last).
    pub eval_every: usize,
    /// Where to write checkpoints (model + optimiser state), if anywhere.
    pub checkpoint: Option<PathBuf>,
    /// Checkpoint every this many epochs.
    pub checkpoint_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 64,
            lr: 1e-3,
            weight_decay: 0.0,
            sgd: false,
            warmup_epochs: 1,
            warmup_lr: 1e-6,
            min_lr: 1e-5,
            clip_grad: 0.0,
            label_smoothing: 0.0,
            seed: 0,
            eval_every: 1,
            checkpoint: None,
            checkpoint_every: 1,
        }
    }
}

/// One line of the live progress display.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Current epoch (1-based).
    pub epoch: usize,
    /// Total epochs.
    pub epochs: usize,
    /// Current step in the epoch (1-based).
    pub step: usize,
    /// Steps per epoch.
    pub steps: usize,
    /// Mean training loss of the epoch so far.
    pub loss: f32,
    /// Training accuracy of the epoch so far.
    pub acc: f32,
    /// Training throughput.
    pub images_per_sec: f32,
    /// Estimated seconds to the end of the run.
    pub eta_secs: f32,
    /// Learning rate of the current step.
    pub lr: f32,
}

/// What happened in one epoch.
#[derive(Clone, Debug)]
pub struct EpochLog {
    /// The epoch (1-based).
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f32,
    /// Training accuracy.
    pub train_acc: f32,
    /// Validation accuracy, on epochs that evaluate.
    pub val_acc: Option<f32>,
    /// Learning rate at the end of the epoch.
    pub lr: f32,
    /// Wall-clock seconds of the epoch.
    pub seconds: f32,
}

/// The whole run.
#[derive(Clone, Debug, Default)]
pub struct TrainReport {
    /// One entry per epoch run.
    pub epochs: Vec<EpochLog>,
    /// Wall-clock seconds of the run.
    pub seconds: f32,
    /// Mean training throughput.
    pub images_per_sec: f32,
}

impl TrainReport {
    /// The last validation accuracy measured.
    pub fn final_val_acc(&self) -> Option<f32> {
        self.epochs.iter().rev().find_map(|e| e.val_acc)
    }
    /// The best validation accuracy measured.
    pub fn best_val_acc(&self) -> Option<f32> {
        self.epochs.iter().filter_map(|e| e.val_acc).reduce(f32::max)
    }
}

/// Set by a Ctrl-C handler (or anything else) to stop training after the current step, with a
/// checkpoint saved.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// Accuracy and mean loss of `model` on `ds` (inference: no tape recording, eval mode).
pub fn evaluate(model: &VisionTransformer, ds: &Dataset, batch_size: usize) -> Result<(f32, f32)> {
    if ds.is_empty() {
        return Err(Error::data("cannot evaluate on an empty dataset"));
    }
    let (mut correct, mut loss) = (0usize, 0.0f64);
    for (images, labels) in ds.batches(batch_size.max(1), None, false) {
        let tape = Tape::inference();
        let logits = model.forward(&tape, &tape.constant(images))?;
        correct += count_correct(logits.value().data(), &labels);
        loss += logits.cross_entropy(&labels, 0.0)?.value().data()[0] as f64 * labels.len() as f64;
    }
    Ok((correct as f32 / ds.len() as f32, (loss / ds.len() as f64) as f32))
}

fn count_correct(logits: &[f32], labels: &[usize]) -> usize {
    let k = logits.len() / labels.len().max(1);
    labels
        .iter()
        .enumerate()
        .filter(|(i, &l)| {
            let row = &logits[i * k..(i + 1) * k];
            let arg = row.iter().enumerate().fold(0, |b, (j, &v)| if v > row[b] { j } else { b });
            arg == l
        })
        .count()
}

/// Where a run resumes: completed epochs, and steps already taken in the next epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Completed epochs.
    pub epoch: usize,
    /// Steps already taken in the next epoch.
    pub step: usize,
}

/// Trains `model` in place, from `start` (see [`load_checkpoint`]; `Position::default()` for a
/// fresh run) with optimiser `opt`. `progress` is called after every step.
pub fn train(
    model: &mut VisionTransformer,
    opt: &mut Optimizer,
    train: &Dataset,
    val: Option<&Dataset>,
    cfg: &TrainConfig,
    start: Position,
    progress: &mut dyn FnMut(&Progress),
) -> Result<TrainReport> {
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(Error::invalid("train", "batch size and epochs must be positive"));
    }
    let c = &model.config;
    train.validate(c.in_chans, c.img_size.0, c.img_size.1, c.num_classes)?;
    if let Some(v) = val {
        v.validate(c.in_chans, c.img_size.0, c.img_size.1, c.num_classes)?;
    }
    if model.num_trainable() == 0 {
        return Err(Error::invalid("train", "the model has no trainable parameter"));
    }
    let drop_last = train.len() >= cfg.batch_size;
    let steps_per_epoch = train.batches(cfg.batch_size, None, drop_last).len();
    let sched = CosineSchedule {
        base_lr: cfg.lr,
        warmup_lr: cfg.warmup_lr,
        min_lr: cfg.min_lr.min(cfg.lr),
        warmup_steps: cfg.warmup_epochs * steps_per_epoch,
        total_steps: cfg.epochs * steps_per_epoch,
    };
    let mut report = TrainReport::default();
    let t_run = Instant::now();
    let mut images_seen = 0usize;
    for epoch in start.epoch..cfg.epochs {
        let t_epoch = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let mut lr = cfg.lr;
        let skip = if epoch == start.epoch { start.step } else { 0 };
        let mut steps_done = skip;
        let batches = train.batches(cfg.batch_size, Some(cfg.seed.wrapping_add(epoch as u64)), drop_last);
        for (step, (images, labels)) in batches.enumerate().skip(skip) {
            let global = epoch * steps_per_epoch + step;
            lr = sched.lr(global);
            let (loss, ok, grads) = {
                let tape = Tape::new().with_seed(cfg.seed.wrapping_mul(0x9E37_79B9).wrapping_add(global as u64));
                let logits = model.forward(&tape, &tape.constant(images))?;
                let loss = logits.cross_entropy(&labels, cfg.label_smoothing)?;
                let l = loss.value().data()[0];
                if !l.is_finite() {
                    return Err(Error::NonFinite {
                        what: format!(
                            "the training loss at epoch {}, step {} (learning rate {lr:.3e}); training stopped{}",
                            epoch + 1,
                            step + 1,
                            match &cfg.checkpoint {
                                Some(p) => format!(", the last good checkpoint {} is kept", p.display()),
                                None => String::new(),
                            }
                        ),
                    });
                }
                let ok = count_correct(logits.value().data(), &labels);
                (l, ok, tape.backward(&loss)?)
            };
            let (scale, _) = clip_scale(model, &grads, cfg.clip_grad);
            opt.step(model, &grads, lr, scale)?;
            steps_done = step + 1;
            loss_sum += loss as f64 * labels.len() as f64;
            correct += ok;
            seen += labels.len();
            images_seen += labels.len();
            let el = t_run.elapsed().as_secs_f32();
            let ips = images_seen as f32 / el.max(1e-6);
            let remaining = (cfg.epochs - epoch) * steps_per_epoch - step - 1;
            progress(&Progress {
                epoch: epoch + 1,
                epochs: cfg.epochs,
                step: step + 1,
                steps: steps_per_epoch,
                loss: (loss_sum / seen as f64) as f32,
                acc: correct as f32 / seen as f32,
                images_per_sec: ips,
                eta_secs: remaining as f32 * cfg.batch_size as f32 / ips.max(1e-6),
                lr,
            });
            if STOP.load(Ordering::Relaxed) {
                break;
            }
        }
        if STOP.load(Ordering::Relaxed) && steps_done < steps_per_epoch {
            // Stopped mid-epoch: save exactly where we are, so a resume continues from here.
            if let Some(path) = &cfg.checkpoint {
                save_checkpoint(path, model, opt, Position { epoch, step: steps_done })?;
            }
            return Err(Error::invalid(
                "train",
                format!(
                    "stopped by request at epoch {}, step {steps_done}; the checkpoint holds that position",
                    epoch + 1
                ),
            ));
        }
        let last = epoch + 1 == cfg.epochs;
        let val_acc = match val {
            Some(v) if last || (cfg.eval_every > 0 && (epoch + 1) % cfg.eval_every == 0) => {
                Some(evaluate(model, v, 256)?.0)
            }
            _ => None,
        };
        report.epochs.push(EpochLog {
            epoch: epoch + 1,
            train_loss: (loss_sum / seen.max(1) as f64) as f32,
            train_acc: correct as f32 / seen.max(1) as f32,
            val_acc,
            lr,
            seconds: t_epoch.elapsed().as_secs_f32(),
        });
        let stopping = STOP.load(Ordering::Relaxed);
        if let Some(path) = &cfg.checkpoint {
            if last || stopping || (epoch + 1) % cfg.checkpoint_every.max(1) == 0 {
                save_checkpoint(path, model, opt, Position { epoch: epoch + 1, step: 0 })?;
            }
        }
        if stopping && !last {
            return Err(Error::invalid(
                "train",
                format!("stopped by request after epoch {}; the checkpoint holds that position", epoch + 1),
            ));
        }
    }
    report.seconds = t_run.elapsed().as_secs_f32();
    report.images_per_sec = images_seen as f32 / report.seconds.max(1e-6);
    Ok(report)
}

/// Writes model and optimiser state and the run's position, atomically.
pub fn save_checkpoint(path: &std::path::Path, model: &VisionTransformer, opt: &Optimizer, at: Position) -> Result<()> {
    let mut f = model.state_dict();
    opt.state_dict(&mut f);
    f.metadata.insert("epochs_done".into(), at.epoch.to_string());
    f.metadata.insert("steps_done".into(), at.step.to_string());
    f.save(path)
}

/// Restores a checkpoint written by [`save_checkpoint`] into a model of the same structure (the
/// method already applied) and its optimiser; returns where the run stood.
pub fn load_checkpoint(path: &std::path::Path, model: &mut VisionTransformer, opt: &mut Optimizer) -> Result<Position> {
    let mut f = TensorFile::load(path)?;
    let num = |k: &str| {
        f.metadata
            .get(k)
            .and_then(|v| v.parse::<usize>().ok())
            .ok_or_else(|| Error::format(path.display().to_string(), format!("not a training checkpoint (no `{k}`)")))
    };
    let at = Position { epoch: num("epochs_done")?, step: num("steps_done")? };
    opt.load_state_dict(&f)?;
    f.tensors.retain(|k, _| !k.starts_with("opt."));
    model.load_state_dict(&f, true)?;
    Ok(at)
}
