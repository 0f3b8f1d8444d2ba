//! Structured logs on stderr (stdout is kept for the lines meant for people
//! and scripts, such as `hookmesh up`'s ready line).

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

pub fn init(filter: &str, format: LogFormat) -> Result<(), String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.compact().init(),
    }
    Ok(())
}
