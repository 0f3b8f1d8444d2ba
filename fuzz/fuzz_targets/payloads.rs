//! The JSON payloads the gateway validates, by the first byte: buddy
//! events, provider delivery events, sweep triggers, sweep callbacks and
//! campaign registrations.
#![no_main]

use hookmesh_contracts::EventData as _;
use hookmesh_contracts::buddy::BuddyWebhookEvent;
use hookmesh_contracts::delivery::{CampaignRegistration, DeliveryWebhookBody};
use hookmesh_contracts::sweep::{SweepCallback, SweepTrigger};
use hookmesh_fuzz::json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((kind, body)) = data.split_first() else {
        return;
    };
    let Some(value) = json(body) else {
        return;
    };
    match kind % 5 {
        0 => drop(BuddyWebhookEvent::parse(&value)),
        1 => drop(DeliveryWebhookBody::parse(&value)),
        2 => drop(SweepTrigger::parse(&value)),
        3 => drop(SweepCallback::parse(&value)),
        _ => drop(CampaignRegistration::parse(&value)),
    }
});
