//! Subcommands. Each returns `Err(message)` for a one-sentence error with its cause.

mod args;
mod bench;
mod commands;
mod common;
mod demo;

use args::Args;

const HELP: &str = "consolidator — adapt ViTs with mergeable grouped connections, on the CPU

usage: consolidator [COMMAND] [OPTIONS]   (no command: demo)

  demo          adapt the shipped backbone on a shipped task with the consolidator, a linear probe
                and full fine-tuning; consolidate, merge, verify, and print the comparison
  pretrain      train a small ViT on MNIST (--data DIR, --arch, --epochs, --out …)
  adapt         adapt a backbone: --method M --task T (or --data DIR) --out FILE
  consolidate   stage 1: adapted model → task delta (--backbone B --model A --out D)
  merge         stage 2: backbone + delta → plain ViT (--backbone B --delta D --out M)
  eval          accuracy of a model on a task's test split (--model M --task T [--json])
  forward       logits of a model on an input tensor (--model M --input X --output Y)
  inspect       what a model, delta or checkpoint file holds (FILE)
  suite         every method × every task of the transfer suite (--out DIR)
  bench         benchmarks: gemm | gc | vit | all [--json] [--quick] [--rounds N]
                [--torch FILE [--torch-run CMD]]  (side by side with scripts/bench_torch.py)
  help          this text

methods: linear, full, bitfit, lora[:r=4,alpha=4,layers=qkv+proj+fc1+fc2], adapter[:dim=8,scale=0.1],
         vpt[:prompts=5], ssf, consolidator[:g=32+16,reorder,dp=0.5,init=0.001|zero,layers=…,frozen-norms,frozen-biases]
tasks:   optdigits, orientation, location, counting, shift
";

/// Runs the command line.
pub fn run(raw: &[String]) -> Result<(), String> {
    let (cmd, rest) = match raw.split_first() {
        None => ("demo", &[][..]),
        Some((c, r)) => (c.as_str(), r),
    };
    let args = Args::parse(rest)?;
    if args.has("help") {
        println!("{HELP}");
        return Ok(());
    }
    let r = match cmd {
        "demo" => commands::demo(&args),
        "pretrain" => commands::pretrain(&args),
        "adapt" => commands::adapt(&args),
        "consolidate" => commands::consolidate(&args),
        "merge" => commands::merge(&args),
        "eval" => commands::eval(&args),
        "forward" => commands::forward(&args),
        "inspect" => commands::inspect(&args),
        "suite" => commands::suite(&args),
        "bench" => commands::bench(&args),
        "help" | "-h" | "--help" => {
            println!("{HELP}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}` (see `consolidator help`)")),
    };
    r
}
