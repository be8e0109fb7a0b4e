//! Holding what the bridge emits to the JSON Schemas it documents
//! (`docs/schemas/*.schema.json`): each instance is validated by the Python
//! `jsonschema` package (draft 2020-12) in the test venv — an implementation
//! that is not ours, so a schema and the code cannot drift together.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

/// The validator, reading `[schema path, [instances]]` on stdin; prints each
/// violation and exits 1 when there is one.
const VALIDATE: &str = r#"
import json, sys
import jsonschema
path, instances = json.load(sys.stdin)
with open(path) as f:
    schema = json.load(f)
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
bad = 0
for i, instance in enumerate(instances):
    for error in validator.iter_errors(instance):
        bad += 1
        print(f"instance {i}: {error.message} at {list(error.absolute_path)}: {json.dumps(instance)}")
sys.exit(1 if bad else 0)
"#;

/// Panics unless every one of `instances` is valid under
/// `docs/schemas/<name>.schema.json` (and the schema is a valid schema).
pub fn assert_valid(name: &str, instances: &[Value]) {
    assert!(!instances.is_empty(), "nothing to validate against {name}");
    let path = crate::server::workspace_root()
        .join("docs/schemas")
        .join(format!("{name}.schema.json"));
    assert!(path.is_file(), "no schema at {}", path.display());
    let mut child = Command::new(crate::tools::python_with_boto3())
        .arg("-c")
        .arg(VALIDATE)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    let input = serde_json::json!([path.display().to_string(), instances]).to_string();
    child
        .stdin
        .take()
        .expect("a piped stdin")
        .write_all(input.as_bytes())
        .expect("the validator reads its input");
    let out = child
        .wait_with_output()
        .expect("the validator runs to its end");
    assert!(
        out.status.success(),
        "{name}: not valid under its schema\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
