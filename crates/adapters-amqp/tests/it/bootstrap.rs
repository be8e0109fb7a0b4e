//! `bootstrap::ensure` against RabbitMQ.

use adapters_amqp::bootstrap;
use lapin::types::FieldTable;

use crate::support::{command_properties, url, Scratch};

#[tokio::test]
async fn ensure_twice_is_idempotent_and_wires_the_commands_path() {
    let scratch = Scratch::new("boot-twice").await;
    let topology = scratch.topology();
    bootstrap::ensure(&url(), &topology).await.unwrap();
    scratch
        .publish(
            &topology.command_queue,
            r#"{"client_id":"c1","command":"kept"}"#,
            command_properties("m-1", 1),
        )
        .await;
    // Again, on what now exists and holds a message: nothing changes.
    bootstrap::ensure(&url(), &topology).await.unwrap();
    assert_eq!(scratch.depth(&topology.command_queue).await, Some(1));
    for queue in [&topology.dead_letter_queue, &topology.delay_queue()] {
        assert_eq!(scratch.depth(queue).await, Some(0), "{queue}");
    }

    // A backend may publish to the commands exchange instead of the queue.
    let commands_exchange = topology.commands_exchange.clone().unwrap();
    let confirm = scratch
        .channel()
        .basic_publish(
            commands_exchange.as_str().into(),
            "any.key".into(),
            lapin::options::BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            br#"{"client_id":"c1","command":"via-exchange"}"#,
            command_properties("m-2", 1),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(confirm, lapin::Confirmation::Ack(None));
    assert!(scratch.depth_reaches(&topology.command_queue, 2).await);
}

#[tokio::test]
async fn without_a_commands_exchange_none_is_declared() {
    let scratch = Scratch::new("boot-noexchange").await;
    let mut topology = scratch.topology();
    let would_be = topology.commands_exchange.take().unwrap();
    bootstrap::ensure(&url(), &topology).await.unwrap();
    let missing = scratch
        .channel()
        .basic_publish(
            would_be.as_str().into(),
            "".into(),
            lapin::options::BasicPublishOptions::default(),
            b"{}",
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap()
        .await;
    assert!(
        missing
            .as_ref()
            .is_err_and(|e| e.to_string().contains("NOT_FOUND")),
        "{missing:?}"
    );
}

#[tokio::test]
async fn a_queue_declared_with_other_settings_is_reported_and_left_alone() {
    let scratch = Scratch::new("boot-conflict").await;
    let topology = scratch.topology();
    // The command queue exists already, without a dead-letter exchange.
    scratch
        .declare_queue(&topology.command_queue, FieldTable::default())
        .await;
    scratch
        .publish(&topology.command_queue, "{}", command_properties("m-1", 1))
        .await;
    let error = bootstrap::ensure(&url(), &topology).await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains(&topology.command_queue), "{text}");
    assert!(text.contains("PRECONDITION_FAILED"), "{text}");
    assert!(text.contains("exists with other settings"), "{text}");
    assert_eq!(scratch.depth(&topology.command_queue).await, Some(1));
}
