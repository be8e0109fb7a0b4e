//! The targets of issue 5, checked against the rows of a run.

use serde_json::json;

use crate::report::{Check, Report, Row};

/// Checks the targets of the issue against the rows.
pub fn targets(report: &mut Report) {
    let mut out = Vec::new();
    // CPU per delivered Command vs the baseline's CPU per pushed frame (W4,
    // at 5 000/s, else the highest rate both sustained).
    let w4_bridge: Vec<&Row> = report.rows_of("W4", "wsbridge").collect();
    let pick = w4_bridge
        .iter()
        .find(|r| r.case == "5000/s" && r.num("ratio_to_baseline").is_some())
        .or_else(|| {
            w4_bridge.iter().rev().find(|r| {
                r.num("ratio_to_baseline").is_some()
                    && r.metrics.get("saturated") == Some(&json!(false))
            })
        })
        .or_else(|| {
            w4_bridge
                .iter()
                .rev()
                .find(|r| r.num("ratio_to_baseline").is_some())
        });
    out.push(match pick {
        Some(row) => {
            let ratio = row.num("ratio_to_baseline").unwrap_or(f64::NAN);
            let base = report
                .rows_of("W4", "baseline")
                .find(|r| r.case == row.case)
                .and_then(|r| r.num("cpu_us_per_frame"))
                .unwrap_or(f64::NAN);
            Check {
                target: "CPU per delivered Command ≤ 2.5× the baseline's CPU per pushed frame"
                    .into(),
                measured: format!(
                    "{ratio:.2}× at {} ({:.1} µs vs {base:.1} µs)",
                    row.case,
                    row.num("cpu_us_per_frame").unwrap_or(f64::NAN)
                ),
                verdict: verdict(ratio <= 2.5),
            }
        }
        None => {
            not_measured("CPU per delivered Command ≤ 2.5× the baseline's CPU per pushed frame")
        }
    });
    // Memory per idle connection (W1, largest size).
    let largest = |server: &str| {
        report
            .rows_of("W1", server)
            .max_by_key(|r| r.num("conns").unwrap_or(0.0) as u64)
            .map(|r| {
                (
                    r.num("conns").unwrap_or(0.0),
                    r.num("user_kib_per_conn").unwrap_or(f64::NAN),
                )
            })
    };
    out.push(match (largest("wsbridge"), largest("baseline")) {
        (Some((n, bridge)), Some((_, base))) => Check {
            target: "user-space memory per idle connection ≤ 2× the baseline (≈ 25 KB)".into(),
            measured: format!(
                "{bridge:.1} KiB vs {base:.1} KiB = {:.2}× at {n} connections",
                bridge / base
            ),
            verdict: verdict(bridge <= 2.0 * base),
        },
        _ => not_measured("user-space memory per idle connection ≤ 2× the baseline"),
    });
    // Added latency over a moto-only consumer (W3).
    out.push(match report.rows_of("W3", "wsbridge").next() {
        Some(row) => {
            let (p50, p99) = (row.num("added_p50_ms"), row.num("added_p99_ms"));
            Check {
                target: "added latency over a moto-only consumer: p50 ≤ 1 ms, p99 ≤ 5 ms".into(),
                measured: format!(
                    "p50 {} ms, p99 {} ms (moto's own jitter, A/A: p50 {} ms, p99 {} ms)",
                    p50.map_or("?".into(), |v| format!("{v:+.2}")),
                    p99.map_or("?".into(), |v| format!("{v:+.2}")),
                    row.num("aa_noise_p50_ms")
                        .map_or("?".into(), |v| format!("{v:.2}")),
                    row.num("aa_noise_p99_ms")
                        .map_or("?".into(), |v| format!("{v:.2}")),
                ),
                verdict: verdict(p50.is_some_and(|v| v <= 1.0) && p99.is_some_and(|v| v <= 5.0)),
            }
        }
        None => not_measured("added latency over a moto-only consumer: p50 ≤ 1 ms, p99 ≤ 5 ms"),
    });
    // 15k connections held with no errors (W1).
    out.push(
        match report
            .rows_of("W1", "wsbridge")
            .find(|r| r.num("conns") == Some(15000.0))
        {
            Some(row) => {
                let failed = row.num("failed").unwrap_or(f64::NAN);
                let held = row.num("server_conns").unwrap_or(0.0);
                Check {
                    target: "15k concurrent connections held with no errors".into(),
                    measured: format!("{held} held by the bridge, {failed} failed"),
                    verdict: verdict(failed == 0.0 && held >= 15000.0),
                }
            }
            None => not_measured("15k concurrent connections held with no errors"),
        },
    );
    // Slow-client isolation (W6).
    out.push(match report.rows_of("W6", "wsbridge").find(|r| r.case == "heavy client stalls") {
        Some(row) => {
            let p99 = row.num("readers_p99_ms").unwrap_or(f64::NAN);
            let control = row.num("control_p99_ms").unwrap_or(f64::NAN);
            let growth = row.num("rss_growth_mib").unwrap_or(f64::NAN);
            let closed = row.num("closed_1013").unwrap_or(0.0);
            let lost = row.num("readers_lost").unwrap_or(f64::NAN);
            Check {
                target: "slow-client isolation: bounded memory, others' p99 unchanged".into(),
                measured: format!(
                    "readers' p99 {p99:.2} ms (control {control:.2} ms), {lost} lost; RSS +{growth:.1} MiB; {closed} stalled connections closed with 1013"
                ),
                verdict: verdict(p99 <= (control * 1.5).max(control + 5.0) && growth < 128.0 && closed >= 1.0 && lost == 0.0),
            }
        }
        None => not_measured("slow-client isolation"),
    });
    if report.mode == "smoke" {
        // Tiny workloads on whatever build: the figures show the code runs,
        // they say nothing about the targets.
        for check in &mut out {
            if check.verdict != "not measured" {
                check.verdict = "smoke run, not judged".into();
            }
        }
    }
    report.targets = out;
}

fn verdict(ok: bool) -> String {
    if ok { "met" } else { "missed" }.into()
}

fn not_measured(target: &str) -> Check {
    Check {
        target: target.into(),
        measured: "not measured in this run".into(),
        verdict: "not measured".into(),
    }
}
