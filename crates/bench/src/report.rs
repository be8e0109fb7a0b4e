//! The results: rows per workload, the targets of the issue checked
//! against them, a printed table and a JSON file.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value};

/// One measured case.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `W1` … `W6`.
    pub workload: String,
    /// `baseline`, `wsbridge`, or `moto-only`.
    pub server: String,
    /// What varies within the workload (`1000 conns`, `5000/s`, …).
    pub case: String,
    /// Figures, by name.
    pub metrics: Map<String, Value>,
}

impl Row {
    /// A row with the given figures.
    pub fn new(
        workload: &str,
        server: &str,
        case: impl Into<String>,
        metrics: &[(&str, Value)],
    ) -> Self {
        Self {
            workload: workload.into(),
            server: server.into(),
            case: case.into(),
            metrics: metrics
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        }
    }

    /// A figure as a number.
    pub fn num(&self, key: &str) -> Option<f64> {
        self.metrics.get(key).and_then(Value::as_f64)
    }
}

/// A target of the issue and how this run did against it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is asked.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// `met`, `missed`, `not measured`, or `smoke run, not judged`.
    pub verdict: String,
}

/// Everything one run produced.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// `full` or `smoke`.
    pub mode: String,
    /// The machine.
    pub machine: Value,
    /// Settings of the run (latency of the stub, sizes).
    pub settings: BTreeMap<String, Value>,
    /// The figures.
    pub rows: Vec<Row>,
    /// The targets.
    pub targets: Vec<Check>,
    /// Workloads that failed or were skipped, with why.
    pub problems: Vec<String>,
    /// Remarks worth reading with the figures.
    pub notes: Vec<String>,
    /// Wall-clock seconds of each workload.
    pub durations: BTreeMap<String, f64>,
}

/// Rounds to `digits` decimals, as a JSON number.
pub fn round(value: f64, digits: i32) -> Value {
    let scale = 10f64.powi(digits);
    let rounded = (value * scale).round() / scale;
    serde_json::Number::from_f64(rounded).map_or(Value::Null, Value::Number)
}

fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| cell(Some(v)))
            .collect::<Vec<_>>()
            .join(" "),
        Some(Value::Bool(b)) => {
            if *b {
                "yes".into()
            } else {
                "no".into()
            }
        }
        Some(v) => v.to_string(),
    }
}

/// The columns printed for each workload (all figures are in the JSON).
fn columns(workload: &str) -> &'static [&'static str] {
    match workload {
        "W1" => &[
            "connected",
            "failed",
            "server_conns",
            "rss_mib",
            "user_kib_per_conn",
            "anon_kib_per_conn",
            "kernel_kib_per_conn",
            "rss_after_close_mib",
        ],
        "W2" => &[
            "ok",
            "failed",
            "handshakes_per_s",
            "p50_ms",
            "p99_ms",
            "close_p50_ms",
            "rss_before_mib",
            "rss_peak_mib",
            "rss_after_mib",
            "retained_kib",
            "rss_after_each_storm_mib",
        ],
        "W3" => &[
            "messages",
            "p50_ms",
            "p99_ms",
            "max_ms",
            "added_p50_ms",
            "added_p99_ms",
            "added_mean_ms",
            "aa_noise_p50_ms",
            "aa_noise_p99_ms",
        ],
        "W4" | "W4b" | "W4c" => &[
            "offered_per_s",
            "delivered_per_s",
            "frames",
            "lost",
            "cpu_us_per_cmd",
            "cpu_us_per_frame",
            "ratio_to_baseline",
            "cpu_us_per_frame_range",
            "p50_ms",
            "p99_ms",
            "server_cpu_pct",
            "sqs_calls_per_cmd",
            "saturated",
        ],
        "W5" => &[
            "offered_per_s",
            "acked_per_s",
            "lost",
            "errors",
            "cpu_us_per_msg",
            "sns_calls_per_msg",
            "p50_ms",
            "p99_ms",
            "server_cpu_pct",
        ],
        "W6" => &[
            "readers_p50_ms",
            "readers_p99_ms",
            "readers_lost",
            "heavy_frames",
            "rss_growth_mib",
            "closed_1013",
            "stalled_conns",
            "cpu_us_per_cmd",
        ],
        _ => &[],
    }
}

impl Report {
    /// The report as a text table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut workloads: Vec<&str> = self.rows.iter().map(|r| r.workload.as_str()).collect();
        workloads.dedup();
        for workload in workloads {
            let rows: Vec<&Row> = self
                .rows
                .iter()
                .filter(|r| r.workload == workload)
                .collect();
            let mut headers = vec!["server".to_owned(), "case".to_owned()];
            headers.extend(columns(workload).iter().map(|c| (*c).to_owned()));
            let body: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let mut line = vec![r.server.clone(), r.case.clone()];
                    line.extend(columns(workload).iter().map(|c| cell(r.metrics.get(*c))));
                    line
                })
                .collect();
            let widths: Vec<usize> = (0..headers.len())
                .map(|i| {
                    body.iter()
                        .map(|l| l[i].len())
                        .chain([headers[i].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let _ = writeln!(out, "\n{workload}");
            let line = |cells: &[String]| {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:>w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
            };
            let _ = writeln!(out, "{}", line(&headers));
            for l in &body {
                let _ = writeln!(out, "{}", line(l));
            }
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out, "\nTargets");
            for t in &self.targets {
                let _ = writeln!(out, "  [{}] {} — {}", t.verdict, t.target, t.measured);
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        for problem in &self.problems {
            let _ = writeln!(out, "PROBLEM: {problem}");
        }
        out
    }

    /// Rows of one workload and server.
    pub fn rows_of<'a>(
        &'a self,
        workload: &'a str,
        server: &'a str,
    ) -> impl Iterator<Item = &'a Row> + 'a {
        self.rows
            .iter()
            .filter(move |r| r.workload == workload && r.server == server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_shows_every_row_and_target() {
        let mut report = Report::default();
        report.rows.push(Row::new(
            "W4",
            "baseline",
            "1000/s",
            &[("cpu_us_per_cmd", json!(2.5))],
        ));
        report.rows.push(Row::new(
            "W4",
            "wsbridge",
            "1000/s",
            &[("cpu_us_per_cmd", json!(9.0)), ("saturated", json!(false))],
        ));
        report.targets.push(Check {
            target: "cpu".into(),
            measured: "3.6x".into(),
            verdict: "missed".into(),
        });
        let table = report.table();
        assert!(table.contains("baseline"), "{table}");
        assert!(table.contains("9.0"), "{table}");
        assert!(table.contains("[missed] cpu — 3.6x"), "{table}");
        assert_eq!(round(1.23456, 2), json!(1.23));
    }
}
