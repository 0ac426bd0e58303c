//! The guest workload that runs inside a lab guest's namespace and cgroup.
//!
//! Flags:
//! - `--name NAME`: the guest's name, used in HTTP answers.
//! - `--http PORT`: an HTTP/1.1 server on `[::]:PORT` (dual-stack), one thread per
//!   connection. Any `GET` (or `HEAD`) answers `200` with body `"hello from NAME\n"` and a
//!   `Content-Length`; `Connection: close` and keep-alive are honoured.
//! - `--udp-log PORT=FILE`: UDP on `[::]:PORT`; each datagram's payload is appended to
//!   FILE followed by `"\n"`, and the file is flushed. May be given more than once.
//! - `--ready FILE`: FILE is created (holding the PID) once every socket listens.
//!
//! The process runs until it is killed. It uses the standard library only.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

/// Parsed workload flags.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WorkloadArgs {
    /// `--name`.
    pub name: String,
    /// `--http`.
    pub http: Option<u16>,
    /// `--udp-log PORT=FILE`, in order.
    pub udp_logs: Vec<(u16, PathBuf)>,
    /// `--ready`.
    pub ready: Option<PathBuf>,
}

impl WorkloadArgs {
    /// Parses the flags (without the program name).
    pub fn parse(args: impl Iterator<Item = OsString>) -> Result<WorkloadArgs, String> {
        let mut out = WorkloadArgs::default();
        let mut args = args;
        let mut name = None;
        while let Some(flag) = args.next() {
            let flag = flag
                .into_string()
                .map_err(|f| format!("flag is not UTF-8: {f:?}"))?;
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--name" => {
                    name = Some(
                        value()?
                            .into_string()
                            .map_err(|v| format!("--name is not UTF-8: {v:?}"))?,
                    )
                }
                "--http" => {
                    let v = value()?;
                    out.http = Some(parse_port(&v.to_string_lossy())?);
                }
                "--udp-log" => {
                    let v = value()?;
                    let v = v
                        .into_string()
                        .map_err(|v| format!("--udp-log is not UTF-8: {v:?}"))?;
                    let (port, file) = v
                        .split_once('=')
                        .ok_or_else(|| format!("--udp-log wants PORT=FILE, got {v:?}"))?;
                    out.udp_logs.push((parse_port(port)?, PathBuf::from(file)));
                }
                "--ready" => out.ready = Some(PathBuf::from(value()?)),
                other => return Err(format!("unknown flag {other:?}")),
            }
        }
        out.name = name.ok_or("--name is required")?;
        Ok(out)
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("bad port {s:?}"))
}

/// Runs the workload with `args` (the flags, without the program name). Returns only on
/// a usage or setup error; otherwise serves until killed.
///
/// `--vlan-relay LOWER UPPER VID [--ready FILE]` instead runs the lab's user-space 802.1Q
/// relay (see [`crate::vlan_relay`]); the lab starts it itself on kernels without VLAN
/// support.
pub fn main_with_args(args: impl Iterator<Item = OsString>) -> ExitCode {
    let mut args = args.peekable();
    if args.peek().is_some_and(|a| a == "--vlan-relay") {
        return relay_main(args.skip(1));
    }
    let args = match WorkloadArgs::parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vmnap-lab-guest: {e}");
            eprintln!(
                "usage: vmnap-lab-guest --name NAME [--http PORT] [--udp-log PORT=FILE]... [--ready FILE]"
            );
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmnap-lab-guest: {e}");
            ExitCode::FAILURE
        }
    }
}

fn relay_main(args: impl Iterator<Item = OsString>) -> ExitCode {
    let args: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    let (lower, upper, vid, ready) = match args.as_slice() {
        [l, u, v] => (l, u, v, None),
        [l, u, v, flag, r] if flag == "--ready" => (l, u, v, Some(PathBuf::from(r))),
        _ => {
            eprintln!("usage: vmnap-lab-guest --vlan-relay LOWER UPPER VID [--ready FILE]");
            return ExitCode::from(2);
        }
    };
    let Some(vid) = vid.parse::<u16>().ok().filter(|v| (1..=4094).contains(v)) else {
        eprintln!("vmnap-lab-guest: bad VLAN id {vid:?}");
        return ExitCode::from(2);
    };
    match crate::vlan_relay::run(lower, upper, vid, ready.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmnap-lab-guest: VLAN relay {lower}<->{upper}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds `[::]:port`; if that socket turns out to be IPv6-only (the namespace has
/// `net.ipv6.bindv6only=1`), also binds `0.0.0.0:port`.
fn bind_dual<T>(
    port: u16,
    bind: impl Fn(SocketAddr) -> std::io::Result<T>,
) -> Result<Vec<T>, String> {
    let v6 = bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
        .map_err(|e| format!("bind [::]:{port}: {e}"))?;
    let mut out = vec![v6];
    // Dual-stack sockets make this bind fail with EADDRINUSE.
    if let Ok(v4) = bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))) {
        out.push(v4);
    }
    Ok(out)
}

