//! Arguments several verbs share, and value parsers that check ranges when the command line is
//! read (so a bad value fails before any work, with what is expected).

use consolidator::data::suite::Task;
use consolidator::optim::OptimizerKind;
use consolidator::train::TrainConfig;
use std::path::PathBuf;

/// A task of the transfer suite.
pub fn task(s: &str) -> Result<Task, String> {
    s.parse::<Task>().map_err(|e| e.to_string())
}

fn whole(s: &str, lo: usize, hi: usize) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number in {lo}..={hi}")),
    }
}

fn real(s: &str, lo: f32, hi: f32, lo_open: bool) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(x) if x.is_finite() && (if lo_open { x > lo } else { x >= lo }) && x <= hi => Ok(x),
        _ => Err(format!("expected a number in {}{lo}, {hi}]", if lo_open { "(" } else { "[" })),
    }
}

/// Epochs: 1..=1000000.
pub fn epochs(s: &str) -> Result<usize, String> {
    whole(s, 1, 1_000_000)
}
/// Batch size: 1..=65536.
pub fn batch(s: &str) -> Result<usize, String> {
    whole(s, 1, 65_536)
}
/// Warm-up epochs: 0..=1000000.
pub fn warmup(s: &str) -> Result<usize, String> {
    whole(s, 0, 1_000_000)
}
/// A count of epochs between two events: 1..=1000000.
pub fn every(s: &str) -> Result<usize, String> {
    whole(s, 1, 1_000_000)
}
/// Learning rate: (0, 10].
pub fn lr(s: &str) -> Result<f32, String> {
    real(s, 0.0, 10.0, true)
}
/// Weight decay, gradient clip: [0, 10] and [0, 1e6].
pub fn decay(s: &str) -> Result<f32, String> {
    real(s, 0.0, 10.0, false)
}
/// Gradient-norm clip: [0, 1e6] (0: off).
pub fn clip(s: &str) -> Result<f32, String> {
    real(s, 0.0, 1e6, false)
}
/// A held-out fraction in (0, 1).
pub fn split_fraction(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(x) if x > 0.0 && x < 1.0 => Ok(x),
        _ => Err("expected a fraction in (0, 1)".into()),
    }
}

/// A random shift in pixels, 0..=1024.
pub fn shift(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n <= 1024 => Ok(n),
        _ => Err("expected a whole number of pixels in 0..=1024".into()),
    }
}

/// A rate in [0, 1).
pub fn rate(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(x) if (0.0..1.0).contains(&x) => Ok(x),
        _ => Err("expected a number in [0, 1)".into()),
    }
}

/// Training flags common to `pretrain` and `adapt`; unset values take the verb's defaults.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TrainFlags {
    /// Passes over the training set
    #[arg(long, value_name = "N", value_parser = epochs)]
    pub epochs: Option<usize>,
    /// Images per step
    #[arg(long, value_name = "N", value_parser = batch)]
    pub batch: Option<usize>,
    /// Peak learning rate, in (0, 10]
    #[arg(long, value_name = "X", value_parser = lr, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// Weight decay, in [0, 10]
    #[arg(long, value_name = "X", value_parser = decay, allow_negative_numbers = true)]
    pub wd: Option<f32>,
    /// SGD with momentum 0.9 instead of AdamW
    #[arg(long)]
    pub sgd: bool,
    /// Epochs of linear warm-up
    #[arg(long, value_name = "N", value_parser = warmup)]
    pub warmup: Option<usize>,
    /// Global gradient-norm clip (0: off)
    #[arg(long, value_name = "X", value_parser = clip, allow_negative_numbers = true)]
    pub clip: Option<f32>,
    /// Label smoothing, in [0, 1)
    #[arg(long, value_name = "X", value_parser = rate, allow_negative_numbers = true)]
    pub label_smoothing: Option<f32>,
    /// Shift each training image by up to N pixels each way, at random (edges copied; 0: off)
    #[arg(long, value_name = "N", value_parser = shift)]
    pub shift: Option<usize>,
    /// Seed of initialisation, shuffling, drop-path and shifts
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Evaluate on the validation set every N epochs (and after the last)
    #[arg(long, value_name = "N", value_parser = every)]
    pub eval_every: Option<usize>,
    /// Write a training checkpoint (model + optimiser + position) to FILE
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Checkpoint every N epochs
    #[arg(long, value_name = "N", value_parser = every, default_value_t = 1)]
    pub checkpoint_every: usize,
    /// Continue from --checkpoint when it exists
    #[arg(long, requires = "checkpoint")]
    pub resume: bool,
    /// No progress line on standard error
    #[arg(long)]
    pub no_progress: bool,
}

impl TrainFlags {
    /// The training configuration: flags over the given defaults.
    pub fn config(&self, defaults: TrainConfig) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs.unwrap_or(defaults.epochs),
            batch_size: self.batch.unwrap_or(defaults.batch_size),
            optimizer: if self.sgd { OptimizerKind::SGD } else { defaults.optimizer },
            lr: self.lr.unwrap_or(defaults.lr),
            weight_decay: self.wd.unwrap_or(defaults.weight_decay),
            warmup_epochs: self.warmup.unwrap_or(defaults.warmup_epochs),
            clip_grad: self.clip.unwrap_or(defaults.clip_grad),
            label_smoothing: self.label_smoothing.unwrap_or(defaults.label_smoothing),
            shift: self.shift.unwrap_or(defaults.shift),
            seed: self.seed,
            eval_every: self.eval_every.unwrap_or(defaults.eval_every),
            checkpoint: self.checkpoint.clone(),
            checkpoint_every: self.checkpoint_every,
            resume: self.resume,
            ..defaults
        }
    }
}
