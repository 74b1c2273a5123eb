//! `consolidator bench`.

use super::args::Args;

pub fn bench(_args: &Args) -> Result<(), String> {
    Err("bench: not built yet".into())
}
