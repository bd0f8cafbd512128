//! Arrival phases: Artillery's load model, as pure values.
//!
//! A load test is a list of phases run one after the other. Each phase lasts
//! `duration` and offers one of:
//!
//! - a constant `arrival_rate` (requests per second);
//! - a linear ramp from `arrival_rate` to `ramp_to` over the phase;
//! - an `arrival_count`, spread evenly over the phase;
//! - a `pause`: nothing.
//!
//! These are Artillery's phase semantics, so an Artillery script's
//! `config.phases` block can be read as is ([`Phases::from_artillery_yaml`]);
//! Switchyard's own format is the same in TOML with snake-case keys
//! ([`Phases::from_toml`]).
//!
//! Arrival times follow the phase's rate function r(t) through its integral
//! Λ(t), the expected number of requests by time t:
//!
//! - **constant** (evenly spaced) arrivals: the k-th request of a phase is
//!   due when Λ(t) = k (k = 0, 1, ...), so every phase starts with a request
//!   and a ramp's gaps shrink as its rate grows;
//! - **Poisson** arrivals: the time-rescaling theorem: with E₁, E₂, ... unit
//!   exponentials, the k-th request is due when Λ(t) = E₁ + … + E_k over the
//!   whole run, which is an inhomogeneous Poisson process of rate r(t).
//!
//! Λ is linear or quadratic within a phase, so each time is computed in
//! closed form from its index (no accumulated rounding), and the schedule is
//! an iterator that needs no clock: the load generator paces to it and the
//! simulator replays it in virtual time.
//!
//! The paper preset ([`Phases::paper`]) is the StraightLine experiment's
//! load: from 10 to 7,000 requests per 180 s, ramped over 180 s, so the rate
//! goes from 10/180 ≈ 0.056 to 7,000/180 ≈ 38.9 requests per second and
//! 3,505 requests are expected in all. [`Phases::scaled`] multiplies every
//! rate (and count) by a factor, to fit the ramp to a machine or to push a
//! simulation past it.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::LoadgenError;
use crate::rng::SplitMix64;

/// Longest run a phase list may describe: 24 hours.
pub const MAX_TOTAL_DURATION: Duration = Duration::from_secs(24 * 3600);

/// What one phase offers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PhaseLoad {
    /// A constant rate in requests per second.
    Rate { rate: f64 },
    /// A rate that goes linearly from `from` to `to` over the phase.
    Ramp { from: f64, to: f64 },
    /// Exactly `count` requests, evenly spread over the phase.
    Count { count: u64 },
    /// No requests.
    Pause,
}

/// One phase of a load test.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    /// Its name in reports (`phase N` when the file gives none).
    pub name: String,
    #[serde(serialize_with = "serialize_seconds")]
    pub duration: Duration,
    pub load: PhaseLoad,
    /// Artillery's `maxVusers`: at most this many requests outstanding
    /// during the phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u64>,
}

