//! The decision log: a sampled share of placement decisions as JSON lines,
//! written by its own thread so that requests never wait on the file.
//!
//! A request hands its record to a bounded queue; when the writer is that
//! far behind, the record is dropped rather than the request slowed. Every
//! record is accounted for: written, dropped (the queue was full) or failed
//! (the file refused the write), in the stats report and in
//! `switchyard_decision_log_records_total{outcome}`, so a reader of the log
//! can tell a complete one from one with gaps. A write that fails partway
//! leaves at most one line cut short, ended before the next write. At
//! shutdown the gateway waits for the writer to catch up
//! ([`DecisionLog::flush`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// Records the queue holds while the writer catches up.
const QUEUE_RECORDS: usize = 4096;
/// Bytes of records the writer gathers before writing them out even while
/// more are queued.
const BATCH_BYTES: usize = 64 * 1024;
/// The writer logs a failing file at most this often.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// One line of the decision log.
#[derive(Debug, Serialize)]
pub struct DecisionRecord {
    pub unix_ms: u128,
    pub model: String,
    pub payload_bytes: u64,
    pub rate_per_second: f64,
    /// The host's CPU busy share placement saw (`null` where unmeasured).
    pub host_cpu_busy: Option<f64>,
    pub policy: &'static str,
    pub backend: String,
    pub reason: String,
    pub attempts: u32,
    pub outcome: &'static str,
    pub latency_ms: f64,
    /// Where the backend spent an answered request's time: waiting in its
    /// queue, and running the batch it was part of (`null` without an
    /// answer).
    pub queue_ms: Option<f64>,
    pub compute_ms: Option<f64>,
    /// Rows in that batch (`null` without an answer).
    pub batch_rows: Option<u64>,
}

/// What became of the records handed to the log so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DecisionLogCounts {
    /// Written to the file.
    pub written: u64,
    /// Dropped because the writer was [`QUEUE_RECORDS`] records behind.
    pub dropped: u64,
    /// Lost because the file refused the write (a full disk, say).
    pub failed: u64,
}

/// What became of a record.
#[derive(Debug, Clone, Copy)]
enum Fate {
    Written,
    Dropped,
    Failed,
}

impl Fate {
    const ALL: [Self; 3] = [Self::Written, Self::Dropped, Self::Failed];

    /// The `outcome` label of the metric.
    fn label(self) -> &'static str {
        match self {
            Self::Written => "written",
            Self::Dropped => "dropped",
            Self::Failed => "failed",
        }
    }
}

/// The counters the request path and the writer thread share.
#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn add(&self, fate: Fate, records: u64) {
        if records == 0 {
            return;
        }
        let counter = match fate {
            Fate::Written => &self.written,
            Fate::Dropped => &self.dropped,
            Fate::Failed => &self.failed,
        };
        counter.fetch_add(records, Ordering::Relaxed);
        metrics::counter!("switchyard_decision_log_records_total", "outcome" => fate.label())
            .increment(records);
    }
}

/// What the request path sends the writer.
enum Message {
    /// Boxed: the queue's slots are then a pointer wide, not a record.
    Record(Box<DecisionRecord>),
    /// Write out everything queued before this, then answer.
    Flush(oneshot::Sender<()>),
}

/// A sampled JSON-lines log of decisions, written off the request path.
#[derive(Debug)]
pub struct DecisionLog {
    path: PathBuf,
    sample: f64,
    sender: mpsc::Sender<Message>,
    counters: Arc<Counters>,
}

