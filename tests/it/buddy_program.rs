//! A generated buddy program (hundreds of participants over 60 simulated
//! days), the ways to deliver it, and an independent model of the metrics
//! and journeys it must produce.
//!
//! The model is written from the documented rules, deliberately without
//! the csr-consumer's code: straight loops over the generated events.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hookmesh_contracts::buddy::BuddyWebhookEvent;
use hookmesh_tests::TestGateway;
use serde_json::{Value, json};

use crate::deliveries;

pub const TENANT: &str = "acme";
pub const PROGRAM: &str = "ukraine-2025";
pub const DAYS: i64 = 60;
/// 2025-03-01T00:00:00Z.
const START: i64 = 1_740_787_200;

/// A small deterministic random source (splitmix64).
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In `low..high`.
    pub fn range(&mut self, low: i64, high: i64) -> i64 {
        low + (self.next() % (high - low) as u64) as i64
    }

    pub fn chance(&mut self, probability: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < probability
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// One generated event: 002's body, and when it happened (day of the program).
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub day: i64,
    pub body: Value,
}

impl Event {
    pub fn event_type(&self) -> &str {
        self.body["type"].as_str().unwrap()
    }

    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    /// The CloudEvents form a native publisher sends.
    pub fn envelope(&self) -> Vec<u8> {
        let event = BuddyWebhookEvent::parse(&self.body).unwrap();
        event
            .payload
            .envelope_json(&event.id, "/buddy-system", event.timestamp)
    }
}

fn timestamp(day: i64, hour: i64) -> String {
    let seconds = START + day * 86_400 + hour * 3_600;
    hookmesh_contracts::Timestamp::from_unix_seconds(seconds)
        .unwrap()
        .to_rfc3339()
}

pub fn date(day: i64) -> String {
    hookmesh_contracts::Timestamp::from_unix_seconds(START + day * 86_400)
        .unwrap()
        .to_rfc3339()[..10]
        .to_owned()
}

/// Generates a program of `pairs` buddy/newcomer pairs for `tenant`.
pub fn generate(seed: u64, tenant: &str, program: &str, pairs: usize) -> Vec<Event> {
    let mut random = Random::new(seed);
    let mut events = Vec::new();
    let mut push = |kind: &str, day: i64, random: &mut Random, data: Value| {
        let day = day.min(DAYS - 1);
        let id = format!("{tenant}-{program}-evt-{:05}", events.len());
        let body = json!({
            "id": id, "type": kind, "timestamp": timestamp(day, random.range(6, 22)), "data": data
        });
        events.push(Event { id, day, body });
    };
    let base = |extra: Value| {
        let mut data = json!({"tenant_id": tenant, "program_id": program});
        data.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        data
    };
    let mut enrolled = HashMap::new();
    for i in 0..pairs {
        for (participant, role) in [
            (format!("b-{i:03}"), "buddy"),
            (format!("n-{i:03}"), "newcomer"),
        ] {
            if random.chance(0.95) {
                let day = random.range(0, 10);
                enrolled.insert(participant.clone(), day);
                push(
                    "buddy.participant.enrolled",
                    day,
                    &mut random,
                    base(json!({"participant_id": participant, "role": role})),
                );
            }
        }
    }
    for i in 0..pairs {
        let (buddy, newcomer) = (format!("b-{i:03}"), format!("n-{i:03}"));
        if !random.chance(0.9) {
            continue;
        }
        let match_id = format!("m-{i:03}");
        let created = enrolled
            .get(&buddy)
            .copied()
            .unwrap_or(0)
            .max(enrolled.get(&newcomer).copied().unwrap_or(0))
            + random.range(0, 5);
        let pair = json!({"match_id": match_id, "buddy_id": buddy, "newcomer_id": newcomer});
        push(
            "buddy.match.created",
            created,
            &mut random,
            base(pair.clone()),
        );
        for j in 0..random.range(0, 7) {
            let mut checkin = pair.clone();
            checkin["checkin_id"] = json!(format!("c-{i:03}-{j}"));
            checkin["duration_minutes"] = json!(random.range(15, 90));
            checkin["channel"] =
                json!(["video", "phone", "in_person", "chat"][random.range(0, 4) as usize]);
            push(
                "buddy.checkin.completed",
                created + random.range(1, 40),
                &mut random,
                base(checkin),
            );
        }
        if random.chance(0.5) {
            let (day, rating) = (created + random.range(0, 30), random.range(1, 6));
            push(
                "buddy.feedback.submitted",
                day,
                &mut random,
                base(
                    json!({"feedback_id": format!("f-{i:03}"), "participant_id": newcomer,
                            "match_id": match_id, "rating": rating}),
                ),
            );
        }
        if random.chance(0.3) {
            push(
                "buddy.milestone.reached",
                created + 30,
                &mut random,
                base(
                    json!({"participant_id": newcomer, "milestone": "first_month", "match_id": match_id}),
                ),
            );
        }
        if random.chance(0.1) {
            push(
                "buddy.milestone.reached",
                55,
                &mut random,
                base(json!({"participant_id": buddy, "milestone": "program_completed"})),
            );
        }
        if random.chance(0.4) {
            let ended = (created + random.range(10, 30)).min(DAYS - 1);
            let mut end = pair.clone();
            end["reason"] =
                json!(["completed", "cancelled", "expired"][random.range(0, 3) as usize]);
            end["duration_days"] = json!(ended - created);
            push("buddy.match.ended", ended, &mut random, base(end));
        }
    }
    for event in 0..10 {
        let day = 5 + event * 5;
        for i in 0..pairs {
            for participant in [format!("b-{i:03}"), format!("n-{i:03}")] {
                if random.chance(0.2) {
                    let hours = [1.0, 1.5, 2.0, 2.5, 3.0][random.range(0, 5) as usize];
                    push(
                        "buddy.event.attended",
                        day,
                        &mut random,
                        base(
                            json!({"event_id": format!("ev-{event}"), "participant_id": participant, "hours": hours}),
                        ),
                    );
                }
            }
        }
    }
    events
}

