//! The command line: parse (clap), call the library, print. Each verb's file holds its
//! arguments and its body; `common` holds what several verbs share.

mod args;
mod bench;
mod common;
mod demo;
mod model_cmds;
mod predict;
mod suite;
mod sweep;
mod train_cmds;

use clap::{Parser, Subcommand};
use std::fmt;
use std::io::Write;
use std::path::PathBuf;

/// What a verb can end with besides success.
#[derive(Debug)]
pub enum CliError {
    /// A one-sentence error with its cause (exit 1).
    Msg(String),
    /// Standard output was closed (`| head`): end quietly.
    BrokenPipe,
}

impl From<consolidator::Error> for CliError {
    fn from(e: consolidator::Error) -> Self {
        CliError::Msg(e.to_string())
    }
}

impl From<String> for CliError {
    fn from(m: String) -> Self {
        CliError::Msg(m)
    }
}

impl From<&str> for CliError {
    fn from(m: &str) -> Self {
        CliError::Msg(m.to_string())
    }
}

/// A verb's result.
pub type R<T = ()> = Result<T, CliError>;

/// Writes one line to standard output: a closed pipe becomes [`CliError::BrokenPipe`], any other
/// write error an error (never a panic).
pub fn write_line(args: fmt::Arguments) -> R {
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(CliError::BrokenPipe),
        Err(e) => Err(CliError::Msg(format!("cannot write to standard output: {e}"))),
    }
}

/// `say!("…", args)`: one line to standard output (see [`write_line`]).
macro_rules! say {
    ($($t:tt)*) => { $crate::cli::write_line(format_args!($($t)*))? };
}
pub(crate) use say;

/// `note!("…", args)`: one line to standard error, for progress and notes (a closed or full
/// standard error is ignored: notes are not results).
macro_rules! note {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}
pub(crate) use note;

const AFTER_HELP: &str = "\
Methods (--method): linear, full, bitfit, lora[:r=4,alpha=4,layers=qkv+proj+fc1+fc2],
  adapter[:dim=8,scale=0.1], vpt[:prompts=5], ssf[:layers=…],
  consolidator[:g=32+16r,reorder,dp=0.5,init=0.001|zero,layers=…,frozen-norms,frozen-biases]
Tasks (--task): optdigits, orientation, location, counting, shift
Your data (--train, --val, --test, --data): a folder of class folders of images (png, jpg, pgm,
  ppm), train/val/test folders of those, a safetensors file (images + labels), an IDX directory
Run `consolidator <command> --help` for a command's options.";

/// consolidator — adapt Vision Transformers with mergeable grouped connections, on the CPU.
#[derive(Parser)]
#[command(name = "consolidator", version, after_help = AFTER_HELP, disable_help_subcommand = false)]
struct Cli {
    /// The shipped data's directory [default: $CONSOLIDATOR_DATA, ./data, or beside the binary]
    ///
    /// It holds the pre-trained backbone (backbone.safetensors), the MNIST test set and
    /// optdigits. Without this flag: $CONSOLIDATOR_DATA, else ./data, else data/ beside the
    /// executable.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Adapt the shipped backbone on a shipped task three ways, consolidate, merge, verify, compare
    Demo(demo::DemoArgs),
    /// Train a small ViT from scratch on MNIST
    Pretrain(train_cmds::PretrainArgs),
    /// Adapt a backbone to a task with a method; saves the adapted model
    Adapt(train_cmds::AdaptArgs),
    /// Stage 1: adapted model → task delta (what is stored per task)
    Consolidate(model_cmds::ConsolidateArgs),
    /// Stage 2: backbone + task delta → a plain ViT
    Merge(model_cmds::MergeArgs),
    /// Accuracy of a model on a task's split
    Eval(model_cmds::EvalArgs),
    /// Class probabilities for images, with one model or one backbone serving several tasks
    Predict(predict::PredictArgs),
    /// Logits of a model on an input tensor file
    Forward(model_cmds::ForwardArgs),
    /// What a model, delta or checkpoint file holds
    Inspect(model_cmds::InspectArgs),
    /// A model trained by the official PyTorch consolidator code → an adapted model
    ImportOfficial(model_cmds::ImportArgs),
    /// Every method × every task of the transfer suite; tables and a plot
    Suite(suite::SuiteArgs),
    /// Benchmarks: gemm | gc | vit | all
    Bench(bench::BenchArgs),
}

/// Runs the command line (`raw` includes the program name); returns the exit code.
pub fn main(raw: Vec<std::ffi::OsString>) -> i32 {
    let cli = match Cli::try_parse_from(raw) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind::{DisplayHelp, DisplayHelpOnMissingArgumentOrSubcommand, DisplayVersion};
            return match e.kind() {
                DisplayHelp | DisplayVersion | DisplayHelpOnMissingArgumentOrSubcommand => {
                    finish(write_line(format_args!("{}", e.render().to_string().trim_end())))
                }
                _ => {
                    note!("{}", e.render().to_string().trim_end());
                    2
                }
            };
        }
    };
    let data = cli.data_dir.as_deref();
    finish(match cli.command {
        None => demo::demo(&demo::DemoArgs::default(), data),
        Some(Command::Demo(a)) => demo::demo(&a, data),
        Some(Command::Pretrain(a)) => train_cmds::pretrain(&a),
        Some(Command::Adapt(a)) => train_cmds::adapt(&a, data),
        Some(Command::Consolidate(a)) => model_cmds::consolidate(&a, data),
        Some(Command::Merge(a)) => model_cmds::merge(&a, data),
        Some(Command::Eval(a)) => model_cmds::eval(&a, data),
        Some(Command::Predict(a)) => predict::predict(&a),
        Some(Command::Forward(a)) => model_cmds::forward(&a),
        Some(Command::Inspect(a)) => model_cmds::inspect(&a),
        Some(Command::ImportOfficial(a)) => model_cmds::import_official(&a),
        Some(Command::Suite(a)) => suite::suite(&a, data),
        Some(Command::Bench(a)) => bench::bench(&a),
    })
}

fn finish(r: R) -> i32 {
    match r {
        Ok(()) | Err(CliError::BrokenPipe) => 0,
        Err(CliError::Msg(m)) => {
            // Messages may quote file contents (keys, metadata): no raw control characters.
            note!("error: {}", common::printable(&consolidator::io::text::shorten(&m, 4000)));
            1
        }
    }
}
