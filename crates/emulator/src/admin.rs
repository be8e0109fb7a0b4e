//! The stub's own control routes under `/__stub/` (listed in the crate
//! documentation).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::model::{Attributes, MessageAttribute, NewMessage, Publication};
use crate::server::{Faults, Shared};

/// Mounts the routes.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/__stub/health",
        web::get().to(|| async { HttpResponse::Ok().body("ok") }),
    )
    .route("/__stub/stats", web::get().to(stats))
    .route("/__stub/stats/reset", web::post().to(reset_stats))
    .route("/__stub/faults", web::get().to(get_faults))
    .route("/__stub/faults", web::post().to(set_faults))
    .route("/__stub/send", web::post().to(send))
    .route("/__stub/reset", web::post().to(reset));
}

async fn stats(shared: web::Data<Shared>) -> HttpResponse {
    let model = &shared.model;
    let (urls, _) = model.list_queues("", 0, usize::MAX);
    let queues: BTreeMap<String, _> = urls
        .iter()
        .filter_map(|url| model.queue(url).ok())
        .map(|cell| (cell.name().to_owned(), cell.counts()))
        .collect();
    let counters = &model.counters;
    HttpResponse::Ok().json(json!({
        "operations": shared.operations(),
        "queues": queues,
        "enqueued": counters.enqueued.load(Ordering::Relaxed),
        "received": counters.received.load(Ordering::Relaxed),
        "deleted": counters.deleted.load(Ordering::Relaxed),
        "fanout_deliveries": counters.fanout_deliveries.load(Ordering::Relaxed),
        "fanout_failures": counters.fanout_failures.load(Ordering::Relaxed),
        "dead_lettered": counters.dead_lettered.load(Ordering::Relaxed),
    }))
}

async fn reset_stats(shared: web::Data<Shared>) -> HttpResponse {
    shared.reset_stats();
    HttpResponse::NoContent().finish()
}

async fn get_faults(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.faults())
}

async fn set_faults(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults)
            if (0.0..=1.0).contains(&faults.error_rate)
                && (0.0..=1.0).contains(&faults.entry_error_rate) =>
        {
            shared.set_faults(faults.clone());
            HttpResponse::Ok().json(faults)
        }
        Ok(_) => HttpResponse::BadRequest().body("error rates are fractions in 0..=1"),
        Err(e) => HttpResponse::BadRequest().body(e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendIn {
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    bodies: Vec<String>,
    #[serde(default)]
    topic_arn: Option<String>,
    #[serde(default)]
    messages: Vec<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

async fn send(shared: web::Data<Shared>, body: web::Bytes) -> HttpResponse {
    let input: SendIn = match serde_json::from_slice(&body) {
        Ok(input) => input,
        Err(e) => return HttpResponse::BadRequest().body(e.to_string()),
    };
    let attributes: Attributes = input
        .attributes
        .into_iter()
        .map(|(name, value)| {
            (
                name,
                MessageAttribute {
                    data_type: "String".into(),
                    string_value: Some(value),
                    binary_value: None,
                },
            )
        })
        .collect();
    let model = &shared.model;
    let mut sent = 0usize;
    let result = match (input.queue, input.topic_arn) {
        (Some(queue), None) => input.bodies.into_iter().try_for_each(|body| {
            model
                .send(
                    &queue,
                    NewMessage {
                        body,
                        attributes: attributes.clone(),
                        ..NewMessage::default()
                    },
                )
                .map(|_| sent += 1)
        }),
        (None, Some(topic)) => input.messages.into_iter().try_for_each(|message| {
            model
                .publish(
                    &topic,
                    Publication {
                        message,
                        attributes: attributes.clone(),
                        ..Publication::default()
                    },
                )
                .map(|_| sent += 1)
        }),
        _ => {
            return HttpResponse::BadRequest()
                .body("give either queue and bodies, or topic_arn and messages")
        }
    };
    match result {
        Ok(()) => HttpResponse::Ok().json(json!({ "sent": sent })),
        Err(e) => HttpResponse::BadRequest().json(json!({ "sent": sent, "error": e.to_string() })),
    }
}

async fn reset(shared: web::Data<Shared>) -> HttpResponse {
    shared.model.reset();
    shared.reset_stats();
    HttpResponse::NoContent().finish()
}
