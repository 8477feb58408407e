//! The `farmgate` command: parses the command line and starts things; nothing else lives here.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use farmgate::Config;
use farmgate::plugin_tool::{self, HookKind};
use farmgate::telemetry::{self, LogFormat};

/// Where `farmgate run` looks for a config when given none.
const DEFAULT_CONFIG_PATH: &str = "config/farmgate.toml";

#[derive(Parser)]
#[command(
    name = "farmgate",
    version,
    about = "A reverse proxy for web server farms, with policies as WebAssembly plugins"
)]
struct Cli {
    /// Log level or filter (RUST_LOG, when set, wins).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// How log lines are written to standard error.
    #[arg(long, global = true, value_enum, default_value = "pretty")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Config file; default config/farmgate.toml when present, else the built-in default.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and print a summary; exits non-zero when it is invalid.
    Check {
        /// The config file to check.
        path: PathBuf,
    },
    /// Write, build and try out plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a plugin crate (Cargo.toml on the SDK, a hook implementation, a unit test, a README).
    New {
        /// Crate name; also the default plugin file name.
        name: String,
        /// The hook the plugin starts with.
        #[arg(long, value_enum)]
        hook: HookKind,
        /// Directory to create the crate in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Path to farmgate's `sdk/` directory (else $FARMGATE_SDK, else the SDK this farmgate
        /// was built from, else the crates.io version).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build a plugin crate for wasm32-wasip2 in release; prints the .wasm path.
    Build {
        /// The crate's directory.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Arguments for cargo after `--`, e.g. `-- --features x`.
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Run a built plugin against a request and farm snapshot (JSON) and print its decision.
    Test {
        /// The built .wasm file.
        file: PathBuf,
        /// JSON with "hook" ("router" or "affinity"), "settings", "request" and "farm".
        #[arg(long)]
        input: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(&cli.log_level, cli.log_format);
    match cli.command {
        Command::Check { path } => check(&path),
        Command::Run { config } => run(config.as_deref()),
        Command::Plugin { command } => plugin(command),
    }
}

/// Validates the config, then loads its plugin folder as `run` would and holds the config's
/// plugin names and settings against it.
fn check(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    println!("{}", config.summary());
    let report = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
        .and_then(|rt| {
            rt.block_on(async move {
                tokio::task::spawn_blocking(move || farmgate::plugins::check_plugins(&config))
                    .await
                    .map_err(|e| format!("checking the plugins failed: {e}"))
            })
        });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    for (name, hooks) in &report.loaded {
        println!("plugin {name}: {}", hooks.join(", "));
    }
    if report.problems.is_empty() {
        println!("config OK");
        return ExitCode::SUCCESS;
    }
    for e in &report.problems {
        eprintln!("error: {e}");
    }
    ExitCode::from(1)
}

fn plugin(command: PluginCommand) -> ExitCode {
    let result = match command {
        PluginCommand::New {
            name,
            hook,
            dir,
            sdk,
        } => {
            let dependency = plugin_tool::default_sdk_dependency(sdk.as_deref());
            plugin_tool::new_plugin(&dir, &name, hook, &dependency).map(|root| {
                format!(
                    "created {} (farmgate-sdk = {dependency})\nnext: cd {0} && cargo test && farmgate plugin build",
                    root.display()
                )
            })
        }
        PluginCommand::Build { path, cargo_args } => {
            plugin_tool::build_with(&path, &cargo_args).map(|wasm| wasm.display().to_string())
        }
        PluginCommand::Test { file, input } => std::fs::read_to_string(&input)
            .map_err(|e| format!("cannot read {}: {e}", input.display()))
            .and_then(|text| {
                serde_json::from_str::<plugin_tool::TestInput>(&text)
                    .map_err(|e| format!("{}: {e}", input.display()))
            })
            .and_then(|parsed| {
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the async runtime: {e}"))?
                    .block_on(plugin_tool::test(&file, &parsed))
            }),
    };
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(path: Option<&Path>) -> ExitCode {
    let loaded = match path {
        Some(p) => Config::load(p),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
            Config::load(Path::new(DEFAULT_CONFIG_PATH))
        }
        None => Config::embedded_default(),
    };
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    malloc::limit_arenas(config.proxy.worker_threads);
    let mut builder = if config.proxy.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if config.proxy.worker_threads > 1 {
            b.worker_threads(config.proxy.worker_threads);
        }
        b
    };
    let runtime = match builder.enable_all().thread_name("farmgate-worker").build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        // Listen for signals before announcing anything, so a signal sent as soon as the
        // start-up line appears is never missed.
        let stop = stop_signal();
        let mut hangups = reload_signal();
        tracing::info!("{}", config.summary());
        let tls: Vec<String> = config
            .listeners
            .iter()
            .filter(|l| l.is_tls())
            .map(|l| l.name.clone())
            .collect();
        let running = match farmgate::start(config).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        for (name, addr) in running.listeners().iter() {
            let scheme = if tls.contains(name) { "https" } else { "http" };
            tracing::info!(listener = %name, "farmgate is serving: point a browser at {scheme}://{}/", browsable(*addr));
        }
        if let Some(addr) = running.admin {
            tracing::info!("the farm dashboard is at http://{}/dashboard", browsable(addr));
        }
        let reloader = std::sync::Arc::clone(&running.reloader);
        let reloads = tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the config");
                let _ = reloader.reload().await;
            }
        });
        stop.await;
        reloads.abort();
        tracing::info!("shutting down: no new connections; in-flight requests may finish");
        running.shutdown().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// `localhost:port` for loopback and unspecified binds, since that is what a person types.
fn browsable(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// SIGHUP, once per signal (a closed channel where there are no signals).
fn reload_signal() -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        if tx.send(()).is_err() {
                            break;
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload through the admin API")
            }
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// returned future is first polled.
#[cfg(unix)]
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                tracing::warn!("cannot install signal handlers; stop farmgate by killing it");
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(not(unix))]
fn stop_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How this process uses glibc's allocator (elsewhere these do nothing).
mod malloc {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    mod glibc {
        use std::os::raw::c_int;

        /// `mallopt`'s parameter for the most arenas (glibc's `malloc.h`).
        pub const M_ARENA_MAX: c_int = -8;

        unsafe extern "C" {
            pub fn mallopt(param: c_int, value: c_int) -> c_int;
        }
    }

    /// Gives the allocator one arena per worker thread. By default glibc makes an arena for
    /// each thread that allocates, up to eight per core, and memory freed in one arena serves
    /// only the threads of that arena: what the built-ins' compilation frees on the blocking
    /// threads would never serve connections. `workers` is the config's `worker_threads` (0:
    /// one per core).
    pub fn limit_arenas(workers: usize) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            let workers = match workers {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                n => n,
            };
            let arenas = i32::try_from(workers).unwrap_or(i32::MAX).max(1);
            // SAFETY: mallopt only sets an allocator tunable, and is called before the runtime
            // starts its threads.
            unsafe {
                glibc::mallopt(glibc::M_ARENA_MAX, arenas);
            }
        }
        #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
        let _ = workers;
    }
}
