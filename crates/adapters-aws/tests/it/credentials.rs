//! Temporary credentials expiring under steady traffic.
//!
//! The clients are built the production way (`Clients::from_config`) from a
//! configuration whose credentials provider hands out short-lived
//! credentials, each under an access key id of its own. The traffic goes
//! through a `testkit::FaultProxy` that records which key signed each
//! request, so the test sees on the wire that the SDK changed keys before
//! each one expired — moto itself accepts any credentials, expired or not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use adapters_aws::sdk::Clients;
use adapters_aws::{
    AwsMetrics, SnsEventSink, SnsSinkSettings, SqsCommandSource, SqsHttpClient, SqsSourceSettings,
};
use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use domain::{CommandSource, EventSink};
use testkit::{moto, unique_name, FaultProxy};

use crate::support::{event, WAIT};

/// How long each issued credential is valid.
///
/// The SDK's identity cache treats credentials as expired once less than
/// its buffer (10 s) minus a random jitter of up to half of it is left, so
/// each 12 s credential is used for 2 to 7 s: over [`RUN`] that is at least
/// five renewals on every client, the same cache path 15 s credentials take
/// over 90 s (renewed every 5 to 10 s), in less than half the time. Below
/// the 10 s buffer the cache would hold nothing and every call would ask
/// the provider, which tests less.
const LIFETIME: Duration = Duration::from_secs(12);
/// How long the traffic runs.
const RUN: Duration = Duration::from_secs(40);
/// A Command every this often.
const EVERY: Duration = Duration::from_millis(200);
/// Least validity left on the key that signs a request; the SDK keeps at
/// least 5 s (half its buffer).
const MARGIN: Duration = Duration::from_secs(1);

/// A credentials provider that issues a new key, valid for [`LIFETIME`],
/// each time it is asked, and remembers when each key expires.
#[derive(Debug, Clone, Default)]
struct Expiring {
    /// Access key id → when it expires.
    issued: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Expiring {
    fn issue(&self) -> Credentials {
        let mut issued = self.issued.lock().unwrap();
        let key = format!("AKIDEXPIRING{:04}", issued.len());
        issued.insert(key.clone(), Instant::now() + LIFETIME);
        Credentials::new(
            key,
            "secret",
            Some("session-token".to_owned()),
            Some(SystemTime::now() + LIFETIME),
            "expiring-test-credentials",
        )
    }

    fn asked(&self) -> usize {
        self.issued.lock().unwrap().len()
    }

    fn expiry_of(&self, key: &str) -> Option<Instant> {
        self.issued.lock().unwrap().get(key).copied()
    }
}

impl ProvideCredentials for Expiring {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Ok(self.issue()))
    }
}

/// Counts how often it is asked; its credentials last an hour.
#[derive(Debug, Clone, Default)]
struct Lasting(Arc<Mutex<usize>>);

impl ProvideCredentials for Lasting {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        *self.0.lock().unwrap() += 1;
        future::ProvideCredentials::ready(Ok(Credentials::new(
            "AKIDLASTING",
            "secret",
            None,
            Some(SystemTime::now() + Duration::from_secs(3600)),
            "lasting-test-credentials",
        )))
    }
}

/// The SQS and SNS clients and the lean SQS client, built the way the
/// bridge builds them, sign with credentials fetched once between them.
#[tokio::test]
async fn every_client_renews_through_one_credentials_cache() {
    let aws = moto().aws().await;
    let queue = aws.create_queue(&unique_name("creds-once")).await;
    let lasting = Lasting::default();
    let config = moto()
        .sdk_config()
        .await
        .into_builder()
        .credentials_provider(SharedCredentialsProvider::new(lasting.clone()))
        .build();
    let clients = Clients::from_config(&config);
    clients
        .sqs
        .get_queue_attributes()
        .queue_url(&queue.url)
        .send()
        .await
        .unwrap();
    clients.sns.list_topics().send().await.unwrap();
    let source = SqsCommandSource::new(
        clients.sqs.clone(),
        &queue.url,
        SqsSourceSettings {
            wait_time: Duration::ZERO,
            ..SqsSourceSettings::default()
        },
    )
    .with_http_client(SqsHttpClient::from_config(&clients.config).unwrap());
    source.receive().await.unwrap();
    assert_eq!(*lasting.0.lock().unwrap(), 1, "fetched once per client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_credentials_are_renewed_under_traffic_without_an_error_or_a_loss() {
    renewed_under_traffic(false).await;
}

/// The same through the lean SQS client, which caches credentials itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lean_sqs_client_renews_expiring_credentials_too() {
    renewed_under_traffic(true).await;
}

