//! Least privilege, proven (docs/iam): the `wsbridge serve` binary in
//! shared, fanout and sharded mode, signing with the keys of an IAM user
//! that holds exactly `docs/iam/shared.json` (`fanout.json`,
//! `sharded.json`), against a moto server of its own that checks every
//! request against IAM.
//!
//! - With the policy, everything works — `/ready`, a Command delivered, one
//!   for an absent client released, a malformed one dead-lettered, a client
//!   message published — and every action of the policy was needed: the
//!   calls seen on the wire (a `testkit::FaultProxy` between the binary and
//!   moto) authorise exactly the policy's actions, all signed with the
//!   user's key.
//! - Without `sqs:ReceiveMessage`, `/ready` answers 503 naming AccessDenied
//!   and the action.
//!
//! moto turns IAM checks on after `INITIAL_NO_AUTH_ACTION_COUNT` requests.
//! The test starts it with a window large enough for its setup (queues,
//! topics, users, policies, keys), then closes the window at once through
//! moto's `/moto-api/reset-auth` rather than counting requests, and checks
//! that a key moto does not know is refused from then on.
//!
//! What moto cannot check, and how the policy is adapted for it (the
//! adaptation is mechanical, so removing an action from the document
//! removes it from what moto enforces): moto authorises a batch call under
//! its own name (`sqs:DeleteMessageBatch`), AWS under the single call's
//! (`sqs:DeleteMessage`), so each single action brings its batch name
//! along; and moto checks SNS calls, and the SQS calls that name no queue
//! URL (`GetQueueUrl`, `CreateQueue`, `ListQueues`), against the resource
//! `*`, so their statements' resources become `*`. SQS calls on a queue
//! URL are checked against the queue's ARN, as in the document.

use std::collections::BTreeSet;
use std::time::Duration;

use adapters_aws::bootstrap::{self, Infrastructure, Plan};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use serde_json::{json, Value};
use testkit::{Aws, FaultProxy, IsolatedMoto, TEST_REGION};
use tokio::process::Child;
use tokio::sync::mpsc;

use crate::cli::{signal, stderr_lines, wsbridge};
use crate::support::{
    client_id, command, next_json, send_text, wait_until, TempDir, PATIENCE, SHUTDOWN_SECS,
};

/// The documented policy of `wsbridge serve` in shared mode.
const SHARED_POLICY: &str = include_str!("../../../../docs/iam/shared.json");
/// The documented policy of `wsbridge serve` in fanout mode.
const FANOUT_POLICY: &str = include_str!("../../../../docs/iam/fanout.json");
/// The documented policy of `wsbridge serve` in sharded mode.
const SHARDED_POLICY: &str = include_str!("../../../../docs/iam/sharded.json");
/// moto's account.
const ACCOUNT_ID: &str = "123456789012";
/// Requests moto serves before checking IAM: room for the setup, which
/// ends the window itself (`/moto-api/reset-auth`).
const SETUP_WINDOW: &str = "1000";

/// The batch calls moto authorises under their own names, with the action
/// AWS authorises them under.
const BATCH_NAMES: [(&str, &str); 4] = [
    ("sqs:DeleteMessage", "sqs:DeleteMessageBatch"),
    (
        "sqs:ChangeMessageVisibility",
        "sqs:ChangeMessageVisibilityBatch",
    ),
    ("sqs:SendMessage", "sqs:SendMessageBatch"),
    ("sns:Publish", "sns:PublishBatch"),
];
/// SQS actions moto checks against the resource `*` (no queue URL).
const SQS_WITHOUT_QUEUE_URL: [&str; 3] = ["sqs:GetQueueUrl", "sqs:CreateQueue", "sqs:ListQueues"];

/// An IAM user's access key.
#[derive(Debug, Clone)]
struct AccessKey {
    id: String,
    secret: String,
}

/// A user to make: a documented policy, perhaps with one action removed.
struct Grant {
    document: &'static str,
    without: Option<&'static str>,
}

/// A user made: its key and the policy it holds (as documented, with the
/// test's names; moto was given [`for_moto`] of it).
struct User {
    key: AccessKey,
    policy: Value,
}

