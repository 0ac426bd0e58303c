//! What the crash test and `bench-crash` both do to a running daemon: a trickle of curls to
//! random guests, random sleep and wake commands, and a kill point in the middle of a sleep.
//! Seeded, so that a failing run can be repeated.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// splitmix64: small, seedable, good enough to pick moments and guests.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }

    /// One of `xs`.
    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

/// One curl of a [`curl_trickle`]: its guest, start, end, whether it got the guest's page,
/// and what curl said.
#[derive(Debug, Clone)]
pub struct CurlRecord {
    /// The guest asked.
    pub guest: &'static str,
    /// When curl started.
    pub started: Instant,
    /// When it ended.
    pub ended: Instant,
    /// It got `hello from GUEST`.
    pub ok: bool,
    /// Its standard output and error.
    pub said: String,
}

/// Curls from network namespace `ns` to a random guest of `ips` (name, address) every 50 to
/// 250 ms until `stop` is set, each with an 8 s limit, appending to `records`.
pub fn curl_trickle(
    ns: String,
    ips: Vec<(&'static str, String)>,
    seed: u64,
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<CurlRecord>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut rng = Rng(seed);
        while !stop.load(Ordering::Relaxed) {
            let (guest, ip) = &ips[(rng.next() % ips.len() as u64) as usize];
            let started = Instant::now();
            let out = Command::new("ip")
                .args(["netns", "exec", &ns, "curl", "-sS", "--max-time", "8"])
                .arg(format!("http://{ip}/"))
                .stdin(Stdio::null())
                .output();
            let ended = Instant::now();
            let (ok, said) = match out {
                Ok(out) => {
                    let body = String::from_utf8_lossy(&out.stdout);
                    let ok = out.status.success() && body == format!("hello from {guest}\n");
                    let said = format!("{body}{}", String::from_utf8_lossy(&out.stderr));
                    (ok, said)
                }
                Err(e) => (false, format!("cannot run curl: {e}")),
            };
            records
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(CurlRecord {
                    guest,
                    started,
                    ended,
                    ok,
                    said,
                });
            std::thread::sleep(Duration::from_millis(rng.range(50, 250)));
        }
    })
}

/// Every 10 to 250 ms until `stop` says so (or is dropped), puts a random guest of `guests`
/// to sleep or wakes it with `act(verb, guest)` (`verb` is `sleep` or `wake`; it returns how
/// that ended); returns what it did, one line each: offset from its start, command, end.
pub fn chaos(
    guests: &'static [&'static str],
    seed: u64,
    stop: mpsc::Receiver<()>,
    act: impl Fn(&str, &str) -> String + Send + 'static,
) -> JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut rng = Rng(seed);
        let t0 = Instant::now();
        let mut done = Vec::new();
        loop {
            match stop.recv_timeout(Duration::from_millis(rng.range(10, 250))) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                _ => return done,
            }
            let verb = if rng.next() % 2 == 0 { "sleep" } else { "wake" };
            let guest = rng.pick(guests);
            let at = t0.elapsed().as_millis();
            let end = act(verb, guest);
            done.push(format!("+{at} ms: {verb} {guest} -> {end}"));
        }
    })
}

/// The daemon's journal of `bridge` in state directory `dir`.
pub fn journal_path(dir: &Path, bridge: &str) -> PathBuf {
    dir.join(format!("journal-{bridge}.json"))
}

/// Spins until the journal at `path` shows `guest` falling asleep (up to 100 ms), then for
/// `extra_us` more microseconds: a kill point inside the steps of a sleep. Says what it saw.
pub fn into_a_sleep(path: &Path, guest: &str, extra_us: u64) -> String {
    let start = Instant::now();
    let seen = loop {
        let falling = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|j| j["guests"][guest]["step"] == "falling-asleep");
        if falling {
            break format!(
                "journaled falling-asleep after {} us",
                start.elapsed().as_micros()
            );
        }
        if start.elapsed() > Duration::from_millis(100) {
            break "no falling-asleep in the journal within 100 ms".to_owned();
        }
        std::hint::spin_loop();
    };
    let at = Instant::now();
    while at.elapsed() < Duration::from_micros(extra_us) {
        std::hint::spin_loop();
    }
    format!("{seen}, SIGKILL {extra_us} us later")
}

/// The text without terminal colour sequences (`ESC [ ... m`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `n` lines of a log, without terminal colours.
pub fn log_tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    strip_ansi(&lines[lines.len().saturating_sub(n)..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_taken_out() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m up"),
            "2026  INFO up"
        );
        assert_eq!(log_tail("a\nb\n\u{1b}[1mc\u{1b}[0m\n", 2), "b\nc");
    }

    #[test]
    fn one_seed_one_sequence() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        for _ in 0..100 {
            let x = a.range(10, 250);
            assert!((10..250).contains(&x));
            assert_eq!(x, b.range(10, 250));
        }
    }
}
