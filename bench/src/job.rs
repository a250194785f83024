//! Job files in fio's spirit: INI text with `[global]` sections whose keys apply to the jobs
//! after them, and one section per job. `;` and `#` start comments; a key without `=` is a
//! boolean set to true; `${VAR}` and `${VAR:-default}` are replaced from the environment.
//! Sizes take fio's suffixes (`4k`, `1m`, `2g`, powers of 1024); durations take `us`, `ms`,
//! `s` (the default), `m`, `h`. A job section's keys are checked against its kind, and a
//! `[global]` key must belong to some kind (a job takes the globals its kind knows): an unknown
//! or misplaced key is an error naming the file line, never silently ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// What a job measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Direct reads of one file through the engine's O_DIRECT/io_uring path, like fio.
    RawIo,
    /// One query repeated, cold (empty buffer pool) or warm; reports scan bandwidth.
    Scan,
    /// Users running a weighted query mix (or one query), embedded or over RPC.
    Query,
    /// Parallel streams importing generated event batches.
    Ingest,
    /// Memory read bandwidth per thread: the ceiling for decode and filter throughput.
    MemBw,
}

impl Kind {
    fn parse(text: &str) -> Option<Kind> {
        Some(match text {
            "rawio" => Kind::RawIo,
            "scan" => Kind::Scan,
            "query" => Kind::Query,
            "ingest" => Kind::Ingest,
            "membw" => Kind::MemBw,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::RawIo => "rawio",
            Kind::Scan => "scan",
            Kind::Query => "query",
            Kind::Ingest => "ingest",
            Kind::MemBw => "membw",
        }
    }

    /// Keys a job of this kind accepts, besides the common ones.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::RawIo => &["filename", "rw", "bs", "iodepth", "size"],
            Kind::Scan => &[
                "data",
                "tenant",
                "table",
                "cores",
                "pool",
                "generate",
                "sql",
                "cache",
                "row_bytes",
                "partial_cache",
            ],
            Kind::Query => &[
                "data",
                "tenant",
                "table",
                "cores",
                "pool",
                "generate",
                "target",
                "token",
                "sql",
                "mix",
                "rows",
                "cache",
                "pause_ms",
                "ingest_per_wave",
                "partial_cache",
                "split_file_rows",
                "time_slice_us",
                "noisy_tenant",
                "noisy_users",
                "noisy_sql",
                "redis_url",
            ],
            Kind::Ingest => &[
                "data", "tenant", "table", "cores", "pool", "target", "token", "bs", "size", "path",
            ],
            Kind::MemBw => &["size"],
        }
    }
}

const KINDS: [Kind; 5] = [
    Kind::RawIo,
    Kind::Scan,
    Kind::Query,
    Kind::Ingest,
    Kind::MemBw,
];

/// Keys every kind accepts.
const COMMON_KEYS: [&str; 8] = [
    "kind",
    "description",
    "runtime",
    "time_based",
    "loops",
    "numjobs",
    "rate_iops",
    "seed",
];

/// Other spellings of keys.
fn canonical(key: &str) -> &str {
    match key {
        "concurrency" | "users" => "numjobs",
        other => other,
    }
}

/// A job file that cannot be used, with the line that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

impl std::error::Error for JobError {}

/// One job: its section name, kind and checked keys (globals merged in).
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub kind: Kind,
    values: Values,
    file: String,
    line: usize,
}

impl Job {
    fn error(&self, key: &str, message: String) -> JobError {
        JobError {
            file: self.file.clone(),
            line: self.values.get(key).map_or(self.line, |(_, line)| *line),
            message: format!("job '{}': {message}", self.name),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(value, _)| value.as_str())
    }

