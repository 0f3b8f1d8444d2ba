//! `hookmesh`: every service of the mesh in one binary.
//!
//! `main` only parses the command line, starts logging and hands over to
//! the command; each command module wires libraries together and owns its
//! start-up and shutdown.

mod batch;
mod bench;
mod broker;
mod cli;
mod csr;
mod dlq;
mod gateway;
mod local_secrets;
mod send;
mod service;
mod shutdown;
mod soak;
mod sweep;
mod tail;
mod telemetry;
mod up;

/// Errors at the edge of the program: shown to the user, exit status 1.
pub type AnyError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse_with_environment_help();
    let telemetry = match telemetry::init(
        &cli.common.log,
        cli.common.log_format,
        cli.command.service_name(),
    ) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("hookmesh: error: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hookmesh: error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(seconds) = cli.common.duplicate_window_secs {
        let window = std::time::Duration::from_secs(seconds);
        let _ = hookmesh_nats::definitions::set_ingest_duplicate_window(window);
    }
    let service = cli.command.is_service();
    let result = runtime.block_on(async move {
        match cli.command {
            cli::Command::Up(args) => up::run(*args, cli.common).await,
            cli::Command::Gateway(args) => gateway::run(args, cli.common).await,
            cli::Command::CsrConsumer(args) => csr::run(args, cli.common).await,
            cli::Command::BatchProcessor(args) => batch::run(args, cli.common).await,
            cli::Command::SweepWorker(args) => sweep::run(args, cli.common).await,
            cli::Command::Dlq(args) => dlq::run(args, cli.common).await,
            cli::Command::Bench(args) => bench::run(args, cli.common).await,
            cli::Command::Soak(args) => soak::run(args).await,
            cli::Command::Send(args) => send::send(args).await,
            cli::Command::Sign(args) => send::sign(args).await,
            cli::Command::Tail(args) => tail::run(args, cli.common).await,
        }
    });
    // Outside the runtime: the exporter's last export blocks.
    drop(runtime);
    telemetry.shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Once: a service's in its log, a command's for the person.
        Err(error) if service => {
            tracing::error!(%error, "hookmesh stopped with an error.");
            std::process::ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("hookmesh: error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
