//! The status page: one self-contained HTML document (no scripts, styles or images from
//! elsewhere) showing each guest, its state, its sleep and wake over the last day, and what
//! its sleep has freed. Pure: it renders what it is given.
//!
//! The page asks the browser to reload it every ten seconds; everything else is static
//! HTML with inline CSS and one inline SVG bar per guest, so it reads the same in a
//! browser, a screenshot or a text-mode browser. Every text that comes from outside
//! (the host name, guest names, wake causes) is escaped.

use std::fmt::Write as _;

use vmnap_api::State;

/// One guest as the page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PageGuest {
    /// Its name.
    pub name: String,
    /// Where it is in its sleep and wake.
    pub state: State,
    /// The bridge it is on.
    pub bridge: String,
    /// Its backend (`cgroup`, `libvirt`, `qmp`).
    pub backend: String,
    /// `pause` or `save`, for libvirt and QMP guests.
    pub mode: Option<String>,
    /// Its changes of state, oldest first: from each time (seconds since the Unix epoch) on,
    /// asleep or not. The first may lie before the day shown (the state the day began in);
    /// before the first, the guest was awake.
    pub timeline: Vec<(f64, bool)>,
    /// Since when vmnap has known the guest (seconds since the Unix epoch: the daemon's start,
    /// or the reload that added it); the bar shows the time before as unknown.
    pub known_since: Option<f64>,
    /// Completed wakes.
    pub wakes: u64,
    /// What caused the last wake.
    pub last_wake_cause: Option<String>,
    /// How long the last wake took, in milliseconds.
    pub last_wake_ms: Option<f64>,
    /// Memory its sleep releases now, in bytes; `None`: not known.
    pub memory_freed_bytes: Option<u64>,
    /// What came back since its wake from a page-out, in bytes.
    pub memory_back_bytes: Option<u64>,
    /// Whether its RAM can be paged out, and what stands in the way (`GuestStatus::page_out`).
    pub page_out: Option<String>,
    /// CPU-hours its sleep has saved so far (an estimate from its CPU use while awake);
    /// `None`: not known.
    pub cpu_hours_freed: Option<f64>,
}

/// The span of the timeline, in seconds: the last day.
const DAY_S: f64 = 24.0 * 3600.0;
/// The timeline's width in CSS pixels: 12 per hour.
const BAR_WIDTH: f64 = 288.0;
/// The height of the bar itself; the hour labels go below it.
const BAR_HEIGHT: f64 = 14.0;
/// What the page shows for a figure that is not known.
const UNKNOWN: &str = "—";

/// The page for `guests`, as seen at `now_unix_s` on host `host`.
pub fn render(host: &str, now_unix_s: f64, guests: &[PageGuest]) -> String {
    let host = escape(host);
    let mut out = String::with_capacity(8 * 1024 + guests.len() * 2 * 1024);
    out.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta http-equiv=\"refresh\" content=\"10\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(out, "<title>vmnap on {host}</title>");
    out.push_str(STYLE);
    out.push_str("</head>\n<body>\n<main>\n<header>\n");
    let _ = writeln!(out, "<h1>vmnap on {host}</h1>");
    let _ = writeln!(
        out,
        "<p class=\"updated\">Updated {} · refreshes every 10 s</p>",
        utc_timestamp(now_unix_s)
    );
    out.push_str("</header>\n");
    summary(&mut out, guests);
    if guests.is_empty() {
        out.push_str(
            "<p class=\"empty\">No guests configured. Add a <code>[[guest]]</code> to \
             vmnap’s config file (or have it discover libvirt domains), then run \
             <code>vmnap reload</code>.</p>\n",
        );
    } else {
        table(&mut out, now_unix_s, guests);
    }
    let _ = writeln!(
        out,
        "<footer>vmnap {} · memory freed is what each sleeping guest releases now; CPU-hours \
         are estimated from each guest’s CPU use while awake.</footer>",
        env!("CARGO_PKG_VERSION")
    );
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

/// The inline style sheet: plain sans-serif, dark on light, no web fonts.
const STYLE: &str = r#"<style>
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f3f5f8; color: #1b2230;
  font-family: "Helvetica Neue", Arial, "Liberation Sans", "DejaVu Sans", sans-serif;
  font-size: 15px; line-height: 1.4; }
