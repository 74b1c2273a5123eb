//! The training loop: mini-batches, AdamW or SGD, cosine schedule with warm-up, gradient
//! clipping, evaluation every N epochs, periodic atomic checkpoints with `resume`, and a clear
//! stop (keeping the last good checkpoint) when the loss stops being finite.
//!
//! Runs are reproducible: epoch `e` shuffles with seed `seed + e`, step `s`'s tape (drop-path,
//! dropout) with a seed derived from `(seed, s)`, so a resumed run continues exactly as an
//! uninterrupted one would.

use crate::autograd::Tape;
use crate::data::image::shift_batch;
use crate::data::{Preprocess, Source};
use crate::io::safetensors::TensorFile;
use crate::model::Model;
use crate::nn::{Module, VisionTransformer};
use crate::optim::{clip_scale, CosineSchedule, Optimizer, OptimizerKind};
use crate::{Error, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How to train: every field is honoured by the loop.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Number of passes over the training set.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// AdamW or SGD with momentum.
    pub optimizer: OptimizerKind,
    /// Peak learning rate (after warm-up).
    pub lr: f32,
    /// Decoupled weight decay (AdamW) or L2 (SGD), on the parameters `optim::decays` selects.
    pub weight_decay: f32,
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
    /// Random translation of the training images by up to this many pixels each way
    /// ([`crate::data::image::shift_batch`]; 0 = off). Drawn from `(seed, step)`, so a resumed
    /// run continues exactly.
    pub shift: usize,
    /// Seed of the shuffling and of the stochastic regularisers.
    pub seed: u64,
    /// Evaluate on the validation set every this many epochs (and after the last; 0: only the last).
    pub eval_every: usize,
    /// Where to write checkpoints (model + optimiser state + position), if anywhere.
    pub checkpoint: Option<PathBuf>,
    /// Checkpoint every this many epochs (and after the last, and when stopped).
    pub checkpoint_every: usize,
    /// Continue from `checkpoint` when that file exists (it must match the model and this config).
    pub resume: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 64,
            optimizer: OptimizerKind::ADAMW,
            lr: 1e-3,
            weight_decay: 0.0,
            warmup_epochs: 1,
            warmup_lr: 1e-6,
            min_lr: 1e-5,
            clip_grad: 0.0,
            label_smoothing: 0.0,
            shift: 0,
            seed: 0,
            eval_every: 1,
            checkpoint: None,
            checkpoint_every: 1,
            resume: false,
        }
    }
}

impl TrainConfig {
    /// Checks every value's range (a clear error before any work).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid("train config", m));
        if self.epochs == 0 || self.epochs > 1_000_000 {
            return bad(format!("epochs {} must be in 1..=1000000", self.epochs));
        }
        if self.batch_size == 0 || self.batch_size > 1 << 20 {
            return bad(format!("batch size {} must be in 1..=1048576", self.batch_size));
        }
        if self.warmup_epochs > 1_000_000 {
            return bad(format!("warm-up epochs {} must be in 0..=1000000", self.warmup_epochs));
        }
        for (name, v) in [
            ("learning rate", self.lr),
            ("warm-up learning rate", self.warmup_lr),
            ("minimum learning rate", self.min_lr),
        ] {
            if !(0.0..=10.0).contains(&v) {
                return bad(format!("{name} {v} must be a finite number in [0, 10]"));
            }
        }
        if self.lr <= 0.0 {
            return bad(format!("learning rate {} must be positive", self.lr));
        }
        if !(self.weight_decay.is_finite() && (0.0..=10.0).contains(&self.weight_decay)) {
            return bad(format!("weight decay {} must be in [0, 10]", self.weight_decay));
        }
        if !(self.clip_grad.is_finite() && self.clip_grad >= 0.0) {
            return bad(format!("gradient clip {} must be a finite number ≥ 0 (0: off)", self.clip_grad));
        }
        if self.shift > 1024 {
            return bad(format!("a shift of {} pixels must be at most 1024", self.shift));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(format!("label smoothing {} must be in [0, 1)", self.label_smoothing));
        }
        match self.optimizer {
            OptimizerKind::AdamW { beta1, beta2, eps } => {
                if !((0.0..1.0).contains(&beta1) && (0.0..1.0).contains(&beta2) && eps.is_finite() && eps > 0.0) {
                    return bad("AdamW needs betas in [0, 1) and a positive finite eps".into());
                }
            }
            OptimizerKind::Sgd { momentum } => {
                if !(0.0..1.0).contains(&momentum) {
                    return bad(format!("SGD momentum {momentum} must be in [0, 1)"));
                }
            }
        }
        Ok(())
    }
}

