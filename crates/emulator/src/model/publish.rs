//! Publishing to a topic: validation, `MessageStructure=json`, filter
//! policies, and the fan-out to `sqs` subscriptions — the SNS envelope
//! (compact JSON in AWS field order) unless raw delivery is on.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;

use serde::Serialize;

use super::{Attributes, Model, NewMessage, Publication, MAX_MESSAGE_BYTES};
use crate::error::{ApiError, ApiResult};
use crate::time::{iso8601_millis, now_millis};

/// The SNS notification envelope (raw message delivery off), in AWS field order.
#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "Type")]
    kind: &'static str,
    #[serde(rename = "MessageId")]
    message_id: &'a str,
    #[serde(rename = "SequenceNumber", skip_serializing_if = "Option::is_none")]
    sequence_number: Option<&'a str>,
    #[serde(rename = "TopicArn")]
    topic_arn: &'a str,
    #[serde(rename = "Subject", skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(rename = "Message")]
    message: &'a str,
    #[serde(rename = "Timestamp")]
    timestamp: &'a str,
    #[serde(rename = "SignatureVersion")]
    signature_version: &'static str,
    #[serde(rename = "Signature")]
    signature: &'static str,
    #[serde(rename = "SigningCertURL")]
    signing_cert_url: String,
    #[serde(rename = "UnsubscribeURL")]
    unsubscribe_url: String,
    #[serde(
        rename = "MessageAttributes",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    message_attributes: BTreeMap<&'a str, EnvelopeAttribute<'a>>,
}

#[derive(Serialize)]
struct EnvelopeAttribute<'a> {
    #[serde(rename = "Type")]
    kind: &'a str,
    #[serde(rename = "Value")]
    value: &'a str,
}