/// The moto of this test and what was made on it.
struct IamEnv {
    moto: IsolatedMoto,
    infra: Infrastructure,
    /// Clients signing with an all-allowed user's key.
    admin: Aws,
    /// A queue subscribed to the events topic.
    observer: String,
    /// `bridge_name` of fanout replicas (their queues' prefix).
    bridge: String,
}

impl IamEnv {
    /// Resources, then one user per grant (and an admin), then IAM on.
    async fn new(grants: &[Grant]) -> (Self, Vec<User>) {
        let moto = IsolatedMoto::spawn(&[("INITIAL_NO_AUTH_ACTION_COUNT", SETUP_WINDOW)]);
        let setup = Aws::new(testkit::sdk_config_at(moto.endpoint()).await);
        let plan = Plan {
            events_topic: testkit::unique_name("iam-events"),
            commands_topic: testkit::unique_name("iam-commands"),
            command_queue: testkit::unique_name("iam-queue"),
            // Redrive is not what is tested: the bridge's own dead-lettering is.
            max_receive_count: 100,
        };
        let infra = bootstrap::ensure(&setup.sqs, &setup.sns, &plan)
            .await
            .unwrap_or_else(|e| panic!("bootstrap failed: {e}"));
        let observer = setup
            .create_queue(&testkit::unique_name("iam-observer"))
            .await;
        setup
            .subscribe_queue(&infra.events_topic_arn, &observer, false)
            .await;

        // At most 40 characters: it prefixes queue names.
        let bridge = testkit::unique_name("iamb")[..24].to_owned();
        let names = Names::of(&infra, &bridge);
        let iam = IamApi::new(moto.endpoint());
        let everything = json!({"Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]});
        let admin_key = iam.user_with_policy("iam-admin", &everything).await;
        let mut users = Vec::new();
        for grant in grants {
            let mut policy = documented(&names, grant.document);
            if let Some(action) = grant.without {
                remove_action(&mut policy, action);
            }
            let key = iam.user_with_policy("iam-bridge", &for_moto(&policy)).await;
            users.push(User { key, policy });
        }
        close_the_window(moto.endpoint()).await;

        // From now on moto checks every request: a key it does not know is refused.
        // (moto's error body is not the shape the SDK parses a code from:
        // the raw answer is looked at.)
        let refused = format!("{:?}", setup.sns.list_topics().send().await.unwrap_err());
        assert!(
            refused.contains("403") && refused.contains("InvalidClientTokenId"),
            "moto did not turn IAM checks on: {refused}"
        );
        let admin = Aws::new(
            setup
                .config
                .clone()
                .into_builder()
                .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                    &admin_key.id,
                    &admin_key.secret,
                    None,
                    None,
                    "iam-admin",
                )))
                .build(),
        );
        let env = Self {
            moto,
            infra,
            admin,
            observer: observer.url,
            bridge,
        };
        (env, users)
    }
}

/// The names a policy document's placeholders stand for.
struct Names {
    command_queue: String,
    dead_letter_queue: String,
    events_topic: String,
    commands_topic: String,
    bridge: String,
}

impl Names {
    fn of(infra: &Infrastructure, bridge: &str) -> Self {
        let queue_name = |url: &str| url.rsplit('/').next().unwrap_or_default().to_owned();
        let topic_name = |arn: &str| arn.rsplit(':').next().unwrap_or_default().to_owned();
        Self {
            command_queue: queue_name(&infra.command_queue_url),
            dead_letter_queue: queue_name(&infra.dead_letter_queue_url),
            events_topic: topic_name(&infra.events_topic_arn),
            commands_topic: topic_name(&infra.commands_topic_arn),
            bridge: bridge.to_owned(),
        }
    }
}

/// A policy document with its placeholders replaced.
fn documented(names: &Names, document: &str) -> Value {
    let text = document
        .replace("REGION", TEST_REGION)
        .replace("ACCOUNT_ID", ACCOUNT_ID)
        .replace("DEAD_LETTER_QUEUE", &names.dead_letter_queue)
        .replace("COMMAND_QUEUE", &names.command_queue)
        .replace("EVENTS_TOPIC", &names.events_topic)
        .replace("COMMANDS_TOPIC", &names.commands_topic)
        .replace("BRIDGE", &names.bridge);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not a JSON policy ({e}): {text}"))
}

