//! Logs: JSON (or text) through `EnvFilter`, written by a background thread in batches. A request
//! only appends its formatted line to a buffer (one short lock, no syscall, no wake-up), so
//! logging never makes the hot path wait on stdout. If the output stalls and 8 MiB pile up,
//! further lines are dropped and counted rather than blocking admissions.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

const MAX_PENDING: usize = 8 << 20;
const FLUSH_EVERY: Duration = Duration::from_millis(50);

struct Shared {
    pending: Mutex<Vec<u8>>,
    dropped: AtomicU64,
    closing: AtomicBool,
}

/// A `MakeWriter` whose writes land in memory; see the module docs.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Flushes what is pending when dropped; keep it alive for the life of the program.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BatchWriter {
    /// A writer that flushes to `out` every 50 ms from a thread of its own.
    pub fn new(mut out: impl Write + Send + 'static) -> (BatchWriter, FlushGuard) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(64 << 10)),
            dropped: AtomicU64::new(0),
            closing: AtomicBool::new(false),
        });
        let flusher = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                let mut spare = Vec::with_capacity(64 << 10);
                loop {
                    let closing = flusher.closing.load(Ordering::SeqCst);
                    std::mem::swap(&mut *flusher.pending.lock().unwrap_or_else(|p| p.into_inner()), &mut spare);
                    let dropped = flusher.dropped.swap(0, Ordering::Relaxed);
                    if dropped > 0 {
                        let _ = writeln!(
                            spare,
                            r#"{{"level":"WARN","message":"log lines dropped: output too slow","dropped":{dropped}}}"#
                        );
                    }
                    if !spare.is_empty() {
                        let _ = out.write_all(&spare).and_then(|()| out.flush());
                        spare.clear();
                    }
                    if closing {
                        return;
                    }
                    std::thread::park_timeout(FLUSH_EVERY);
                }
            })
            .expect("spawn the log writer thread");
        (BatchWriter { shared: shared.clone() }, FlushGuard { shared, thread: Some(thread) })
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl Write for BatchWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.shared.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() + line.len() > MAX_PENDING {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            pending.extend_from_slice(line);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;
    fn make_writer(&'a self) -> BatchWriter {
        self.clone()
    }
}

/// Installs the global subscriber: `RUST_LOG` (default `info`), JSON unless `format` is "text".
pub fn init(format: &str, out: impl Write + Send + 'static) -> FlushGuard {
    let (writer, guard) = BatchWriter::new(out);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    if format == "json" {
        builder.event_format(JsonLines).init();
    } else {
        builder.with_ansi(false).init();
    }
    guard
}

/// One JSON object per line: timestamp, level, the event's fields flattened, target. Written
/// straight into the line buffer: the stock JSON formatter first collects every field into a map
/// of `serde_json::Value`s (a dozen allocations for a decision line, 4 points of the warm path's
/// throughput measured by `benches/warm_path.rs`).
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, mut out: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let now = k8s_openapi::jiff::Timestamp::now();
        write!(out, "{{\"timestamp\":\"{now}\",\"level\":\"{}\"", meta.level())?;
        let mut fields = JsonFields { out: &mut out, result: Ok(()) };
        event.record(&mut fields);
        fields.result?;
        out.write_str(",\"target\":\"")?;
        Escaped(&mut out).write_str(meta.target())?;
        out.write_str("\"}\n")
    }
}

struct JsonFields<'w, 'b> {
    out: &'w mut Writer<'b>,
    result: fmt::Result,
}

impl JsonFields<'_, '_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = write!(self.out, ",\"{}\":", field.name()).and_then(|()| value(self.out));
        }
    }

    fn string(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        self.field(field, |out| {
            out.write_char('"')?;
            Escaped(out).write_fmt(value)?;
            out.write_char('"')
        });
    }
}

impl Visit for JsonFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field, format_args!("{value}"));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.string(field, format_args!("{value:?}"));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.field(field, |out| write!(out, "{value}"));
        } else {
            self.field(field, |out| out.write_str("null"));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |out| write!(out, "{value}"));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |out| write!(out, "{value}"));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |out| write!(out, "{value}"));
    }
}

/// Escapes what is written into it as the inside of a JSON string.
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..0x20 => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_are_flat_escaped_objects() {
        let sink = Sink::default();
        let sink_for_writer = sink.clone();
        let subscriber =
            tracing_subscriber::fmt().with_writer(move || sink_for_writer.clone()).event_format(JsonLines).finish();
        tracing::subscriber::with_default(subscriber, || {
            let shown = "a \"quoted\" \\ name\nwith a newline and \u{1}";
            tracing::warn!(uid = "u-1", count = 3u64, delta = -2i64, ms = 1.5, nan = f64::NAN, ok = true, shown = %shown, "decision {}", "made");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(text.ends_with("}\n") && text.lines().count() == 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "decision made");
        assert_eq!(line["uid"], "u-1");
        assert_eq!(line["count"], 3);
        assert_eq!(line["delta"], -2);
        assert_eq!(line["ms"], 1.5);
        assert!(line["nan"].is_null());
        assert_eq!(line["ok"], true);
        assert_eq!(line["shown"], "a \"quoted\" \\ name\nwith a newline and \u{1}");
        assert_eq!(line["target"], module_path!());
        let timestamp = line["timestamp"].as_str().unwrap();
        assert!(timestamp.parse::<k8s_openapi::jiff::Timestamp>().is_ok(), "{timestamp}");
    }

    #[test]
    fn lines_are_written_in_order_and_flushed_on_drop() {
        let sink = Sink::default();
        let (mut writer, guard) = BatchWriter::new(sink.clone());
        for i in 0..1000 {
            writer.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[999], "line 999");
    }

    #[test]
    fn a_stalled_output_drops_and_counts_instead_of_blocking() {
        struct Stalled;
        impl Write for Stalled {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_secs(3600));
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (mut writer, guard) = BatchWriter::new(Stalled);
        let line = vec![b'x'; 1 << 20];
        let started = std::time::Instant::now();
        for _ in 0..40 {
            writer.write_all(&line).unwrap();
        }
        // The writer thread is stuck on purpose: never join it.
        std::mem::forget(guard);
        assert!(started.elapsed() < Duration::from_secs(5));
        // At most one batch is stuck in the output and 8 MiB wait: the rest is dropped.
        assert!(writer.shared.dropped.load(Ordering::Relaxed) > 0, "lines beyond 8 MiB are dropped");
    }
}