impl Model {
    /// Publishes to a topic: one copy to every matching `sqs` subscription,
    /// in an envelope unless raw delivery is on. Returns the message id and,
    /// on a FIFO topic, the sequence number.
    pub fn publish(
        &self,
        topic_arn: &str,
        publication: Publication,
    ) -> ApiResult<(String, Option<String>)> {
        let (fifo, content_dedup, subscriptions) = {
            let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
            let topic = topics.get(topic_arn).ok_or_else(ApiError::topic_missing)?;
            (
                topic.fifo,
                topic
                    .attributes
                    .get("ContentBasedDeduplication")
                    .is_some_and(|v| v == "true"),
                topic.subscriptions.clone(),
            )
        };
        validate_publication(&publication, fifo, content_dedup)?;
        let message_id = self.ids.next();
        let sequence = fifo.then(|| format!("{:020}", now_millis()));
        let text = match publication.message_structure.as_deref() {
            Some("json") => structured_message(&publication.message, "sqs")?,
            _ => publication.message.clone(),
        };
        let timestamp = iso8601_millis(now_millis());
        let mut envelope_text: Option<String> = None;
        for subscription in subscriptions.iter().filter(|s| s.info.protocol == "sqs") {
            if let Some(filter) = &subscription.filter {
                let pass = if subscription.body_scope {
                    filter.matches_body(&text)
                } else {
                    filter.matches_attributes(&publication.attributes)
                };
                if !pass {
                    continue;
                }
            }
            let (body, attributes) = if subscription.raw {
                (text.clone(), publication.attributes.clone())
            } else {
                let body = envelope_text
                    .get_or_insert_with(|| {
                        self.envelope(
                            topic_arn,
                            &message_id,
                            sequence.as_deref(),
                            &publication,
                            &text,
                            &timestamp,
                        )
                    })
                    .clone();
                (body, Attributes::new())
            };
            let message = NewMessage {
                body,
                attributes,
                delay_secs: None,
                group: publication.group.clone(),
                dedup_id: fifo.then(|| {
                    publication
                        .dedup_id
                        .clone()
                        .unwrap_or_else(|| message_id.clone())
                }),
            };
            let delivered = self
                .queue(&subscription.info.endpoint)
                .and_then(|cell| self.send_to(&cell, message, None));
            let counter = if delivered.is_ok() {
                &self.counters.fanout_deliveries
            } else {
                &self.counters.fanout_failures
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Ok((message_id, sequence))
    }

    fn envelope(
        &self,
        topic_arn: &str,
        message_id: &str,
        sequence: Option<&str>,
        publication: &Publication,
        text: &str,
        timestamp: &str,
    ) -> String {
        let envelope = Envelope {
            kind: "Notification",
            message_id,
            sequence_number: sequence,
            topic_arn,
            subject: publication.subject.as_deref(),
            message: text,
            timestamp,
            signature_version: "1",
            signature: "c3Fzc3R1Yg==",
            signing_cert_url: format!("{}/SimpleNotificationService-stub.pem", self.base_url),
            unsubscribe_url: format!(
                "{}/?Action=Unsubscribe&SubscriptionArn={topic_arn}",
                self.base_url
            ),
            message_attributes: publication
                .attributes
                .iter()
                .map(|(name, attribute)| {
                    (
                        name.as_str(),
                        EnvelopeAttribute {
                            kind: &attribute.data_type,
                            value: attribute
                                .string_value
                                .as_deref()
                                .or(attribute.binary_value.as_deref())
                                .unwrap_or_default(),
                        },
                    )
                })
                .collect(),
        };
        serde_json::to_string(&envelope).unwrap_or_default()
    }
}

fn validate_publication(
    publication: &Publication,
    fifo: bool,
    content_dedup: bool,
) -> ApiResult<()> {
    if publication.message.is_empty() {
        return Err(ApiError::invalid("Invalid parameter: Empty message"));
    }
    let size = publication.message.len()
        + publication
            .attributes
            .iter()
            .map(|(k, v)| {
                k.len()
                    + v.data_type.len()
                    + v.string_value.as_ref().map_or(0, String::len)
                    + v.binary_value.as_ref().map_or(0, String::len)
            })
            .sum::<usize>();
    if size > MAX_MESSAGE_BYTES {
        return Err(ApiError::invalid("Invalid parameter: Message too long"));
    }
    if fifo {
        if publication.group.is_none() {
            return Err(ApiError::invalid(
                "Invalid parameter: The MessageGroupId parameter is required for FIFO topics",
            ));
        }
        if publication.dedup_id.is_none() && !content_dedup {
            return Err(ApiError::invalid(
                "Invalid parameter: The topic should either have ContentBasedDeduplication enabled \
                 or MessageDeduplicationId provided explicitly",
            ));
        }
    }
    Ok(())
}

/// The text for `protocol` of a `MessageStructure=json` message (else `default`).
fn structured_message(message: &str, protocol: &str) -> ApiResult<String> {
    let value: serde_json::Value = serde_json::from_str(message).map_err(|_| {
        ApiError::invalid(
            "Invalid parameter: Message Structure - No JSON message body is parseable",
        )
    })?;
    value
        .get(protocol)
        .or_else(|| value.get("default"))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::invalid(
                "Invalid parameter: Message Structure - No default entry in JSON message body",
            )
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::test_support::{model, receive_now};
    use super::*;
    use crate::model::{MessageAttribute, ReceiveRequest};

    #[tokio::test]
    async fn fanout_wraps_in_an_envelope_unless_raw() {
        let model = model();
        let topic = model
            .create_topic("t", &BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        let wrapped = model
            .create_queue("wrapped", &BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        let raw = model
            .create_queue("raw", &BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        let arn = |url: &str| model.queue(url).unwrap().arn().to_owned();
        model
            .subscribe(&topic, "sqs", &arn(&wrapped), &BTreeMap::new())
            .unwrap();
        let raw_on = BTreeMap::from([("RawMessageDelivery".to_owned(), "true".to_owned())]);
        model.subscribe(&topic, "sqs", &arn(&raw), &raw_on).unwrap();
        let attributes = Attributes::from([(
            "client_id".to_owned(),
            MessageAttribute {
                data_type: "String".into(),
                string_value: Some("c1".into()),
                binary_value: None,
            },
        )]);
        let (id, _) = model
            .publish(
                &topic,
                Publication {
                    message: r#"{"a":1}"#.into(),
                    attributes,
                    ..Publication::default()
                },
            )
            .unwrap();
        let request = ReceiveRequest {
            message_attributes: vec!["All".into()],
            ..receive_now(10)
        };
        let got = model.receive(&wrapped, &request).await.unwrap();
        let envelope: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
        assert_eq!(envelope["Type"], "Notification");
        assert_eq!(envelope["MessageId"], id.as_str());
        assert_eq!(envelope["Message"], r#"{"a":1}"#);
        assert_eq!(envelope["MessageAttributes"]["client_id"]["Value"], "c1");
        assert!(got[0].message_attributes.is_empty());
        let got = model.receive(&raw, &request).await.unwrap();
        assert_eq!(&*got[0].body, r#"{"a":1}"#);
        assert_eq!(
            got[0].message_attributes["client_id"]
                .string_value
                .as_deref(),
            Some("c1")
        );
    }
}
