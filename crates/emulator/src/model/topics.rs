//! Topics and their subscriptions: create, delete, list, attributes, and
//! subscribing a queue with its delivery options (raw message delivery,
//! filter policy and its scope), parsed once when set so that publishing
//! (`publish.rs`) only reads them.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};

use super::queue::valid_name;
use super::{Model, SubscriptionInfo};
use crate::error::{ApiError, ApiResult};
use crate::filter::FilterPolicy;

#[derive(Debug, Clone)]
pub(super) struct Topic {
    pub(super) arn: String,
    pub(super) fifo: bool,
    pub(super) attributes: BTreeMap<String, String>,
    pub(super) tags: BTreeMap<String, String>,
    pub(super) subscriptions: Vec<Arc<Subscription>>,
}

#[derive(Debug)]
pub(super) struct Subscription {
    pub(super) info: SubscriptionInfo,
    pub(super) raw: bool,
    pub(super) filter: Option<FilterPolicy>,
    pub(super) body_scope: bool,
}

impl Model {
    /// Creates a topic (or finds it); returns its ARN.
    pub fn create_topic(
        &self,
        name: &str,
        attributes: &BTreeMap<String, String>,
        tags: &BTreeMap<String, String>,
    ) -> ApiResult<String> {
        if !valid_name(name) || name.len() > 256 {
            return Err(ApiError::invalid(format!(
                "Invalid parameter: Topic Name {name:?}"
            )));
        }
        let fifo = name.ends_with(".fifo");
        if attributes.get("FifoTopic").is_some_and(|v| v == "true") != fifo {
            return Err(ApiError::invalid(
                "Invalid parameter: FifoTopic must be true exactly for topic names ending in .fifo",
            ));
        }
        let arn = format!("arn:aws:sns:{}:{}:{name}", self.region, self.account);
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        let topic = topics.entry(arn.clone()).or_insert_with(|| Topic {
            arn: arn.clone(),
            fifo,
            attributes: attributes.clone(),
            tags: BTreeMap::new(),
            subscriptions: Vec::new(),
        });
        topic.tags.extend(tags.clone());
        Ok(arn)
    }

    /// Deletes a topic and its subscriptions (deleting a missing topic succeeds).
    pub fn delete_topic(&self, arn: &str) {
        self.topics
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(arn);
    }

