//! `codec`: what reading a request body costs, by model, batch and
//! encoding, in this process (no HTTP, no inference).
//!
//! The bodies are the load generator's own (the random inputs every other
//! benchmark sends). Each is read two ways, side by side: by the protocol
//! decoder the gateway, the container worker and the Lambda function use
//! (`decode_request_with`, the gateway's default limits), and, as the
//! baseline, by `serde_json` into a generic `Value` tree, which is about
//! what a Python server's `json.loads` does before it has a tensor. Rounds
//! alternate the order of the two so drift favours neither; each figure is
//! the median over the rounds.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_loadgen::PayloadSpec;
use switchyard_loadgen::payload::build_bodies;
use switchyard_protocol::{DataType, DecodeLimits, TensorMetadata, decode_request_with};

use crate::error::BenchError;
use crate::machine::{Machine, load_average, utc_now};

/// What the gateway accepts by default (`[server] max_tensor_elements`).
const GATEWAY_LIMITS: DecodeLimits = DecodeLimits {
    max_elements: 8 * 1024 * 1024,
    allow_non_finite: false,
};

#[derive(Debug, Clone)]
pub struct CodecOptions {
    pub quick: bool,
    pub out: PathBuf,
    pub command: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CodecResults {
    pub date: String,
    pub machine: Machine,
    pub command: String,
    pub quick: bool,
    pub rounds: usize,
    pub round_ms: u64,
    pub load_average_at_end: String,
    pub cases: Vec<CodecCase>,
}

/// One body kind, read both ways.
#[derive(Debug, Clone, Serialize)]
pub struct CodecCase {
    pub model: &'static str,
    pub rows: u64,
    /// `json` (tensor data inline) or `binary` (the binary extension).
    pub encoding: &'static str,
    pub body_bytes: usize,
    pub elements: u64,
    /// Median ns to decode one body with the protocol decoder.
    pub decode_ns: f64,
    /// Median ns to parse the body's JSON part into a `serde_json::Value`.
    pub value_ns: f64,
}

impl CodecCase {
    /// Decoder time over the baseline's (below 1: faster than a generic
    /// JSON parse).
    pub fn ratio(&self) -> f64 {
        self.decode_ns / self.value_ns
    }