/// How an event reaches the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Http,
    Native,
}

/// Delivers `event` (copy `copy`, so repeated copies are distinct
/// deliveries that JetStream does not deduplicate) and checks it was stored.
pub async fn deliver(
    gateway: &TestGateway,
    client: &async_nats::Client,
    event: &Event,
    route: Route,
    copy: u32,
) {
    match route {
        Route::Http => {
            let body = serde_json::to_vec(&event.body).unwrap();
            let response = deliveries::buddy(gateway, &format!("wh-{}-{copy}", event.id), &body)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                reqwest::StatusCode::ACCEPTED,
                "{}",
                event.id
            );
        }
        Route::Native => {
            let js = async_nats::jetstream::new(client.clone());
            let message = async_nats::jetstream::message::PublishMessage::build()
                .payload(event.envelope().into())
                .message_id(format!("native-{}-{copy}", event.id));
            js.send_publish(event.event_type().to_owned(), message)
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }
}

/// Half over HTTP, half natively, alternating.
pub fn route_of(index: usize) -> Route {
    if index % 2 == 0 {
        Route::Http
    } else {
        Route::Native
    }
}

fn stage_rank(stage: &str) -> u8 {
    match stage {
        "enrolled" => 1,
        "matched" => 2,
        "active" => 3,
        "churned" => 4,
        "completed" => 5,
        other => panic!("{other}"),
    }
}

/// Each participant's expected final stage, by `(program, participant)`.
pub fn expected_journeys(events: &[Event]) -> BTreeMap<(String, String), &'static str> {
    let mut stages: BTreeMap<(String, String), &'static str> = BTreeMap::new();
    let mut reach = |program: &str, participant: &Value, stage: &'static str| {
        let key = (program.to_owned(), participant.as_str().unwrap().to_owned());
        let current = stages.entry(key).or_insert(stage);
        if stage_rank(stage) > stage_rank(current) {
            *current = stage;
        }
    };
    for event in events {
        let data = event.data();
        let program = data["program_id"].as_str().unwrap();
        match event.event_type() {
            "buddy.participant.enrolled" => reach(program, &data["participant_id"], "enrolled"),
            "buddy.match.created" => {
                reach(program, &data["buddy_id"], "matched");
                reach(program, &data["newcomer_id"], "matched");
            }
            "buddy.checkin.completed" => {
                reach(program, &data["buddy_id"], "active");
                reach(program, &data["newcomer_id"], "active");
            }
            "buddy.event.attended" | "buddy.feedback.submitted" => {
                reach(program, &data["participant_id"], "active")
            }
            "buddy.milestone.reached" => {
                let stage = if data["milestone"] == "program_completed" {
                    "completed"
                } else {
                    "active"
                };
                reach(program, &data["participant_id"], stage);
            }
            "buddy.match.ended" => {
                let stage = if data["reason"] == "completed" {
                    "completed"
                } else {
                    "churned"
                };
                reach(program, &data["buddy_id"], stage);
                reach(program, &data["newcomer_id"], stage);
            }
            other => panic!("{other}"),
        }
    }
    stages
}

