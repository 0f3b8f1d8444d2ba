//! hookmesh against a real nats-server: every route's happy path and
//! duplicates, every refusal, broker outages, and the stream definitions.

mod batch;
mod batch_model;
mod broker_outage;
mod buddy_program;
mod ci_runs;
mod consume;
mod csr;
mod deliveries;
mod delivery_program;
mod gateway_accepts;
mod gateway_refuses;
mod kv;
mod notify;
mod streams;
mod sweeps;

use hookmesh_tests::{TestGateway, TestNats, test_config};

/// A broker and a gateway with every test secret configured.
async fn mesh() -> (TestNats, TestGateway) {
    let nats = TestNats::start().await;
    let gateway = TestGateway::start(nats.url(), test_config()).await;
    (nats, gateway)
}

/// A CI fixture's bytes, exactly as stored.
fn fixture(platform: &str, name: &str) -> Vec<u8> {
    let path = format!(
        "{}/fixtures/ci/{platform}/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
