//! `vmnap man`: the man page, made from the clap definitions; `dist/vmnap.1` is its output
//! (a test in `tests/packaging.rs` fails when they differ).

use std::io::{self, Write};

use clap_mangen::Man;

/// Writes one roff page for `cmd`: its name, synopsis, description and options, then a
/// COMMANDS section with the synopsis, description and options of each visible subcommand,
/// then FILES, EXIT STATUS and the version.
pub fn render(cmd: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let page = Man::new(cmd.clone());
    let mut roff = Vec::new();
    page.render_title(&mut roff)?;
    page.render_name_section(&mut roff)?;
    page.render_synopsis_section(&mut roff)?;
    page.render_description_section(&mut roff)?;
    page.render_options_section(&mut roff)?;
    writeln!(roff, ".SH COMMANDS")?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_bin_name().unwrap_or(sub.get_name());
        writeln!(roff, ".SS \"{name}\"")?;
        let sub = Man::new(sub.clone());
        let parts: [Part; 3] = [
            Man::render_synopsis_section,
            Man::render_description_section,
            Man::render_options_section,
        ];
        for part in parts {
            let mut text = Vec::new();
            part(&sub, &mut text)?;
            // Without its own `.SH` heading, so that it stays under this `.SS`.
            for line in String::from_utf8_lossy(&text).lines() {
                if !line.starts_with(".SH ") {
                    writeln!(roff, "{line}")?;
                }
            }
            writeln!(roff, ".PP")?;
        }
    }
    roff.extend_from_slice(STATIC_SECTIONS.as_bytes());
    page.render_version_section(&mut roff)?;
    // Every rendered part starts with the same two-line preamble; keep the first only.
    let text = String::from_utf8_lossy(&roff);
    let mut lines: Vec<&str> = text.lines().collect();
    let preamble = [r".ie \n(.g .ds Aq \(aq", r".el .ds Aq '"];
    let mut seen = false;
    lines.retain(|line| {
        if !preamble.contains(line) {
            return true;
        }
        let keep = !seen;
        seen |= *line == preamble[1];
        keep
    });
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// One of `Man`'s `render_*_section` methods.
type Part = fn(&Man, &mut dyn Write) -> io::Result<()>;

const STATIC_SECTIONS: &str = r#".SH FILES
.TP
\fI/etc/vmnap/vmnap.toml\fR
The config the packaged systemd unit starts the daemon with; every key is described in
the example installed there.
.TP
\fI/run/vmnap/vmnap.sock\fR
The daemon's control socket (\fB[api] socket\fR), mode 0600.
.TP
\fI/usr/lib/systemd/system/vmnap.service\fR
The systemd unit: \fBsystemctl enable \-\-now vmnap\fR.
.SH SCHEDULES, HOOKS AND THE GUEST AGENT
Keys of a \fB[[guest]]\fR table (the first four also in \fB[idle]\fR for every guest, all
but \fBagent\fR also in \fB[libvirt.defaults]\fR); each is refused with FILE:LINE:COL when
wrong, and a reload applies it without waking anyone.
.TP
\fBmin_awake\fR = "10m"
After a wake, idleness does not put the guest back to sleep before this long.
.TP
\fBmax_sleep\fR = "24h"
A guest asleep this long is woken (cause \fBmax-sleep\fR), and sleeps again once idle.
.TP
\fBawake_during\fR = ["Mon-Fri 07:30-18:00"], \fBtimezone\fR = "Europe/Berlin"
Windows in which idleness does not put the guest to sleep; at a window's start a sleeping
guest is woken (cause \fBawake-window\fR). Default zone: the host's.
.TP
\fBbefore_sleep\fR, \fBafter_wake\fR = ["/path/to/program", "arg"]
Run on the host (VMNAP_GUEST, VMNAP_EVENT set). A before_sleep that exits non-zero, or
does not end within \fBhook_timeout\fR (default 10s), vetoes the sleep.
.TP
\fBguest_before_sleep\fR, \fBguest_after_wake\fR, \fBinhibit_file\fR = "/run/vmnap-inhibit"
The same inside the guest, through its qemu-guest-agent; the inhibit file's existence
vetoes a sleep.
.TP
\fBagent\fR = "/run/vmnap/vm1.qga"
A QMP guest's agent socket (libvirt domains use their agent channel). Through the agent
vmnap also sets a woken guest's clock to the host's.
.SH EVENTS
\fBvmnap events\fR prints: \fBfell-asleep\fR; \fBwoke\fR (cause \fBtcp-syn\fR, \fBudp\fR,
\fBtcp-data\fR, \fBresolution\fR, \fBrequested\fR, \fBin-flight\fR, \fBmax-sleep\fR,
\fBawake-window\fR); \fBpaged-out\fR; \fBsleep-vetoed\fR (with the hook's or the inhibit
file's reason); \fBadopted\fR and \fBreleased\fR (a libvirt domain started, or shut down,
destroyed, migrated or undefined, outside vmnap: taken on or let go without a reload);
\fBbackend-error\fR (\fBsuspend\fR, \fBresume\fR, \fBafter-wake\fR, \fBset-clock\fR);
\fBanswered\fR, \fBqueued\fR, \fBdropped\fR.
.SH EXIT STATUS
0 on success; 64 when the config is invalid (with FILE:LINE:COL: KEY: MESSAGE on stderr);
2 when the command line is wrong; 1 on any other error.
.SH SIGNALS
\fBvmnap run\fR stops on SIGTERM or SIGINT, after waking every guest it put to sleep and
removing its ports from the bridges.
"#;