    /// Every topic ARN.
    pub fn list_topics(&self) -> Vec<String> {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// The attributes of a topic.
    pub fn topic_attributes(&self, arn: &str) -> ApiResult<BTreeMap<String, String>> {
        let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        let topic = topics.get(arn).ok_or_else(ApiError::topic_missing)?;
        let mut attributes = topic.attributes.clone();
        attributes.insert("TopicArn".into(), topic.arn.clone());
        attributes.insert("Owner".into(), self.account.clone());
        attributes.insert(
            "SubscriptionsConfirmed".into(),
            topic.subscriptions.len().to_string(),
        );
        attributes.insert("SubscriptionsPending".into(), "0".into());
        attributes.insert("SubscriptionsDeleted".into(), "0".into());
        Ok(attributes)
    }

    /// Sets one attribute of a topic.
    pub fn set_topic_attribute(&self, arn: &str, name: &str, value: &str) -> ApiResult<()> {
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        let topic = topics.get_mut(arn).ok_or_else(ApiError::topic_missing)?;
        topic.attributes.insert(name.to_owned(), value.to_owned());
        Ok(())
    }

    /// The tags of a topic.
    pub fn topic_tags(&self, arn: &str) -> ApiResult<BTreeMap<String, String>> {
        let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        let topic = topics.get(arn).ok_or_else(ApiError::resource_missing)?;
        Ok(topic.tags.clone())
    }

    /// Adds (or replaces) tags of a topic.
    pub fn tag_topic(&self, arn: &str, tags: &BTreeMap<String, String>) -> ApiResult<()> {
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        let topic = topics.get_mut(arn).ok_or_else(ApiError::resource_missing)?;
        topic.tags.extend(tags.clone());
        Ok(())
    }

    /// Removes tags of a topic (absent keys are ignored).
    pub fn untag_topic(&self, arn: &str, keys: &[String]) -> ApiResult<()> {
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        let topic = topics.get_mut(arn).ok_or_else(ApiError::resource_missing)?;
        for key in keys {
            topic.tags.remove(key);
        }
        Ok(())
    }

    pub(super) fn build_subscription(info: SubscriptionInfo) -> ApiResult<Subscription> {
        let filter = match info.attributes.get("FilterPolicy") {
            Some(text) if !text.trim().is_empty() => Some(FilterPolicy::parse(text)?),
            _ => None,
        };
        let body_scope = match info.attributes.get("FilterPolicyScope").map(String::as_str) {
            None | Some("MessageAttributes") => false,
            Some("MessageBody") => true,
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "Invalid parameter: FilterPolicyScope: {other:?}"
                )))
            }
        };
        let raw = match info
            .attributes
            .get("RawMessageDelivery")
            .map(String::as_str)
        {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "Invalid parameter: RawMessageDelivery: {other:?}"
                )))
            }
        };
        Ok(Subscription {
            info,
            raw,
            filter,
            body_scope,
        })
    }

    /// Subscribes an endpoint to a topic (the existing subscription of the
    /// same protocol and endpoint is returned as it is); returns its ARN.
    pub fn subscribe(
        &self,
        topic_arn: &str,
        protocol: &str,
        endpoint: &str,
        attributes: &BTreeMap<String, String>,
    ) -> ApiResult<String> {
        if protocol.is_empty() {
            return Err(ApiError::missing("Protocol"));
        }
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        let topic = topics
            .get_mut(topic_arn)
            .ok_or_else(ApiError::topic_missing)?;
        if let Some(existing) = topic
            .subscriptions
            .iter()
            .find(|s| s.info.protocol == protocol && s.info.endpoint == endpoint)
        {
            return Ok(existing.info.arn.clone());
        }
        let arn = format!("{topic_arn}:{}", self.ids.next());
        let mut all = attributes.clone();
        all.entry("RawMessageDelivery".into())
            .or_insert_with(|| "false".into());
        let subscription = Self::build_subscription(SubscriptionInfo {
            arn: arn.clone(),
            topic_arn: topic_arn.to_owned(),
            protocol: protocol.to_owned(),
            endpoint: endpoint.to_owned(),
            attributes: all,
        })?;
        topic.subscriptions.push(Arc::new(subscription));
        Ok(arn)
    }

    /// Removes a subscription.
    pub fn unsubscribe(&self, subscription_arn: &str) -> ApiResult<()> {
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        for topic in topics.values_mut() {
            if let Some(at) = topic
                .subscriptions
                .iter()
                .position(|s| s.info.arn == subscription_arn)
            {
                topic.subscriptions.remove(at);
                return Ok(());
            }
        }
        Err(ApiError::subscription_missing())
    }

    /// The subscriptions of one topic, or of all (`None`).
    pub fn list_subscriptions(&self, topic_arn: Option<&str>) -> ApiResult<Vec<SubscriptionInfo>> {
        let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        match topic_arn {
            Some(arn) => Ok(topics
                .get(arn)
                .ok_or_else(ApiError::topic_missing)?
                .subscriptions
                .iter()
                .map(|s| s.info.clone())
                .collect()),
            None => Ok(topics
                .values()
                .flat_map(|t| t.subscriptions.iter().map(|s| s.info.clone()))
                .collect()),
        }
    }

    pub(super) fn find_subscription(&self, arn: &str) -> ApiResult<(String, usize)> {
        let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        topics
            .values()
            .find_map(|t| {
                t.subscriptions
                    .iter()
                    .position(|s| s.info.arn == arn)
                    .map(|i| (t.arn.clone(), i))
            })
            .ok_or_else(ApiError::subscription_missing)
    }

    /// The attributes of a subscription.
    pub fn subscription_attributes(&self, arn: &str) -> ApiResult<BTreeMap<String, String>> {
        let (topic_arn, _) = self.find_subscription(arn)?;
        let subscriptions = self.list_subscriptions(Some(&topic_arn))?;
        let info = subscriptions
            .into_iter()
            .find(|s| s.arn == arn)
            .ok_or_else(ApiError::subscription_missing)?;
        let mut attributes = info.attributes;
        attributes.insert("SubscriptionArn".into(), info.arn);
        attributes.insert("TopicArn".into(), info.topic_arn);
        attributes.insert("Protocol".into(), info.protocol);
        attributes.insert("Endpoint".into(), info.endpoint);
        attributes.insert("Owner".into(), self.account.clone());
        attributes.insert("ConfirmationWasAuthenticated".into(), "true".into());
        attributes.insert("PendingConfirmation".into(), "false".into());
        Ok(attributes)
    }

    /// Sets one attribute of a subscription (`RawMessageDelivery`,
    /// `FilterPolicy`, `FilterPolicyScope`, …).
    pub fn set_subscription_attribute(&self, arn: &str, name: &str, value: &str) -> ApiResult<()> {
        let (topic_arn, index) = self.find_subscription(arn)?;
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        let topic = topics
            .get_mut(&topic_arn)
            .ok_or_else(ApiError::topic_missing)?;
        let Some(current) = topic.subscriptions.get(index).filter(|s| s.info.arn == arn) else {
            return Err(ApiError::subscription_missing());
        };
        let mut info = current.info.clone();
        if value.is_empty() && name == "FilterPolicy" {
            info.attributes.remove(name);
        } else {
            info.attributes.insert(name.to_owned(), value.to_owned());
        }
        topic.subscriptions[index] = Arc::new(Self::build_subscription(info)?);
        Ok(())
    }
}
