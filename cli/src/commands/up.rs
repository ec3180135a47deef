//! `autotrain up`: a broker with every catalogue topic, until Ctrl-C.

use anyhow::Result;

use crate::config::Config;
use crate::context::{shutdown_signal, Context};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(config: &Config, _args: Args) -> Result<()> {
    let ctx = Context::connect(config).await?;
    if !ctx.broker.is_embedded() {
        ctx.create_topics(config).await?;
    }
    println!("bootstrap: {}", ctx.broker.bootstrap());
    println!(
        "topics: {} (prefix {:?})",
        autotrain_topics::catalogue().topics.len(),
        config.topic_prefix
    );
    println!("press Ctrl-C to stop");
    shutdown_signal().await;
    Ok(())
}
