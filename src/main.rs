//! The `consolidator` command line. With no arguments it runs `demo`.

mod cli;

fn main() {
    std::process::exit(cli::main(std::env::args_os().collect()));
}