impl DecisionLog {
    /// Appends to `path`, keeping a `sample` share (0..=1) of decisions.
    pub fn open(path: &Path, sample: f64) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Self::with_writer(path, sample, file, QUEUE_RECORDS)
    }

    /// A log whose thread writes to `out`, with room for `queue` records
    /// while it is busy.
    fn with_writer<W: Write + Send + 'static>(
        path: &Path,
        sample: f64,
        out: W,
        queue: usize,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel(queue);
        let counters = Arc::new(Counters::default());
        // Each outcome's series exists from the start, at zero.
        for fate in Fate::ALL {
            metrics::counter!("switchyard_decision_log_records_total", "outcome" => fate.label())
                .increment(0);
        }
        let shared = Arc::clone(&counters);
        let shown = path.display().to_string();
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || write_out(receiver, out, &shared, &shown))?;
        Ok(Self {
            path: path.to_owned(),
            sample,
            sender,
            counters,
        })
    }

    /// Whether a request drawing `random` is sampled (always at a sample
    /// of 1: the draws nearest `u64::MAX` round to 1.0 as floats).
    pub fn sampled(&self, random: u64) -> bool {
        self.sample >= 1.0 || (random as f64 / u64::MAX as f64) < self.sample
    }

    /// Queues a record; drops (and counts) it if the writer is behind.
    pub fn write(&self, record: DecisionRecord) {
        if self
            .sender
            .try_send(Message::Record(Box::new(record)))
            .is_err()
        {
            self.counters.add(Fate::Dropped, 1);
        }
    }

    /// Waits, at most `limit`, until every record queued before the call
    /// has been written out (or has failed). Whether it finished in time.
    pub async fn flush(&self, limit: Duration) -> bool {
        let (done, finished) = oneshot::channel();
        let flushed = tokio::time::timeout(limit, async {
            self.sender.send(Message::Flush(done)).await.ok()?;
            finished.await.ok()
        })
        .await;
        matches!(flushed, Ok(Some(())))
    }

    /// Records written, dropped and failed so far.
    pub fn counts(&self) -> DecisionLogCounts {
        DecisionLogCounts {
            written: self.counters.written.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
        }
    }

    /// The stats report's view: where the log is, its sample and counts.
    pub fn report(&self) -> serde_json::Value {
        serde_json::json!({
            // As text: a path that is not UTF-8 would not serialize.
            "path": self.path.display().to_string(),
            "sample": self.sample,
            "records": self.counts(),
        })
    }
}

/// The writer thread: gathers queued records into one buffer and writes it
/// out whenever the queue runs dry, the buffer is full or a flush asks,
/// until every sender is gone.
fn write_out<W: Write>(
    mut receiver: mpsc::Receiver<Message>,
    out: W,
    counters: &Counters,
    path: &str,
) {
    let mut out = Lines { out, torn: false };
    let mut batch: Vec<u8> = Vec::with_capacity(BATCH_BYTES);
    let mut records = 0_u64;
    let mut warned: Option<Instant> = None;
    while let Some(message) = receiver.blocking_recv() {
        let flush = match message {
            Message::Record(record) => {
                match serde_json::to_vec(&record) {
                    Ok(line) => {
                        batch.extend_from_slice(&line);
                        batch.push(b'\n');
                        records += 1;
                    }
                    Err(_) => counters.add(Fate::Failed, 1),
                }
                None
            }
            Message::Flush(done) => Some(done),
        };
        if flush.is_some() || receiver.is_empty() || batch.len() >= BATCH_BYTES {
            let (whole, error) = out.write(&batch);
            counters.add(Fate::Written, whole);
            let lost = records.saturating_sub(whole);
            counters.add(Fate::Failed, lost);
            if let Some(error) = error
                && warned.is_none_or(|at| at.elapsed() >= WARNING_INTERVAL)
            {
                warned = Some(Instant::now());
                tracing::warn!(%error, path, records = lost,
                    "the decision log could not be written; its records are lost");
            }
            batch.clear();
            records = 0;
        }
        if let Some(done) = flush {
            let _ = done.send(());
        }
    }
}

/// Writes whole lines to a file and keeps it line by line after a write
/// that failed partway (a disk that filled up in the middle of a batch):
/// the line cut short there is ended before anything else is written, so
/// it is the only line of the file that is not a record.
struct Lines<W> {
    out: W,
    /// The last write stopped in the middle of a line.
    torn: bool,
}

