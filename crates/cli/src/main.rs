//! `vmnap`: the one binary. `vmnap run` is the daemon; `sleep`, `wake` and `status` are its
//! clients; `check-config` validates a config; `demo` shows the whole thing on a throwaway
//! network.

mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vmnap_config::{Config, DEFAULT_SOCKET, EX_CONFIG};
use vmnap_daemon::api::{self, Request, Response};

/// Lets idle guests sleep without losing a request.
///
/// vmnap stands in for sleeping guests on a Linux bridge: it answers ARP, NDP, ping and
/// closed-port SYNs in their name, holds every other frame, wakes the guest when traffic it
/// cannot answer arrives, and replays what it held, in order, exactly once.
#[derive(Debug, Parser)]
#[command(name = "vmnap", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the daemon in the foreground, logging to stderr.
    Run {
        /// The config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Log level: error, warn, info, debug or trace (or a RUST_LOG-style filter).
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// Put a guest to sleep now.
    Sleep {
        /// The guest's name from the config.
        name: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Wake a sleeping guest now.
    Wake {
        /// The guest's name from the config.
        name: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Keep a guest awake however idle it is (until `vmnap unpin`).
    Pin {
        /// The guest's name from the config.
        name: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Let a pinned guest sleep when it is idle again.
    Unpin {
        /// The guest's name from the config.
        name: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Show every guest's state and counters.
    Status {
        /// Print JSON (an array of objects) instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Check a config file; exit 0 if it is valid, 64 with file, line and key if not.
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
    /// Build a throwaway bridge with three namespace guests serving HTTP, put one to sleep,
    /// ping it, wake it with curl, show the timeline, and remove everything (needs root).
    Demo,
    /// A guest workload for labs and the demo: an HTTP server and a UDP logger.
    #[command(hide = true)]
    LabGuest {
        /// Arguments for the workload.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, clap::Args)]
struct SocketArg {
    /// The daemon's control socket (`[api] socket` in its config).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run { config, log_level } => run(&config, &log_level),
        Cmd::Sleep { name, socket } => client(&socket.socket, Request::Sleep { guest: name }),
        Cmd::Wake { name, socket } => client(&socket.socket, Request::Wake { guest: name }),
        Cmd::Pin { name, socket } => client(&socket.socket, Request::Pin { guest: name }),
        Cmd::Unpin { name, socket } => client(&socket.socket, Request::Unpin { guest: name }),
        Cmd::Status { json, socket } => status(&socket.socket, json),
        Cmd::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                println!(
                    "{}: valid, {} guest(s)",
                    file.display(),
                    config.guests.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vmnap: {e}");
                ExitCode::from(EX_CONFIG)
            }
        },
        Cmd::Demo => report(demo::run()),
        Cmd::LabGuest { args } => vmnap_lab::workload::main_with_args(args.into_iter()),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmnap: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path, log_level: &str) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vmnap: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(log_level)
        .or_else(|_| tracing_subscriber::EnvFilter::try_new("info"))
        .expect("`info` is a valid filter");
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    report(vmnap_daemon::run(config).context("the daemon could not start"))
}

fn call(socket: &std::path::Path, request: &Request) -> anyhow::Result<Response> {
    Ok(api::call(socket, request)?)
}

fn client(socket: &std::path::Path, request: Request) -> ExitCode {
    match call(socket, &request) {
        Ok(Response::Done { message }) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Ok(Response::Error { message }) => {
            eprintln!("vmnap: {message}");
            ExitCode::FAILURE
        }
        Ok(other) => {
            eprintln!("vmnap: unexpected answer from the daemon: {other:?}");
            ExitCode::FAILURE
        }
        Err(e) => report(Err(e)),
    }
}

fn status(socket: &std::path::Path, json: bool) -> ExitCode {
    let guests = match call(socket, &Request::Status) {
        Ok(Response::Status { guests }) => guests,
        Ok(Response::Error { message }) => {
            eprintln!("vmnap: {message}");
            return ExitCode::FAILURE;
        }
        Ok(other) => {
            eprintln!("vmnap: unexpected answer from the daemon: {other:?}");
            return ExitCode::FAILURE;
        }
        Err(e) => return report(Err(e)),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&guests).expect("status always serializes")
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<16} {:<15} {:>6} {:>9} {:>8} {:>6} {:>8} {:>10} {:>12}",
        "NAME", "STATE", "WAKES", "ANSWERED", "QUEUED", "HELD", "DROPPED", "IDLE", "LAST WAKE"
    );
    for g in guests {
        let last = g
            .last_wake_ms
            .map_or("-".to_owned(), |ms| format!("{ms:.1} ms"));
        let idle = match (g.pinned, g.idle_for_s, g.asleep_for_s) {
            (true, _, _) => "pinned".to_owned(),
            (_, Some(s), _) => format!("{s:.0} s"),
            (_, _, Some(s)) => format!("asleep {s:.0} s"),
            _ => "-".to_owned(),
        };
        println!(
            "{:<16} {:<15} {:>6} {:>9} {:>8} {:>6} {:>8} {:>10} {:>12}",
            g.name,
            g.state,
            g.wakes,
            g.answered_frames,
            g.queued_frames,
            g.queue_depth,
            g.dropped_frames,
            idle,
            last
        );
    }
    ExitCode::SUCCESS
}
