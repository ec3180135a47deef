//! `autotrain serve`: the control-plane HTTP API (see `api/`) until Ctrl-C;
//! `autotrain token`: a new bearer token and the `[[api.tokens]]` entry
//! (with its hash) that accepts it. [`start`] also serves the API inside
//! `autotrain demo` and `autotrain bench params`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use autotrain_api::{ApiConfig, ApiState, Scope, Setup};
use autotrain_kafka::runner::Counters;
use autotrain_params::{Controller, StrategySchema};
use rand::RngCore;

use crate::config::Config;
use crate::context::{shutdown_signal, Context};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Listen address (default: `api.bind`, 127.0.0.1:8080).
    #[arg(long)]
    pub bind: Option<String>,
    /// Serve without authentication (localhost only).
    #[arg(long)]
    pub dev: bool,
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Who holds the token (the actor of what it does).
    #[arg(long, default_value = "ops")]
    pub name: String,
    /// Scopes, comma-separated: ml:read, ml:train, ml:write.
    #[arg(long, value_delimiter = ',', default_value = "ml:read")]
    pub scopes: Vec<String>,
    /// The tenant it acts for (`*` = platform: every tenant).
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Hash this existing token instead of making one.
    #[arg(long)]
    pub hash: Option<String>,
}

/// The consumer groups `autotrain run …` uses by default, with their
/// inputs (the lag `/metrics` reports).
pub fn default_groups() -> Vec<(String, Vec<String>)> {
    crate::topology::Stage::ALL
        .iter()
        .map(|s| {
            (
                format!("autotrain-{s}"),
                s.wiring().inputs.iter().map(|t| t.to_string()).collect(),
            )
        })
        .collect()
}

/// The API's state over this broker.
pub fn state(
    ctx: &Context,
    config: &Config,
    api: ApiConfig,
    groups: Vec<(String, Vec<String>)>,
    processors: Vec<(String, Arc<Counters>)>,
) -> Result<ApiState> {
    let schemas = StrategySchema::load_dir(&crate::config::schemas_dir(config))?;
    let params = config.params.clone();
    Ok(ApiState::new(
        &ctx.settings,
        Setup {
            api,
            trainer: config.trainer.clone(),
            groups,
            processors,
        },
        move || Controller::new(params.clone(), schemas.clone()),
    )?)
}

/// Binds `addr` (or, if `fallback` and it is taken, any free port on the
/// same host) and serves the API until `shutdown`.
/// Connections the kernel queues before the API accepts them (capped by
/// `net.core.somaxconn`): a burst of clients waits instead of being reset.
const ACCEPT_BACKLOG: u32 = 4_096;

fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

pub async fn start(
    state: ApiState,
    addr: SocketAddr,
    fallback: bool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = match listen(addr) {
        Ok(l) => l,
        Err(e) if fallback => {
            tracing::warn!(%addr, error = %e, "API address taken; using a free port");
            listen(SocketAddr::new(addr.ip(), 0))?
        }
        Err(e) => return Err(e).with_context(|| format!("binding the API to {addr}")),
    };
    let local = listener.local_addr()?;
    Ok((
        local,
        tokio::spawn(autotrain_api::serve(listener, state, shutdown)),
    ))
}

pub async fn run(config: &Config, args: Args) -> Result<()> {
    let mut api = config.api.clone();
    if let Some(bind) = args.bind {
        api.bind = bind;
    }
    api.dev_mode |= args.dev;
    let addr = api.check()?;
    let ctx = Context::connect(config).await?;
    let state = state(&ctx, config, api.clone(), default_groups(), Vec::new())?;
    let (local, server) = start(state, addr, false, shutdown_signal()).await?;
    eprintln!(
        "API on http://{local} ({}); /openapi.json describes it; Ctrl-C to stop",
        if api.dev_mode {
            "dev mode: no authentication".to_string()
        } else {
            format!("{} token(s)", api.tokens.len())
        }
    );
    server.await??;
    Ok(())
}

pub fn token(args: TokenArgs) -> Result<()> {
    let scopes: Vec<Scope> = args
        .scopes
        .iter()
        .map(|s| {
            serde_json::from_value(serde_json::Value::String(s.trim().to_string()))
                .with_context(|| format!("scope {s:?}: expected ml:read, ml:train or ml:write"))
        })
        .collect::<Result<_>>()?;
    let secret = match args.hash {
        Some(t) => t,
        None => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let t = format!("at_{}", hex::encode(bytes));
            println!("# the token (give it to the caller; it is not stored anywhere):");
            println!("# {t}");
            t
        }
    };
    println!("[[api.tokens]]");
    println!("name = {:?}", args.name);
    println!("sha256 = {:?}", autotrain_api::hash_token(&secret));
    println!(
        "scopes = [{}]",
        scopes
            .iter()
            .map(|s| format!("{:?}", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("tenant = {:?}", args.tenant);
    Ok(())
}