/// Removes `action` from every statement (a statement left with none goes).
fn remove_action(policy: &mut Value, action: &str) {
    let statements = policy["Statement"].as_array_mut().unwrap();
    let before = allowed_in(statements);
    for statement in statements.iter_mut() {
        let mut actions = actions_of(statement);
        actions.remove(action);
        statement["Action"] = json!(actions);
    }
    statements.retain(|s| !actions_of(s).is_empty());
    assert!(
        before.contains(action) && !allowed_in(statements).contains(action),
        "{action} is not in the policy"
    );
}

fn allowed_in(statements: &[Value]) -> BTreeSet<String> {
    statements.iter().flat_map(actions_of).collect()
}

/// The policy as moto must be given it to enforce what AWS would (see the
/// module's documentation).
fn for_moto(policy: &Value) -> Value {
    let mut policy = policy.clone();
    for statement in policy["Statement"].as_array_mut().unwrap() {
        let mut actions = actions_of(statement);
        for (single, batch) in BATCH_NAMES {
            if actions.contains(single) {
                actions.insert(batch.to_owned());
            }
        }
        let unscoped = actions
            .iter()
            .any(|a| a.starts_with("sns:") || SQS_WITHOUT_QUEUE_URL.contains(&a.as_str()));
        statement["Action"] = json!(actions);
        if unscoped {
            statement["Resource"] = json!("*");
        }
    }
    policy
}

fn actions_of(statement: &Value) -> BTreeSet<String> {
    match &statement["Action"] {
        Value::String(action) => BTreeSet::from([action.clone()]),
        Value::Array(actions) => actions
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect(),
        other => panic!("no Action in {other}"),
    }
}

/// Every action the policy allows.
fn allowed(policy: &Value) -> BTreeSet<String> {
    allowed_in(policy["Statement"].as_array().unwrap())
}

/// The IAM action AWS authorises an SQS or SNS operation under.
fn iam_action(operation: &str) -> String {
    match operation {
        "Publish" | "PublishBatch" => "sns:Publish".to_owned(),
        "Subscribe" | "Unsubscribe" | "CreateTopic" | "ListTopics" | "ListSubscriptionsByTopic" => {
            format!("sns:{operation}")
        }
        other => format!(
            "sqs:{}",
            other
                .strip_suffix("Batch")
                .filter(|single| *single != "Publish")
                .unwrap_or(other)
        ),
    }
}

/// moto's IAM API (the query protocol), for the setup window: no signature
/// is checked then, only the credential scope names the service.
struct IamApi {
    http: reqwest::Client,
    endpoint: String,
}

impl IamApi {
    fn new(endpoint: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            endpoint: format!("{endpoint}/"),
        }
    }

    async fn call(&self, params: &[(&str, &str)]) -> String {
        let mut form = params.to_vec();
        form.push(("Version", "2010-05-08"));
        let response = self
            .http
            .post(&self.endpoint)
            .header(
                "Authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential=setup/20260101/{TEST_REGION}/iam/aws4_request, \
                     SignedHeaders=host, Signature=0"
                ),
            )
            .form(&form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("IAM {params:?}: {e}"));
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(status.is_success(), "IAM {params:?}: {status} {body}");
        body
    }

    /// A new user with `policy` inline, and its access key.
    async fn user_with_policy(&self, prefix: &str, policy: &Value) -> AccessKey {
        let user = testkit::unique_name(prefix);
        self.call(&[("Action", "CreateUser"), ("UserName", &user)])
            .await;
        self.call(&[
            ("Action", "PutUserPolicy"),
            ("UserName", &user),
            ("PolicyName", "wsbridge"),
            ("PolicyDocument", &policy.to_string()),
        ])
        .await;
        let created = self
            .call(&[("Action", "CreateAccessKey"), ("UserName", &user)])
            .await;
        AccessKey {
            id: xml_field(&created, "AccessKeyId"),
            secret: xml_field(&created, "SecretAccessKey"),
        }
    }
}