fn serialize_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Phase {
    /// A constant-rate phase.
    pub fn rate(name: impl Into<String>, duration: Duration, rate: f64) -> Self {
        Self {
            name: name.into(),
            duration,
            load: PhaseLoad::Rate { rate },
            max_in_flight: None,
        }
    }

    /// A linear ramp from `from` to `to` requests per second.
    pub fn ramp(name: impl Into<String>, duration: Duration, from: f64, to: f64) -> Self {
        Self {
            name: name.into(),
            duration,
            load: PhaseLoad::Ramp { from, to },
            max_in_flight: None,
        }
    }

    fn seconds(&self) -> f64 {
        self.duration.as_secs_f64()
    }

    /// The rate at `t` seconds into the phase.
    pub fn rate_at(&self, t: f64) -> f64 {
        match self.load {
            PhaseLoad::Rate { rate } => rate,
            PhaseLoad::Ramp { from, to } => {
                from + (to - from) * (t / self.seconds()).clamp(0.0, 1.0)
            }
            PhaseLoad::Count { count } => count as f64 / self.seconds(),
            PhaseLoad::Pause => 0.0,
        }
    }

    /// Λ(D): the expected number of requests in the whole phase.
    pub fn expected_requests(&self) -> f64 {
        let d = self.seconds();
        match self.load {
            PhaseLoad::Rate { rate } => rate * d,
            PhaseLoad::Ramp { from, to } => (from + to) / 2.0 * d,
            PhaseLoad::Count { count } => count as f64,
            PhaseLoad::Pause => 0.0,
        }
    }

    /// The time t in the phase at which Λ(t) = `lambda` (0 ≤ lambda ≤ Λ(D)).
    fn time_of(&self, lambda: f64) -> f64 {
        if lambda <= 0.0 {
            return 0.0;
        }
        let d = self.seconds();
        match self.load {
            PhaseLoad::Rate { rate } => lambda / rate,
            PhaseLoad::Count { count } => lambda * d / count as f64,
            // Λ(t) = a·t + (b − a)·t²/(2D); the root of that quadratic in
            // the form that stays accurate when b ≈ a and when a = 0.
            PhaseLoad::Ramp { from, to } => {
                let discriminant = (from * from + 2.0 * (to - from) * lambda / d).max(0.0);
                2.0 * lambda / (from + discriminant.sqrt())
            }
            PhaseLoad::Pause => d,
        }
    }

    fn validate(&self, key: &str) -> Result<(), LoadgenError> {
        let bad = |what: &str| Err(LoadgenError::Settings(format!("{key}: {what}")));
        if self.duration.is_zero() {
            return bad("`duration` must be greater than zero");
        }
        let rate_ok = |r: f64| r.is_finite() && r >= 0.0;
        match self.load {
            PhaseLoad::Rate { rate } if !rate_ok(rate) => {
                bad("`arrival_rate` must be a finite number of requests per second, 0 or more")
            }
            PhaseLoad::Ramp { from, to } if !rate_ok(from) || !rate_ok(to) => {
                bad("`arrival_rate` and `ramp_to` must be finite, 0 or more")
            }
            _ if !self.expected_requests().is_finite() => bad("the phase offers too many requests"),
            _ => Ok(()),
        }
    }
}

/// How arrival times are drawn from the phases' rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Process {
    /// Evenly spaced at the current rate.
    Constant,
    /// An inhomogeneous Poisson process, reproducible from its seed.
    Poisson { seed: u64 },
}

impl Process {
    /// Its name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Process::Constant => "constant",
            Process::Poisson { .. } => "poisson",
        }
    }
}

/// A checked, non-empty list of phases.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Phases(Vec<Phase>);

impl Phases {
    /// Checks every phase, the total duration (at most
    /// [`MAX_TOTAL_DURATION`]) and that some phase offers requests.
    pub fn new(phases: Vec<Phase>) -> Result<Self, LoadgenError> {
        if phases.is_empty() {
            return Err(LoadgenError::Settings(
                "phases: give at least one phase".into(),
            ));
        }
        for (i, phase) in phases.iter().enumerate() {
            phase.validate(&format!("phases[{i}]"))?;
        }
        let total: Duration = phases.iter().map(|p| p.duration).sum();
        if total > MAX_TOTAL_DURATION {
            return Err(LoadgenError::Settings(format!(
                "phases: the phases last {:.0} s in all, more than the {} s a run may last",
                total.as_secs_f64(),
                MAX_TOTAL_DURATION.as_secs()
            )));
        }
        if phases.iter().all(|p| p.expected_requests() <= 0.0) {
            return Err(LoadgenError::Settings(
                "phases: no phase offers any request; give an arrival_rate, ramp_to or arrival_count above 0"
                    .into(),
            ));
        }
        Ok(Self(phases))
    }

