//! The SNS side: the query protocol (form-encoded `Action=…` bodies, XML
//! answers, errors as `<ErrorResponse><Error><Code>`).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::model::{
    Attributes, MessageAttribute, Publication, SubscriptionInfo, MAX_MESSAGE_BYTES,
};
use crate::server::Shared;

const XMLNS: &str = "http://sns.amazonaws.com/doc/2010-03-31/";
const CONTENT_TYPE: &str = "text/xml";
const BATCH_LIMIT: usize = 10;

/// SQS's operations: named in an SNS-style form body, they are an SQS
/// client speaking the older query protocol.
const SQS_OPERATIONS: &[&str] = &[
    "AddPermission",
    "CancelMessageMoveTask",
    "ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch",
    "CreateQueue",
    "DeleteMessage",
    "DeleteMessageBatch",
    "DeleteQueue",
    "GetQueueAttributes",
    "GetQueueUrl",
    "ListDeadLetterSourceQueues",
    "ListMessageMoveTasks",
    "ListQueueTags",
    "ListQueues",
    "PurgeQueue",
    "ReceiveMessage",
    "RemovePermission",
    "SendMessage",
    "SendMessageBatch",
    "SetQueueAttributes",
    "StartMessageMoveTask",
    "TagQueue",
    "UntagQueue",
];

type Params = BTreeMap<String, String>;

/// Answers one SNS call.
pub(crate) async fn handle(shared: &Shared, body: &[u8]) -> HttpResponse {
    let params: Params = form_urlencoded::parse(body).into_owned().collect();
    let action = params.get("Action").cloned().unwrap_or_default();
    let result = match shared.enter(&action).await {
        Ok(()) => dispatch(shared, &action, &params),
        Err(injected) => Err(injected),
    };
    shared.leave().await;
    match result {
        Ok((inner, entries)) => {
            shared.finish(&action, true, entries);
            let result = inner
                .map(|inner| format!("<{action}Result>{inner}</{action}Result>"))
                .unwrap_or_default();
            HttpResponse::Ok().content_type(CONTENT_TYPE).body(format!(
                r#"<?xml version="1.0"?><{action}Response xmlns="{XMLNS}">{result}<ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>"#,
                shared.request_id()
            ))
        }
        Err(error) => {
            shared.finish(&action, false, 0);
            let (code, status, sender) = error.sns_codes();
            HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST))
                .content_type(CONTENT_TYPE)
                .body(format!(
                    r#"<?xml version="1.0"?><ErrorResponse xmlns="{XMLNS}"><Error><Type>{}</Type><Code>{code}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>"#,
                    if sender { "Sender" } else { "Receiver" },
                    escape(&error.message),
                    shared.request_id()
                ))
        }
    }
}

/// Escapes text for XML content.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
    out
}

fn param<'a>(params: &'a Params, name: &str) -> ApiResult<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::InvalidParameter,
                format!("Invalid parameter: {name} is required"),
            )
        })
}

/// A `key`/`value` map: `Attributes.entry.N.key`, `Attributes.entry.N.value`.
fn entry_map(params: &Params, prefix: &str) -> Params {
    let mut map = Params::new();
    for n in 1.. {
        let Some(key) = params.get(&format!("{prefix}.entry.{n}.key")) else {
            break;
        };
        let value = params
            .get(&format!("{prefix}.entry.{n}.value"))
            .cloned()
            .unwrap_or_default();
        map.insert(key.clone(), value);
    }
    map
}

/// A list: `PREFIX.member.N`.
fn members(params: &Params, prefix: &str) -> Vec<String> {
    (1..)
        .map_while(|n| params.get(&format!("{prefix}.member.{n}")).cloned())
        .collect()
}

/// Tags: `Tags.member.N.Key` / `Tags.member.N.Value`.
fn tags(params: &Params) -> Params {
    let mut tags = Params::new();
    for n in 1.. {
        let Some(key) = params.get(&format!("Tags.member.{n}.Key")) else {
            break;
        };
        let value = params
            .get(&format!("Tags.member.{n}.Value"))
            .cloned()
            .unwrap_or_default();
        tags.insert(key.clone(), value);
    }
    tags
}

/// `MessageAttributes.entry.N.Name` / `.Value.DataType` / `.Value.StringValue` / `.Value.BinaryValue`.
fn message_attributes(params: &Params, prefix: &str) -> ApiResult<Attributes> {
    let mut attributes = Attributes::new();
    for n in 1.. {
        let base = format!("{prefix}.entry.{n}");
        let Some(name) = params.get(&format!("{base}.Name")) else {
            break;
        };
        let data_type = params
            .get(&format!("{base}.Value.DataType"))
            .cloned()
            .unwrap_or_default();
        if !(data_type.starts_with("String")
            || data_type.starts_with("Number")
            || data_type.starts_with("Binary"))
        {
            return Err(ApiError::invalid(format!(
                "Invalid parameter: MessageAttributes: the data type of {name} is {data_type:?}"
            )));
        }
        attributes.insert(
            name.clone(),
            MessageAttribute {
                data_type,
                string_value: params.get(&format!("{base}.Value.StringValue")).cloned(),
                binary_value: params.get(&format!("{base}.Value.BinaryValue")).cloned(),
            },
        );
    }
    Ok(attributes)
}

