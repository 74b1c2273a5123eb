//! The main job (`demo`) and the transfer suite (`suite`).

use super::args::Args;

pub fn demo(_args: &Args) -> Result<(), String> {
    Err("demo: not built yet".into())
}

pub fn suite(_args: &Args) -> Result<(), String> {
    Err("suite: not built yet".into())
}
