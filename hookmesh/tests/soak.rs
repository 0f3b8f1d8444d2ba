//! The short soak: `hookmesh soak`'s run with few webhooks and one of each
//! fault (a broker node and a consumer replica killed -9 and restarted,
//! PostgreSQL stopped, the gateway restarted). Nothing answered 202 may be
//! lost or applied twice, and every outage must end.

use std::time::Duration;

use hookmesh_tests::soak::{SoakOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_under_every_fault_loses_and_doubles_nothing() {
    let report = run(SoakOptions {
        binary: env!("CARGO_BIN_EXE_hookmesh").into(),
        webhooks: 3000,
        rate: 60,
        sweeps: 2,
        postgres_outage: Duration::from_secs(5),
        patience: Duration::from_secs(120),
        settle: Duration::from_secs(120),
    })
    .await
    .expect("the soak runs");
    eprintln!("{report}");
    assert_eq!(report.given_up, 0, "every webhook was accepted in the end");
    assert_eq!(report.accepted, report.offered);
    assert_eq!(report.refused, 0, "nothing answered but 202 and 503");
    assert_eq!(report.lost(), 0, "{report}");
    assert_eq!(report.doubled(), 0, "{report}");
    assert_eq!(report.recoveries.len(), 4, "every fault happened");
}