fn publication(params: &Params, prefix: &str) -> ApiResult<Publication> {
    let get = |name: &str| params.get(&format!("{prefix}{name}")).cloned();
    Ok(Publication {
        message: get("Message").unwrap_or_default(),
        subject: get("Subject"),
        attributes: message_attributes(params, &format!("{prefix}MessageAttributes"))?,
        message_structure: get("MessageStructure"),
        group: get("MessageGroupId"),
        dedup_id: get("MessageDeduplicationId"),
    })
}

fn attributes_xml(attributes: &Params) -> String {
    let mut out = String::from("<Attributes>");
    for (key, value) in attributes {
        let _ = write!(
            out,
            "<entry><key>{}</key><value>{}</value></entry>",
            escape(key),
            escape(value)
        );
    }
    out.push_str("</Attributes>");
    out
}

fn subscriptions_xml(subscriptions: &[SubscriptionInfo], owner: &str) -> String {
    let mut out = String::from("<Subscriptions>");
    for s in subscriptions {
        let _ = write!(
            out,
            "<member><TopicArn>{}</TopicArn><Protocol>{}</Protocol><SubscriptionArn>{}</SubscriptionArn><Owner>{owner}</Owner><Endpoint>{}</Endpoint></member>",
            escape(&s.topic_arn),
            escape(&s.protocol),
            escape(&s.arn),
            escape(&s.endpoint)
        );
    }
    out.push_str("</Subscriptions>");
    out
}

type Answer = ApiResult<(Option<String>, usize)>;

/// Runs one action; returns the inside of `<ActionResult>` (none for
/// actions without output) and the entries it counts.
fn dispatch(shared: &Shared, action: &str, params: &Params) -> Answer {
    let model = &shared.model;
    let some = |inner: String| Ok((Some(inner), 1));
    match action {
        "CreateTopic" => {
            let arn = model.create_topic(
                param(params, "Name")?,
                &entry_map(params, "Attributes"),
                &tags(params),
            )?;
            some(format!("<TopicArn>{}</TopicArn>", escape(&arn)))
        }
        "DeleteTopic" => {
            model.delete_topic(param(params, "TopicArn")?);
            Ok((None, 1))
        }
        "ListTopics" => {
            let mut inner = String::from("<Topics>");
            for arn in model.list_topics() {
                let _ = write!(
                    inner,
                    "<member><TopicArn>{}</TopicArn></member>",
                    escape(&arn)
                );
            }
            inner.push_str("</Topics>");
            some(inner)
        }
        "GetTopicAttributes" => {
            let attributes = model.topic_attributes(param(params, "TopicArn")?)?;
            some(attributes_xml(&attributes))
        }
        "SetTopicAttributes" => {
            model.set_topic_attribute(
                param(params, "TopicArn")?,
                param(params, "AttributeName")?,
                params.get("AttributeValue").map_or("", String::as_str),
            )?;
            Ok((None, 1))
        }
        "Subscribe" => {
            let arn = model.subscribe(
                param(params, "TopicArn")?,
                param(params, "Protocol")?,
                params.get("Endpoint").map_or("", String::as_str),
                &entry_map(params, "Attributes"),
            )?;
            some(format!(
                "<SubscriptionArn>{}</SubscriptionArn>",
                escape(&arn)
            ))
        }
        "Unsubscribe" => {
            model.unsubscribe(param(params, "SubscriptionArn")?)?;
            Ok((None, 1))
        }
        "ListSubscriptions" => some(subscriptions_xml(
            &model.list_subscriptions(None)?,
            "123456789012",
        )),
        "ListSubscriptionsByTopic" => {
            let subscriptions = model.list_subscriptions(Some(param(params, "TopicArn")?))?;
            some(subscriptions_xml(&subscriptions, "123456789012"))
        }
        "GetSubscriptionAttributes" => {
            let attributes = model.subscription_attributes(param(params, "SubscriptionArn")?)?;
            some(attributes_xml(&attributes))
        }
        "SetSubscriptionAttributes" => {
            model.set_subscription_attribute(
                param(params, "SubscriptionArn")?,
                param(params, "AttributeName")?,
                params.get("AttributeValue").map_or("", String::as_str),
            )?;
            Ok((None, 1))
        }
        "TagResource" => {
            model.tag_topic(param(params, "ResourceArn")?, &tags(params))?;
            Ok((None, 1))
        }
        "UntagResource" => {
            model.untag_topic(param(params, "ResourceArn")?, &members(params, "TagKeys"))?;
            Ok((None, 1))
        }
        "ListTagsForResource" => {
            let mut inner = String::from("<Tags>");
            for (key, value) in model.topic_tags(param(params, "ResourceArn")?)? {
                let _ = write!(
                    inner,
                    "<member><Key>{}</Key><Value>{}</Value></member>",
                    escape(&key),
                    escape(&value)
                );
            }
            inner.push_str("</Tags>");
            some(inner)
        }
        "Publish" => {
            let topic = params
                .get("TopicArn")
                .or_else(|| params.get("TargetArn"))
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    ApiError::invalid("Invalid parameter: TopicArn or TargetArn is required")
                })?;
            let (id, sequence) = model.publish(topic, publication(params, "")?)?;
            let sequence = sequence
                .map(|s| format!("<SequenceNumber>{s}</SequenceNumber>"))
                .unwrap_or_default();
            some(format!("<MessageId>{id}</MessageId>{sequence}"))
        }
        "PublishBatch" => publish_batch(shared, params),
        "" => Err(ApiError::new(
            ErrorKind::UnknownOperation,
            "The request names no operation: an SNS query (form body with Action=…) \
             or an SQS JSON call (X-Amz-Target: AmazonSQS.…) is expected",
        )),
        other if SQS_OPERATIONS.contains(&other) => Err(ApiError::new(
            ErrorKind::UnknownOperation,
            format!(
                "{other} over the SQS query protocol is not supported by the embedded \
                 emulator: it speaks SQS in the AWS JSON protocol (X-Amz-Target: AmazonSQS.{other})"
            ),
        )),
        other => Err(ApiError::unsupported(other)),
    }
}