impl<W: Write> Lines<W> {
    /// Writes `batch`, lines each ended by `\n`. How many of them reached
    /// the file whole, and the error that stopped the rest.
    fn write(&mut self, batch: &[u8]) -> (u64, Option<std::io::Error>) {
        if self.torn {
            if let (_, Some(error)) = self.write_bytes(b"\n") {
                return (0, Some(error));
            }
            self.torn = false;
        }
        let (done, error) = self.write_bytes(batch);
        let written = batch.get(..done).unwrap_or_default();
        if let Some(&last) = written.last() {
            self.torn = last != b'\n';
        }
        let whole = written.iter().filter(|&&byte| byte == b'\n').count();
        let error = error.or_else(|| self.out.flush().err());
        (u64::try_from(whole).unwrap_or(u64::MAX), error)
    }

    /// Writes as much of `bytes` as the file takes: how much, and the
    /// error that stopped it short.
    fn write_bytes(&mut self, bytes: &[u8]) -> (usize, Option<std::io::Error>) {
        let mut done = 0;
        while let Some(rest) = bytes.get(done..).filter(|rest| !rest.is_empty()) {
            match self.out.write(rest) {
                Ok(0) => return (done, Some(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => done += n,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return (done, Some(error)),
            }
        }
        (done, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn record(n: u32) -> DecisionRecord {
        DecisionRecord {
            unix_ms: 0,
            model: "digits".into(),
            payload_bytes: 256,
            rate_per_second: 1.0,
            host_cpu_busy: Some(0.5),
            policy: "ordered",
            backend: "local".into(),
            reason: format!("record {n}"),
            attempts: 1,
            outcome: "success",
            latency_ms: 1.0,
            queue_ms: Some(0.5),
            compute_ms: Some(0.25),
            batch_rows: Some(1),
        }
    }

    /// A file whose writes wait until the test opens the gate, and that
    /// says when the first write has started waiting.
    struct GatedFile {
        lines: Arc<Mutex<Vec<u8>>>,
        waiting: Option<std::sync::mpsc::Sender<()>>,
        gate: std::sync::mpsc::Receiver<()>,
        open: bool,
    }

    impl Write for GatedFile {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if !self.open {
                if let Some(waiting) = self.waiting.take() {
                    let _ = waiting.send(());
                }
                let _ = self.gate.recv();
                self.open = true;
            }
            self.lines
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_writer_that_falls_behind_drops_and_counts_what_does_not_fit() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (waiting, started) = std::sync::mpsc::channel();
        let (open, gate) = std::sync::mpsc::channel();
        let file = GatedFile {
            lines: Arc::clone(&lines),
            waiting: Some(waiting),
            gate,
            open: false,
        };
        let log = DecisionLog::with_writer(Path::new("(test)"), 1.0, file, 2).unwrap();
        // The first record reaches the writer, which then waits on the
        // file; two more fill the queue; the other seven are dropped.
        log.write(record(0));
        started.recv_timeout(Duration::from_secs(10)).unwrap();
        for n in 1..10 {
            log.write(record(n));
        }
        assert_eq!(
            log.counts(),
            DecisionLogCounts {
                written: 0,
                dropped: 7,
                failed: 0
            }
        );
        open.send(()).unwrap();
        assert!(log.flush(Duration::from_secs(10)).await);
        assert_eq!(
            log.counts(),
            DecisionLogCounts {
                written: 3,
                dropped: 7,
                failed: 0
            }
        );
        let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
        let reasons: Vec<String> = text
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                value["reason"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(reasons, ["record 0", "record 1", "record 2"]);
    }

    /// A file that takes `room` bytes, refuses the next write, then takes
    /// everything.
    struct FillsUp {
        bytes: Vec<u8>,
        room: usize,
        refused: bool,
    }

    impl Write for FillsUp {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if !self.refused {
                let space = self.room - self.bytes.len();
                if space == 0 {
                    self.refused = true;
                    return Err(std::io::Error::other("no space left"));
                }
                let taken = bytes.len().min(space);
                self.bytes.extend_from_slice(&bytes[..taken]);
                return Ok(taken);
            }
            self.bytes.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn fills_up(room: usize) -> Lines<FillsUp> {
        Lines {
            out: FillsUp {
                bytes: Vec::new(),
                room,
                refused: false,
            },
            torn: false,
        }
    }

    #[test]
    fn a_write_that_fails_mid_line_leaves_one_short_line_and_counts_only_whole_ones() {
        let mut lines = fills_up(6);
        let (whole, error) = lines.write(b"one\ntwo\nsix\n");
        assert_eq!(whole, 1, "only 'one' got in whole");
        assert!(error.is_some());
        let (whole, error) = lines.write(b"ten\n");
        assert_eq!((whole, error.is_none()), (1, true));
        assert_eq!(lines.out.bytes, b"one\ntw\nten\n");
    }

    #[test]
    fn a_write_that_fails_between_lines_adds_nothing() {
        let mut lines = fills_up(4);
        let (whole, error) = lines.write(b"one\ntwo\n");
        assert_eq!((whole, error.is_some()), (1, true));
        let (whole, error) = lines.write(b"ten\n");
        assert_eq!((whole, error.is_none()), (1, true));
        assert_eq!(lines.out.bytes, b"one\nten\n");
    }

    #[test]
    fn a_cut_line_is_ended_once_the_file_takes_writes_again() {
        // The file refuses the batch after the cut one too: the newline
        // that ends the cut line waits for a write that gets through.
        let mut lines = fills_up(2);
        assert_eq!(lines.write(b"one\n").0, 0);
        assert!(lines.torn);
        lines.out.refused = false;
        assert_eq!(lines.write(b"two\n").0, 0, "still full");
        assert!(lines.torn);
        assert_eq!(lines.write(b"six\n").0, 1);
        assert!(!lines.torn);
        assert_eq!(lines.out.bytes, b"on\nsix\n");
    }

    #[tokio::test]
    async fn a_file_that_refuses_writes_counts_its_records_as_failed() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            eprintln!("no /dev/full here: nothing to check");
            return;
        }
        let log = DecisionLog::open(full, 1.0).unwrap();
        for n in 0..5 {
            log.write(record(n));
        }
        assert!(log.flush(Duration::from_secs(10)).await);
        assert_eq!(
            log.counts(),
            DecisionLogCounts {
                written: 0,
                dropped: 0,
                failed: 5
            }
        );
        assert_eq!(log.report()["records"]["failed"], 5);
    }

    #[tokio::test]
    async fn flush_waits_for_every_queued_record_to_be_in_the_file() {
        let path = std::env::temp_dir().join(format!(
            "switchyard-decision-log-flush-{}.jsonl",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let log = DecisionLog::open(&path, 1.0).unwrap();
        for n in 0..500 {
            log.write(record(n));
        }
        assert!(log.flush(Duration::from_secs(10)).await);
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(text.lines().count(), 500);
        assert_eq!(log.counts().written, 500);
        assert_eq!(log.report()["sample"], 1.0);
        assert!(log.sampled(u64::MAX));
    }

    #[test]
    fn a_sample_share_keeps_draws_below_it() {
        let path = std::env::temp_dir().join(format!(
            "switchyard-decision-log-sample-{}.jsonl",
            std::process::id()
        ));
        let log = DecisionLog::open(&path, 0.25).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(log.sampled(0));
        assert!(log.sampled(u64::MAX / 5));
        assert!(!log.sampled(u64::MAX / 3));
        assert!(!log.sampled(u64::MAX));
    }
}
