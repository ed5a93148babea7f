//! Logs: JSON (or text) through `EnvFilter`, written by a background thread in batches. A request
//! only appends its formatted line to a buffer (one short lock, no syscall, no wake-up), so
//! logging never makes the hot path wait on stdout. If the output stalls and 8 MiB pile up,
//! further lines are dropped and counted rather than blocking admissions.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

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
        builder.json().flatten_event(true).init();
    } else {
        builder.with_ansi(false).init();
    }
    guard
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
