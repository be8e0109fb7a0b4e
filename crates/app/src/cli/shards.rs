//! `wsbridge shards`: how a fleet's shards split among its replicas, as the
//! nginx configuration that routes every client to its shard's owner
//! (docs/scaling.md, "Sharded mode").
//!
//! nginx's non-consistent `hash $key;` picks peer
//! `((crc32(key) >> 16) & 0x7fff) mod total_weight` by walking the servers in
//! order by weight, so listing the replicas in range order with
//! `weight = range length` sends each client id to the replica whose range
//! holds `domain::shard_of(id)`.

use std::fmt::Write as _;

use domain::{shard_of, ClientId, ShardRange};

use crate::cli::Failure;

/// Prints the split (or one client's shard and owner) to stdout.
pub(crate) fn print(
    shards: u32,
    replicas: u32,
    servers: &[String],
    client_id: Option<&str>,
) -> Result<(), Failure> {
    let text = match client_id {
        Some(id) => locate(shards, replicas, id),
        None => nginx(shards, replicas, servers),
    }
    .map_err(Failure::Usage)?;
    print!("{text}");
    Ok(())
}

fn ranges(shards: u32, replicas: u32) -> Result<Vec<ShardRange>, String> {
    (0..replicas.max(1))
        .map(|index| ShardRange::of_replica(index, replicas, shards))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--replicas: {e}"))
}

/// `shard S of N: replica I (shard_owner I/R, shards A..B)`.
pub fn locate(shards: u32, replicas: u32, client_id: &str) -> Result<String, String> {
    let id = ClientId::parse(client_id).map_err(|e| format!("--client-id: {e}"))?;
    let shard = shard_of(&id, shards);
    let (index, range) = ranges(shards, replicas)?
        .into_iter()
        .enumerate()
        .find(|(_, range)| range.contains(shard))
        .ok_or_else(|| format!("shard {shard} has no owner"))?;
    Ok(format!(
        "client {client_id}: shard {shard} of {shards}, replica {index} \
         (shard_owner = \"{index}/{replicas}\", shards {range})\n"
    ))
}

/// The nginx `map` and `upstream` blocks (http context) for the split.
pub fn nginx(shards: u32, replicas: u32, servers: &[String]) -> Result<String, String> {
    let ranges = ranges(shards, replicas)?;
    if !servers.is_empty() && servers.len() != ranges.len() {
        return Err(format!(
            "--servers: {} address(es) for {replicas} replicas",
            servers.len()
        ));
    }
    let mut out = String::new();
    let w = &mut out;
    // Writing to a String cannot fail.
    let _ = writeln!(
        w,
        "# {shards} shards over {replicas} replicas; each replica runs with \
         mode = \"sharded\", shards = {shards} and its shard_owner below."
    );
    let _ = writeln!(
        w,
        "# The client id comes from /ws/ID or ?client_id=ID, exactly as publishers hash it."
    );
    let _ = write!(
        w,
        "map $uri $ws_path_client_id {{\n    ~^/ws/(?<id>[^/]+)$  $id;\n    default              \"\";\n}}\n\
         map $ws_path_client_id $ws_client_id {{\n    \"\"       $arg_client_id;\n    default  $ws_path_client_id;\n}}\n"
    );
    let _ = writeln!(w, "upstream wsbridge {{");
    let _ = writeln!(
        w,
        "    hash $ws_client_id;  # not \"consistent\": ketama's ring cannot follow shard ranges"
    );
    for (index, range) in ranges.iter().enumerate() {
        let server = servers
            .get(index)
            .cloned()
            .unwrap_or_else(|| format!("wsbridge-{index}:8000"));
        let _ = writeln!(
            w,
            "    server {server} weight={};  # shard_owner = \"{index}/{replicas}\", shards {range}",
            range.len()
        );
    }
    let _ = writeln!(w, "}}");
    let _ = writeln!(
        w,
        "# In the server block: location /ws {{ proxy_pass http://wsbridge; \
         proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; \
         proxy_set_header Connection \"upgrade\"; proxy_next_upstream off; }}"
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_lists_replicas_in_range_order_weighted_by_range() {
        let text = nginx(4096, 3, &[]).unwrap();
        let servers: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("server "))
            .collect();
        assert_eq!(servers.len(), 3);
        assert!(
            servers[0].contains("server wsbridge-0:8000 weight=1366;"),
            "{text}"
        );
        assert!(servers[1].contains("weight=1365;") && servers[1].contains("1366..2731"));
        assert!(servers[2].contains("\"2/3\"") && servers[2].contains("2731..4096"));
        assert!(text.contains("hash $ws_client_id;"));
        assert!(!text.contains("hash $ws_client_id consistent"));
    }

    #[test]
    fn servers_are_used_in_order_and_must_match_the_replicas() {
        let servers = vec!["10.0.0.1:80".to_owned(), "10.0.0.2:80".to_owned()];
        let text = nginx(8, 2, &servers).unwrap();
        assert!(text.contains("server 10.0.0.1:80 weight=4;"));
        assert!(text.contains("server 10.0.0.2:80 weight=4;"));
        assert!(nginx(8, 3, &servers).unwrap_err().contains("2 address(es)"));
        assert!(nginx(8, 9, &[]).unwrap_err().starts_with("--replicas:"));
        assert!(nginx(8, 0, &[]).is_err());
    }

    #[test]
    fn a_client_is_located_in_its_owners_range() {
        // client123 is shard 2018 of 4096 (scripts/scaling-model.py --shard-of).
        assert_eq!(
            locate(4096, 3, "client123").unwrap(),
            "client client123: shard 2018 of 4096, replica 1 (shard_owner = \"1/3\", shards 1366..2731)\n"
        );
        assert!(locate(4096, 3, "").unwrap_err().starts_with("--client-id:"));
    }
}