/// Asks a running [`Trainer`] to stop after its current step (a checkpoint is saved first).
/// Clones share the flag: hand one to a Ctrl-C handler, keep the other.
#[derive(Clone, Debug, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// A handle that has not been raised.
    pub fn new() -> Self {
        StopHandle::default()
    }
    /// Asks training to stop; returns whether it had been asked already.
    pub fn stop(&self) -> bool {
        self.0.swap(true, Ordering::SeqCst)
    }
    /// Whether a stop was asked for.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
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
    /// Where the run resumed from a checkpoint, if it did.
    pub resumed_from: Option<Position>,
    /// Where the run stopped on request (its checkpoint holds this position), if it did.
    pub stopped_at: Option<Position>,
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

/// Accuracy and mean loss of `model` on `data` (inference: no tape recording, eval mode). The
/// images are prepared as the model expects ([`Model::preprocess`]) a batch at a time, so memory
/// stays bounded whatever the source holds.
pub fn evaluate(model: &Model, data: &dyn Source, batch_size: usize) -> Result<(f32, f32)> {
    evaluate_with(&model.vit, &model.preprocess(), data, batch_size)
}

/// [`evaluate`] of a bare network with an explicit preprocessing.
pub fn evaluate_with(
    vit: &VisionTransformer,
    prep: &Preprocess,
    data: &dyn Source,
    batch_size: usize,
) -> Result<(f32, f32)> {
    if data.is_empty() {
        return Err(Error::data("cannot evaluate on an empty dataset"));
    }
    check_classes(data, vit.config.num_classes)?;
    let (mut correct, mut loss) = (0usize, 0.0f64);
    for batch in prep.batches(data, batch_size.max(1), None, false) {
        let (images, labels) = batch?;
        let tape = Tape::inference();
        let logits = vit.forward(&tape, &tape.constant(images))?;
        correct += count_correct(logits.value().data(), &labels);
        loss += logits.cross_entropy(&labels, 0.0)?.value().data()[0] as f64 * labels.len() as f64;
    }
    Ok((correct as f32 / data.len() as f32, (loss / data.len() as f64) as f32))
}

/// Refuses data with more classes than the model predicts.
fn check_classes(data: &dyn Source, model_classes: usize) -> Result<()> {
    if data.num_classes() > model_classes {
        return Err(Error::data(format!(
            "the data has {} classes, the model predicts {model_classes} (labels would fall outside its head)",
            data.num_classes()
        )));
    }
    Ok(())
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

/// Where a run stands: completed epochs, and steps already taken in the next epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Completed epochs.
    pub epoch: usize,
    /// Steps already taken in the next epoch.
    pub step: usize,
}

/// A callback after every step.
type ProgressFn<'a> = Box<dyn FnMut(&Progress) + 'a>;
/// A callback after every epoch, with the model as it stands.
type EpochFn<'a> = Box<dyn FnMut(&EpochLog, &Model) -> Result<()> + 'a>;

/// Trains a [`Model`] in place: mini-batches, the configured optimiser, cosine schedule with
/// warm-up, clipping, evaluation, checkpoints, resume, and a stop on request.
///
/// ```
/// use consolidator::data::Dataset;
/// use consolidator::model::Model;
/// use consolidator::nn::{VisionTransformer, VitConfig};
/// use consolidator::peft::Method;
/// use consolidator::train::{TrainConfig, Trainer};
/// use consolidator::Tensor;
/// let cfg = VitConfig { depth: 1, ..VitConfig::preset("vit_mnist_tiny")? };
/// let backbone = Model::plain(VisionTransformer::new(&cfg, 0)?);
/// let mut model = backbone.adapt(&Method::parse("consolidator:g=16", 64)?, 2, 0)?;
/// let data = Dataset::new(Tensor::full(&[8, 1, 28, 28], 0.5), vec![0, 1, 0, 1, 0, 1, 0, 1], 2)?;
/// let mut steps = 0;
/// let report = Trainer::new(TrainConfig { epochs: 2, batch_size: 4, ..TrainConfig::default() })
///     .on_progress(|_| steps += 1)
///     .run(&mut model, &data, None)?;
/// assert_eq!(report.epochs.len(), 2);
/// assert_eq!(steps, 4);
/// # Ok::<(), consolidator::Error>(())
/// ```
pub struct Trainer<'a> {
    cfg: TrainConfig,
    progress: Option<ProgressFn<'a>>,
    epoch_end: Option<EpochFn<'a>>,
    stop: StopHandle,
}

impl<'a> Trainer<'a> {
    /// A trainer with this configuration.
    pub fn new(cfg: TrainConfig) -> Self {
        Trainer { cfg, progress: None, epoch_end: None, stop: StopHandle::new() }
    }

