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
.SH EXIT STATUS
0 on success; 64 when the config is invalid (with FILE:LINE:COL: KEY: MESSAGE on stderr);
2 when the command line is wrong; 1 on any other error.
.SH SIGNALS
\fBvmnap run\fR stops on SIGTERM or SIGINT, after waking every guest it put to sleep and
removing its ports from the bridges.
"#;
