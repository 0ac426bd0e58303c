//! The guest's qemu-guest-agent on its own unix socket (QEMU's `-chardev socket,...` of a
//! `virtserialport` named `org.qemu.guest_agent.0`): one connection per command, which first
//! syncs (`guest-sync` with a fresh id, answers to anything sent before skipped), then sends
//! the command and reads its answer, all within a timeout.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Sync ids, distinct across calls.
static SYNC_ID: AtomicU64 = AtomicU64::new(1);

/// Sends `command` (a JSON object of the agent's protocol) to the agent on `socket` and
/// returns its answer (one JSON object, as text), or why not, within about `timeout`.
pub(crate) fn command(socket: &Path, command: &str, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot connect to the guest agent at {}: {e}",
            socket.display()
        )
    })?;
    let mut writer = stream
        .try_clone()
        .map_err(|e| format!("cannot use the guest agent's socket: {e}"))?;
    let mut reader = BufReader::new(stream);
    let id = SYNC_ID.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 1_000_000;
    let sync = json!({ "execute": "guest-sync", "arguments": { "id": id } }).to_string();
    send(&mut writer, &sync)?;
    loop {
        let line = read_line(&mut reader, deadline)?;
        let Ok(v) = serde_json::from_str::<Value>(line.trim_start_matches('\u{ff}')) else {
            continue;
        };
        if v["return"] == json!(id) {
            break;
        }
    }
    send(&mut writer, command)?;
    read_line(&mut reader, deadline)
}

fn send(writer: &mut UnixStream, text: &str) -> Result<(), String> {
    writer
        .write_all(format!("{text}\n").as_bytes())
        .map_err(|e| format!("cannot write to the guest agent: {e}"))
}

/// The next line the agent sends, before `deadline`.
fn read_line(reader: &mut BufReader<UnixStream>, deadline: Instant) -> Result<String, String> {
    let left = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or("the guest agent did not answer in time")?;
    reader
        .get_ref()
        .set_read_timeout(Some(left))
        .map_err(|e| format!("cannot use the guest agent's socket: {e}"))?;
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Err("the guest agent closed its socket".to_owned()),
        Ok(_) => Ok(line.trim_end().to_owned()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err("the guest agent did not answer in time".to_owned())
        }
        Err(e) => Err(format!("cannot read from the guest agent: {e}")),
    }
}

/// The agent's `return` of `answer`, or its error.
pub(crate) fn returned(answer: &str) -> Result<Value, String> {
    let mut v: Value = serde_json::from_str(answer)
        .map_err(|e| format!("the guest agent's answer is not JSON ({e}): {answer}"))?;
    if let Some(e) = v.get("error") {
        return Err(format!(
            "the guest agent refused: {}",
            e["desc"].as_str().unwrap_or("no reason given")
        ));
    }
    Ok(v["return"].take())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fake_agent_is_synced_then_asked() {
        let dir = std::env::temp_dir().join(format!("vmnap-qga-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("qga.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let agent = std::thread::spawn(move || {
            let (s, _) = listener.accept().expect("accept");
            let mut w = s.try_clone().expect("clone");
            let mut r = BufReader::new(s);
            // A stale answer first, as an agent that answered someone else would.
            w.write_all(b"{\"return\": 7}\n").expect("write");
            let mut line = String::new();
            r.read_line(&mut line).expect("sync");
            let sync: Value = serde_json::from_str(&line).expect("JSON");
            assert_eq!(sync["execute"], "guest-sync");
            writeln!(w, "{{\"return\": {}}}", sync["arguments"]["id"]).expect("write");
            line.clear();
            r.read_line(&mut line).expect("command");
            assert!(line.contains("guest-get-time"), "{line}");
            w.write_all(b"{\"return\": 1796537462420745000}\n")
                .expect("write");
        });
        let answer = command(
            &path,
            r#"{"execute":"guest-get-time"}"#,
            Duration::from_secs(5),
        )
        .expect("an answer");
        assert_eq!(
            returned(&answer).expect("a return"),
            json!(1_796_537_462_420_745_000u64)
        );
        agent.join().expect("the fake agent");
        assert!(
            returned(r#"{"error":{"class":"GenericError","desc":"no"}}"#)
                .unwrap_err()
                .contains("refused: no")
        );
        let _ = std::fs::remove_dir_all(&dir);
        let gone = command(&path, "{}", Duration::from_millis(200)).unwrap_err();
        assert!(gone.contains("cannot connect"), "{gone}");
    }
}