    /// One phase at a constant rate.
    pub fn constant(rate: f64, duration: Duration) -> Result<Self, LoadgenError> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(LoadgenError::Settings(format!(
                "the arrival rate must be a positive number of requests per second, not {rate}"
            )));
        }
        Self::new(vec![Phase::rate("constant", duration, rate)])
    }

    /// The StraightLine paper's load: 10 → 7,000 requests per 180 s, ramped
    /// over 180 s.
    pub fn paper() -> Self {
        Self(vec![Phase::ramp(
            "paper ramp 10 -> 7000 per 180 s",
            Duration::from_secs(180),
            10.0 / 180.0,
            7000.0 / 180.0,
        )])
    }

    /// The named presets: `paper`.
    pub fn preset(name: &str) -> Result<Self, LoadgenError> {
        match name {
            "paper" => Ok(Self::paper()),
            other => Err(LoadgenError::Settings(format!(
                "unknown phase preset {other:?}; the presets are: paper"
            ))),
        }
    }

    /// Every rate and count multiplied by `factor` (> 0); durations kept.
    pub fn scaled(&self, factor: f64) -> Result<Self, LoadgenError> {
        if !(factor.is_finite() && factor > 0.0) {
            return Err(LoadgenError::Settings(format!(
                "the scale factor must be a positive number, not {factor}"
            )));
        }
        let phases = self
            .0
            .iter()
            .map(|p| {
                let load = match p.load {
                    PhaseLoad::Rate { rate } => PhaseLoad::Rate {
                        rate: rate * factor,
                    },
                    PhaseLoad::Ramp { from, to } => PhaseLoad::Ramp {
                        from: from * factor,
                        to: to * factor,
                    },
                    PhaseLoad::Count { count } => PhaseLoad::Count {
                        count: (count as f64 * factor).round() as u64,
                    },
                    PhaseLoad::Pause => PhaseLoad::Pause,
                };
                Phase { load, ..p.clone() }
            })
            .collect();
        Self::new(phases)
    }

    /// Reads a phase file: Artillery YAML (`.yml`, `.yaml`) or TOML.
    pub fn load(path: &Path) -> Result<Self, LoadgenError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            LoadgenError::Settings(format!("cannot read phase file {}: {e}", path.display()))
        })?;
        let in_file = |e: LoadgenError| match e {
            LoadgenError::Settings(m) => LoadgenError::Settings(format!("{}: {m}", path.display())),
            other => other,
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("yml" | "yaml") => Self::from_artillery_yaml(&text).map_err(in_file),
            _ => Self::from_toml(&text).map_err(in_file),
        }
    }

    /// Switchyard's phase format: TOML `[[phase]]` tables with `name`,
    /// `duration` (seconds, or a string such as `"90s"`, `"2m"`), and one of
    /// `arrival_rate` (with optional `ramp_to`), `arrival_count` or
    /// `pause = true`; optional `max_in_flight`.
    pub fn from_toml(text: &str) -> Result<Self, LoadgenError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            phase: Vec<RawPhase>,
        }
        let file: File = toml::from_str(text)
            .map_err(|e| LoadgenError::Settings(format!("invalid phase file: {e}")))?;
        let phases = file
            .phase
            .into_iter()
            .enumerate()
            .map(|(i, raw)| raw.into_phase(&format!("phase[{i}]"), i))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(phases)
    }

    /// The `config.phases` block of an Artillery script (camel-case keys:
    /// `duration`, `arrivalRate`, `rampTo`, `arrivalCount`, `pause`,
    /// `maxVusers`, `name`). The rest of the script is ignored.
    pub fn from_artillery_yaml(text: &str) -> Result<Self, LoadgenError> {
        use yaml_rust2::{Yaml, YamlLoader};
        let docs = YamlLoader::load_from_str(text)
            .map_err(|e| LoadgenError::Settings(format!("invalid YAML: {e}")))?;
        let doc = docs.first().ok_or_else(|| {
            LoadgenError::Settings("the YAML file is empty; give a config.phases list".into())
        })?;
        let list = match &doc["config"]["phases"] {
            Yaml::Array(list) => list,
            Yaml::BadValue => {
                return Err(LoadgenError::Settings(
                    "config.phases: missing; an Artillery script lists its phases under config.phases"
                        .into(),
                ));
            }
            _ => {
                return Err(LoadgenError::Settings(
                    "config.phases: must be a list of phases".into(),
                ));
            }
        };
        let mut phases = Vec::with_capacity(list.len());
        for (i, entry) in list.iter().enumerate() {
            let key = format!("config.phases[{i}]");
            let Yaml::Hash(map) = entry else {
                return Err(LoadgenError::Settings(format!(
                    "{key}: each phase must be a mapping with duration and arrivalRate, arrivalCount or pause"
                )));
            };
            let mut raw = RawPhase::default();
            for (k, v) in map {
                let Some(name) = k.as_str() else {
                    return Err(LoadgenError::Settings(format!(
                        "{key}: keys must be strings"
                    )));
                };
                let field = format!("{key}.{name}");
                let number = || yaml_number(v, &field);
                match name {
                    "name" => {
                        raw.name = Some(match v {
                            Yaml::String(s) => s.clone(),
                            Yaml::Integer(n) => n.to_string(),
                            _ => {
                                return Err(LoadgenError::Settings(format!(
                                    "{field}: must be a string"
                                )));
                            }
                        });
                    }
                    "duration" => raw.duration = Some(yaml_duration(v, &field)?),
                    "pause" => raw.pause = Some(yaml_duration(v, &field)?),
                    "arrivalRate" => raw.arrival_rate = Some(number()?),
                    "rampTo" => raw.ramp_to = Some(number()?),
                    "arrivalCount" => raw.arrival_count = Some(yaml_count(v, &field)?),
                    "maxVusers" => raw.max_in_flight = Some(yaml_count(v, &field)?),
                    other => {
                        return Err(LoadgenError::Settings(format!(
                            "{key}: unknown key `{other}`; a phase has duration, arrivalRate, rampTo, arrivalCount, pause, maxVusers and name"
                        )));
                    }
                }
            }
            phases.push(raw.into_phase(&key, i)?);
        }
        Self::new(phases)
    }

    /// The phases, in order.
    pub fn as_slice(&self) -> &[Phase] {
        &self.0
    }

    /// How long the phases last in all.
    pub fn total_duration(&self) -> Duration {
        self.0.iter().map(|p| p.duration).sum()
    }

    /// The expected number of requests over all phases.
    pub fn expected_requests(&self) -> f64 {
        self.0.iter().map(Phase::expected_requests).sum()
    }

    /// The highest rate any phase reaches.
    pub fn peak_rate(&self) -> f64 {
        self.0
            .iter()
            .map(|p| p.rate_at(0.0).max(p.rate_at(p.seconds())))
            .fold(0.0, f64::max)
    }

    /// Start offset of each phase.
    pub fn starts(&self) -> Vec<Duration> {
        let mut at = Duration::ZERO;
        self.0
            .iter()
            .map(|p| {
                let start = at;
                at += p.duration;
                start
            })
            .collect()
    }

    /// The phase running at `offset` from the start (the last phase at and
    /// after the end).
    pub fn phase_at(&self, offset: Duration) -> usize {
        let mut end = Duration::ZERO;
        for (i, p) in self.0.iter().enumerate() {
            end += p.duration;
            if offset < end {
                return i;
            }
        }
        self.0.len().saturating_sub(1)
    }

    /// The intended send times, ascending, at most `max_requests` of them.
    pub fn arrivals(&self, process: Process, max_requests: Option<u64>) -> Arrivals<'_> {
        Arrivals {
            phases: &self.0,
            process,
            rng: match process {
                Process::Poisson { seed } => Some(SplitMix64::new(seed)),
                Process::Constant => None,
            },
            phase: 0,
            phase_start: 0.0,
            index: 0,
            lambda: 0.0,
            emitted: 0,
            max_requests,
        }
    }
}

