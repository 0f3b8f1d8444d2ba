//! Email over SMTP (lettre, rustls with ring): STARTTLS, implicit TLS or
//! none for a local relay; AUTH PLAIN/LOGIN from the URL's userinfo; a
//! pool of reused connections; a timeout on every step. Each message is
//! multipart (text and HTML) with a `Message-ID` derived from the
//! notification's id, so a resend after a crash is recognisable.

use std::time::Duration;

use hookmesh_contracts::notify::Notification;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};

use super::outcome::SendError;

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain connection upgraded with STARTTLS, which is required (587).
    StartTls,
    /// TLS from the first byte (465, `smtps://`).
    Implicit,
    /// No TLS: a relay on the same host or network only.
    None,
}

/// An SMTP server as `HOOKMESH_SMTP_URL` names it.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpEndpoint {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for SmtpEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpEndpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("credentials", &self.credentials.as_ref().map(|_| "[set]"))
            .finish()
    }
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or("a % in the userinfo is not followed by two hex digits")?;
            decoded.push(hex);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| "the userinfo is not UTF-8".to_owned())
}

impl SmtpEndpoint {
    /// Reads `smtp://user:pass@host:587?tls=starttls` (also `tls=implicit`,
    /// `tls=none`, and `smtps://host` for implicit TLS). Errors never
    /// repeat the URL's credentials.
    pub fn parse(text: &str) -> Result<Self, String> {
        // Whatever failed to parse may hold a password: it is not repeated.
        let url = reqwest::Url::parse(text).map_err(|error| format!("not a URL: {error}"))?;
        let mut tls = match url.scheme() {
            "smtp" => TlsMode::StartTls,
            "smtps" => TlsMode::Implicit,
            other => return Err(format!("the scheme must be smtp or smtps, not {other}")),
        };
        for (name, value) in url.query_pairs() {
            match (name.as_ref(), value.as_ref()) {
                ("tls", "starttls" | "required") => tls = TlsMode::StartTls,
                ("tls", "implicit" | "wrapper") => tls = TlsMode::Implicit,
                ("tls", "none") => tls = TlsMode::None,
                ("tls", other) => {
                    return Err(format!(
                        "tls={other} is not one of starttls, implicit, none"
                    ));
                }
                (other, _) => return Err(format!("unknown parameter {other:?} (only tls)")),
            }
        }
        let host = url
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or("the URL names no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port().unwrap_or(match tls {
            TlsMode::StartTls => 587,
            TlsMode::Implicit => 465,
            TlsMode::None => 25,
        });
        let credentials = match (url.username(), url.password()) {
            ("", None) => None,
            (user, password) => Some((
                percent_decode(user)?,
                percent_decode(password.unwrap_or(""))?,
            )),
        };
        Ok(Self {
            host,
            port,
            tls,
            credentials,
        })
    }
}

/// What sending email needs.
#[derive(Clone)]
pub struct SmtpSettings {
    pub endpoint: SmtpEndpoint,
    pub from: Mailbox,
    /// Extra trusted roots (PEM), for a relay with a private CA.
    pub ca_pem: Option<Vec<u8>>,
    /// Bound on connecting and on each SMTP command.
    pub timeout: Duration,
    /// Connections kept open for reuse.
    pub pool_size: u32,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("endpoint", &self.endpoint)
            .field("from", &self.from.email.domain())
            .field("ca", &self.ca_pem.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Sends notifications as email.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    server: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .finish()
    }
}

impl Mailer {
    pub fn new(settings: &SmtpSettings) -> Result<Self, String> {
        let endpoint = &settings.endpoint;
        // The binary's one crypto provider, as for every other TLS client.
        let _ = hookmesh_runtime::http::client_builder();
        let parameters = || {
            let mut builder = TlsParameters::builder(endpoint.host.clone());
            if let Some(pem) = &settings.ca_pem {
                let root = Certificate::from_pem(pem)
                    .map_err(|error| format!("HOOKMESH_SMTP_CA: {error}"))?;
                builder = builder.add_root_certificate(root);
            }
            builder
                .build_rustls()
                .map_err(|error| format!("cannot set up TLS for the SMTP server: {error}"))
        };
        let tls = match endpoint.tls {
            TlsMode::StartTls => Tls::Required(parameters()?),
            TlsMode::Implicit => Tls::Wrapper(parameters()?),
            TlsMode::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&endpoint.host)
            .port(endpoint.port)
            .tls(tls)
            .timeout(Some(settings.timeout))
            .pool_config(
                PoolConfig::new()
                    .max_size(settings.pool_size.max(1))
                    .idle_timeout(Duration::from_secs(60)),
            );
        if let Some((user, password)) = &endpoint.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self {
            transport: builder.build(),
            from: settings.from.clone(),
            server: format!("{}:{}", endpoint.host, endpoint.port),
        })
    }

    /// The email for `notification` to `to`.
    pub fn message(
        &self,
        notification: &Notification,
        to: &[Mailbox],
    ) -> Result<Message, SendError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(notification.subject.clone())
            // Stable across resends: receivers may drop a duplicate.
            .message_id(Some(format!(
                "<{}@{}>",
                notification.id,
                self.from.email.domain()
            )))
            .date_now();
        for mailbox in to {
            builder = builder.to(mailbox.clone());
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                notification.text.clone(),
                notification.html.clone(),
            ))
            .map_err(|error| SendError::Permanent(format!("cannot build the email: {error}")))
    }

    /// Sends `notification` to `to`: one SMTP transaction.
    pub async fn send(&self, notification: &Notification, to: &[Mailbox]) -> Result<(), SendError> {
        let message = self.message(notification, to)?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(error) => Err(classify(&error, &self.server)),
        }
    }
}

/// Whether an SMTP error is worth retrying: a 5xx answer (bad credentials,
/// a refused sender or recipient) or a message lettre cannot send will be
/// refused again; a 4xx answer, a refused connection, a timeout or a TLS
/// handshake cut short may pass later.
fn classify(error: &lettre::transport::smtp::Error, server: &str) -> SendError {
    let reason = format!("SMTP server {server}: {error}");
    if error.is_permanent() || error.is_client() {
        SendError::Permanent(reason)
    } else {
        SendError::transient(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_name_server_tls_and_credentials() {
        let endpoint =
            SmtpEndpoint::parse("smtp://me%40corp.com:p%3Ass@smtp.office365.com:587?tls=starttls")
                .unwrap();
        assert_eq!(endpoint.host, "smtp.office365.com");
        assert_eq!(endpoint.port, 587);
        assert_eq!(endpoint.tls, TlsMode::StartTls);
        assert_eq!(
            endpoint.credentials,
            Some(("me@corp.com".to_owned(), "p:ss".to_owned()))
        );
        assert!(!format!("{endpoint:?}").contains("p:ss"));
        let implicit = SmtpEndpoint::parse("smtps://relay.example.com").unwrap();
        assert_eq!((implicit.port, implicit.tls), (465, TlsMode::Implicit));
        let local = SmtpEndpoint::parse("smtp://127.0.0.1:2525?tls=none").unwrap();
        assert_eq!(
            (local.port, local.tls, local.credentials),
            (2525, TlsMode::None, None)
        );
        let error = SmtpEndpoint::parse("smtp://u:secret@h?tls=maybe").unwrap_err();
        assert!(error.contains("tls=maybe"), "{error}");
        let error = SmtpEndpoint::parse("http://u:secret@h").unwrap_err();
        assert!(!error.contains("secret"), "{error}");
        let error = SmtpEndpoint::parse("not a url with secret").unwrap_err();
        assert!(!error.contains("secret"), "{error}");
    }
}
