//! The repository's documents keep up with the code: ARCHITECTURE.md names
//! every crate of the workspace and every subcommand's file.

use std::path::Path;

fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn architecture_md_lists_every_crate_and_every_subcommand_file() {
    let architecture = std::fs::read_to_string(workspace().join("ARCHITECTURE.md")).unwrap();
    let mut crates = 0;
    for entry in std::fs::read_dir(workspace().join("crates")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            architecture.contains(&format!("`crates/{name}`")),
            "ARCHITECTURE.md does not list crates/{name}"
        );
        crates += 1;
    }
    assert!(crates >= 8, "{crates} crates found");
    for entry in std::fs::read_dir(workspace().join("crates/app/src/cli")).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        let module = file.trim_end_matches(".rs");
        if module != "mod" {
            assert!(
                architecture.contains(module),
                "ARCHITECTURE.md does not mention cli/{file}"
            );
        }
    }
}
