//! The repository's documents keep up with the code: ARCHITECTURE.md names
//! every crate of the workspace and every subcommand's file; the README is a
//! front page that starts with the two set-up commands and links every page
//! of docs/; those pages document every subcommand, the protocol's error and
//! close codes, and the first errors people hit; every link between the
//! documents leads to a file and heading that exist.

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

/// The fenced code blocks of a Markdown text, in order, with their language.
fn code_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in markdown.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(language)) => open = Some((language.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// The pages of `docs/` the README sends readers to, one per topic.
const PAGES: [&str; 8] = [
    "docs/protocol.md",
    "docs/delivery.md",
    "docs/configuration.md",
    "docs/operations.md",
    "docs/security.md",
    "docs/scaling.md",
    "docs/control-plane.md",
    "docs/brokers.md",
];

fn read(relative: &str) -> String {
    std::fs::read_to_string(workspace().join(relative))
        .unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The part of a Markdown text under `heading` (a whole line), up to the
/// next heading of level two.
fn section<'a>(markdown: &'a str, heading: &str) -> &'a str {
    let line = format!("\n{heading}\n");
    let start = markdown
        .find(&line)
        .unwrap_or_else(|| panic!("no {heading} section"))
        + line.len();
    let rest = &markdown[start..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

#[test]
fn the_readme_is_a_front_page_with_the_two_commands_and_links_to_every_page() {
    let readme = read("README.md");
    let lines = readme.lines().count();
    assert!(lines <= 300, "the README has {lines} lines");
    // The two set-up commands come first: run it, test it.
    let blocks = code_blocks(&readme);
    let first: Vec<&str> = blocks
        .iter()
        .filter(|(language, _)| language == "sh")
        .take(2)
        .map(|(_, b)| b.trim())
        .collect();
    assert_eq!(
        first,
        ["cargo run -p app --bin wsbridge -- dev", "scripts/test.sh"],
        "the README's first two shell blocks"
    );
    assert!(
        readme.lines().any(|l| l == "## License"),
        "no ## License section"
    );
    assert!(readme.contains("](docs/iam/)"), "no link to docs/iam/");
    for page in PAGES.iter().chain(&["ARCHITECTURE.md"]) {
        assert!(
            readme.contains(&format!("]({page})")),
            "the README does not link {page}"
        );
    }
}

#[test]
fn the_docs_cover_what_a_user_acts_on() {
    use clap::CommandFactory;

    let protocol = read("docs/protocol.md");
    let operations = read("docs/operations.md");
    assert!(
        read("docs/configuration.md")
            .lines()
            .any(|l| l == "# Configuration"),
        "docs/configuration.md has no # Configuration title"
    );
    // A browser client example.
    assert!(
        code_blocks(&protocol)
            .iter()
            .any(|(language, body)| language == "js" && body.contains("new WebSocket(")),
        "no JavaScript client example in docs/protocol.md"
    );
    // Every subcommand.
    let command_line = section(&operations, "## Command line");
    for sub in app::cli::Cli::command().get_subcommands() {
        let name = sub.get_name();
        assert!(
            command_line.contains(&format!("`wsbridge {name}")),
            "docs/operations.md's Command line does not show `wsbridge {name}`"
        );
    }
    // Every error code a client can get, every close code the server sends,
    // every HTTP refusal of an upgrade.
    for code in [
        domain::client_message::INVALID_MESSAGE,
        domain::client_message::RATE_LIMITED,
        domain::client_message::PUBLISH_FAILED,
        domain::client_message::PUBLISH_REJECTED,
        domain::uplink::UNKNOWN_DELIVERY,
        "origin_not_allowed",
        "missing_token",
        "invalid_token",
        "client_id_mismatch",
        "misdirected_client",
        "too_many_connections",
        "server_at_capacity",
        "invalid_client_id",
    ] {
        assert!(
            protocol.contains(&format!("`{code}`")),
            "docs/protocol.md does not explain {code}"
        );
    }
    for close in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1013] {
        assert!(
            protocol.contains(&format!("| {close} |")),
            "docs/protocol.md does not list close code {close}"
        );
    }
    // The troubleshooting section names the errors as they show.
    let troubleshooting = section(&operations, "## Troubleshooting");
    for shown in [
        "NonExistentQueue",
        "AccessDenied",
        "origin_not_allowed",
        "invalid_token",
        "421",
        "misdirected_client",
    ] {
        assert!(
            troubleshooting.contains(shown),
            "Troubleshooting does not mention {shown}"
        );
    }
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped,
/// spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim_start_matches('#')
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The lines of a Markdown text outside its fenced code blocks.
fn prose(markdown: &str) -> impl Iterator<Item = &str> {
    let mut in_code = false;
    markdown.lines().filter(move |line| {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        !in_code && !line.starts_with("```")
    })
}

/// The targets of the inline links of a Markdown text.
fn link_targets(markdown: &str) -> Vec<&str> {
    prose(markdown)
        .flat_map(|line| line.split("](").skip(1))
        .filter_map(|piece| piece.find(')').map(|end| &piece[..end]))
        .collect()
}

#[test]
fn every_link_between_the_documents_leads_somewhere() {
    let documents = [
        "README.md",
        "ARCHITECTURE.md",
        "BENCHMARKS.md",
        "docs/iam/README.md",
        "clients/ts/README.md",
    ];
    for document in PAGES.iter().chain(&documents) {
        let text = read(document);
        let dir = Path::new(document).parent().unwrap();
        for target in link_targets(&text) {
            if target.contains("://") {
                continue;
            }
            let (file, fragment) = match target.split_once('#') {
                Some((file, fragment)) => (file, Some(fragment)),
                None => (target, None),
            };
            let path = if file.is_empty() {
                Path::new(document).to_path_buf()
            } else {
                dir.join(file)
            };
            assert!(
                workspace().join(&path).exists(),
                "{document} links {target}: no such file"
            );
            if let Some(fragment) = fragment {
                let linked = read(path.to_str().unwrap());
                assert!(
                    prose(&linked)
                        .filter(|l| l.starts_with('#'))
                        .any(|l| anchor(l) == fragment),
                    "{document} links {target}: no such heading"
                );
            }
        }
    }
}

/// The schema check used on emitted events can fail: each schema refuses a
/// message that breaks it.
#[test]
fn the_event_schemas_refuse_what_breaks_them() {
    use serde_json::json;
    let refused = |name: &str, bad: serde_json::Value| {
        let outcome = std::panic::catch_unwind(|| {
            testkit::schemas::assert_valid(name, std::slice::from_ref(&bad))
        });
        assert!(outcome.is_err(), "{name} took {bad}");
    };
    let connect = json!({"action": "$connect", "client_id": "a", "connection_id": "7",
                         "at": "2024-05-02T00:54:06.655Z", "instance_id": "r1"});
    testkit::schemas::assert_valid("presence-event", std::slice::from_ref(&connect));
    let mut numeric_id = connect.clone();
    numeric_id["connection_id"] = json!(7);
    refused("presence-event", numeric_id);
    let mut no_code = connect.clone();
    no_code["action"] = json!("$disconnect");
    refused("presence-event", no_code);

    let delivered = json!({"outcome": "delivered", "client_id": "a", "message_id": "m",
                           "sns_message_id": null, "command_id": "c", "at": "2024-05-02T00:54:06.655Z",
                           "connections": 1});
    testkit::schemas::assert_valid("receipt", std::slice::from_ref(&delivered));
    let mut unknown = delivered.clone();
    unknown["outcome"] = json!("lost");
    refused("receipt", unknown);
    let mut counted = delivered.clone();
    counted["outcome"] = json!("acknowledged");
    refused("receipt", counted);

    testkit::schemas::assert_valid(
        "control-message",
        &[json!({"client_id": "a", "command": "$send", "frame": {"n": 1}})],
    );
    refused(
        "control-message",
        json!({"client_id": "a", "command": "$send"}),
    );
    refused(
        "control-message",
        json!({"client_id": "a", "command": "$disconnect", "code": 1006}),
    );

    refused(
        "client-message-event",
        json!({"client_id": "a", "action": "$connect"}),
    );
    refused("client-message-event", json!({"action": "go"}));
    refused("command", json!({"command": "reboot"}));
    refused(
        "command",
        json!({"client_id": "a\u{7}", "command": "reboot"}),
    );
}