    /// Calls `f` after every step.
    pub fn on_progress(mut self, f: impl FnMut(&Progress) + 'a) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// Calls `f` at the end of every epoch with the epoch's log and the model (e.g. to evaluate
    /// on another split); an error from `f` ends the run with that error.
    pub fn on_epoch_end(mut self, f: impl FnMut(&EpochLog, &Model) -> Result<()> + 'a) -> Self {
        self.epoch_end = Some(Box::new(f));
        self
    }

    /// Stops after the step during which `stop` is raised (saving a checkpoint at that exact
    /// position, if the config names one); the report's `stopped_at` says where.
    pub fn with_stop(mut self, stop: StopHandle) -> Self {
        self.stop = stop;
        self
    }

    /// Trains `model` on `train`, evaluating on `val`. Images are prepared as the model expects
    /// ([`Model::preprocess`]: channels, size, normalisation) a batch at a time.
    pub fn run(mut self, model: &mut Model, train: &dyn Source, val: Option<&dyn Source>) -> Result<TrainReport> {
        let cfg = self.cfg.clone();
        cfg.validate()?;
        if train.is_empty() {
            return Err(Error::data("the training set is empty"));
        }
        check_classes(train, model.vit.config.num_classes)?;
        if let Some(v) = val {
            check_classes(v, model.vit.config.num_classes)?;
        }
        let prep = model.preprocess();
        let (h, w) = model.vit.config.img_size;
        if cfg.shift > 0 && cfg.shift >= h.min(w) {
            return Err(Error::invalid(
                "train",
                format!("a shift of up to {} pixels needs images larger than the model's {h}×{w}", cfg.shift),
            ));
        }
        if model.vit.num_trainable() == 0 {
            return Err(Error::invalid("train", "the model has no trainable parameter"));
        }
        let drop_last = train.len() >= cfg.batch_size;
        let steps_per_epoch = prep.batches(train, cfg.batch_size, None, drop_last).len();
        let mut opt = Optimizer::new(cfg.optimizer, cfg.weight_decay);
        let mut report = TrainReport::default();
        let mut start = Position::default();
        if let Some(ck) = cfg.checkpoint.as_ref().filter(|p| cfg.resume && p.exists()) {
            start = load_checkpoint(ck, model, &mut opt)?;
            let global = (start.epoch as u64).checked_mul(steps_per_epoch as u64).map(|g| g + start.step as u64);
            if start.epoch > cfg.epochs || start.step >= steps_per_epoch.max(1) || global != Some(opt.t) {
                return Err(Error::format(
                    ck.display().to_string(),
                    format!(
                        "the checkpoint's position (epoch {}, step {}, optimiser step {}) does not fit this run ({} epochs of {steps_per_epoch} steps): it was made with other data or settings",
                        start.epoch, start.step, opt.t, cfg.epochs
                    ),
                ));
            }
            report.resumed_from = Some(start);
        }
        let sched = CosineSchedule {
            base_lr: cfg.lr,
            warmup_lr: cfg.warmup_lr,
            min_lr: cfg.min_lr.min(cfg.lr),
            warmup_steps: cfg.warmup_epochs * steps_per_epoch,
            total_steps: cfg.epochs * steps_per_epoch,
        };
        let t_run = Instant::now();
        let mut images_seen = 0usize;
        for epoch in start.epoch..cfg.epochs {
            let t_epoch = Instant::now();
            let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
            let mut lr = cfg.lr;
            let skip = if epoch == start.epoch { start.step } else { 0 };
            let mut steps_done = skip;
            let batches = prep.batches(train, cfg.batch_size, Some(cfg.seed.wrapping_add(epoch as u64)), drop_last);
            for (step, batch) in batches.enumerate().skip(skip) {
                let (images, labels) = batch?;
                let global = epoch * steps_per_epoch + step;
                let images = if cfg.shift > 0 {
                    let mut rng =
                        StdRng::seed_from_u64(cfg.seed.wrapping_mul(0x2545_F491).wrapping_add(global as u64) ^ 0x5A17);
                    shift_batch(&images, cfg.shift, &mut rng)?
                } else {
                    images
                };
                lr = sched.lr(global);
                // One parallel region for the whole step: the workers stay ready between its ops.
                let (loss, ok) = crate::par::region(|| -> Result<(f32, usize)> {
                    let (loss, ok, grads) = {
                        let tape =
                            Tape::new().with_seed(cfg.seed.wrapping_mul(0x9E37_79B9).wrapping_add(global as u64));
                        let logits = model.vit.forward(&tape, &tape.constant(images))?;
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
                    let (scale, _) = clip_scale(&model.vit, &grads, cfg.clip_grad);
                    opt.step(&mut model.vit, &grads, lr, scale)?;
                    Ok((loss, ok))
                })?;
                steps_done = step + 1;
                loss_sum += loss as f64 * labels.len() as f64;
                correct += ok;
                seen += labels.len();
                images_seen += labels.len();
                if let Some(progress) = self.progress.as_mut() {
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
                }
                if self.stop.is_stopped() {
                    break;
                }
            }
            check_finite(&model.vit, epoch + 1)?;
            if self.stop.is_stopped() && steps_done < steps_per_epoch {
                // Stopped mid-epoch: save exactly where we are, so a resume continues from here.
                let at = Position { epoch, step: steps_done };
                if let Some(path) = &cfg.checkpoint {
                    save_checkpoint(path, model, &opt, at)?;
                }
                report.stopped_at = Some(at);
                break;
            }
            let last = epoch + 1 == cfg.epochs;
            let val_acc = match val {
                Some(v) if last || (cfg.eval_every > 0 && (epoch + 1) % cfg.eval_every == 0) => {
                    Some(evaluate(model, v, 256)?.0)
                }
                _ => None,
            };
            let log = EpochLog {
                epoch: epoch + 1,
                train_loss: (loss_sum / seen.max(1) as f64) as f32,
                train_acc: correct as f32 / seen.max(1) as f32,
                val_acc,
                lr,
                seconds: t_epoch.elapsed().as_secs_f32(),
            };
            if let Some(f) = self.epoch_end.as_mut() {
                f(&log, model)?;
            }
            report.epochs.push(log);
            let stopping = self.stop.is_stopped();
            if let Some(path) = &cfg.checkpoint {
                if last || stopping || (epoch + 1) % cfg.checkpoint_every.max(1) == 0 {
                    save_checkpoint(path, model, &opt, Position { epoch: epoch + 1, step: 0 })?;
                }
            }
            if stopping && !last {
                report.stopped_at = Some(Position { epoch: epoch + 1, step: 0 });
                break;
            }
        }
        report.seconds = t_run.elapsed().as_secs_f32();
        report.images_per_sec = images_seen as f32 / report.seconds.max(1e-6);
        Ok(report)
    }
}

/// Refuses to go on (or save) once a weight is NaN or infinite.
fn check_finite(vit: &VisionTransformer, epoch: usize) -> Result<()> {
    match vit.named_params().into_iter().find(|(_, p)| !p.value.all_finite()) {
        Some((k, _)) => Err(Error::NonFinite {
            what: format!("the weights after epoch {epoch} (`{k}`): the learning rate is too high for this model; nothing was saved"),
        }),
        None => Ok(()),
    }
}

/// Writes the model (with its method, classes …), the optimiser state and the run's position,
/// atomically.
pub fn save_checkpoint(path: &Path, model: &Model, opt: &Optimizer, at: Position) -> Result<()> {
    let mut f = model.to_file()?;
    opt.state_dict(&mut f);
    f.metadata.insert("epochs_done".into(), at.epoch.to_string());
    f.metadata.insert("steps_done".into(), at.step.to_string());
    f.save(path)
}

/// Restores a checkpoint written by [`save_checkpoint`] into `model` (which must have the same
/// structure and method) and `opt`; returns where the run stood. Every part is checked: the
/// method, the weights (strictly, finite), the optimiser state (see
/// [`Optimizer::load_state_dict`]).
pub fn load_checkpoint(path: &Path, model: &mut Model, opt: &mut Optimizer) -> Result<Position> {
    let mut f = TensorFile::load(path)?;
    let what = path.display().to_string();
    let num = |k: &str| {
        f.metadata
            .get(k)
            .ok_or_else(|| Error::format(&what, format!("not a training checkpoint (no `{k}`)")))?
            .parse::<usize>()
            .map_err(|_| Error::format(&what, format!("`{k}` is not a whole number")))
    };
    let at = Position { epoch: num("epochs_done")?, step: num("steps_done")? };
    let method = f.metadata.get("method").cloned();
    if method.as_deref() != model.method.as_ref().map(|m| m.to_string()).as_deref() {
        return Err(Error::format(
            &what,
            format!(
                "the checkpoint was made with method `{}`, this run uses `{}`",
                method.as_deref().unwrap_or("none"),
                model.method.as_ref().map_or("none".to_string(), |m| m.to_string())
            ),
        ));
    }
    opt.load_state_dict(&f, &model.vit)?;
    f.tensors.retain(|k, _| !k.starts_with("opt."));
    if let Some((k, _)) = f.tensors.iter().find(|(_, t)| !t.all_finite()) {
        return Err(Error::format(&what, format!("tensor `{k}` holds NaN or infinite values")));
    }
    model.vit.load_state_dict(&f, true)?;
    Ok(at)
}
