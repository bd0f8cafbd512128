//! The low-load runs' second client: one thread, one keep-alive connection,
//! blocking system calls, each request a pre-built byte string written in
//! one call and its answer read straight into a buffer.
//!
//! The load generator's open loop hands each request from a pacer thread to
//! an async runtime, and the answer wakes that runtime's sleeping thread
//! through its event loop; a thread blocked in `read` on the socket is
//! woken by the answer itself. Whatever the client's round trip costs, a
//! low-load run charges to the server. On 2026-12-07 the load generator
//! measured the gateway's `GET /v2/health/live` at 1,000/s as 91 µs at
//! p50 in one run, and a blocking client 25–30 µs on the same kind of
//! host later that day; in other runs the two agreed within a few tens of
//! µs (`bench/README.md`, `local`). Both clients' results are reported;
//! this one's hold less of the client.
//!
//! Latency counts from each request's intended send time, as the load
//! generator's does: a late answer delays the next request, and the delay
//! is charged to it. The run is bounded in count (the schedule) and in
//! time: requests still unsent one timeout after the schedule's end are
//! counted as unsent rather than sent late.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use switchyard_loadgen::LatencySummary;
use switchyard_loadgen::client::{self, Framing};
use switchyard_loadgen::runner::wait_until;

use crate::error::BenchError;

/// The last part of the wait before a due time, spent polling the clock
/// (as the load generator's pacer does): a thread sleep overshoots by tens
/// of microseconds.
const SPIN: Duration = Duration::from_micros(100);
/// Largest answer head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest answer body accepted.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// What a lean run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LeanRun {
    pub rate_per_s: f64,
    /// Requests answered 2xx.
    pub success: u64,
    /// Requests answered with another status.
    pub errors: u64,
    /// Requests not sent because the run fell behind its schedule by more
    /// than the timeout.
    pub unsent: u64,
    /// From intended send to the end of the answer, in µs, 2xx only.
    pub latency_us: LatencySummary,
    /// The `switchyard-inference-time-us` header, where there was one.
    pub server_inference_us: LatencySummary,
}

/// Sends `requests` (complete HTTP/1.1 requests, used in turn) to `address`
/// at `rate` per second: `warmup` unmeasured, then `duration` measured. An
/// I/O error or an answer slower than `timeout` ends the run with an
/// error; it ends by `timeout` after the schedule in any case.
pub fn lean_run(
    address: SocketAddr,
    requests: &[&[u8]],
    rate: f64,
    warmup: Duration,
    duration: Duration,
    timeout: Duration,
) -> Result<LeanRun, BenchError> {
    if requests.is_empty() || !(rate > 0.0 && rate.is_finite()) {
        return Err(BenchError::Other(format!(
            "lean client: nothing to send at {rate}/s ({} request kinds)",
            requests.len()
        )));
    }
    let io = |what: &'static str| {
        move |source: std::io::Error| BenchError::Io {
            context: what,
            path: address.to_string().into(),
            source,
        }
    };
    let stream =
        TcpStream::connect_timeout(&address, timeout).map_err(io("lean client: cannot connect"))?;
    stream
        .set_nodelay(true)
        .map_err(io("lean client: cannot set TCP_NODELAY"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(io("lean client: cannot set the read timeout"))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(io("lean client: cannot set the write timeout"))?;
    let mut connection = Connection {
        stream,
        buffer: Vec::with_capacity(16 * 1024),
    };
    let mut latency = histogram()?;
    let mut inference = histogram()?;
    let (mut success, mut errors, mut unsent) = (0, 0, 0);
    let gap = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + gap;
    let measured_from = start + warmup;
    let end = measured_from + duration;
    let deadline = end + timeout;
    for index in 0u32.. {
        let intended = start + gap * index;
        if intended >= end {
            break;
        }
        if Instant::now() >= deadline {
            if intended >= measured_from {
                unsent += 1;
            }
            continue;
        }
        wait_until(intended, SPIN);
        let request = requests[index as usize % requests.len()];
        let answer = connection.exchange(request).map_err(io("lean client"))?;
        let took = intended.elapsed();
        if intended < measured_from {
            continue;
        }
        if (200..300).contains(&answer.status) {
            success += 1;
            let _ = latency.record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1));
            if let Some(us) = answer.inference_us {
                let _ = inference.record(us.max(1));
            }
        } else {
            errors += 1;
        }
    }
    Ok(LeanRun {
        rate_per_s: rate,
        success,
        errors,
        unsent,
        latency_us: LatencySummary::of(&latency),
        server_inference_us: LatencySummary::of(&inference),
    })
}

fn histogram() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| BenchError::Other(format!("lean client histogram: {e}")))
}

/// The parts of an answer this client reads.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    inference_us: Option<u64>,
}

struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    /// Writes `request` and reads one whole answer (`Content-Length`
    /// framing, as the gateway and the trivial server answer).
    fn exchange(&mut self, request: &[u8]) -> std::io::Result<Answer> {
        self.stream.write_all(request)?;
        self.buffer.clear();
        let (head_length, answer, body_length) = loop {
            self.fill()?;
            if let Some(head) = parse_head(&self.buffer)? {
                break head;
            }
            if self.buffer.len() > MAX_HEAD_BYTES {
                return Err(invalid("answer head too large"));
            }
        };
        if body_length > MAX_BODY_BYTES {
            return Err(invalid("answer body too large"));
        }
        while self.buffer.len() < head_length + body_length {
            self.fill()?;
        }
        if self.buffer.len() > head_length + body_length {
            return Err(invalid("bytes past the end of the answer"));
        }
        Ok(answer)
    }

    /// Reads what has arrived; an error if the connection ended.
    fn fill(&mut self) -> std::io::Result<()> {
        let old = self.buffer.len();
        self.buffer.resize(old + 16 * 1024, 0);
        let read = self.stream.read(&mut self.buffer[old..]);
        self.buffer.truncate(old + *read.as_ref().unwrap_or(&0));
        match read? {
            0 => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )),
            _ => Ok(()),
        }
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// The head's length, what it says and the body's length, once the head
/// is complete; `None` before. The head is read by the load generator's
/// parser; this client takes only answers framed by `Content-Length`.
fn parse_head(bytes: &[u8]) -> std::io::Result<Option<(usize, Answer, usize)>> {
    let head = match client::parse_head(bytes) {
        Ok(Some(head)) => head,
        Ok(None) => return Ok(None),
        Err(e) => return Err(invalid(&format!("invalid answer: {e}"))),
    };
    let body_length = match head.framing {
        Framing::Length(length) => length,
        Framing::Chunked => {
            return Err(invalid(
                "a chunked answer (this client reads Content-Length only)",
            ));
        }
        Framing::UntilClose => return Err(invalid("an answer without Content-Length")),
    };
    Ok(Some((
        head.length,
        Answer {
            status: head.answer.status.as_u16(),
            inference_us: head.answer.server.inference_us,
        },
        body_length,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_read_once_complete() {
        let answer =
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nswitchyard-inference-time-us: 17\r\n\r\n{}";
        assert_eq!(parse_head(&answer[..20]).ok().flatten(), None);
        let (head, parsed, body) = parse_head(answer).ok().flatten().unwrap();
        assert_eq!(head, answer.len() - 2);
        assert_eq!(body, 2);
        assert_eq!(
            parsed,
            Answer {
                status: 200,
                inference_us: Some(17)
            }
        );
        let refused = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_head(refused).ok().flatten().unwrap().1.status, 429);
    }

    #[test]
    fn answers_it_cannot_frame_are_errors() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"NOT HTTP\r\n\r\n").is_err());
    }

    #[test]
    fn a_run_against_a_real_server_counts_every_request() {
        // A one-connection server answering each request 200 or 503 in
        // turn, on loopback.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buffer = [0u8; 4096];
            let mut answered = 0u32;
            let mut pending = Vec::new();
            loop {
                let n = match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => return answered,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buffer[..n]);
                while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    pending.drain(..end + 4);
                    let status = if answered.is_multiple_of(2) {
                        "200 OK"
                    } else {
                        "503 No"
                    };
                    let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 3\r\n\r\nyes");
                    stream.write_all(answer.as_bytes()).unwrap();
                    answered += 1;
                }
            }
        });
        let request: &[u8] = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        let run = lean_run(
            address,
            &[request],
            1000.0,
            Duration::from_millis(10),
            Duration::from_millis(100),
            Duration::from_secs(5),
        )
        .unwrap();
        // 110 ms at 1,000/s: 10 warm-up requests, 100 measured, half of
        // them refused.
        assert_eq!((run.success, run.errors), (50, 50), "{run:?}");
        assert_eq!(run.latency_us.count, run.success);
        assert!(run.latency_us.p50 > 0);
        assert_eq!(server.join().unwrap(), 110);
    }

    #[test]
    fn a_run_that_falls_behind_ends_one_timeout_after_its_schedule() {
        // Each answer takes 20 ms; the schedule asks for one every 1 ms
        // for 50 ms, and the timeout is 100 ms.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buffer) {
                if n == 0 {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            }
        });
        let request: &[u8] = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        let started = Instant::now();
        let run = lean_run(
            address,
            &[request],
            1000.0,
            Duration::ZERO,
            Duration::from_millis(50),
            Duration::from_millis(100),
        )
        .unwrap();
        // About 150 ms of 20 ms answers: a handful sent, the rest not.
        assert!(started.elapsed() < Duration::from_secs(1), "{run:?}");
        assert_eq!(run.success + run.errors + run.unsent, 50, "{run:?}");
        assert!(run.unsent >= 40 && run.success >= 1, "{run:?}");
    }
}
