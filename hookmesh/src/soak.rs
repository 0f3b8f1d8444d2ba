//! `hookmesh soak`: the mesh under a long load and scheduled faults, then
//! an exactly-once check (the harness is `hookmesh_tests::soak`, which the
//! short soak in the tests runs too).

use std::time::Duration;

use hookmesh_tests::soak::{SoakOptions, run as soak};

use crate::AnyError;
use crate::cli::SoakArgs;

pub async fn run(args: SoakArgs) -> Result<(), AnyError> {
    if args.webhooks == 0 || args.rate == 0 {
        return Err("--webhooks and --rate must be positive".into());
    }
    let options = SoakOptions {
        binary: std::env::current_exe()?,
        webhooks: args.webhooks,
        rate: args.rate,
        sweeps: args.sweeps,
        postgres_outage: Duration::from_secs(args.postgres_outage_secs),
        patience: Duration::from_secs(args.patience_secs),
        settle: Duration::from_secs(args.settle_secs),
    };
    eprintln!(
        "soak: {} webhooks at {}/s, with faults; this takes about {} s",
        args.webhooks,
        args.rate,
        args.webhooks as u64 / args.rate + args.postgres_outage_secs
    );
    let report = soak(options).await?;
    println!("{report}");
    if report.lost() != 0 || report.doubled() != 0 || report.given_up != 0 {
        return Err(format!(
            "{} lost, {} doubled, {} never accepted",
            report.lost(),
            report.doubled(),
            report.given_up
        )
        .into());
    }
    Ok(())
}
