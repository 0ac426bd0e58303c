//! `vmnap`: the one binary. `vmnap run` is the daemon; `sleep`, `wake`, `pin`, `unpin`,
//! `status`, `events` and `reload` are clients of its HTTP API on the unix socket; `check-config` validates a config; `demo` shows the whole thing on a throwaway
//! network.

mod demo;
mod logging;
mod man;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vmnap_api::{self as api, ClientError, Request, Response};
use vmnap_api::{Event, Record};
use vmnap_config::{Config, DEFAULT_SOCKET, EX_CONFIG};

/// `vmnap --version`: the version and the backends this build has (libvirt is a cargo feature).
const LONG_VERSION: &str = if cfg!(feature = "libvirt") {
    concat!(
        env!("CARGO_PKG_VERSION"),
        "\nbackends: cgroup, qmp, libvirt"
    )
} else {
    concat!(
        env!("CARGO_PKG_VERSION"),
        "\nbackends: cgroup, qmp (built without the cargo feature `libvirt`)"
    )
};

/// Lets idle guests sleep without losing a request.
///
/// vmnap stands in for sleeping guests on a Linux bridge: it answers ARP, NDP, ping and
/// closed-port SYNs in their name, holds every other frame, wakes the guest when traffic it
/// cannot answer arrives, and replays what it held, in order, exactly once.
#[derive(Debug, Parser)]
#[command(name = "vmnap", version, long_version = LONG_VERSION, about, long_about)]
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
        /// Log format on stderr: text, journald (`<N>` priority prefixes, no timestamps:
        /// for systemd) or json (one object a line).
        #[arg(long, value_enum, default_value_t = logging::Format::Text)]
        log_format: logging::Format,
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
        #[arg(long, conflicts_with = "serve")]
        json: bool,
        /// Serve the status page (guests, states, the last day's sleep and wake, what sleep
        /// freed) on this address, like 127.0.0.1:8080, until Ctrl-C. Anyone who can reach
        /// the address can read it: keep it on loopback or behind a proxy.
        #[arg(long, value_name = "ADDR")]
        serve: Option<std::net::SocketAddr>,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Print what happened to the guests: the recent events, then (with --follow) each as it
    /// happens, until Ctrl-C.
    Events {
        /// Only this guest's events.
        name: Option<String>,
        /// Keep printing events as they happen.
        #[arg(long, short)]
        follow: bool,
        /// Print each event as a JSON object on a line of its own.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Ask the daemon to read its config file again (as SIGHUP does). Guests whose entries
    /// did not change are not touched; new policies (wake_on, answers, limits, health checks,
    /// idleness) apply in place, asleep or awake; removed guests, and guests given a new
    /// name, MAC, address or backend, are woken first if they sleep; a config that does not
    /// parse or cannot run is refused and the old one stays.
    Reload {
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Print the daemon's log filter, or set it (like `debug` or `info,vmnap_daemon=trace`)
    /// while it runs.
    LogLevel {
        /// The new filter; without it, print the one in force.
        filter: Option<String>,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Check a config file; exit 0 if it is valid, 64 with file, line and key if not. For
    /// each guest with `mode = "pageout"`, also say whether its RAM is a file mapped shared
    /// (as it runs now: QEMU's mappings, the libvirt domain's XML), so that the mode
    /// applies, and what would make its wakes costly; without that it would sleep paused.
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
    /// Build a throwaway bridge with three namespace guests serving HTTP, put one to sleep,
    /// ping it, wake it with curl, show the timeline, and remove everything (needs root).
    Demo,
    /// Run QEMU for a guest that sleeps by page-out: `vmnap run-qemu qemu-system-x86_64 ...`
    /// (or a libvirt domain's `<emulator>`, through a script that does this). QEMU advises
    /// huge pages on all guest RAM, and for RAM in a file that makes every page the guest
    /// touches after a page-out read 4 MiB back; here that advice does nothing (a seccomp
    /// filter on madvise(MADV_HUGEPAGE) only), so a wake brings back what the guest touches.
    /// vmnap then becomes the command, with the same PID.
    RunQemu {
        /// QEMU's command line, program first.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<std::ffi::OsString>,
    },
    /// A guest workload for labs and the demo: an HTTP server and a UDP logger.
    #[command(hide = true)]
    LabGuest {
        /// Arguments for the workload.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Print the man page (roff) to stdout: `dist/vmnap.1` is this output.
    #[command(hide = true)]
    Man,
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
        Cmd::Run {
            config,
            log_level,
            log_format,
        } => run(&config, &log_level, log_format),
        Cmd::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            report(
                man::render(cmd, &mut std::io::stdout().lock())
                    .context("cannot print the man page"),
            )
        }
        Cmd::Sleep { name, socket } => client(&socket.socket, Request::Sleep { guest: name }),
        Cmd::Wake { name, socket } => client(&socket.socket, Request::Wake { guest: name }),
        Cmd::Pin { name, socket } => client(&socket.socket, Request::Pin { guest: name }),
        Cmd::Unpin { name, socket } => client(&socket.socket, Request::Unpin { guest: name }),
        Cmd::Status {
            serve: Some(addr),
            socket,
            ..
        } => serve_page(&socket.socket, addr),
        Cmd::Status { json, socket, .. } => status(&socket.socket, json),
        Cmd::Events {
            name,
            follow,
            json,
            socket,
        } => events(&socket.socket, name.as_deref(), follow, json),
        Cmd::Reload { socket } => reload(&socket.socket),
        Cmd::LogLevel { filter, socket } => log_level(&socket.socket, filter.as_deref()),
        Cmd::CheckConfig { file } => match Config::load_for(&file, vmnap_daemon::BUILTIN) {
            Ok(config) => {
                println!(
                    "{}: valid, {} guest(s)",
                    file.display(),
                    config.guests.len()
                );
                for g in &config.guests {
                    if let Some(check) = vmnap_daemon::probe::check_page_out(g, &config) {
                        println!("guest {}: {check}", g.name);
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vmnap: {e}");
                ExitCode::from(EX_CONFIG)
            }
        },
        Cmd::Demo => report(demo::run()),
        Cmd::RunQemu { command } => report(run_qemu(&command)),
        Cmd::LabGuest { args } => vmnap_lab::workload::main_with_args(args.into_iter()),
    }
}

fn serve_page(socket: &std::path::Path, addr: std::net::SocketAddr) -> ExitCode {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, std::sync::Arc::clone(&stop)) {
            eprintln!("vmnap: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    }
    report(serve::serve(socket, addr, &stop))
}

/// `vmnap run-qemu`: the filter, then `execve` of the command (which returns only on failure).
fn run_qemu(command: &[std::ffi::OsString]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let (program, args) = command.split_first().context("run-qemu needs a command")?;
    vmnap_host::pageout::ignore_huge_page_advice()
        .context("cannot install the seccomp filter on huge-page advice")?;
    let e = std::process::Command::new(program).args(args).exec();
    Err(anyhow::Error::new(e).context(format!("cannot run {}", program.to_string_lossy())))
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

fn run(path: &std::path::Path, log_level: &str, log_format: logging::Format) -> ExitCode {
    let config = match Config::load_for(path, vmnap_daemon::BUILTIN) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vmnap: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let (filter, level) = match tracing_subscriber::EnvFilter::try_new(log_level) {
        Ok(f) => (f, log_level),
        Err(e) => {
            eprintln!("vmnap: --log-level `{log_level}` is not a log filter ({e}); using `info`");
            (tracing_subscriber::EnvFilter::new("info"), "info")
        }
    };
    let set = logging::init(filter, log_format);
    let options = vmnap_daemon::Options {
        config_path: Some(path.to_path_buf()),
        log: Some(vmnap_daemon::LogControl::new(level, set)),
        reload: None,
    };
    report(vmnap_daemon::run(config, options).context("the daemon could not start"))
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

fn events(socket: &std::path::Path, guest: Option<&str>, follow: bool, json: bool) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let result = api::events(socket, follow, guest, |record| {
        let line = if json {
            serde_json::to_string(&record).expect("events always serialize")
        } else {
            describe(&record)
        };
        use std::io::Write;
        // A closed pipe (`vmnap events -f | head`) ends the stream.
        writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(ClientError::Refused { message, .. }) => {
            eprintln!("vmnap: {message}");
            ExitCode::FAILURE
        }
        Err(e) => report(Err(e.into())),
    }
}

/// One event on one line, for people: UTC time, guest, what happened.
fn describe(record: &Record) -> String {
    let ms = record.time_ms % 86_400_000;
    let time = format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    );
    let what = match &record.event {
        Event::FellAsleep { .. } => "fell asleep".to_owned(),
        Event::Woke {
            cause,
            frame,
            took_ms,
            ..
        } => {
            let mut s = format!("woke ({cause}");
            if let Some(f) = frame {
                s.push_str(&format!(": {f}"));
            }
            s.push(')');
            if let Some(ms) = took_ms {
                s.push_str(&format!(" in {ms:.1} ms"));
            }
            s
        }
        Event::PagedOut {
            freed_bytes,
            written_bytes,
            took_ms,
            complete,
            ..
        } => format!(
            "paged out: {:.1} MiB freed, {:.1} MiB written, in {took_ms:.0} ms{}",
            *freed_bytes as f64 / 1048576.0,
            *written_bytes as f64 / 1048576.0,
            if *complete {
                ""
            } else {
                " (stopped by a wake)"
            }
        ),
        Event::BackendError {
            operation, message, ..
        } => format!("backend error ({operation}): {message}"),
        Event::SleepVetoed { reason, .. } => format!("sleep vetoed by {reason}"),
        Event::Adopted { reason, .. } => format!("taken on: {reason}"),
        Event::Released { reason, .. } => format!("let go: {reason}"),
        Event::Answered {
            protocol, frames, ..
        } => format!("answered {frames} frame(s): {protocol}"),
        Event::Queued { frames, .. } => format!("queued {frames} frame(s)"),
        Event::Dropped { reason, frames, .. } => match reason {
            Some(r) => format!("dropped {frames} frame(s): {r}"),
            None => format!("dropped {frames} frame(s)"),
        },
    };
    format!("{time}Z {:<16} {what}", record.event.guest())
}

fn log_level(socket: &std::path::Path, filter: Option<&str>) -> ExitCode {
    match api::log_filter(socket, filter) {
        Ok(now) => {
            println!("{}", now.filter);
            ExitCode::SUCCESS
        }
        Err(e) => report(Err(e.into())),
    }
}

fn reload(socket: &std::path::Path) -> ExitCode {
    match api::reload(socket) {
        Ok(done) => {
            println!("{}", done.message);
            for (label, names) in [
                ("added", &done.added),
                ("removed", &done.removed),
                ("changed", &done.changed),
            ] {
                if !names.is_empty() {
                    println!("  {label}: {}", names.join(", "));
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => report(Err(e.into())),
    }
}