    /// Input elements decoded per microsecond.
    pub fn elements_per_us(&self) -> f64 {
        self.elements as f64 / (self.decode_ns / 1000.0)
    }
}

/// The models' input tensors (as their ONNX files declare them).
fn inputs(model: &str) -> Vec<TensorMetadata> {
    let shape = match model {
        "fashion_cnn" => vec![-1, 1, 28, 28],
        _ => vec![-1, 64],
    };
    vec![TensorMetadata {
        name: "input".into(),
        datatype: DataType::Fp32,
        shape,
    }]
}

struct Prepared {
    case: CodecCase,
    bodies: Vec<Body>,
}

/// A request body with its `Inference-Header-Content-Length` both as the
/// header text the decoder is given and as the number the baseline slices
/// by, so neither is derived inside the timed loop.
struct Body {
    bytes: bytes::Bytes,
    json_length: Option<usize>,
    header: Option<String>,
}

fn prepare(model: &'static str, rows: u64, binary: bool) -> Result<Prepared, BenchError> {
    let spec = PayloadSpec {
        batch_size: rows,
        binary,
        binary_output: false,
        variants: 8,
        seed: 1,
    };
    let bodies = build_bodies(&inputs(model), &spec).map_err(BenchError::Other)?;
    let first = bodies
        .first()
        .ok_or_else(|| BenchError::Other("no request body was built".into()))?;
    let elements = inputs(model)
        .iter()
        .map(|input| {
            input
                .shape
                .iter()
                .map(|&dim| u64::try_from(dim).unwrap_or(rows))
                .product::<u64>()
        })
        .sum();
    // Check that every body decodes before timing anything.
    for body in &bodies {
        let header = body.json_length.map(|n| n.to_string());
        decode_request_with(&body.bytes, header.as_deref(), &GATEWAY_LIMITS)
            .map_err(|e| BenchError::Other(format!("{model}: a body does not decode: {e}")))?;
    }
    Ok(Prepared {
        case: CodecCase {
            model,
            rows,
            encoding: if binary { "binary" } else { "json" },
            body_bytes: first.bytes.len(),
            elements,
            decode_ns: 0.0,
            value_ns: 0.0,
        },
        bodies: bodies
            .into_iter()
            .map(|body| Body {
                header: body.json_length.map(|n| n.to_string()),
                json_length: body.json_length,
                bytes: body.bytes,
            })
            .collect(),
    })
}

/// Runs `op` over the bodies in turn for `budget`; returns ns per call.
fn time_per_call(bodies: &[Body], budget: Duration, op: Op) -> f64 {
    let start = Instant::now();
    let mut calls: u64 = 0;
    // Check the clock every few calls only: a call can take under 1 µs.
    while calls == 0 || start.elapsed() < budget {
        for body in bodies {
            match op {
                Op::Decode => {
                    let decoded =
                        decode_request_with(&body.bytes, body.header.as_deref(), &GATEWAY_LIMITS);
                    black_box(decoded.is_ok());
                }
                Op::Value => {
                    let json = match body.json_length {
                        Some(length) => body.bytes.get(..length).unwrap_or(&body.bytes),
                        None => &body.bytes,
                    };
                    let value = serde_json::from_slice::<serde_json::Value>(json);
                    black_box(value.is_ok());
                }
            }
            calls += 1;
        }
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Decode,
    Value,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

pub fn run_codec_bench(options: &CodecOptions) -> Result<CodecResults, BenchError> {
    let machine = Machine::describe();
    let (rounds, round) = if options.quick {
        (3, Duration::from_millis(50))
    } else {
        (7, Duration::from_millis(200))
    };
    let mut prepared = Vec::new();
    for model in ["fashion_cnn", "digits"] {
        for rows in [1, 8] {
            for binary in [false, true] {
                prepared.push(prepare(model, rows, binary)?);
            }
        }
    }
    let mut cases = Vec::with_capacity(prepared.len());
    for item in prepared {
        let mut decode = Vec::with_capacity(rounds);
        let mut value = Vec::with_capacity(rounds);
        // Warm caches and the allocator.
        time_per_call(&item.bodies, round / 4, Op::Decode);
        for index in 0..rounds {
            if index % 2 == 0 {
                decode.push(time_per_call(&item.bodies, round, Op::Decode));
                value.push(time_per_call(&item.bodies, round, Op::Value));
            } else {
                value.push(time_per_call(&item.bodies, round, Op::Value));
                decode.push(time_per_call(&item.bodies, round, Op::Decode));
            }
        }
        let mut case = item.case;
        case.decode_ns = median(&mut decode);
        case.value_ns = median(&mut value);
        cases.push(case);
    }
    Ok(CodecResults {
        date: utc_now(),
        machine,
        command: options.command.clone(),
        quick: options.quick,
        rounds,
        round_ms: round.as_millis() as u64,
        load_average_at_end: load_average(),
        cases,
    })
}

/// The Markdown document of a run.
pub fn document(results: &CodecResults) -> String {
    use std::fmt::Write;
    let mut out = String::from("# Codec: what reading a request body costs\n\n");
    let m = &results.machine;
    let _ = writeln!(
        out,
        "{}, {} CPUs ({}), Linux {}, load average {} at the start and {} at the end; \
         `{}`{}. One thread in this process, no HTTP and no inference: each body kind read \
         by the protocol decoder (the gateway's default limits) and, as the baseline, parsed \
         into a generic `serde_json::Value`; {} rounds of {} ms each way, the order \
         alternating, medians shown. The bodies are the load generator's (8 random variants \
         cycled, FP32 inputs uniform in [0, 1)).\n",
        results.date,
        m.nproc,
        m.cpu_model,
        m.kernel,
        m.load_average_at_start,
        results.load_average_at_end,
        results.command,
        if results.quick {
            " (**quick run**)"
        } else {
            ""
        },
        results.rounds,
        results.round_ms,
    );
    let _ = writeln!(
        out,
        "| model | rows | encoding | body bytes | decode µs | elements/µs | `Value` parse µs | decode ÷ `Value` |"
    );
    let _ = writeln!(out, "|---|---:|---|---:|---:|---:|---:|---:|");
    for case in &results.cases {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.2} |",
            case.model,
            case.rows,
            case.encoding,
            case.body_bytes,
            case.decode_ns / 1000.0,
            case.elements_per_us(),
            case.value_ns / 1000.0,
            case.ratio(),
        );
    }
    let _ = writeln!(
        out,
        "\nFor binary bodies the baseline parses only the JSON header, so the ratio mostly \
         shows the cost of copying and checking the tensor data. Absolute times drift between \
         runs and machines; the ratio is the figure to compare."
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn prepared_bodies_decode_and_count_their_elements() -> Result<(), BenchError> {
        let json = prepare("fashion_cnn", 8, false)?;
        assert_eq!(json.case.elements, 8 * 784);
        assert_eq!(json.case.encoding, "json");
        assert!(json.bodies.iter().all(|body| body.header.is_none()));
        let binary = prepare("digits", 1, true)?;
        assert_eq!(binary.case.elements, 64);
        assert!(binary.bodies.iter().all(|body| body.header.is_some()));
        // 64 FP32 values follow the header.
        let body = &binary.bodies[0];
        let length: usize = body.header.as_deref().unwrap_or("0").parse().unwrap_or(0);
        assert_eq!(body.json_length, Some(length));
        assert_eq!(body.bytes.len() - length, 64 * 4);
        Ok(())
    }
}