fn publish_batch(shared: &Shared, params: &Params) -> Answer {
    let topic = param(params, "TopicArn")?;
    let mut entries = Vec::new();
    for n in 1.. {
        let prefix = format!("PublishBatchRequestEntries.member.{n}.");
        let Some(id) = params.get(&format!("{prefix}Id")) else {
            break;
        };
        entries.push((id.clone(), publication(params, &prefix)?));
    }
    if entries.is_empty() {
        return Err(ApiError::new(
            ErrorKind::EmptyBatch,
            "The batch request doesn't contain any entries",
        ));
    }
    if entries.len() > BATCH_LIMIT {
        return Err(ApiError::new(
            ErrorKind::TooManyEntries,
            "The batch request contains more entries than permissible",
        ));
    }
    let mut seen = HashSet::new();
    for (id, _) in &entries {
        let valid = !id.is_empty()
            && id.len() <= 80
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(ApiError::new(
                ErrorKind::InvalidBatchId,
                "A batch entry id is invalid",
            ));
        }
        if !seen.insert(id.as_str()) {
            return Err(ApiError::new(
                ErrorKind::IdsNotDistinct,
                "Two or more batch entries in the request have the same Id",
            ));
        }
    }
    let total: usize = entries.iter().map(|(_, p)| p.message.len()).sum();
    if total > MAX_MESSAGE_BYTES {
        return Err(ApiError::new(
            ErrorKind::BatchTooLong,
            "The length of all the messages put together is more than the limit",
        ));
    }
    shared.model.topic_attributes(topic)?;
    let count = entries.len();
    let mut successful = String::from("<Successful>");
    let mut failed = String::from("<Failed>");
    for (id, publication) in entries {
        let result = if shared.entry_fails("PublishBatch") {
            Err(ApiError::new(
                ErrorKind::Internal,
                "injected entry fault on PublishBatch",
            ))
        } else {
            shared.model.publish(topic, publication)
        };
        match result {
            Ok((message_id, sequence)) => {
                let sequence = sequence
                    .map(|s| format!("<SequenceNumber>{s}</SequenceNumber>"))
                    .unwrap_or_default();
                let _ = write!(
                    successful,
                    "<member><Id>{}</Id><MessageId>{message_id}</MessageId>{sequence}</member>",
                    escape(&id)
                );
            }
            Err(error) => {
                let (code, _, sender) = error.sns_codes();
                let _ = write!(
                    failed,
                    "<member><Id>{}</Id><Code>{code}</Code><Message>{}</Message><SenderFault>{sender}</SenderFault></member>",
                    escape(&id),
                    escape(&error.message)
                );
            }
        }
    }
    successful.push_str("</Successful>");
    failed.push_str("</Failed>");
    Ok((Some(successful + &failed), count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escaping() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;"
        );
    }

    #[test]
    fn maps_and_attributes_from_query_parameters() {
        let params: Params = form_urlencoded::parse(
            b"Attributes.entry.1.key=RawMessageDelivery&Attributes.entry.1.value=true\
              &MessageAttributes.entry.1.Name=client_id\
              &MessageAttributes.entry.1.Value.DataType=String\
              &MessageAttributes.entry.1.Value.StringValue=c%201",
        )
        .into_owned()
        .collect();
        assert_eq!(
            entry_map(&params, "Attributes")["RawMessageDelivery"],
            "true"
        );
        let attributes = message_attributes(&params, "MessageAttributes").unwrap();
        assert_eq!(attributes["client_id"].string_value.as_deref(), Some("c 1"));
    }
}
