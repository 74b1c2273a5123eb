//! The `consolidator` command line. With no arguments it runs `demo`.

mod cli;

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    match cli::run(&raw) {
        Ok(()) => {}
        Err(msg) => {
            eprintln!("error: {msg}");
            std::process::exit(1);
        }
    }
}