/// One due request: when, and in which phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Due {
    /// Offset from the start of the run.
    pub at: Duration,
    /// Index of its phase.
    pub phase: usize,
}

/// Iterator over the intended send times of [`Phases`].
#[derive(Debug, Clone)]
pub struct Arrivals<'a> {
    phases: &'a [Phase],
    process: Process,
    rng: Option<SplitMix64>,
    /// Current phase and its start in seconds.
    phase: usize,
    phase_start: f64,
    /// Constant process: index of the next request within the phase.
    index: u64,
    /// Poisson process: Λ consumed within the current phase.
    lambda: f64,
    emitted: u64,
    max_requests: Option<u64>,
}

impl Arrivals<'_> {
    fn next_phase(&mut self) {
        if let Some(p) = self.phases.get(self.phase) {
            self.phase_start += p.seconds();
        }
        self.phase += 1;
        self.index = 0;
    }
}

impl Iterator for Arrivals<'_> {
    type Item = Due;

    fn next(&mut self) -> Option<Due> {
        if self.max_requests.is_some_and(|max| self.emitted >= max) {
            return None;
        }
        let (phase, t) = match self.process {
            Process::Constant => loop {
                let phase = self.phases.get(self.phase)?;
                let k = self.index as f64;
                if k < phase.expected_requests() {
                    let t = phase.time_of(k);
                    if t < phase.seconds() {
                        self.index += 1;
                        break (self.phase, t);
                    }
                }
                self.next_phase();
            },
            Process::Poisson { .. } => {
                let step = self.rng.as_mut().map_or(1.0, |rng| rng.exponential(1.0));
                let mut target = self.lambda + step;
                loop {
                    let phase = self.phases.get(self.phase)?;
                    let total = phase.expected_requests();
                    if target < total {
                        self.lambda = target;
                        let t = phase.time_of(target).min(phase.seconds());
                        break (self.phase, t);
                    }
                    target -= total;
                    self.lambda = 0.0;
                    self.next_phase();
                }
            }
        };
        self.emitted += 1;
        Some(Due {
            at: Duration::from_secs_f64(self.phase_start + t),
            phase,
        })
    }
}