fn xml_field(xml: &str, name: &str) -> String {
    let start = xml
        .find(&format!("<{name}>"))
        .unwrap_or_else(|| panic!("no {name} in {xml}"))
        + name.len()
        + 2;
    let end = start + xml[start..].find(&format!("</{name}>")).unwrap();
    xml[start..end].to_owned()
}

/// Ends moto's window of unchecked requests: IAM checks from now on.
async fn close_the_window(endpoint: &str) {
    let response = reqwest::Client::new()
        .post(format!("{endpoint}/moto-api/reset-auth"))
        .header("Content-Type", "text/plain")
        .body("0")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{response:?}");
}

/// `wsbridge serve` in shared mode through `proxy`, signing with `key`.
struct Served {
    child: Child,
    port: u16,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    _dir: TempDir,
}

impl Served {
    /// In shared mode on the command queue.
    async fn shared(env: &IamEnv, proxy: &FaultProxy, key: &AccessKey) -> Self {
        let queue = env.infra.command_queue_url.clone();
        Self::start(proxy, key, &[("BRIDGE_COMMAND_QUEUE_URL", queue)], env).await
    }

    /// In fanout mode (instance `i1`), or in sharded mode owning all of
    /// four shards: a queue of its own, subscribed to the commands topic.
    async fn replica(env: &IamEnv, proxy: &FaultProxy, key: &AccessKey, sharded: bool) -> Self {
        let mut mode = vec![
            (
                "BRIDGE_COMMANDS_TOPIC_ARN",
                env.infra.commands_topic_arn.clone(),
            ),
            ("BRIDGE_BRIDGE_NAME", env.bridge.clone()),
            // Releases, so that sqs:ChangeMessageVisibility is used too.
            ("BRIDGE_UNDELIVERABLE", "retry".to_owned()),
        ];
        if sharded {
            mode.push(("BRIDGE_MODE", "sharded".to_owned()));
            mode.push(("BRIDGE_SHARDS", "4".to_owned()));
            mode.push(("BRIDGE_SHARD_OWNER", "0/1".to_owned()));
        } else {
            mode.push(("BRIDGE_MODE", "fanout".to_owned()));
            mode.push(("BRIDGE_INSTANCE_ID", "i1".to_owned()));
        }
        Self::start(proxy, key, &mode, env).await
    }