    pub fn str_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.str(key).unwrap_or(default)
    }

    pub fn required(&self, key: &str) -> Result<&str, JobError> {
        self.str(key)
            .ok_or_else(|| self.error(key, format!("needs '{key}='")))
    }

    /// A count or size with fio's suffixes (k, m, g, t: powers of 1024).
    pub fn size(&self, key: &str) -> Result<Option<u64>, JobError> {
        self.str(key)
            .map(|text| {
                parse_size(text).map_err(|message| self.error(key, format!("{key}: {message}")))
            })
            .transpose()
    }

    pub fn size_or(&self, key: &str, default: u64) -> Result<u64, JobError> {
        Ok(self.size(key)?.unwrap_or(default))
    }

    pub fn duration(&self, key: &str) -> Result<Option<Duration>, JobError> {
        self.str(key)
            .map(|text| {
                parse_duration(text).map_err(|message| self.error(key, format!("{key}: {message}")))
            })
            .transpose()
    }

    pub fn bool(&self, key: &str) -> Result<bool, JobError> {
        match self.str(key) {
            None => Ok(false),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(other) => Err(self.error(key, format!("{key}: '{other}' is not a boolean"))),
        }
    }

    /// One of `choices`, or `default` when the key is absent.
    pub fn choice<'a>(
        &'a self,
        key: &str,
        choices: &[&str],
        default: &'a str,
    ) -> Result<&'a str, JobError> {
        let value = self.str_or(key, default);
        if choices.contains(&value) {
            Ok(value)
        } else {
            Err(self.error(
                key,
                format!("{key}: '{value}' is not one of {}", choices.join(", ")),
            ))
        }
    }

    /// How long the job runs: `runtime` (with or without `time_based`), else `loops`.
    pub fn stop(&self) -> Result<Stop, JobError> {
        match (self.duration("runtime")?, self.size("loops")?) {
            (Some(_), Some(_)) => {
                Err(self.error("loops", "give runtime or loops, not both".into()))
            }
            (Some(runtime), None) if runtime.is_zero() => {
                Err(self.error("runtime", "runtime must be above zero".into()))
            }
            (Some(runtime), None) => Ok(Stop::Runtime(runtime)),
            (None, Some(0)) => Err(self.error("loops", "loops must be above zero".into())),
            (None, Some(loops)) => Ok(Stop::Loops(loops)),
            (None, None) => Ok(Stop::Runtime(Duration::from_secs(10))),
        }
    }

    /// A value that is bad for a reason the parser cannot know (the runner checks it).
    pub fn invalid(&self, key: &str, message: impl Into<String>) -> JobError {
        self.error(key, message.into())
    }
}

/// Key → (value, line it came from).
type Values = BTreeMap<String, (String, usize)>;

/// When a job ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Runtime(Duration),
    /// Operations per worker (fio's loops, counted per operation here).
    Loops(u64),
}

/// Parses a job file; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Vec<Job>, JobError> {
    parse_with_env(text, file, &|name| std::env::var(name).ok())
}

