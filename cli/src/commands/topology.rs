//! `autotrain topology`: the pipeline as [`crate::topology`] declares it,
//! each processor's inputs, outputs, restore and time semantics: what
//! `run`, `demo` and `replay` build from.

use anyhow::Result;

use crate::topology::{Restore, Stage, Time};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON array instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let wirings: Vec<_> = Stage::ALL.iter().map(|s| s.wiring()).collect();
    if args.json {
        println!("{}", serde_json::to_string(&wirings)?);
        return Ok(());
    }
    for w in wirings {
        println!("{}", w.stage);
        println!("  consumes   {}", w.inputs.join(", "));
        if !w.reads.is_empty() {
            println!("  reads      {} (outside its group)", w.reads.join(", "));
        }
        println!("  publishes  {}", w.outputs.join(", "));
        println!("  decisions  {}", w.decisions.join(", "));
        match w.restore {
            Restore::Inputs => println!("  restore    replays its consumed inputs"),
            Restore::Topics(t) => println!("  restore    reads {}", t.join(", ")),
        }
        match w.time {
            Time::Single => println!("  time       one data input, partition order"),
            Time::Aligned { control } => println!(
                "  time       event-time aligned on the progress of {}",
                control.join(", ")
            ),
            Time::Arrival { control } => println!(
                "  time       partition order; {} take effect at their event time, else on arrival",
                control.join(", ")
            ),
        }
    }
    Ok(())
}