    async fn start(
        proxy: &FaultProxy,
        key: &AccessKey,
        mode: &[(&str, String)],
        env: &IamEnv,
    ) -> Self {
        let dir = TempDir::new("iam");
        let mut command = wsbridge(dir.path());
        command
            .env("AWS_ENDPOINT_URL", proxy.endpoint())
            .env("AWS_REGION", TEST_REGION)
            .env("AWS_ACCESS_KEY_ID", &key.id)
            .env("AWS_SECRET_ACCESS_KEY", &key.secret)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("BRIDGE_EVENTS_TOPIC_ARN", &env.infra.events_topic_arn)
            .env("BRIDGE_PORT", "0")
            .env("BRIDGE_WORKERS", "1")
            .env("BRIDGE_RECEIVE_WAIT_SECS", "1")
            .env("BRIDGE_RETRY_DELAY_SECS", "1")
            .env("BRIDGE_RETRY_WINDOW_SECS", "10")
            .env("BRIDGE_SHUTDOWN_TIMEOUT_SECS", SHUTDOWN_SECS.to_string())
            .arg("serve");
        for (name, value) in mode {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawning wsbridge serve");
        let mut lines = stderr_lines(&mut child);
        let mut seen = Vec::new();
        let port = crate::cli::served_port(&mut lines, &mut seen).await;
        Self {
            child,
            port,
            lines,
            seen,
            _dir: dir,
        }
    }

    /// `GET /ready`: the status and the body.
    async fn ready(&self) -> (u16, Value) {
        let response = reqwest::get(format!("http://127.0.0.1:{}/ready", self.port))
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn wait_for_ready(&self, status: u16) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let (now, body) = self.ready().await;
            if now == status {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/ready stayed {now} ({body}), not {status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Its log so far.
    fn log(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    /// SIGTERM; it must exit 0 within its deadline. Returns its log.
    async fn terminate(mut self) -> String {
        signal(&self.child, "-TERM");
        let limit = Duration::from_secs(SHUTDOWN_SECS + 3);
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("wsbridge did not exit in time")
            .unwrap();
        crate::cli::drain_lines(&mut self.lines, &mut self.seen).await;
        let log = self.log();
        assert_eq!(status.code(), Some(0), "{log}");
        log
    }
}

/// Every call `proxy` saw was signed with the user's key, and together the
/// calls need every action of its policy, and nothing else.
fn assert_exactly_the_policy_was_needed(proxy: &FaultProxy, user: &User) {
    let seen = proxy.seen();
    let foreign: BTreeSet<&str> = seen
        .iter()
        .map(|s| s.access_key_id.as_str())
        .filter(|key| *key != user.key.id)
        .collect();
    assert!(foreign.is_empty(), "signed by other keys: {foreign:?}");
    let used: BTreeSet<String> = seen.iter().map(|s| iam_action(&s.operation)).collect();
    assert_eq!(
        used,
        allowed(&user.policy),
        "the calls made ({:?}) and the policy's actions differ",
        testkit::fault_proxy::operations(&seen)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_mode_policy_is_enough_and_every_action_in_it_is_used() {
    let (env, users) = IamEnv::new(&[
        Grant {
            document: SHARED_POLICY,
            without: None,
        },
        Grant {
            document: SHARED_POLICY,
            without: Some("sqs:ReceiveMessage"),
        },
    ])
    .await;
    let (full, without_receive) = (&users[0], &users[1]);
    let proxy = FaultProxy::start(env.moto.endpoint());
    let queue = &env.infra.command_queue_url;

    // With exactly the policy: ready, a Command delivered, one for a client
    // connected nowhere released (and released again), a malformed one
    // dead-lettered, a client message published.
    let mut bridge = Served::shared(&env, &proxy, &full.key).await;
    bridge.wait_for_ready(200).await;
    let client = client_id("iam");
    let mut ws = crate::support::connect(&format!(
        "ws://127.0.0.1:{}/ws?client_id={client}",
        bridge.port
    ))
    .await;
    env.admin
        .send(queue, &command(&client, "allowed").to_string())
        .await;
    let got = next_json(&mut ws).await;
    assert_eq!(got["command"], "allowed", "{got}");
    send_text(&mut ws, r#"{"action": "hello", "id": "m1"}"#).await;
    let ack = next_json(&mut ws).await;
    assert_eq!(ack, json!({"ack": "m1"}), "{}", bridge.log());
    let published = env.admin.receive_at_least(&env.observer, 1, PATIENCE).await;
    assert_eq!(published.len(), 1, "nothing published:\n{}", bridge.log());
    let event: Value = serde_json::from_str(&published[0].payload()).unwrap();
    assert_eq!(event["client_id"], client.as_str());
    assert_eq!(event["action"], "hello");

    env.admin
        .send(
            queue,
            &command(&client_id("absent"), "nobody-here").to_string(),
        )
        .await;
    env.admin.send(queue, "this is not a Command").await;
    let dead = env
        .admin
        .receive_at_least(&env.infra.dead_letter_queue_url, 1, PATIENCE)
        .await;
    assert!(
        dead.iter().any(|d| d.body == "this is not a Command"),
        "not dead-lettered: {dead:?}\n{}",
        bridge.log()
    );
    wait_until("a release of the Command for the absent client", || {
        let released = proxy
            .seen()
            .iter()
            .any(|s| s.operation == "ChangeMessageVisibilityBatch");
        async move { released }
    })
    .await;
    let log = bridge.terminate().await;
    assert!(!log.contains("AccessDenied"), "a call was refused:\n{log}");

    assert_exactly_the_policy_was_needed(&proxy, full);

    // Without sqs:ReceiveMessage: not ready. The public /ready says so in
    // generic words; AWS's answer, which names the IAM principal and its
    // account, goes to the log, once however often /ready is asked.
    let bridge = Served::shared(&env, &proxy, &without_receive.key).await;
    bridge.wait_for_ready(503).await;
    // Past "starting": the first receive's answer.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let body = loop {
        let (status, body) = bridge.ready().await;
        assert_eq!(status, 503, "{body}");
        let reason = body["reason"].as_str().unwrap_or_default();
        if !reason.starts_with("starting") || tokio::time::Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        body,
        json!({"status": "not_ready", "reason": "command source unavailable"})
    );
    for _ in 0..5 {
        let (status, body) = bridge.ready().await;
        assert_eq!(status, 503, "{body}");
        let text = body.to_string();
        for secret in ["arn:", "123456789012", "AccessDenied", "iam"] {
            assert!(!text.contains(secret), "/ready shows {secret:?}: {text}");
        }
    }
    let log = bridge.terminate().await;
    let logged: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("not ready") && l.contains("AccessDenied for sqs:ReceiveMessage"))
        .collect();
    assert_eq!(logged.len(), 1, "{log}");
    assert!(logged[0].contains("arn:aws:iam::"), "{}", logged[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fanout_mode_policy_is_enough_and_every_action_in_it_is_used() {
    replica_policy_is_enough_and_every_action_in_it_is_used(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sharded_mode_policy_is_enough_and_every_action_in_it_is_used() {
    replica_policy_is_enough_and_every_action_in_it_is_used(true).await;
}

async fn replica_policy_is_enough_and_every_action_in_it_is_used(sharded: bool) {
    let document = if sharded {
        SHARDED_POLICY
    } else {
        FANOUT_POLICY
    };
    let (env, users) = IamEnv::new(&[Grant {
        document,
        without: None,
    }])
    .await;
    let user = &users[0];
    let proxy = FaultProxy::start(env.moto.endpoint());
    let endpoint = env.moto.endpoint();
    let queue_name = if sharded {
        format!("{}-s4-0-4", env.bridge)
    } else {
        format!("{}-i1", env.bridge)
    };
    let instance_queue = format!("{endpoint}/{ACCOUNT_ID}/{queue_name}");

    // Its own queue made, tagged and subscribed; a Command delivered, one
    // for a client connected nowhere released, a malformed one
    // dead-lettered, a client message published; at shutdown the fanout
    // queue and its subscription removed, the shard queue kept. (The
    // Commands go straight to its queue: moto refuses the signature of the
    // admin's SNS Publish of a JSON message.)
    let mut bridge = Served::replica(&env, &proxy, &user.key, sharded).await;
    bridge.wait_for_ready(200).await;
    let client = client_id("iam-fanout");
    let mut ws = crate::support::connect(&format!(
        "ws://127.0.0.1:{}/ws?client_id={client}",
        bridge.port
    ))
    .await;
    env.admin
        .send(&instance_queue, &command(&client, "fanned-out").to_string())
        .await;
    let got = next_json(&mut ws).await;
    assert_eq!(got["command"], "fanned-out", "{got}");
    send_text(&mut ws, r#"{"action": "hello", "id": "f1"}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": "f1"}));
    let published = env.admin.receive_at_least(&env.observer, 1, PATIENCE).await;
    assert_eq!(published.len(), 1, "nothing published:\n{}", bridge.log());

    env.admin
        .send(
            &instance_queue,
            &command(&client_id("absent"), "nobody-here").to_string(),
        )
        .await;
    env.admin
        .send(&instance_queue, "this is not a Command")
        .await;
    let dead_letter_queue = format!("{endpoint}/{ACCOUNT_ID}/{}-dlq", env.bridge);
    let dead = env
        .admin
        .receive_at_least(&dead_letter_queue, 1, PATIENCE)
        .await;
    assert!(
        dead.iter().any(|d| d.payload() == "this is not a Command"),
        "not dead-lettered: {dead:?}\n{}",
        bridge.log()
    );
    wait_until("a release of the Command for the absent client", || {
        let released = proxy
            .seen()
            .iter()
            .any(|s| s.operation == "ChangeMessageVisibilityBatch");
        async move { released }
    })
    .await;
    let log = bridge.terminate().await;
    assert!(!log.contains("AccessDenied"), "a call was refused:\n{log}");
    let gone = env
        .admin
        .sqs
        .get_queue_attributes()
        .queue_url(&instance_queue)
        .send()
        .await;
    assert_eq!(gone.is_ok(), sharded, "{instance_queue}: {gone:?}");

    assert_exactly_the_policy_was_needed(&proxy, user);
}
