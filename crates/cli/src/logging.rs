//! How `vmnap run` writes its log to stderr: `--log-format text` (in colour only when stderr
//! is a terminal, so that a file or a pipe gets plain text), `journald` (`<N>` priority
//! prefixes and no timestamps, for stderr under systemd, which turns each prefix into the
//! record's priority) or `json` (one object a line).

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The format of the daemon's log lines on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Timestamp, level, target and message, for a terminal.
    Text,
    /// `<N>` priority prefix and message, no timestamp: for stderr under systemd.
    Journald,
    /// One JSON object a line: timestamp, level, message, fields, target.
    Json,
}

/// Installs the global subscriber: `filter`, then lines in `format` on stderr. Returns what
/// changes the filter while the program runs; it refuses a filter that does not parse.
pub fn init(
    filter: EnvFilter,
    format: Format,
) -> impl Fn(&str) -> Result<(), String> + Send + Sync + 'static {
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(layer(format))
        .init();
    move |text: &str| {
        let new =
            EnvFilter::try_new(text).map_err(|e| format!("`{text}` is not a log filter: {e}"))?;
        handle
            .reload(new)
            .map_err(|e| format!("cannot change the log filter: {e}"))
    }
}

/// The layer that writes events in `format` to stderr (to stack under a reloadable filter).
pub fn layer<S>(format: Format) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    // Colour only on a terminal: a log file, a pipe or the journal would keep the escape codes.
    let ansi = format == Format::Text && std::io::stderr().is_terminal();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        Format::Text => layer.boxed(),
        Format::Journald => layer.event_format(Journald).boxed(),
        Format::Json => layer.json().flatten_event(true).boxed(),
    }
}

/// sd-daemon(3) style: `<3>` error, `<4>` warning, `<6>` info, `<7>` debug and trace, then
/// the spans, the message and its fields; no timestamp (the journal adds its own).
#[derive(Debug)]
struct Journald;

impl<S, N> FormatEvent<S, N> for Journald
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(writer, "{}: ", span.name())?;
            }
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