fn run(args: WorkloadArgs) -> Result<(), String> {
    let mut threads = Vec::new();
    let body: Arc<str> = Arc::from(format!("hello from {}\n", args.name));
    if let Some(port) = args.http {
        for listener in bind_dual(port, TcpListener::bind)? {
            let body = body.clone();
            threads.push(thread::spawn(move || serve_http(listener, body)));
        }
    }
    for (port, file) in &args.udp_logs {
        for sock in bind_dual(*port, UdpSocket::bind)? {
            let file = file.clone();
            threads.push(thread::spawn(move || serve_udp_log(sock, file)));
        }
    }
    if let Some(ready) = &args.ready {
        std::fs::write(ready, format!("{}\n", std::process::id()))
            .map_err(|e| format!("write ready file {}: {e}", ready.display()))?;
    }
    if threads.is_empty() {
        loop {
            thread::park();
        }
    }
    for t in threads {
        let _ = t.join();
    }
    Err("all listeners ended".into())
}

fn serve_http(listener: TcpListener, body: Arc<str>) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let body = body.clone();
                thread::spawn(move || {
                    let _ = http_connection(stream, &body);
                });
            }
            Err(e) => eprintln!("vmnap-lab-guest: accept: {e}"),
        }
    }
}

fn http_connection(stream: TcpStream, body: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let request_line = request_line.trim_end();
        if request_line.is_empty() {
            continue; // tolerate stray CRLF between requests
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let _target = parts.next();
        let version = parts.next().unwrap_or("HTTP/1.0").to_string();
        let mut keep_alive = version == "HTTP/1.1";
        let mut content_length: u64 = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim(), v.trim());
                if k.eq_ignore_ascii_case("connection") {
                    for token in v.split(',').map(str::trim) {
                        if token.eq_ignore_ascii_case("close") {
                            keep_alive = false;
                        } else if token.eq_ignore_ascii_case("keep-alive") {
                            keep_alive = true;
                        }
                    }
                } else if k.eq_ignore_ascii_case("content-length") {
                    content_length = v.parse().unwrap_or(0);
                }
            }
        }
        if content_length > 0 {
            std::io::copy(
                &mut (&mut reader).take(content_length),
                &mut std::io::sink(),
            )?;
        }
        let (status, text) = match method.as_str() {
            "GET" | "HEAD" => ("200 OK", body.to_string()),
            _ => ("405 Method Not Allowed", "method not allowed\n".to_string()),
        };
        let mut response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n",
            text.len(),
            if keep_alive { "keep-alive" } else { "close" }
        );
        if status != "200 OK" {
            response.push_str("Allow: GET, HEAD\r\n");
        }
        response.push_str("\r\n");
        if method != "HEAD" {
            response.push_str(&text);
        }
        out.write_all(response.as_bytes())?;
        out.flush()?;
        if !keep_alive {
            let _ = out.shutdown(std::net::Shutdown::Write);
            return Ok(());
        }
    }
}

/// Receive buffer of the UDP logger: room for a burst of thousands of small datagrams, as a
/// guest's receiver needs when vmnap replays what it held while the guest slept.
const UDP_RCVBUF: libc::c_int = 16 << 20;

fn serve_udp_log(sock: UdpSocket, file: PathBuf) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on a socket this function owns, with a pointer to a live c_int and
    // its size; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&UDP_RCVBUF as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        eprintln!(
            "vmnap-lab-guest: cannot enlarge the UDP receive buffer: {}",
            std::io::Error::last_os_error()
        );
    }
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match sock.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(e) => {
                eprintln!("vmnap-lab-guest: udp recv: {e}");
                continue;
            }
        };
        let mut line = Vec::with_capacity(n + 1);
        line.extend_from_slice(&buf[..n]);
        line.push(b'\n');
        let result = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .and_then(|mut f| {
                f.write_all(&line)?;
                f.flush()
            });
        if let Err(e) = result {
            eprintln!("vmnap-lab-guest: udp log {}: {e}", file.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> impl Iterator<Item = OsString> {
        v.iter().map(OsString::from).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn parses_flags() {
        let a = WorkloadArgs::parse(os(&[
            "--name",
            "g1",
            "--http",
            "8080",
            "--udp-log",
            "9000=/tmp/x",
            "--ready",
            "/tmp/r",
        ]))
        .unwrap();
        assert_eq!(a.name, "g1");
        assert_eq!(a.http, Some(8080));
        assert_eq!(a.udp_logs, vec![(9000, PathBuf::from("/tmp/x"))]);
        assert_eq!(a.ready, Some(PathBuf::from("/tmp/r")));
        assert!(WorkloadArgs::parse(os(&["--http", "80"])).is_err());
        assert!(WorkloadArgs::parse(os(&["--name", "a", "--bogus"])).is_err());
        assert!(WorkloadArgs::parse(os(&["--name", "a", "--udp-log", "9000"])).is_err());
        assert!(WorkloadArgs::parse(os(&["--name", "a", "--http", "0"])).is_err());
    }
}