/// [`parse`] with an explicit environment (for tests).
pub fn parse_with_env(
    text: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Job>, JobError> {
    let error = |line: usize, message: String| JobError {
        file: file.to_owned(),
        line,
        message,
    };
    let mut globals = Values::new();
    // The section being read: None before the first header, Some(None) for [global].
    let mut section: Option<Option<(String, usize, Values)>> = None;
    let mut raw_jobs = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| error(line, format!("section header '{trimmed}' lacks ']'")))?
                .trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(error(
                    line,
                    format!("section name '{name}': use letters, digits, '-', '_' or '.'"),
                ));
            }
            if let Some(Some(job)) = section.take() {
                raw_jobs.push((job, globals.clone()));
            }
            if name == "global" {
                section = Some(None);
            } else {
                if raw_jobs.iter().any(|((n, _, _), _)| n == name) {
                    return Err(error(line, format!("job '{name}' is defined twice")));
                }
                section = Some(Some((name.to_owned(), line, BTreeMap::new())));
            }
            continue;
        }
        let (key, value) = match trimmed.split_once('=') {
            Some((key, value)) => (key.trim(), value.trim()),
            None => (trimmed, "1"),
        };
        let key = canonical(key);
        if key.is_empty() {
            return Err(error(line, format!("'{trimmed}' has no key")));
        }
        let value = substitute(value, env).map_err(|message| error(line, message))?;
        let target = match &mut section {
            None => return Err(error(line, format!("'{key}' comes before any [section]"))),
            Some(None) => &mut globals,
            Some(Some((_, _, values))) => values,
        };
        if target.insert(key.to_owned(), (value, line)).is_some() {
            return Err(error(line, format!("'{key}' is set twice in this section")));
        }
    }
    if let Some(Some(job)) = section.take() {
        raw_jobs.push((job, globals));
    }
    if raw_jobs.is_empty() {
        return Err(error(0, "no jobs: add a [name] section".into()));
    }
    // A global key must mean something to some kind (typos fail); a job takes the globals its
    // kind knows and ignores the rest, so one [global] can serve jobs of several kinds.
    let known_anywhere =
        |key: &str| COMMON_KEYS.contains(&key) || KINDS.iter().any(|k| k.keys().contains(&key));
    for (_, globals) in &raw_jobs {
        if let Some((key, (_, key_line))) = globals.iter().find(|(key, _)| !known_anywhere(key)) {
            return Err(error(*key_line, format!("unknown key '{key}' in [global]")));
        }
    }
    raw_jobs
        .into_iter()
        .map(|((name, line, values), globals)| {
            let (kind_text, kind_line) = values
                .get("kind")
                .or_else(|| globals.get("kind"))
                .cloned()
                .ok_or_else(|| error(line, format!("job '{name}' needs 'kind=' (rawio, scan, query, ingest or membw)")))?;
            let kind = Kind::parse(&kind_text).ok_or_else(|| {
                error(
                    kind_line,
                    format!("job '{name}': unknown kind '{kind_text}' (rawio, scan, query, ingest or membw)"),
                )
            })?;
            let accepts = |key: &str| COMMON_KEYS.contains(&key) || kind.keys().contains(&key);
            for (key, (_, key_line)) in &values {
                if !accepts(key) {
                    let mut known: Vec<&str> = COMMON_KEYS.iter().chain(kind.keys()).copied().collect();
                    known.sort_unstable();
                    return Err(error(
                        *key_line,
                        format!(
                            "job '{name}': unknown key '{key}' for kind={} (known: {})",
                            kind.name(),
                            known.join(", ")
                        ),
                    ));
                }
            }
            let mut merged: Values = globals.into_iter().filter(|(key, _)| accepts(key)).collect();
            merged.extend(values);
            Ok(Job {
                name,
                kind,
                values: merged,
                file: file.to_owned(),
                line,
            })
        })
        .collect()
}

/// Replaces `${VAR}` and `${VAR:-default}`.
fn substitute(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("'{value}': '${{' without '}}'"))?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        match env(name).filter(|v| !v.is_empty()) {
            Some(found) => out.push_str(&found),
            None => match default {
                Some(default) => out.push_str(default),
                None => return Err(format!("environment variable {name} is not set (write ${{{name}:-default}} for a default)")),
            },
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `4096`, `4k`, `1m`, `1.5g`, `100MB`: powers of 1024, as fio.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, suffix) = lower.split_at(digits_end);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size (e.g. 4096, 4k, 1m, 2g)"))?;
    let multiplier: u64 = match suffix.trim_end_matches('b').trim_end_matches('i') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("'{text}': unknown unit '{suffix}' (k, m, g or t)")),
    };
    let value = number * multiplier as f64;
    if !value.is_finite() || value < 0.0 || value > u64::MAX as f64 / 2.0 || value.fract() != 0.0 {
        return Err(format!("'{text}' is not a whole number of bytes or items"));
    }
    Ok(value as u64)
}