/// A phase as written in a file, before checking.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPhase {
    name: Option<String>,
    #[serde(default, deserialize_with = "toml_duration")]
    duration: Option<Duration>,
    #[serde(default, deserialize_with = "toml_duration")]
    pause: Option<Duration>,
    arrival_rate: Option<f64>,
    ramp_to: Option<f64>,
    arrival_count: Option<u64>,
    max_in_flight: Option<u64>,
}

impl RawPhase {
    pub(crate) fn into_phase(self, key: &str, index: usize) -> Result<Phase, LoadgenError> {
        let bad = |what: &str| Err(LoadgenError::Settings(format!("{key}: {what}")));
        let name = self.name.unwrap_or_else(|| format!("phase {}", index + 1));
        let (duration, load) = match (
            self.pause,
            self.duration,
            self.arrival_rate,
            self.ramp_to,
            self.arrival_count,
        ) {
            (Some(pause), None, None, None, None) => (pause, PhaseLoad::Pause),
            (Some(_), ..) => {
                return bad("a pause phase has only `pause` (its length) and `name`");
            }
            (None, None, ..) => {
                return bad("missing `duration` (seconds, or a string such as \"90s\")");
            }
            (None, Some(d), Some(rate), None, None) => (d, PhaseLoad::Rate { rate }),
            (None, Some(d), Some(from), Some(to), None) => (d, PhaseLoad::Ramp { from, to }),
            // Artillery ramps from 1 when only `rampTo` is given.
            (None, Some(d), None, Some(to), None) => (d, PhaseLoad::Ramp { from: 1.0, to }),
            (None, Some(d), None, None, Some(count)) => (d, PhaseLoad::Count { count }),
            (None, Some(_), _, _, Some(_)) => {
                return bad("give either an arrival rate (and ramp) or an arrival count, not both");
            }
            (None, Some(_), None, None, None) => {
                return bad(
                    "give an arrival rate (`arrival_rate`, `arrivalRate`), a ramp or an arrival count",
                );
            }
        };
        let phase = Phase {
            name,
            duration,
            load,
            max_in_flight: self.max_in_flight,
        };
        phase.validate(key)?;
        Ok(phase)
    }
}

/// A duration given as seconds (number) or as a string with a unit.
fn toml_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(f64),
        Text(String),
    }
    let raw = Raw::deserialize(d)?;
    let parsed = match raw {
        Raw::Seconds(s) => seconds(s),
        Raw::Text(t) => parse_duration(&t),
    };
    parsed.map(Some).map_err(serde::de::Error::custom)
}

fn seconds(s: f64) -> Result<Duration, String> {
    if s.is_finite() && s >= 0.0 && s <= MAX_TOTAL_DURATION.as_secs_f64() {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(format!(
            "a duration must be between 0 and {} seconds, not {s}",
            MAX_TOTAL_DURATION.as_secs()
        ))
    }
}

/// `"90"`, `"90s"`, `"1.5m"`, `"2min"`, `"1h"`, `"500ms"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: write seconds or e.g. \"90s\", \"2m\""))?;
    let factor = match unit.trim() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "ms" => 0.001,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        other => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {other:?} (use ms, s, m or h)"
            ));
        }
    };
    seconds(value * factor)
}

