//! A service's read API on the NATS services API (`nats micro ls` lists
//! it): JSON queries in, JSON answers or refusals out. The gateway answers
//! `GET /api/…` from these, never from another service's tables. Replicas
//! share each endpoint's queue group.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_nats::service::{self, ServiceExt as _};
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::select_all;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// Why a query is not answered: the gateway turns `code` into its HTTP
/// status (400, 404, 503) and `message` into its error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub message: String,
}

impl Refusal {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: 400,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            code: 404,
            message: message.into(),
        }
    }

    /// The service's database failed: `what` names it.
    pub fn unavailable(what: &str, error: impl std::fmt::Display) -> Self {
        Self {
            code: 503,
            message: format!("the {what} is unavailable: {error}"),
        }
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<Bytes, Refusal>> + Send>>;

/// One endpoint: its subject and what answers it.
pub struct Endpoint {
    subject: &'static str,
    answer: Arc<dyn Fn(Bytes) -> Answer + Send + Sync>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// An endpoint at `subject` whose requests are JSON `Q` (refused with 400
/// when they are not) and whose answers are `answer`'s, as JSON.
pub fn endpoint<Q, R, F, Fut>(subject: &'static str, answer: F) -> Endpoint
where
    Q: DeserializeOwned + Send + 'static,
    R: Serialize,
    F: Fn(Q) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, Refusal>> + Send + 'static,
{
    let answer = Arc::new(answer);
    Endpoint {
        subject,
        answer: Arc::new(move |request: Bytes| {
            let answer = answer.clone();
            Box::pin(async move {
                let query: Q = serde_json::from_slice(&request)
                    .map_err(|e| Refusal::invalid(format!("invalid query: {e}")))?;
                let reply = answer(query).await?;
                Ok(serde_json::to_vec(&reply)
                    .expect("answers serialise")
                    .into())
            })
        }),
    }
}

/// A service's read API: its name in `nats micro ls`, and its endpoints.
#[derive(Debug)]
pub struct ReadApi {
    pub name: &'static str,
    pub description: &'static str,
    pub endpoints: Vec<Endpoint>,
}

/// Serves `api` until shutdown; each request is answered in a task of its
/// own.
pub async fn serve(
    client: async_nats::Client,
    api: &ReadApi,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), async_nats::Error> {
    let service = client
        .service_builder()
        .description(api.description)
        .start(api.name, env!("CARGO_PKG_VERSION"))
        .await?;
    let endpoints = &api.endpoints;
    let mut requests = Vec::with_capacity(endpoints.len());
    for (index, endpoint) in endpoints.iter().enumerate() {
        let requests_of = service.endpoint(endpoint.subject).await?;
        requests.push(requests_of.map(move |request| (index, request)));
    }
    let mut requests = select_all(requests);
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    break;
                }
            }
            next = requests.next() => {
                let Some((index, request)) = next else { break };
                let answer = endpoints[index].answer.clone();
                tokio::spawn(async move {
                    let reply = answer(request.message.payload.clone())
                        .await
                        .map_err(|refusal| service::error::Error {
                            status: refusal.message,
                            code: usize::from(refusal.code),
                        });
                    let _ = request.respond(reply).await;
                });
            }
        }
    }
    let _ = service.stop().await;
    Ok(())
}
