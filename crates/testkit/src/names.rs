//! Unique names for AWS resources created by tests.

/// Longest name [`unique_name`] returns: SQS allows 80 characters, and this
/// leaves room for a `.fifo` suffix.
const MAX_LEN: usize = 75;

/// A name that no other test (in this process or another) uses, valid as an SQS
/// queue name and an SNS topic name: ASCII alphanumerics, `-` and `_`, at most
/// 75 characters (so `format!("{}.fifo", unique_name(..))` is still valid).
///
/// Characters of `prefix` that are not allowed are replaced by `-`, and a long
/// prefix is shortened. The rest is a random UUID.
pub fn unique_name(prefix: &str) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let room = MAX_LEN - suffix.len() - 1;
    let mut clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(room)
        .collect();
    if clean.is_empty() {
        clean.push('t');
    }
    format!("{clean}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 80
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    }

    #[test]
    fn names_are_valid_and_distinct() {
        let a = unique_name("wsbridge-test");
        let b = unique_name("wsbridge-test");
        assert_ne!(a, b);
        assert!(a.starts_with("wsbridge-test-"));
        assert!(valid(&a) && valid(&b));
    }

    #[test]
    fn odd_prefixes_are_cleaned_and_shortened() {
        let long = "x".repeat(200);
        for prefix in ["", "a b/c.d", "événement", long.as_str()] {
            let name = unique_name(prefix);
            assert!(valid(&name), "{name}");
            assert!(name.len() <= MAX_LEN, "{name}");
            assert!(format!("{name}.fifo").len() <= 80);
        }
    }
}