async fn renewed_under_traffic(lean: bool) {
    let aws = moto().aws().await;
    let topic = aws.create_topic(&unique_name("creds-topic")).await;
    let queue = aws.create_queue(&unique_name("creds-queue")).await;
    aws.subscribe_queue(&topic, &queue, true).await;
    let proxy = FaultProxy::start(moto().endpoint());
    let provider = Expiring::default();
    let config = proxy
        .sdk_config()
        .await
        .into_builder()
        .credentials_provider(SharedCredentialsProvider::new(provider.clone()))
        .build();
    let clients = Clients::from_config(&config);
    let metrics = AwsMetrics::new();
    let settings = SqsSourceSettings {
        wait_time: Duration::from_secs(1),
        ..SqsSourceSettings::default()
    };
    let mut source =
        SqsCommandSource::new(clients.sqs, &queue.url, settings).with_metrics(metrics.clone());
    if lean {
        source = source.with_http_client(SqsHttpClient::from_config(&config).unwrap());
    }
    let sink = SnsEventSink::spawn_with_metrics(
        clients.sns,
        &topic,
        SnsSinkSettings::default(),
        metrics.clone(),
    );

    let started = Instant::now();
    let mut sent = Vec::new();
    let mut got: Vec<String> = Vec::new();
    while started.elapsed() < RUN {
        let tick = Instant::now();
        let body =
            serde_json::json!({"client_id": "c1", "command": format!("tick-{}", sent.len())})
                .to_string();
        if let Err(e) = sink.publish(event("c1", "tick", body.clone())).await {
            panic!("publish failed after {:?}: {e}", started.elapsed());
        }
        sent.push(body.clone());
        let deadline = Instant::now() + WAIT;
        while !got.contains(&body) {
            assert!(Instant::now() < deadline, "{body} did not arrive");
            let batch = match source.receive().await {
                Ok(batch) => batch,
                Err(e) => panic!("receive failed after {:?}: {e}", started.elapsed()),
            };
            if batch.is_empty() {
                continue;
            }
            let receipts = batch.iter().map(|m| m.receipt.clone()).collect();
            got.extend(batch.into_iter().map(|m| m.body));
            if let Err(e) = source.acknowledge(receipts).await {
                panic!("delete failed after {:?}: {e}", started.elapsed());
            }
        }
        tokio::time::sleep(EVERY.saturating_sub(tick.elapsed())).await;
    }

    // Every Command arrived, once; nothing is left behind.
    assert_eq!(got, sent, "lost, repeated or reordered");
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 0));
    let counted = metrics.snapshot();
    assert_eq!(
        (
            counted.receive_errors,
            counted.settle_errors,
            counted.delete_failed
        ),
        (0, 0, 0),
        "{counted:?}"
    );
    assert_eq!(counted.deleted, sent.len() as u64);

    // The clients asked the provider again, several times.
    let asked = provider.asked();
    assert!(asked > 5, "asked {asked} times in {RUN:?}");
    // And signed every request with a key that was still valid, switching
    // keys as the traffic went on.
    let seen = proxy.seen();
    let mut keys_used = Vec::new();
    for request in &seen {
        let expiry = provider
            .expiry_of(&request.access_key_id)
            .unwrap_or_else(|| panic!("a request signed by an unknown key: {request:?}"));
        let left = expiry.saturating_duration_since(request.at);
        assert!(
            left >= MARGIN,
            "{} signed with {} {left:?} before it expired",
            request.operation,
            request.access_key_id
        );
        if !keys_used.contains(&request.access_key_id) {
            keys_used.push(request.access_key_id.clone());
        }
    }
    assert!(keys_used.len() > 5, "keys used: {keys_used:?}");
    eprintln!(
        "measured: {} Commands in {:?} through SNS and SQS with {LIFETIME:?} credentials: \
         provider asked {asked} times, {} keys signed {} requests, 0 errors",
        sent.len(),
        started.elapsed(),
        keys_used.len(),
        seen.len()
    );
}
