//! Wall-clock timestamps as the events carry them.

use std::time::{SystemTime, UNIX_EPOCH};

/// `2024-05-02T00:54:06.655Z`: RFC 3339 in UTC with milliseconds, the format
/// of an SNS envelope's `Timestamp`.
pub fn iso8601(at: SystemTime) -> String {
    let millis = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
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
    use std::time::Duration;

    use super::*;
    use crate::envelope::parse_timestamp;

    #[test]
    fn timestamps_round_trip_through_the_envelope_parser() {
        for millis in [0u64, 951_782_400_000, 1_714_611_246_655, 4_102_444_799_999] {
            let at = UNIX_EPOCH + Duration::from_millis(millis);
            let text = iso8601(at);
            assert_eq!(parse_timestamp(&text), Some(at), "{text}");
        }
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
