//! `loupe serve`: the local web app over the runs in a few folders (see the loupe-serve crate).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use loupe_serve::ServeConfig;
use rand::Rng;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A folder whose runs (stores, SAEs, probe runs, scope runs) are served; repeatable
    /// (default: checkpoints/ and activations/).
    #[arg(long = "root", value_name = "DIR")]
    roots: Vec<PathBuf>,
    /// The address to listen on. Anything but loopback is reachable from other machines, and then
    /// requires the token.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// The port (0: any free port, printed).
    #[arg(long, default_value_t = 7878)]
    port: u16,
    /// A feature book whose entries the playground offers as amplification targets; repeatable
    /// (e.g. configs/features-main.toml, whose SAE and probe the main job trains).
    #[arg(long = "features", value_name = "FILE")]
    feature_books: Vec<PathBuf>,
    /// Require this token on every request (default: none on loopback, a generated one otherwise).
    #[arg(long)]
    token: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let roots = if args.roots.is_empty() {
        // The default folders that exist (a fresh checkout has no activations/ until a capture).
        let defaults: Vec<PathBuf> = ["checkpoints", "activations"]
            .iter()
            .map(PathBuf::from)
            .filter(|d| d.is_dir())
            .collect();
        anyhow::ensure!(
            !defaults.is_empty(),
            "no checkpoints/ or activations/ folder here: run loupe serve from the repository root, or give --root DIR"
        );
        defaults
    } else {
        args.roots
    };
    for root in &roots {
        anyhow::ensure!(
            root.is_dir(),
            "--root {}: no such folder; give a folder of runs (checkpoints/, activations/)",
            root.display()
        );
    }
    let token = match args.token {
        Some(token) if token.trim().is_empty() => {
            anyhow::bail!("--token: is empty; give a secret, or leave it out")
        }
        Some(token) => Some(token),
        None if !args.host.is_loopback() => Some(generated_token()),
        None => None,
    };
    if !args.host.is_loopback() {
        eprintln!(
            "warning: listening on {}, which other machines can reach: every request needs the token, \
             and the playground runs models on this machine for whoever has it",
            args.host
        );
    }

    let roots_shown: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    // Before anything listens: a feature book that cannot be read stops here.
    let router = loupe_serve::router(ServeConfig {
        roots,
        token: token.clone(),
        feature_books: args.feature_books,
    })
    .map_err(|e| anyhow::anyhow!("--features {e}"))?;

    let (host, port) = (args.host, args.port);
    let runtime = tokio::runtime::Runtime::new().context("starting the server's runtime")?;
    runtime.block_on(async move {
        let address = SocketAddr::new(host, port);
        let listener = tokio::net::TcpListener::bind(address).await.with_context(|| {
            format!("cannot listen on {address}; choose another --port (0: any free one)")
        })?;
        let bound = listener.local_addr()?;
        let shown_host = if host.is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            host.to_string()
        };
        let query = token.as_ref().map(|t| format!("?token={t}")).unwrap_or_default();
        println!(
            "loupe serve: http://{shown_host}:{}/{query} (runs under {}; Ctrl-C stops)",
            bound.port(),
            roots_shown.join(", ")
        );
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        loupe_serve::serve(listener, router, shutdown)
            .await
            .context("serving")
    })
}

/// 128 random bits, as hex.
fn generated_token() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
