//! A client that never acknowledges cannot stall the others (docs/delivery.md,
//! acknowledged delivery): it holds at most `max_unacked_per_client`
//! deliveries, its other Commands wait outside the consumer's window, and
//! its held ones are delivered again after the ack timeout.
//!
//! On RabbitMQ this is what keeps the channel from freezing: a held
//! delivery keeps its prefetch slot until it is settled, so without the
//! limit a client that never acknowledges takes every slot, and the
//! broker hands out nothing more (the ack timeout requeues the held ones
//! at the head of the queue, where the same client takes them again).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{Broker, TestEnv};
use crate::support::{client_id, command, connect, next_frame, send_text, Next, Ws};

// RabbitMQ, where the window that can freeze is AMQP's prefetch, and the
// embedded emulator. (On moto the same scenario passes in about 6 s when run
// alone, but its queue-count bound is not reliable next to the rest of the
// suite on a loaded machine.)
mod a_client_that_never_acknowledges_does_not_stall_the_others {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rabbit() {
        super::a_client_that_never_acknowledges_does_not_stall_the_others(
            crate::brokers::Broker::Rabbit,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn emulator() {
        super::a_client_that_never_acknowledges_does_not_stall_the_others(
            crate::brokers::Broker::Emulator,
        )
        .await;
    }
}

/// The non-acknowledging client's allowance (`max_unacked_per_client`).
const LIMIT: usize = 20;
/// The consumer's window on RabbitMQ (`amqp_prefetch`): above the limit,
/// below what the non-acknowledging client is sent.
const PREFETCH: u16 = 50;
/// Commands for the client that never acknowledges: more than the window.
const HOG_COMMANDS: usize = 60;
/// Clients that acknowledge every Command as it arrives.
const ACKING_CLIENTS: usize = 10;
/// Commands for each of them.
const PER_ACKING_CLIENT: usize = 20;
/// The ack timeout, in seconds.
const ACK_TIMEOUT_SECS: u64 = 2;
/// How long after the last Command was sent the acknowledging clients may
/// still wait for theirs: far more than a flowing bridge needs.
const FEW_SECONDS: Duration = Duration::from_secs(5);
/// When the acknowledging clients stop waiting, from the first send.
const STALL_BOUND: Duration = Duration::from_secs(15);
/// Commands put on the queue at once.
const SENDERS: usize = 16;

async fn a_client_that_never_acknowledges_does_not_stall_the_others(broker: Broker) {
    let env = broker.env().await;
    let bridge = env
        .bridge(|s| {
            s.max_unacked_per_client = LIMIT;
            s.ack_timeout_secs = ACK_TIMEOUT_SECS;
            // Deferred Commands come back within a second.
            s.retry_delay_secs = 1;
            s.max_receive_count = 100;
            if broker == Broker::Rabbit {
                s.amqp_prefetch = PREFETCH;
            }
        })
        .await;
    let hog = client_id("hog");
    let mut hog_ws = connect(&bridge.ws_url(&format!("/ws/{hog}?ack=true"))).await;
    let mut acking = Vec::new();
    for n in 0..ACKING_CLIENTS {
        let id = client_id(&format!("acker{n}"));
        let ws = connect(&bridge.ws_url(&format!("/ws/{id}?ack=true"))).await;
        acking.push((id, ws));
    }

    // The acknowledging clients read (and acknowledge) from the start, so
    // no delivery of theirs outlives the ack timeout; the non-acknowledging
    // client's Commands are sent first, ahead of everyone else's in the queue.
    let start = Instant::now();
    let hog_bodies = (0..HOG_COMMANDS).map(|n| command(&hog, &format!("h{n}")).to_string());
    let acking_bodies: Vec<String> = (0..PER_ACKING_CLIENT)
        .flat_map(|n| {
            acking
                .iter()
                .map(move |(id, _)| command(id, &format!("a{n}")).to_string())
        })
        .collect();
    let send = async {
        send_all(&env, hog_bodies.collect()).await;
        send_all(&env, acking_bodies).await;
        Instant::now()
    };
    let readers = futures_util::future::join_all(
        acking
            .iter_mut()
            .map(|(id, ws)| take_and_acknowledge(id, ws, start + STALL_BOUND)),
    );
    let (sent, results) = tokio::join!(send, readers);

    // Every acknowledging client got all its Commands, and acknowledged
    // them, within a few seconds of the last one being sent.
    let short: Vec<_> = results
        .iter()
        .filter(|taken| taken.names.len() < PER_ACKING_CLIENT)
        .map(|taken| format!("{}: {} of {PER_ACKING_CLIENT}", taken.id, taken.names.len()))
        .collect();
    assert!(
        short.is_empty(),
        "acknowledging clients stalled behind one that never acknowledges: {short:?} within {STALL_BOUND:?}"
    );
    let last = results.iter().filter_map(|taken| taken.last).max();
    let late = last.map_or(Duration::ZERO, |last| last.saturating_duration_since(sent));
    assert!(
        late <= FEW_SECONDS,
        "the acknowledging clients' last Command arrived {late:?} after the last was sent"
    );
    // Their Commands leave the queue: only the other client's remain.
    wait_for_total(&env, HOG_COMMANDS as u64).await;

    // The non-acknowledging client gets its Commands again after the ack
    // timeout, under new delivery ids.
    let repeated = first_repeat(&mut hog_ws).await;
    assert!(
        repeated.is_some(),
        "no Command delivered again to the client that never acknowledges"
    );
    let stats = bridge.stats.downlink.snapshot();
    assert!(stats.deferred > 0, "{stats:?}");
    // Still connected: delivered again from the hold, not through the queue.
    assert!(stats.ack_redelivered > 0, "{stats:?}");
    assert_eq!(
        stats.acknowledged_by_client,
        (ACKING_CLIENTS * PER_ACKING_CLIENT) as u64,
        "{stats:?}"
    );
    bridge.stop().await;
}

/// Puts `bodies` on the command queue, [`SENDERS`] at a time.
async fn send_all(env: &TestEnv, bodies: Vec<String>) {
    stream::iter(bodies)
        .for_each_concurrent(SENDERS, |body| async move {
            env.send_command(&body, false).await;
        })
        .await;
}

/// What one acknowledging client took.
struct Taken {
    id: String,
    /// The names of the Commands that arrived.
    names: BTreeSet<String>,
    /// When the last of them arrived.
    last: Option<Instant>,
}

/// Reads `ws` until it has every Command meant for it or `deadline`,
/// acknowledging each delivery as it arrives.
async fn take_and_acknowledge(id: &str, ws: &mut Ws, deadline: Instant) -> Taken {
    let mut taken = Taken {
        id: id.to_owned(),
        names: BTreeSet::new(),
        last: None,
    };
    while taken.names.len() < PER_ACKING_CLIENT {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(Next::Text(text)) = next_frame(ws, left).await else {
            break;
        };
        let frame = delivery(&text);
        send_text(
            ws,
            &json!({"ack_delivery": frame["delivery_id"]}).to_string(),
        )
        .await;
        assert_eq!(frame["command"]["client_id"], id, "{frame}");
        if taken.names.insert(name(&frame)) {
            taken.last = Some(Instant::now());
        }
    }
    taken
}

/// Reads `ws`, never acknowledging, until a Command arrives a second time
/// (the ack timeout plus a few seconds at most); that Command's name.
async fn first_repeat(ws: &mut Ws) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(ACK_TIMEOUT_SECS) + FEW_SECONDS;
    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(Next::Text(text)) = next_frame(ws, left).await else {
            return None;
        };
        let frame = delivery(&text);
        let name = name(&frame);
        if let Some(earlier) = seen.insert(name.clone(), frame["delivery_id"].clone()) {
            assert_ne!(earlier, frame["delivery_id"], "{frame}");
            return Some(name);
        }
    }
}

/// Waits until the command queue holds `total` messages, ready or held.
async fn wait_for_total(env: &TestEnv, total: u64) {
    let deadline = Instant::now() + STALL_BOUND;
    loop {
        let pending = env.pending_commands().await;
        if pending.ready + pending.held == total {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the queue holds {pending:?}, not the {total} Commands of the client that never acknowledges"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn delivery(text: &str) -> Value {
    let frame: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert!(frame["delivery_id"].is_string(), "{frame}");
    frame
}

fn name(frame: &Value) -> String {
    frame["command"]["command"]
        .as_str()
        .unwrap_or_else(|| panic!("no command name: {frame}"))
        .to_owned()
}