/// The expected daily metrics of `program`, for days `0..DAYS`.
pub fn expected_metrics(events: &[Event], program: &str) -> Vec<Value> {
    let events: Vec<&Event> = events
        .iter()
        .filter(|e| e.data()["program_id"] == program)
        .collect();
    let mut created = HashMap::new();
    let mut ended = HashMap::new();
    let mut enrolled = HashMap::new();
    let mut activity_days: HashMap<String, BTreeSet<i64>> = HashMap::new();
    let mut active = |participant: &Value, day: i64| {
        activity_days
            .entry(participant.as_str().unwrap().to_owned())
            .or_default()
            .insert(day);
    };
    for event in &events {
        let data = event.data();
        match event.event_type() {
            "buddy.participant.enrolled" => {
                enrolled.insert(
                    data["participant_id"].as_str().unwrap().to_owned(),
                    event.day,
                );
            }
            "buddy.match.created" => {
                created.insert(data["match_id"].as_str().unwrap().to_owned(), event.day);
            }
            "buddy.match.ended" => {
                ended.insert(data["match_id"].as_str().unwrap().to_owned(), event.day);
            }
            "buddy.checkin.completed" => {
                active(&data["buddy_id"], event.day);
                active(&data["newcomer_id"], event.day);
            }
            _ => active(&data["participant_id"], event.day),
        }
    }
    (0..DAYS)
        .map(|day| {
            let on_day = |kind: &'static str| {
                events
                    .iter()
                    .filter(move |e| e.day == day && e.event_type() == kind)
            };
            let ratings: Vec<f64> = on_day("buddy.feedback.submitted")
                .map(|e| e.data()["rating"].as_f64().unwrap())
                .collect();
            let enrolled_count = enrolled.values().filter(|d| **d <= day).count();
            let active_count = enrolled
                .iter()
                .filter(|(participant, d)| {
                    **d <= day
                        && activity_days
                            .get(*participant)
                            .is_some_and(|days| days.iter().any(|a| *a <= day && *a > day - 30))
                })
                .count();
            let mut metrics = json!({
                "date": date(day),
                "active_matches": created.iter().filter(|(m, c)| **c <= day && ended.get(*m).is_none_or(|e| *e >= day)).count(),
                "new_matches": created.values().filter(|c| **c == day).count(),
                "ended_matches": ended.values().filter(|e| **e == day).count(),
                "checkins": on_day("buddy.checkin.completed").count(),
                "event_attendance": on_day("buddy.event.attended").count(),
                "volunteer_hours": on_day("buddy.event.attended").map(|e| e.data()["hours"].as_f64().unwrap()).sum::<f64>(),
                "feedback_count": ratings.len(),
                "enrolled": enrolled_count,
                "active_participants": active_count,
            });
            if !ratings.is_empty() {
                metrics["average_feedback"] = json!(ratings.iter().sum::<f64>() / ratings.len() as f64);
            }
            if enrolled_count > 0 {
                metrics["engagement_rate"] = json!(active_count as f64 / enrolled_count as f64);
            }
            metrics
        })
        .collect()
}

/// Compares reported days with the model, numbers within 1e-9.
pub fn assert_same_metrics(reported: &[Value], expected: &[Value]) {
    assert_eq!(reported.len(), expected.len());
    for (got, want) in reported.iter().zip(expected) {
        let (got, want) = (got.as_object().unwrap(), want.as_object().unwrap());
        let keys: BTreeSet<_> = got.keys().chain(want.keys()).collect();
        for key in keys {
            match (got.get(key), want.get(key)) {
                (Some(Value::Number(a)), Some(Value::Number(b))) => {
                    let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
                    assert!(
                        (a - b).abs() < 1e-9,
                        "{} {key}: got {a}, expected {b}",
                        want["date"]
                    );
                }
                (a, b) => assert_eq!(a, b, "{} {key}", want["date"]),
            }
        }
    }
}