fn yaml_number(v: &yaml_rust2::Yaml, key: &str) -> Result<f64, LoadgenError> {
    use yaml_rust2::Yaml;
    match v {
        Yaml::Integer(n) => Ok(*n as f64),
        Yaml::Real(_) => v
            .as_f64()
            .ok_or_else(|| LoadgenError::Settings(format!("{key}: not a number"))),
        // Artillery accepts numbers written as strings.
        Yaml::String(s) => s
            .trim()
            .parse()
            .map_err(|_| LoadgenError::Settings(format!("{key}: {s:?} is not a number"))),
        _ => Err(LoadgenError::Settings(format!("{key}: must be a number"))),
    }
}

fn yaml_count(v: &yaml_rust2::Yaml, key: &str) -> Result<u64, LoadgenError> {
    let n = yaml_number(v, key)?;
    if n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n < 1e15 {
        Ok(n as u64)
    } else {
        Err(LoadgenError::Settings(format!(
            "{key}: must be a whole number, 0 or more"
        )))
    }
}

fn yaml_duration(v: &yaml_rust2::Yaml, key: &str) -> Result<Duration, LoadgenError> {
    let parsed = match v {
        yaml_rust2::Yaml::String(s) => parse_duration(s),
        other => seconds(yaml_number(other, key)?),
    };
    parsed.map_err(|e| LoadgenError::Settings(format!("{key}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn times(phases: &Phases, process: Process) -> Vec<f64> {
        phases
            .arrivals(process, None)
            .map(|d| d.at.as_secs_f64())
            .collect()
    }

    #[test]
    fn constant_rate_gives_rate_times_duration_evenly_spaced() {
        let p = Phases::constant(500.0, secs(10)).unwrap();
        let t = times(&p, Process::Constant);
        assert_eq!(t.len(), 5000);
        assert_eq!(t[0], 0.0);
        assert!((t[1] - 0.002).abs() < 1e-12);
        assert!(*t.last().unwrap() < 10.0);
        assert!(t.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn fractional_expected_count_rounds_up_the_partial_gap() {
        // Times 0, 0.4, 0.8, 1.2 s are inside [0, 1.5 s).
        let p = Phases::constant(2.5, Duration::from_millis(1500)).unwrap();
        assert_eq!(p.arrivals(Process::Constant, None).count(), 4);
    }

    #[test]
    fn ramp_count_is_the_area_under_the_rate_and_gaps_shrink() {
        // 10 → 100 req/s over 60 s: (10 + 100) / 2 × 60 = 3,300 requests.
        let p = Phases::new(vec![Phase::ramp("r", secs(60), 10.0, 100.0)]).unwrap();
        let t = times(&p, Process::Constant);
        assert_eq!(t.len(), 3300);
        let first_gap = t[1] - t[0];
        let last_gap = t[t.len() - 1] - t[t.len() - 2];
        assert!((first_gap - 0.1).abs() < 0.002, "first gap {first_gap}");
        assert!((last_gap - 0.01).abs() < 0.0005, "last gap {last_gap}");
        // Half the requests arrive after Λ(t) = 1,650: solve 10t + 0.75t² =
        // 1,650 → t = (−10 + √5,050) / 1.5 ≈ 40.709 s.
        let mid = t[1650];
        assert!((mid - 40.709).abs() < 0.001, "median arrival at {mid}");
    }

    #[test]
    fn downward_ramps_and_ramps_from_zero_work() {
        let down = Phases::new(vec![Phase::ramp("d", secs(10), 100.0, 0.0)]).unwrap();
        let t = times(&down, Process::Constant);
        assert_eq!(t.len(), 500);
        assert!(t.windows(2).all(|w| w[0] < w[1]));
        assert!(*t.last().unwrap() < 10.0);
        let up = Phases::new(vec![Phase::ramp("u", secs(10), 0.0, 100.0)]).unwrap();
        let t = times(&up, Process::Constant);
        assert_eq!(t.len(), 500);
        assert_eq!(t[0], 0.0);
        assert!(t.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn phases_run_back_to_back_and_report_their_index() {
        let p = Phases::new(vec![
            Phase::rate("a", secs(2), 10.0),
            Phase {
                name: "quiet".into(),
                duration: secs(3),
                load: PhaseLoad::Pause,
                max_in_flight: None,
            },
            Phase {
                name: "count".into(),
                duration: secs(1),
                load: PhaseLoad::Count { count: 4 },
                max_in_flight: None,
            },
        ])
        .unwrap();
        let due: Vec<Due> = p.arrivals(Process::Constant, None).collect();
        assert_eq!(due.len(), 24);
        assert!(due[..20].iter().all(|d| d.phase == 0 && d.at < secs(2)));
        let last: Vec<f64> = due[20..].iter().map(|d| d.at.as_secs_f64()).collect();
        assert_eq!(last, vec![5.0, 5.25, 5.5, 5.75]);
        assert!(due[20..].iter().all(|d| d.phase == 2));
        assert_eq!(p.total_duration(), secs(6));
        assert_eq!(p.starts(), vec![secs(0), secs(2), secs(5)]);
        assert_eq!(p.phase_at(Duration::from_millis(4999)), 1);
        assert_eq!(p.phase_at(secs(100)), 2);
    }

    #[test]
    fn paper_preset_is_ten_to_seven_thousand_per_180_seconds() {
        let p = Phases::paper();
        assert_eq!(p.total_duration(), secs(180));
        assert!((p.expected_requests() - 3505.0).abs() < 1e-6);
        assert_eq!(p.arrivals(Process::Constant, None).count(), 3505);
        assert!((p.peak_rate() * 180.0 - 7000.0).abs() < 1e-6);
        let scaled = p.scaled(10.0).unwrap();
        assert_eq!(scaled.arrivals(Process::Constant, None).count(), 35_050);
        assert!(Phases::preset("paper").is_ok());
        assert!(Phases::preset("nope").is_err());
        assert!(p.scaled(0.0).is_err());
    }

    #[test]
    fn poisson_ramp_matches_the_rate_function() {
        // 0 → 2,000 req/s over 100 s: 100,000 expected. The first half of
        // the time holds a quarter of the area.
        let p = Phases::new(vec![Phase::ramp("r", secs(100), 0.0, 2000.0)]).unwrap();
        let t = times(&p, Process::Poisson { seed: 11 });
        let n = t.len() as f64;
        // Poisson count: sd = sqrt(100,000) ≈ 316, so 1,500 is ~4.7 sd.
        assert!((n - 100_000.0).abs() < 1500.0, "count {n}");
        let first_half = t.iter().filter(|&&x| x < 50.0).count() as f64;
        assert!(
            (first_half / n - 0.25).abs() < 0.01,
            "share {}",
            first_half / n
        );
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
        assert!(*t.last().unwrap() < 100.0);
    }

    #[test]
    fn poisson_constant_rate_has_exponential_gaps() {
        let rate = 2000.0;
        let p = Phases::constant(rate, secs(100)).unwrap();
        let t = times(&p, Process::Poisson { seed: 42 });
        let gaps: Vec<f64> = std::iter::once(t[0])
            .chain(t.windows(2).map(|w| w[1] - w[0]))
            .collect();
        let n = gaps.len() as f64;
        let mean = gaps.iter().sum::<f64>() / n;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / (n - 1.0);
        // 200,000 gaps: the mean's standard error is 0.22%, so 1% is > 4 se.
        assert!((mean * rate - 1.0).abs() < 0.01, "mean gap {mean}");
        let cv = var.sqrt() / mean;
        assert!((cv - 1.0).abs() < 0.02, "coefficient of variation {cv}");
    }

    #[test]
    fn poisson_is_reproducible_from_its_seed() {
        let p = Phases::paper();
        let a: Vec<Due> = p.arrivals(Process::Poisson { seed: 3 }, None).collect();
        let b: Vec<Due> = p.arrivals(Process::Poisson { seed: 3 }, None).collect();
        let c: Vec<Due> = p.arrivals(Process::Poisson { seed: 4 }, None).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn max_requests_caps_the_schedule() {
        let p = Phases::paper();
        assert_eq!(p.arrivals(Process::Constant, Some(100)).count(), 100);
        assert_eq!(p.arrivals(Process::Poisson { seed: 1 }, Some(7)).count(), 7);
    }

    #[test]
    fn artillery_phases_parse_with_artillery_semantics() {
        let yaml = r#"
config:
  target: "http://127.0.0.1:8000"
  phases:
    - duration: 60
      arrivalRate: 5
      name: Warm up
    - duration: "2m"
      arrivalRate: 5
      rampTo: 50
      maxVusers: 200
    - pause: 10
    - duration: 30
      arrivalCount: 20
    - duration: 10s
      rampTo: 3
scenarios:
  - flow:
      - post:
          url: "/v2/models/digits/infer"
"#;
        let p = Phases::from_artillery_yaml(yaml).unwrap();
        let s = p.as_slice();
        assert_eq!(s.len(), 5);
        assert_eq!(s[0].name, "Warm up");
        assert_eq!(s[0].load, PhaseLoad::Rate { rate: 5.0 });
        assert_eq!(s[1].duration, secs(120));
        assert_eq!(
            s[1].load,
            PhaseLoad::Ramp {
                from: 5.0,
                to: 50.0
            }
        );
        assert_eq!(s[1].max_in_flight, Some(200));
        assert_eq!(s[1].name, "phase 2");
        assert_eq!(s[2].load, PhaseLoad::Pause);
        assert_eq!(s[2].duration, secs(10));
        assert_eq!(s[3].load, PhaseLoad::Count { count: 20 });
        assert_eq!(s[4].load, PhaseLoad::Ramp { from: 1.0, to: 3.0 });
        // 300 + 3,300 + 0 + 20 + 20
        assert_eq!(p.arrivals(Process::Constant, None).count(), 3640);
    }

    #[test]
    fn artillery_errors_name_the_key() {
        let cases = [
            ("config: {}", "config.phases: missing"),
            ("config:\n  phases: 3", "config.phases: must be a list"),
            (
                "config:\n  phases:\n    - arrivalRate: 5",
                "config.phases[0]: missing `duration`",
            ),
            (
                "config:\n  phases:\n    - duration: 5\n      arrivalRate: fast",
                "config.phases[0].arrivalRate",
            ),
            (
                "config:\n  phases:\n    - duration: 5\n      arivalRate: 5",
                "unknown key `arivalRate`",
            ),
            (
                "config:\n  phases:\n    - duration: 5\n      arrivalRate: -1",
                "config.phases[0]: `arrival_rate`",
            ),
            (
                "config:\n  phases:\n    - duration: 5 years\n      arrivalRate: 1",
                "unknown unit",
            ),
            ("config:\n  phases:\n    - pause: 5", "no phase offers"),
            ("config:\n  phases: [", "invalid YAML"),
        ];
        for (yaml, expected) in cases {
            let err = Phases::from_artillery_yaml(yaml).unwrap_err().to_string();
            assert!(err.contains(expected), "{yaml:?}: {err}");
        }
    }

    #[test]
    fn toml_phases_parse_and_reject_unknown_keys() {
        let p = Phases::from_toml(
            r#"
[[phase]]
name = "ramp"
duration = "3m"
arrival_rate = 0.5
ramp_to = 40

[[phase]]
duration = 30
arrival_count = 100
max_in_flight = 64
"#,
        )
        .unwrap();
        assert_eq!(p.as_slice()[0].duration, secs(180));
        assert_eq!(p.as_slice()[1].max_in_flight, Some(64));
        let err = Phases::from_toml("[[phase]]\nduration = 5\nrate = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rate"), "{err}");
        let err =
            Phases::from_toml("[[phase]]\nduration = 5\narrival_rate = 3\narrival_count = 3\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("phase[0]: give either"), "{err}");
        assert!(
            Phases::from_toml("[[phase]]\nduration = \"forever\"\narrival_rate = 3\n").is_err()
        );
    }

    #[test]
    fn bounds_are_enforced() {
        assert!(Phases::new(vec![]).is_err());
        assert!(Phases::constant(0.0, secs(1)).is_err());
        assert!(Phases::constant(f64::NAN, secs(1)).is_err());
        assert!(Phases::constant(1.0, Duration::ZERO).is_err());
        let long = vec![
            Phase::rate("x", MAX_TOTAL_DURATION, 1.0),
            Phase::rate("y", secs(1), 1.0),
        ];
        assert!(Phases::new(long).is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5m"), Ok(secs(90)));
        assert_eq!(parse_duration("2h"), Ok(secs(7200)));
        assert!(parse_duration("-3s").is_err());
        assert!(parse_duration("").is_err());
    }
}
