//! The real AWS clients some tests drive an emulator with: the AWS CLI (v1,
//! `pip install awscli`) and Python with boto3, both installed in
//! `<workspace>/.venv` by `scripts/moto-venv.sh`.
//!
//! `WSBRIDGE_TEST_AWS_CLI` names the `aws` executable and
//! `WSBRIDGE_TEST_PYTHON` a Python that imports boto3 (`scripts/test.sh`
//! exports both); unset, the ones in `.venv` are used. A test that needs
//! them and does not find them fails and says how to get them: it never
//! passes without having run them.

use std::path::PathBuf;

/// Environment variable naming the `aws` executable (AWS CLI v1).
pub const ENV_AWS_CLI: &str = "WSBRIDGE_TEST_AWS_CLI";
/// Environment variable naming a Python that has boto3.
pub const ENV_PYTHON: &str = "WSBRIDGE_TEST_PYTHON";

/// The AWS CLI: `$WSBRIDGE_TEST_AWS_CLI`, else `.venv/bin/aws`. Panics
/// with the way to install it when neither exists.
pub fn aws_cli() -> PathBuf {
    tool(ENV_AWS_CLI, "aws", "the AWS CLI (pip install awscli)")
}

/// A Python with boto3: `$WSBRIDGE_TEST_PYTHON`, else `.venv/bin/python`.
/// Panics with the way to install it when neither exists (whether boto3
/// imports is for the caller's script to find out, and fail on).
pub fn python_with_boto3() -> PathBuf {
    tool(
        ENV_PYTHON,
        "python",
        "Python with boto3 (pip install boto3)",
    )
}

fn tool(env: &str, venv_name: &str, what: &str) -> PathBuf {
    let path = match std::env::var(env) {
        Ok(value) if !value.trim().is_empty() => PathBuf::from(value.trim()),
        _ => crate::server::workspace_root()
            .join(".venv/bin")
            .join(venv_name),
    };
    assert!(
        path.is_file(),
        "testkit: {what} not found at {} — run scripts/moto-venv.sh (installs it into .venv), \
         or set {env} to it",
        path.display()
    );
    path
}
