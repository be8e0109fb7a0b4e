//! Wall-clock helpers: epoch milliseconds and ISO 8601 timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// `2024-05-02T00:54:06.655Z` for a time in epoch milliseconds, the format
/// of an SNS envelope's `Timestamp`.
pub fn iso8601_millis(millis: u64) -> String {
    let secs = millis / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        millis % 1000
    )
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_the_sns_format() {
        assert_eq!(iso8601_millis(0), "1970-01-01T00:00:00.000Z");
        // date -u -d 2012-05-02T00:54:06Z +%s
        assert_eq!(
            iso8601_millis(1_335_920_046_655),
            "2012-05-02T00:54:06.655Z"
        );
        assert_eq!(iso8601_millis(951_825_600_000), "2000-02-29T12:00:00.000Z");
        assert_eq!(
            iso8601_millis(1_704_067_199_999),
            "2023-12-31T23:59:59.999Z"
        );
    }
}