/// `30`, `30s`, `500ms`, `2m`, `1h`, `250us`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 30, 30s, 500ms, 2m)"))?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1e3,
        "us" => number / 1e6,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => {
            return Err(format!(
                "'{text}': unknown unit '{unit}' (us, ms, s, m or h)"
            ))
        }
    };
    if !seconds.is_finite() || !(0.0..=1e7).contains(&seconds) {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "DATA").then(|| "/srv/data".to_owned())
    }

    fn parse_err(text: &str) -> String {
        parse_with_env(text, "t.fio", &env).unwrap_err().to_string()
    }

    #[test]
    fn globals_apply_to_later_jobs_and_jobs_override_them() {
        let jobs = parse_with_env(
            "; comment\n[global]\nkind=query\nruntime=5s\ndata=${DATA}\n\n[a]\nusers=4\n[b]\nruntime=2\ntime_based\n# x\n[global]\ntenant=t2\n[c]\n",
            "t.fio",
            &env,
        )
        .unwrap();
        assert_eq!(jobs.len(), 3);
        assert_eq!(jobs[0].name, "a");
        assert_eq!(jobs[0].kind, Kind::Query);
        assert_eq!(jobs[0].size("numjobs").unwrap(), Some(4));
        assert_eq!(jobs[0].str("data"), Some("/srv/data"));
        assert_eq!(
            jobs[0].stop().unwrap(),
            Stop::Runtime(Duration::from_secs(5))
        );
        assert_eq!(
            jobs[1].stop().unwrap(),
            Stop::Runtime(Duration::from_secs(2))
        );
        assert!(jobs[1].bool("time_based").unwrap());
        assert_eq!(jobs[1].str("tenant"), None);
        assert_eq!(jobs[2].str("tenant"), Some("t2"));
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let e = parse_err("[a]\nkind=rawio\nbs=4k\nbogus=1\n");
        assert!(
            e.contains("t.fio:4") && e.contains("unknown key 'bogus'"),
            "{e}"
        );
        let e = parse_err("[a]\nkind=rawio\nmix=point:1\n");
        assert!(
            e.contains("t.fio:3") && e.contains("'mix' for kind=rawio"),
            "{e}"
        );
        let e = parse_err("[a]\nkind=teleport\n");
        assert!(e.contains("unknown kind 'teleport'"), "{e}");
        let e = parse_err("[a]\nbs=4k\n");
        assert!(e.contains("needs 'kind='"), "{e}");
        let e = parse_err("bs=4k\n[a]\nkind=rawio\n");
        assert!(
            e.contains("t.fio:1") && e.contains("before any [section]"),
            "{e}"
        );
        let e = parse_err("[a\nkind=rawio\n");
        assert!(e.contains("lacks ']'"), "{e}");
        let e = parse_err("[a]\nkind=rawio\nbs=1\nbs=2\n");
        assert!(e.contains("t.fio:4") && e.contains("set twice"), "{e}");
        let e = parse_err("[a]\nkind=rawio\n[a]\nkind=rawio\n");
        assert!(e.contains("defined twice"), "{e}");
        let e = parse_err("[a]\nkind=query\ndata=${NOPE}\n");
        assert!(e.contains("NOPE is not set"), "{e}");
        let e = parse_err("[global]\nbogus=1\n[a]\nkind=rawio\n");
        assert!(
            e.contains("t.fio:2") && e.contains("unknown key 'bogus' in [global]"),
            "{e}"
        );
        let e = parse_err("; only a comment\n");
        assert!(e.contains("no jobs"), "{e}");
        let e = parse_err("[a b]\n");
        assert!(e.contains("section name"), "{e}");
    }

    #[test]
    fn a_job_takes_only_the_globals_its_kind_knows() {
        let jobs = parse_with_env(
            "[global]\nfilename=f\ndata=d\n[r]\nkind=rawio\n[q]\nkind=query\n",
            "t",
            &env,
        )
        .unwrap();
        assert_eq!(jobs[0].str("filename"), Some("f"));
        assert_eq!(jobs[0].str("data"), None);
        assert_eq!(jobs[1].str("data"), Some("d"));
        assert_eq!(jobs[1].str("filename"), None);
    }

    #[test]
    fn values_are_checked_when_read() {
        let jobs = parse_with_env(
            "[a]\nkind=rawio\nbs=4x\nruntime=3 fortnights\nrw=write\nloops=2\n",
            "t.fio",
            &env,
        )
        .unwrap();
        let job = &jobs[0];
        assert!(job.size("bs").unwrap_err().to_string().contains("t.fio:3"));
        assert!(job
            .duration("runtime")
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
        let e = job.choice("rw", &["read", "randread"], "read").unwrap_err();
        assert!(e.to_string().contains("t.fio:5") && e.to_string().contains("'write'"));
        assert!(job.stop().is_err());
        assert!(job
            .required("filename")
            .unwrap_err()
            .to_string()
            .contains("needs 'filename='"));
    }

    #[test]
    fn defaults_from_the_environment() {
        let jobs = parse_with_env(
            "[a]\nkind=query\ntarget=${T:-embedded}\ndata=x${DATA}y\n",
            "t",
            &env,
        )
        .unwrap();
        assert_eq!(jobs[0].str("target"), Some("embedded"));
        assert_eq!(jobs[0].str("data"), Some("x/srv/datay"));
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("100MB"), Ok(100 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("0.5").is_err());
        assert!(parse_size("k").is_err());
        assert!(parse_size("1e999").is_err());
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("").is_err());
    }
}