main { max-width: 1240px; margin: 0 auto; padding: 28px 24px 20px; }
header { display: flex; align-items: baseline; justify-content: space-between;
  flex-wrap: wrap; gap: 4px 24px; margin-bottom: 18px; }
h1 { margin: 0; font-size: 26px; font-weight: 700; letter-spacing: -0.01em; }
.updated { margin: 0; color: #5b6577; font-size: 14px; }
.summary { display: flex; flex-wrap: wrap; gap: 14px; margin: 0 0 22px; padding: 0;
  list-style: none; }
.summary li { flex: 1 1 200px; background: #fff; border: 1px solid #dde2ea;
  border-radius: 10px; padding: 12px 16px; }
.summary .figure { display: block; font-size: 24px; font-weight: 700; color: #111827; }
.summary .label { display: block; color: #5b6577; font-size: 13px; }
.card { background: #fff; border: 1px solid #dde2ea; border-radius: 10px; overflow-x: auto; }
table { width: 100%; border-collapse: collapse; }
th { text-align: left; font-size: 13px; font-weight: 600; color: #5b6577;
  background: #f8f9fb; padding: 10px; border-bottom: 1px solid #dde2ea; white-space: nowrap; }
td { padding: 12px 10px; border-bottom: 1px solid #edf0f4; vertical-align: middle; }
th:first-child, td:first-child { padding-left: 16px; }
th:last-child, td:last-child { padding-right: 16px; }
tr:last-child td { border-bottom: none; }
td.num, th.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
.name { display: inline-block; min-width: 6em; max-width: 14em; font-size: 19px;
  font-weight: 600; color: #111827; overflow-wrap: break-word; }
td.wakes .sub { white-space: normal; max-width: 170px; margin-left: auto; }
td.timeline { width: 1%; white-space: nowrap; }
.sub { display: block; color: #5b6577; font-size: 13px; }
.badge { display: inline-block; padding: 3px 10px; border-radius: 999px; font-size: 14px;
  font-weight: 600; white-space: nowrap; border: 1px solid transparent; }
.badge::before { content: ""; display: inline-block; width: 8px; height: 8px;
  border-radius: 50%; margin-right: 6px; vertical-align: 1px; background: currentColor; }
.awake { background: #e6f6ec; color: #17663a; border-color: #bfe6cc; }
.sleeping { background: #e8eafd; color: #3b3fb0; border-color: #c9cdf7; }
.waking { background: #fff4dc; color: #8a5300; border-color: #f4dca6; }
.falling-asleep { background: #f1eafd; color: #6235a8; border-color: #dccbf6; }
.timeline svg { display: block; }
.timeline .asleep { fill: #4f56d6; }
.timeline .awake-bar { fill: #b9e5c8; }
.timeline .unknown { fill: #e3e6eb; }
.timeline .frame { fill: none; stroke: #c3cad5; }
.timeline .tick { stroke: #8b95a5; }
.timeline text { font-size: 10px; fill: #5b6577;
  font-family: "Helvetica Neue", Arial, "Liberation Sans", "DejaVu Sans", sans-serif; }
.legend { font-weight: 400; margin-left: 6px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin: 0 4px 0 8px; vertical-align: -1px; }
.swatch.asleep { background: #4f56d6; }
.swatch.awake-bar { background: #b9e5c8; }
.swatch.unknown { background: #e3e6eb; }
.empty { background: #fff; border: 1px dashed #c3cad5; border-radius: 10px;
  padding: 28px; text-align: center; font-size: 17px; color: #414b5c; }
code { font-family: "DejaVu Sans Mono", "Liberation Mono", monospace; font-size: 0.92em;
  background: #eef0f3; padding: 1px 5px; border-radius: 4px; }
footer { margin-top: 16px; color: #7a8494; font-size: 12px; }
</style>
"#;

/// The figures across all guests.
fn summary(out: &mut String, guests: &[PageGuest]) {
    let asleep = guests.iter().filter(|g| g.state == State::Sleeping).count();
    let memory = total(guests.iter().map(|g| g.memory_freed_bytes));
    let cpu = total(guests.iter().map(|g| g.cpu_hours_freed));
    let tile = |out: &mut String, figure: &str, label: &str| {
        let _ = writeln!(
            out,
            "<li><span class=\"figure\">{figure}</span><span class=\"label\">{label}</span></li>"
        );
    };
    out.push_str("<ul class=\"summary\">\n");
    tile(
        out,
        &guests.len().to_string(),
        if guests.len() == 1 { "guest" } else { "guests" },
    );
    tile(out, &asleep.to_string(), "asleep now");
    tile(
        out,
        &memory.map_or_else(|| UNKNOWN.to_owned(), bytes),
        "memory freed now",
    );
    tile(
        out,
        &cpu.map_or_else(|| UNKNOWN.to_owned(), hours),
        "CPU-hours freed",
    );
    out.push_str("</ul>\n");
}

/// The sum of the figures that are known; `None` if none is.
fn total<T: std::iter::Sum<T>>(figures: impl Iterator<Item = Option<T>>) -> Option<T> {
    let mut known = figures.flatten().peekable();
    known.peek()?;
    Some(known.sum())
}

/// One row per guest.
fn table(out: &mut String, now: f64, guests: &[PageGuest]) {
    out.push_str(
        "<div class=\"card\">\n<table>\n<thead><tr><th>Guest</th><th>State</th>\
         <th>Bridge</th><th>Backend</th><th class=\"num\">Wakes</th>\
         <th class=\"num\">Memory freed</th><th class=\"num\">CPU-hours freed</th>\
         <th>Last 24 hours<span class=\"legend\"><span class=\"swatch awake-bar\"></span>awake\
         <span class=\"swatch asleep\"></span>asleep<span class=\"swatch unknown\"></span>\
         not known</span></th></tr></thead>\n<tbody>\n",
    );
    for g in guests {
        let backend = match &g.mode {
            Some(mode) => format!(
                "{} <span class=\"sub\">{}</span>",
                escape(&g.backend),
                escape(mode)
            ),
            None => escape(&g.backend),
        };
        let last_wake = match (&g.last_wake_cause, g.last_wake_ms) {
            (None, None) => String::new(),
            (cause, ms) => {
                let mut text = String::from("last: ");
                text.push_str(
                    &cause
                        .as_deref()
                        .map_or_else(|| "unknown cause".into(), escape),
                );
                if let Some(ms) = ms {
                    text.push_str(" · ");
                    text.push_str(&millis(ms));
                }
                format!("<span class=\"sub\">{text}</span>")
            }
        };
        let _ = writeln!(
            out,
            "<tr><td><span class=\"name\">{name}</span></td>\
             <td><span class=\"badge {class}\">{state}</span></td>\
             <td>{bridge}</td><td>{backend}</td>\
             <td class=\"num wakes\">{wakes}{last_wake}</td>\
             <td class=\"num\">{memory}</td><td class=\"num\">{cpu}</td>\
             <td class=\"timeline\">{svg}</td></tr>",
            name = escape(&g.name),
            class = g.state,
            state = g.state,
            bridge = escape(&g.bridge),
            wakes = g.wakes,
            memory = memory_cell(g),
            cpu = g.cpu_hours_freed.map_or_else(|| UNKNOWN.to_owned(), hours),
            svg = timeline_svg(now, g.known_since, &g.timeline),
        );
    }
    out.push_str("</tbody>\n</table>\n</div>\n");
}

/// The memory column: what its sleep frees, what came back after a page-out, and a word on
/// a page-out that cannot be, or costs more than it should.
fn memory_cell(g: &PageGuest) -> String {
    let mut cell = g
        .memory_freed_bytes
        .map_or_else(|| UNKNOWN.to_owned(), bytes);
    if let Some(back) = g.memory_back_bytes {
        let _ = write!(
            cell,
            "<span class=\"sub\">{} back since the wake</span>",
            bytes(back)
        );
    }
    match g.page_out.as_deref() {
        None | Some("ready") => {}
        Some(note) => {
            let _ = write!(
                cell,
                "<span class=\"sub note\">page-out {}</span>",
                escape(note)
            );
        }
    }
    cell
}

/// A stretch of the day shown: from, to (seconds since the epoch) and asleep or not.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stretch {
    from: f64,
    to: f64,
    asleep: bool,
}

/// The stretches of `[now - 24 h, now]`, in order, none empty and no two neighbours in
/// the same state. Times that are not finite are left out; a time earlier
/// than the one before it counts as the one before it.
fn stretches(now: f64, timeline: &[(f64, bool)]) -> Vec<Stretch> {
    /// Adds `[from, to)` to `out`, joining it to the last stretch if in the same state.
    fn push(out: &mut Vec<Stretch>, from: f64, to: f64, asleep: bool) {
        if to <= from {
            return;
        }
        match out.last_mut() {
            Some(last) if last.asleep == asleep => last.to = to,
            _ => out.push(Stretch { from, to, asleep }),
        }
    }
    let (lo, hi) = (now - DAY_S, now);
    let mut out: Vec<Stretch> = Vec::new();
    let (mut at, mut asleep) = (lo, false);
    for &(t, next) in timeline.iter().filter(|(t, _)| t.is_finite()) {
        if t >= hi {
            break;
        }
        let t = t.max(at);
        push(&mut out, at, t, asleep);
        at = t;
        asleep = next;
    }
    push(&mut out, at, hi, asleep);
    out
}

/// The x coordinate of time `t` on a bar ending at `now`.
fn x_of(now: f64, t: f64) -> f64 {
    ((t - (now - DAY_S)) / DAY_S * BAR_WIDTH).clamp(0.0, BAR_WIDTH)
}

/// The last day of `timeline` as an SVG bar: awake light green, asleep indigo, ticks and
/// labels every six hours.
fn timeline_svg(now: f64, known_since: Option<f64>, timeline: &[(f64, bool)]) -> String {
    let parts = if now.is_finite() {
        stretches(now, timeline)
    } else {
        Vec::new()
    };
    let slept: f64 = parts
        .iter()
        .filter(|s| s.asleep)
        .map(|s| s.to - s.from)
        .sum();
    let height = BAR_HEIGHT + 16.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" \
         viewBox=\"-1 -1 {vw} {height}\" role=\"img\"><title>Asleep {slept} of the last 24 \
         hours</title>",
        w = BAR_WIDTH + 2.0,
        vw = BAR_WIDTH + 2.0,
        slept = duration(slept),
    );
    let _ = write!(
        svg,
        "<rect class=\"awake-bar\" x=\"0\" y=\"0\" width=\"{BAR_WIDTH}\" height=\"{BAR_HEIGHT}\"/>"
    );
    if let Some(since) = known_since.filter(|t| t.is_finite() && now.is_finite()) {
        let x = x_of(now, since);
        if x > 0.0 {
            let _ = write!(
                svg,
                "<rect class=\"unknown\" x=\"0\" y=\"0\" width=\"{}\" height=\"{BAR_HEIGHT}\">\
                 <title>before vmnap knew this guest</title></rect>",
                round2(x)
            );
        }
    }
    for s in parts.iter().filter(|s| s.asleep) {
        let (x0, x1) = (x_of(now, s.from), x_of(now, s.to));
        // A sleep of minutes is narrower than a pixel: show it at least 2 wide.
        let x0 = x0.min((x1 - 2.0).max(0.0));
        let _ = write!(
            svg,
            "<rect class=\"asleep\" x=\"{x}\" y=\"0\" width=\"{w}\" height=\"{BAR_HEIGHT}\">\
             <title>asleep {d}</title></rect>",
            x = round2(x0),
            w = round2(x1 - x0),
            d = duration(s.to - s.from),
        );
    }
    let _ = write!(
        svg,
        "<rect class=\"frame\" x=\"0\" y=\"0\" width=\"{BAR_WIDTH}\" height=\"{BAR_HEIGHT}\"/>"
    );
    for (i, label) in ["-24h", "-18h", "-12h", "-6h", "now"].iter().enumerate() {
        let x = BAR_WIDTH * i as f64 / 4.0;
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            svg,
            "<line class=\"tick\" x1=\"{x}\" y1=\"{BAR_HEIGHT}\" x2=\"{x}\" y2=\"{y2}\"/>\
             <text x=\"{x}\" y=\"{ty}\" text-anchor=\"{anchor}\">{label}</text>",
            y2 = BAR_HEIGHT + 3.0,
            ty = BAR_HEIGHT + 13.0,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// `x` to two decimals, without trailing zeros (`216`, `0.5`).
fn round2(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Seconds for people: `45 s`, `12 min`, `6 h 5 min`.
fn duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// Bytes in binary units: `0 B`, `512 MiB`, `1.5 GiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 100.0 || value.fract() < 0.05 || value.fract() > 0.95 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// CPU-hours with as many decimals as mean something.
fn hours(h: f64) -> String {
    if !h.is_finite() || h < 0.0 {
        UNKNOWN.to_owned()
    } else if h == 0.0 {
        "0".to_owned()
    } else if h < 0.01 {
        "&lt; 0.01".to_owned()
    } else if h < 10.0 {
        format!("{h:.2}")
    } else if h < 100.0 {
        format!("{h:.1}")
    } else {
        format!("{h:.0}")
    }
}

/// Milliseconds for people: `412 ms`, `1.4 s`.
fn millis(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        UNKNOWN.to_owned()
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the epoch.
fn utc_timestamp(unix_s: f64) -> String {
    if !unix_s.is_finite() {
        return UNKNOWN.to_owned();
    }
    let s = unix_s.floor() as i64;
    let (days, secs) = (s.div_euclid(86_400), s.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `s` as HTML text or attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_790_000_000.0;
    const HOUR: f64 = 3600.0;

    fn guest(name: &str, state: State) -> PageGuest {
        PageGuest {
            name: name.to_owned(),
            state,
            bridge: "br0".to_owned(),
            backend: "cgroup".to_owned(),
            mode: None,
            timeline: Vec::new(),
            known_since: None,
            wakes: 0,
            last_wake_cause: None,
            last_wake_ms: None,
            memory_freed_bytes: None,
            memory_back_bytes: None,
            page_out: None,
            cpu_hours_freed: None,
        }
    }

    /// The `class="asleep"` rects of a page: (x, width).
    fn asleep_rects(html: &str) -> Vec<(f64, f64)> {
        html.split("<rect class=\"asleep\"")
            .skip(1)
            .map(|r| {
                let attr = |name: &str| -> f64 {
                    let start = r.find(&format!(" {name}=\"")).expect("attribute") + name.len() + 3;
                    let len = r[start..].find('"').expect("closing quote");
                    r[start..start + len].parse().expect("a number")
                };
                (attr("x"), attr("width"))
            })
            .collect()
    }

    #[test]
    fn names_and_other_text_are_escaped() {
        let mut g = guest("<b>tom & \"jerry's\"</b>", State::Sleeping);
        g.bridge = "br<0>".into();
        g.backend = "qmp&".into();
        g.mode = Some("\"save\"".into());
        g.last_wake_cause = Some("tcp/80 <from 198.18.1.100>".into());
        let html = render("host<&>", NOW, &[g]);
        assert!(html.contains("&lt;b&gt;tom &amp; &quot;jerry&#39;s&quot;&lt;/b&gt;"));
        assert!(html.contains("<title>vmnap on host&lt;&amp;&gt;</title>"));
        assert!(html.contains("<h1>vmnap on host&lt;&amp;&gt;</h1>"));
        assert!(html.contains("class=\"badge sleeping\">sleeping<"));
        assert!(html.contains("br&lt;0&gt;"));
        assert!(html.contains("qmp&amp;"));
        assert!(html.contains("&quot;save&quot;"));
        assert!(html.contains("tcp/80 &lt;from 198.18.1.100&gt;"));
        assert!(!html.contains("<b>") && !html.contains("<script>") && !html.contains("<0>"));
    }

    #[test]
    fn a_guest_asleep_for_the_last_six_hours_fills_the_last_quarter() {
        let mut g = guest("web1", State::Sleeping);
        g.timeline = vec![(NOW - 6.0 * HOUR, true)];
        let html = render("h", NOW, &[g]);
        assert_eq!(
            asleep_rects(&html),
            vec![(BAR_WIDTH * 0.75, BAR_WIDTH * 0.25)]
        );
        assert!(html.contains("Asleep 6 h 0 min of the last 24 hours"));
        for label in ["-24h", "-18h", "-12h", "-6h", "now"] {
            assert!(html.contains(&format!(">{label}</text>")), "{label}");
        }
    }

    #[test]
    fn stretches_are_clamped_to_the_last_day() {
        // Asleep since two days ago, awake for an hour 12 hours ago, asleep again, and a
        // change in the future that is not shown.
        let timeline = [
            (NOW - 48.0 * HOUR, true),
            (NOW - 12.0 * HOUR, false),
            (NOW - 11.0 * HOUR, true),
            (NOW + HOUR, false),
        ];
        let s = stretches(NOW, &timeline);
        let lo = NOW - DAY_S;
        assert_eq!(
            s,
            vec![
                Stretch {
                    from: lo,
                    to: NOW - 12.0 * HOUR,
                    asleep: true
                },
                Stretch {
                    from: NOW - 12.0 * HOUR,
                    to: NOW - 11.0 * HOUR,
                    asleep: false
                },
                Stretch {
                    from: NOW - 11.0 * HOUR,
                    to: NOW,
                    asleep: true
                },
            ]
        );
        let mut g = guest("a", State::Sleeping);
        g.timeline = timeline.to_vec();
        let rects = asleep_rects(&render("h", NOW, &[g]));
        assert_eq!(rects, vec![(0.0, 144.0), (156.0, 132.0)]);
    }

    #[test]
    fn the_time_before_vmnap_knew_the_guest_is_shown_as_not_known() {
        let mut g = guest("a", State::Awake);
        g.known_since = Some(NOW - 6.0 * HOUR);
        let html = render("h", NOW, &[g]);
        assert!(
            html.contains("<rect class=\"unknown\" x=\"0\" y=\"0\" width=\"216\""),
            "{html}"
        );
        // Known for more than a day: nothing unknown to show.
        let mut g = guest("a", State::Awake);
        g.known_since = Some(NOW - 30.0 * HOUR);
        assert!(!render("h", NOW, &[g]).contains("<rect class=\"unknown\""));
    }

    #[test]
    fn no_timeline_is_awake_all_day_and_repeats_merge() {
        assert_eq!(
            stretches(NOW, &[]),
            vec![Stretch {
                from: NOW - DAY_S,
                to: NOW,
                asleep: false
            }]
        );
        let s = stretches(
            NOW,
            &[
                (NOW - 3.0 * HOUR, true),
                (NOW - 2.0 * HOUR, true),
                (f64::NAN, false),
                (NOW - 4.0 * HOUR, true), // out of order: counts from the one before
            ],
        );
        assert_eq!(
            s,
            vec![
                Stretch {
                    from: NOW - DAY_S,
                    to: NOW - 3.0 * HOUR,
                    asleep: false
                },
                Stretch {
                    from: NOW - 3.0 * HOUR,
                    to: NOW,
                    asleep: true
                },
            ]
        );
        assert!(asleep_rects(&render("h", NOW, &[guest("a", State::Awake)])).is_empty());
    }

    #[test]
    fn the_memory_column_says_what_came_back_and_what_stands_in_a_page_outs_way() {
        let mut a = guest("a", State::Awake);
        a.memory_freed_bytes = Some(0);
        a.memory_back_bytes = Some(3 * 1024 * 1024);
        a.page_out = Some("ready".into());
        let mut b = guest("b", State::Sleeping);
        b.page_out = Some("unavailable, it sleeps paused: its RAM is <not> a file".into());
        let html = render("h", NOW, &[a, b]);
        assert!(html.contains("3 MiB back since the wake"), "{html}");
        assert!(
            html.contains("page-out unavailable, it sleeps paused: its RAM is &lt;not&gt; a file"),
            "{html}"
        );
        assert!(
            !html.contains("page-out ready"),
            "nothing to say of a ready one: {html}"
        );
    }

    #[test]
    fn totals_add_up_what_is_known() {
        let mut a = guest("a", State::Sleeping);
        a.memory_freed_bytes = Some(512 * 1024 * 1024);
        a.cpu_hours_freed = Some(1.25);
        let mut b = guest("b", State::Sleeping);
        b.memory_freed_bytes = Some(1024 * 1024 * 1024);
        b.cpu_hours_freed = Some(0.5);
        let c = guest("c", State::Awake);
        let html = render("h", NOW, &[a, b, c]);
        let tile = |figure: &str, label: &str| {
            format!("<span class=\"figure\">{figure}</span><span class=\"label\">{label}</span>")
        };
        assert!(html.contains(&tile("3", "guests")), "{html}");
        assert!(html.contains(&tile("2", "asleep now")), "{html}");
        assert!(
            html.contains(&tile("1.5 GiB", "memory freed now")),
            "{html}"
        );
        assert!(html.contains(&tile("1.75", "CPU-hours freed")), "{html}");
        assert!(html.contains(">512 MiB</td>"));
        assert!(html.contains(">1.25</td>"));
    }

    #[test]
    fn unknown_figures_are_shown_as_a_dash() {
        let mut g = guest("a", State::Awake);
        g.wakes = 2;
        g.last_wake_cause = Some("tcp/80".into());
        g.last_wake_ms = Some(1430.0);
        let html = render("h", NOW, &[g]);
        assert!(
            html.contains("<td class=\"num\">—</td><td class=\"num\">—</td>"),
            "{html}"
        );
        assert!(html.contains("<span class=\"figure\">—</span><span class=\"label\">memory"));
        assert!(html.contains("<span class=\"figure\">—</span><span class=\"label\">CPU"));
        assert!(
            html.contains("2<span class=\"sub\">last: tcp/80 · 1.4 s</span>"),
            "{html}"
        );
    }

    #[test]
    fn no_guests_says_so() {
        let html = render("h", NOW, &[]);
        assert!(
            html.to_lowercase().contains("no guests configured"),
            "{html}"
        );
        assert!(!html.contains("<table"));
        assert!(html.contains("<span class=\"figure\">0</span><span class=\"label\">guests"));
    }

    #[test]
    fn the_page_is_self_contained_and_refreshes() {
        let html = render("h", NOW, &[guest("a", State::Awake)]);
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("src="));
        assert!(!html.contains("href="));
        assert!(!html.contains("url("));
        assert!(html.contains("2026-09-21 14:13:20 UTC"), "{html}");
    }

    #[test]
    fn figures_read_well() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(512 * 1024 * 1024), "512 MiB");
        assert_eq!(bytes(1536 * 1024 * 1024), "1.5 GiB");
        assert_eq!(bytes(200 * 1024 * 1024 * 1024 + 7), "200 GiB");
        assert_eq!(hours(0.0), "0");
        assert_eq!(hours(0.004), "&lt; 0.01");
        assert_eq!(hours(3.456), "3.46");
        assert_eq!(hours(42.42), "42.4");
        assert_eq!(hours(f64::NAN), "—");
        assert_eq!(millis(412.4), "412 ms");
        assert_eq!(duration(6.0 * HOUR + 300.0), "6 h 5 min");
        assert_eq!(utc_timestamp(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_timestamp(951_782_400.0), "2000-02-29 00:00:00 UTC");
    }
}
